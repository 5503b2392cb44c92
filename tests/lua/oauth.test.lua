-- handoff.oauth inside the runtime: the cache, renewal before expiry, one login for many
-- callers, failures in handoff.delivery's shapes. The login endpoint is a Lua function in
-- place of http.request (same arguments, same results), so each test counts the logins
-- and decides how long one takes; the real HTTP round trip is tested against the Genesys
-- contract fake in tests/integration/test_hub_genesys.py.
local oauth = require "handoff.oauth"
local json = require "handoff.json"
local crypto = require "handoff.crypto"
local timer = require "handoff.timer"
local time = require "handoff.time"
local T = {}

-- A scripted login endpoint: answers[i] is the i-th answer ({status, body} or {nil, err});
-- after the script, tokens "t<n>" that live `lifetime` seconds. Each call takes `delay`.
local function endpoint(opts)
  local e = { calls = {}, answers = opts.answers or {}, lifetime = opts.lifetime or 3600, delay = opts.delay or 0 }
  function e.request(url, req)
    e.calls[#e.calls + 1] = { url = url, req = req }
    if e.delay > 0 then timer.sleep(e.delay) end
    local a = table.remove(e.answers, 1)
    if a then
      if not a.status then return nil, a.err end
      return { status = a.status, headers = a.headers or {}, body = a.body or "" }
    end
    return { status = 200, headers = {},
             body = json.encode({ access_token = "t" .. #e.calls, token_type = "bearer", expires_in = e.lifetime }) }
  end
  return e
end

local function client(e, extra)
  local opts = { url = "https://login.example/oauth/token", client_id = "id:1", client_secret = "s&cret",
                 request = e.request }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return oauth.client(opts)
end

-- Runs FN in N concurrent tasks and waits (with a deadline) until all have returned.
local function concurrently(n, fn)
  local results, done = {}, 0
  for i = 1, n do
    timer.after(0, function() results[i] = { fn() }; done = done + 1 end)
  end
  local deadline = time.now() + 5
  while done < n and time.now() < deadline do timer.sleep(0.01) end
  assert(done == n, ("only %d of %d callers returned"):format(done, n))
  return results
end

function T.login_request_is_client_credentials()
  local e = endpoint({})
  local tokens = client(e, { scope = "messaging conversations" })
  assert(tokens:get() == "t1")
  local c = e.calls[1]
  assert(c.url == "https://login.example/oauth/token")
  assert(c.req.method == "POST")
  assert(c.req.headers["Content-Type"] == "application/x-www-form-urlencoded")
  assert(c.req.headers["Authorization"] == "Basic " .. crypto.base64_encode("id%3A1:s%26cret"),
         "RFC 6749 2.3.1: the credentials are form-encoded, then base64")
  assert(c.req.body == "grant_type=client_credentials&scope=messaging%20conversations", c.req.body)
end

function T.cached_until_shortly_before_expiry_then_renewed()
  local e = endpoint({ lifetime = 0.5 })
  local tokens = client(e, { margin = 60 })
  assert(tokens:get() == "t1" and tokens:get() == "t1", "cached")
  assert(#e.calls == 1)
  -- renewed a tenth of the lifetime early (the margin is capped for short-lived tokens)
  local deadline = time.now() + 5
  while tokens:get() == "t1" and time.now() < deadline do timer.sleep(0.02) end
  assert(tokens:get() == "t2" and #e.calls == 2, "renewed once")
  assert(tokens.expires_at - tokens.refresh_at > 0.04 and tokens.expires_at - tokens.refresh_at < 0.06)
end

function T.concurrent_callers_wait_for_one_login()
  local e = endpoint({ delay = 0.05 })
  local tokens = client(e)
  local results = concurrently(8, function() return tokens:get() end)
  assert(#e.calls == 1, "one login for all callers, got " .. #e.calls)
  for i = 1, 8 do assert(results[i][1] == "t1", "caller " .. i) end
end

function T.waiters_share_the_failure_of_the_login_they_waited_for()
  local e = endpoint({ delay = 0.05, answers = { { status = 503, headers = { ["retry-after"] = "3" } } } })
  local tokens = client(e)
  local results = concurrently(4, function() return tokens:get() end)
  assert(#e.calls == 1)
  for i = 1, 4 do
    local r = results[i]
    assert(r[1] == nil and r[2] == "oauth login: HTTP 503" and r[3] == 3, tostring(r[2]))
  end
  assert(tokens:get() == "t2", "the next call logs in again")
end

function T.old_token_serves_while_the_renewal_runs()
  local e = endpoint({ lifetime = 1 })
  local tokens = client(e)
  assert(tokens:get() == "t1")
  tokens.refresh_at = 0                   -- due for renewal, still valid
  e.delay = 0.05
  local results = concurrently(3, function() return tokens:get() end)
  local fresh, old = 0, 0
  for i = 1, 3 do
    if results[i][1] == "t2" then fresh = fresh + 1 elseif results[i][1] == "t1" then old = old + 1 end
  end
  assert(#e.calls == 2 and fresh == 1 and old == 2, ("%d logins, %d fresh, %d old"):format(#e.calls, fresh, old))
end

function T.failures_follow_delivery()
  local e = endpoint({ answers = { { status = 401, body = '{"error":"invalid_client"}' },
                                   { nil, err = "connection refused" },
                                   { status = 200, body = '{"token_type":"bearer"}' } } })
  local tokens = client(e)
  local tok, err, retry = tokens:get()
  assert(tok == nil and err:match("^oauth login: HTTP 401") and retry == nil, "a refused login is final")
  tok, err, retry = tokens:get()
  assert(tok == nil and err == "oauth login: connection refused" and retry == true)
  tok, err, retry = tokens:get()
  assert(tok == nil and err == "oauth login: no access_token in the answer" and retry == true)
  assert(tokens:get() == "t4")
end

function T.invalidate_forgets_only_the_refused_token()
  local e = endpoint({})
  local tokens = client(e)
  assert(tokens:get() == "t1")
  tokens:invalidate("t1")
  assert(tokens:get() == "t2")
  tokens:invalidate("t1")                 -- a late 401 for the old token
  assert(tokens:get() == "t2" and #e.calls == 2)
end

function T.a_stuck_login_does_not_block_forever()
  local e = endpoint({})
  local tokens = client(e, { timeout_ms = 50 })
  tokens.fetching, tokens.fetch_started = true, time.now()   -- as if its task had been aborted
  assert(tokens:get() == "t1", "a waiter takes over after the login's deadline")
end

function T.misuse_raises()
  local function raises(pattern, ...)
    local ok, err = pcall(oauth.client, ...)
    assert(not ok and tostring(err):match(pattern), "expected " .. pattern .. ", got " .. tostring(err))
  end
  raises("a table of options", nil)
  raises("url must be http", { client_id = "a", client_secret = "b" })
  raises("client_id is required", { url = "https://x/t", client_secret = "b" })
  raises("client_secret is required", { url = "https://x/t", client_id = "a" })
end

return T
