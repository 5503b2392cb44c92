--[[ handoff.oauth - OAuth 2.0 client-credentials tokens (RFC 6749 4.4), cached until
shortly before they expire.

  local oauth = require "handoff.oauth"
  local tokens = oauth.client({ url = "https://login.mypurecloud.com/oauth/token",
                                client_id = ..., client_secret = ..., scope = nil,
                                margin = 60, timeout_ms = 10000, ca_file = nil })
  local token, err, retry = tokens:get()   -- the cached token, or a fresh one
  tokens:invalidate(token)                 -- the API answered 401 with it: fetch anew next time

The client id and secret go in an HTTP Basic header, the grant as a form body. A token is
renewed `margin` seconds before `expires_in` runs out (a tenth of its lifetime at most, so
short-lived tokens are still reused). One fetch at a time: a caller that arrives while a
fetch is under way waits for that fetch (it checks every WAIT_STEP_S) instead of starting
its own, and gets its outcome; while the old token is still valid it is used meanwhile.
Failures come back as handoff.delivery shapes: a refused login (400, 401) is `nil, err`,
a network error, 429 or 5xx is `nil, err, retry`, so hub functions can return them as is.
The state lives in the client table: a reload builds new clients, and so new tokens.
]]
local http = require "handoff.http"
local json = require "handoff.json"
local crypto = require "handoff.crypto"
local time = require "handoff.time"
local timer = require "handoff.timer"
local delivery = require "handoff.delivery"
local form = require "handoff.form"

local M = {}

local WAIT_STEP_S = 0.02
local DEFAULT_MARGIN_S = 60
local DEFAULT_TIMEOUT_MS = 10000

local Client = {}
Client.__index = Client

-- application/x-www-form-urlencoded, as RFC 6749 2.3.1 asks for the Basic credentials too.
local form_encode = form.escape

--- A token cache for one client. Raises when the settings are wrong (a script error).
function M.client(opts)
  assert(type(opts) == "table", "oauth.client: a table of options is required")
  assert(type(opts.url) == "string" and opts.url:match("^https?://"), "oauth.client: url must be http(s)")
  assert(type(opts.client_id) == "string" and opts.client_id ~= "", "oauth.client: client_id is required")
  assert(type(opts.client_secret) == "string" and opts.client_secret ~= "", "oauth.client: client_secret is required")
  assert(opts.scope == nil or type(opts.scope) == "string", "oauth.client: scope must be a string")
  local basic = crypto.base64_encode(form_encode(opts.client_id) .. ":" .. form_encode(opts.client_secret))
  return setmetatable({
    url = opts.url, scope = opts.scope, margin = opts.margin or DEFAULT_MARGIN_S,
    timeout_ms = opts.timeout_ms or DEFAULT_TIMEOUT_MS, ca_file = opts.ca_file,
    authorization = "Basic " .. basic,
    request = opts.request or http.request,   -- tests may count or delay the login calls
    token = nil, refresh_at = 0, expires_at = 0,
    fetching = false, fetch_started = 0, round = 0, outcome = nil,
  }, Client)
end

local function login(self)
  local body = "grant_type=client_credentials"
  if self.scope then body = body .. "&scope=" .. form_encode(self.scope) end
  local res, err, retry = delivery.result(self.request(self.url, {
    method = "POST", timeout_ms = self.timeout_ms, ca_file = self.ca_file, body = body,
    headers = { ["Authorization"] = self.authorization, ["Accept"] = "application/json",
                ["Content-Type"] = "application/x-www-form-urlencoded" },
  }))
  if not res then return nil, "oauth login: " .. err, retry end
  local doc = json.decode(res.body)
  if type(doc) ~= "table" or type(doc.access_token) ~= "string" or doc.access_token == "" then
    return nil, "oauth login: no access_token in the answer", true
  end
  return doc.access_token, tonumber(doc.expires_in) or 3600
end

-- Runs one login and records its outcome for the callers waiting on it.
local function fetch(self)
  self.fetching, self.fetch_started = true, time.now()
  local ok, token, lifetime_or_err, retry = pcall(login, self)
  if not ok then token, lifetime_or_err, retry = nil, "oauth login: " .. tostring(token), true end
  if token then
    local now = time.now()
    self.token, self.expires_at = token, now + lifetime_or_err
    self.refresh_at = self.expires_at - math.min(self.margin, lifetime_or_err / 10)
    self.outcome = { token }
  else
    self.outcome = { nil, lifetime_or_err, retry }
  end
  self.fetching, self.round = false, self.round + 1
  return table.unpack(self.outcome, 1, 3)
end

-- Waits for the fetch under way; starts one itself when that fetch overran its deadline
-- (its task was aborted, for instance), so no caller waits forever.
local function wait(self)
  local round, deadline = self.round, self.fetch_started + self.timeout_ms / 1000 + 1
  while self.fetching and self.round == round and time.now() < deadline do
    timer.sleep(WAIT_STEP_S)
  end
  if self.round ~= round then return table.unpack(self.outcome, 1, 3) end
  return fetch(self)
end

--- The token to send as "Authorization: Bearer <token>". Returns token, or nil, err,
--- retry (see handoff.delivery).
function Client:get()
  local now = time.now()
  if self.token and now < self.refresh_at then return self.token end
  if not self.fetching then return fetch(self) end
  if self.token and now < self.expires_at then return self.token end
  return wait(self)
end

--- Forgets TOKEN if it is still the cached one (the API refused it); the next get() logs
--- in again.
function Client:invalidate(token)
  if token ~= nil and token == self.token then
    self.token, self.refresh_at, self.expires_at = nil, 0, 0
  end
end

return M
