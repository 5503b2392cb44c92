-- handoff.http inside the runtime: misuse raises, a world failure is nil, err.
-- Round trips against real servers are in tests/integration/test_http_binding.py.
local http = require "handoff.http"
local T = {}

local function raises(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok and tostring(err):match(pattern), "expected " .. pattern .. ", got " .. tostring(err))
end

function T.misuse_raises()
  raises("bad argument #1", http.request)
  raises("bad argument #2", http.request, "http://127.0.0.1:1/", "GET")
  raises("unknown option 'timeout'", http.request, "http://127.0.0.1:1/", { timeout = 5 })
  raises("option 'timeout_ms' must be a positive integer", http.request, "http://127.0.0.1:1/", { timeout_ms = -1 })
  raises("option 'method' must be a string", http.request, "http://127.0.0.1:1/", { method = 1 })
  raises("header names and values must be strings", http.request, "http://127.0.0.1:1/",
         { headers = { ["X-A"] = {} } })
  raises("only allowed inside a hook", coroutine.wrap(function() return http.request("http://127.0.0.1:1/") end))
end

function T.refused_connection_is_nil_err()
  local res, err = http.request("http://127.0.0.1:1/", { timeout_ms = 2000 })
  assert(res == nil and err == "connection refused", tostring(err))
end

function T.bad_url_is_nil_err()
  local res, err = http.request("ftp://127.0.0.1/x")
  assert(res == nil and err == "invalid request", tostring(err))
end

return T
