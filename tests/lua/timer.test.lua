-- handoff.timer inside the runtime: callbacks run as tasks on the real loop.
local timer = require "handoff.timer"
local T = {}

function T.after_fires_with_its_arguments()
  local got
  timer.after(0.01, function(premature, a, b) got = { premature, a, b } end, "x", 42)
  timer.sleep(0.05)
  assert(got, "the callback ran")
  assert(got[1] == false and got[2] == "x" and got[3] == 42)
end

function T.every_repeats_until_cancelled()
  local n = 0
  local t = timer.every(0.005, function(premature) if not premature then n = n + 1 end end)
  repeat timer.sleep(0.005) until n >= 3
  assert(t:cancel() == true, "was pending")
  local seen = n
  timer.sleep(0.03)
  assert(n == seen, "no firing after cancel")
  assert(t:cancel() == false, "second cancel finds nothing pending")
end

function T.cancel_before_firing()
  local fired = false
  local t = timer.after(0.01, function() fired = true end)
  assert(t:cancel())
  timer.sleep(0.03)
  assert(not fired)
end

function T.dropped_handle_still_fires()
  local fired = false
  do timer.after(0, function() fired = true end) end
  collectgarbage(); collectgarbage()
  timer.sleep(0.02)
  assert(fired)
end

function T.callbacks_may_sleep_too()
  local steps = {}
  timer.after(0, function() steps[#steps + 1] = 1; timer.sleep(0.01); steps[#steps + 1] = 3 end)
  timer.sleep(0.001)
  steps[#steps + 1] = 2
  timer.sleep(0.03)
  assert(table.concat(steps, ",") == "1,2,3", table.concat(steps, ","))
end

function T.misuse_raises()
  local function raises(pattern, f, ...)
    local ok, err = pcall(f, ...)
    assert(not ok and err:match(pattern), "expected " .. pattern .. ", got " .. tostring(err))
  end
  raises("bad argument #1 to '.-after'", timer.after, "soon", function() end)
  raises("seconds out of range", timer.after, -1, function() end)
  raises("bad argument #2 to '.-after'", timer.after, 1, "not a function")
  raises("an interval must be positive", timer.every, 0, function() end)
  raises("bad argument #1 to '.-sleep'", timer.sleep, {})
  raises("only allowed inside a hook", coroutine.wrap(function() timer.sleep(0) end))
end

return T
