-- Runs inside the real runtime (`handoffd test`): the modules scripts get, and the
-- rules every generation follows.
local T = {}

function T.modules_are_preloaded()
  local hd = require "handoff"
  assert(type(hd.version) == "string" and hd.version:match("^%d+%.%d+%.%d+$"), "version")
  assert(hd.log == require "handoff.log", "handoff.log is the same module")
  assert(hd.conversations() == 0)
  assert(type(require("cjson").encode) == "function")
  assert(type(require("cjson.safe").decode) == "function")
end

function T.cpath_loads_native_code_from_absolute_directories_only()
  -- Lua's default ends in ./?.so: a C module from whatever directory the daemon runs in.
  assert(not package.cpath:find("./?.so", 1, true), "./?.so in " .. package.cpath)
  for entry in package.cpath:gmatch("[^;]+") do
    assert(entry:sub(1, 1) == "/", "relative entry " .. entry)
  end
end

function T.json_is_the_safe_variant()
  local json = require "handoff.json"
  local v, err = json.decode("{not json")
  assert(v == nil and type(err) == "string", "a decode error is returned, not raised")
  assert(json.decode('{"a":[1,2]}').a[2] == 2)
  assert(json.encode({ x = "é" }) == '{"x":"é"}')
end

function T.log_accepts_fields_and_rejects_misuse()
  local log = require "handoff.log"
  log.info("test.event", { conv = "c1", n = 3, text = "two words" })
  log.debug("test.debug", "a message")
  local ok, err = pcall(log.info)
  assert(not ok and err:match("bad argument #1"), "an event name is required: " .. tostring(err))
  ok, err = pcall(log.warn, {})
  assert(not ok and err:match("bad argument #1"))
end

function T.globals_are_locked()
  local ok, err = pcall(function() undeclared_name = 1 end)
  assert(not ok and err:match("assignment to undeclared global 'undeclared_name'"), tostring(err))
  ok, err = pcall(function() return missing_global end)
  assert(not ok and err:match("undeclared global 'missing_global'"), tostring(err))
  -- declared globals still work
  assert(type(string.format) == "function" and type(require) == "function")
end

function T.sandbox_keeps_standard_libraries()
  assert(os.getenv("PATH") ~= nil)
  assert(math.floor(2.5) == 2)
  assert(("%d"):format(7) == "7")
end

function T.relay_calls_need_a_relay_and_check_arguments()
  local hd = require "handoff"
  local ok, err = pcall(hd.customer, "c-1", { type = "message", text = "hi" })
  assert(not ok and err:match("no relay is running"), tostring(err))
  ok, err = pcall(hd.conversation, "c-1")
  assert(not ok and err:match("no relay is running"), tostring(err))
end

return T
