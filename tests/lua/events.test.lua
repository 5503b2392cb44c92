-- handoff.events (scripts/handoff/events.lua): a hub's inbound event applied once, and the
-- runtime failures that pass. `handoffd test` runs without a relay, so the runtime's event
-- table is a stand-in with the same calls (hd.remember_event / hd.forget_event).
local T = {}

local seen, calls = {}, {}
local fake = {
  remember_event = function(key)
    calls[#calls + 1] = "remember " .. key
    if key == "broken" then return nil, "state not writable" end
    if seen[key] then return false end
    seen[key] = true
    return true
  end,
  forget_event = function(key)
    calls[#calls + 1] = "forget " .. key
    seen[key] = nil
    return true
  end,
}

-- handoff.events takes the runtime module when it is loaded: load it with the stand-in.
local real = package.loaded.handoff
package.loaded.handoff, package.loaded["handoff.events"] = fake, nil
local events = require "handoff.events"
package.loaded.handoff = real

local function reset() seen, calls = {}, {} end

local function counter(...)
  local results, n = table.pack(...), 0
  return function()
    n = n + 1
    return table.unpack(results, 1, results.n)
  end, function() return n end
end

function T.success_keeps_the_key_and_a_duplicate_does_not_run()
  reset()
  local effect, runs = counter(true)
  assert(events.once("e-1", effect) == true)
  assert(seen["e-1"], "the key stays remembered")
  local done, err = events.once("e-1", effect)
  assert(done == false and err == nil, "a duplicate")
  assert(runs() == 1, "the effect ran once")
  assert(table.concat(calls, ",") == "remember e-1,remember e-1")
end

function T.a_failed_effect_forgets_the_key_so_the_retry_applies()
  reset()
  local failing, failed = counter(nil, "queue full")
  local done, err = events.once("e-2", failing)
  assert(done == nil and err == "queue full", tostring(err))
  assert(not seen["e-2"], "forgotten")
  assert(failed() == 1)
  local effect, runs = counter(true)
  assert(events.once("e-2", effect) == true, "the hub's retry takes effect")
  assert(runs() == 1 and seen["e-2"])
  assert(table.concat(calls, ",") == "remember e-2,forget e-2,remember e-2")
end

function T.an_unconfirmed_effect_keeps_the_key_so_the_retry_is_a_duplicate()
  reset()
  -- A PostgreSQL state could not commit in time: the effect stays and is written later,
  -- so the hub's retry must find the key rather than apply the event twice.
  local unconfirmed = counter(nil, "not confirmed")
  local done, err = events.once("e-3", unconfirmed)
  assert(done == nil and err == "not confirmed")
  assert(seen["e-3"], "kept")
  local effect, runs = counter(true)
  assert(events.once("e-3", effect) == false, "the retry is a duplicate")
  assert(runs() == 0)
  assert(table.concat(calls, ",") == "remember e-3,remember e-3")
end

function T.a_failure_to_remember_runs_nothing_and_forgets_nothing()
  reset()
  local effect, runs = counter(true)
  local done, err = events.once("broken", effect)
  assert(done == nil and err == "state not writable")
  assert(runs() == 0)
  assert(table.concat(calls, ",") == "remember broken")
end

function T.the_effects_note_comes_back_and_no_key_means_no_dedupe()
  reset()
  local effect, runs = counter(true, "not open")
  local done, note = events.once(nil, effect)
  assert(done == true and note == "not open")
  assert(events.once(nil, effect) == true)
  assert(runs() == 2 and #calls == 0, "no key: always applied, never remembered")
  local failing = counter(nil, "unknown conversation")
  assert(select(2, events.once(nil, failing)) == "unknown conversation")
  assert(#calls == 0)
end

function T.failures_that_pass_and_the_answer_to_them()
  for _, err in ipairs({ "overloaded", "queue full", "conversation ending" }) do
    assert(events.passing(err), err)
    assert(events.status(err, 503) == 503 and events.status(err, { busy = 429, fault = 500 }) == 429, err)
  end
  for _, err in ipairs({ "state not writable", "not confirmed", "out of memory" }) do
    assert(events.passing(err), err)
    assert(events.status(err, { busy = 429, fault = 500 }) == 500, err)
  end
  assert(events.retry_after("conversation ending") == 1 and events.retry_after("overloaded") == 5)
  for _, err in ipairs({ "bad id", "bad activity", "unknown conversation", "not with an agent" }) do
    assert(not events.passing(err), err)
    assert(events.status(err, { busy = 429, fault = 500 }) == 400 and events.status(err, 503) == 400, err)
    assert(events.retry_after(err) == nil, err)
  end
end

return T
