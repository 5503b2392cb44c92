--[[ handoff.signature - checks of signed webhooks, shared by the hub scripts.

  local sig = require "handoff.signature"
  sig.hmac_ok(secret, data, given, { alg = "sha256", enc = "hex", prefix = "sha256=" })
  sig.fresh(timestamp, 300)      -- a timestamp (seconds, or ms when > 1e12) within the window
  sig.url_and_params(url, pairs) -- what Twilio signs: the URL, then every name..value sorted

Comparisons run in constant time; a missing or malformed value is simply not ok.
]]
local crypto = require "handoff.crypto"
local time = require "handoff.time"

local M = {}

--- Whether GIVEN is the HMAC of DATA under SECRET (opts: alg "sha256", enc "hex",
--- prefix "" stripped from GIVEN first).
function M.hmac_ok(secret, data, given, opts)
  opts = opts or {}
  if type(secret) ~= "string" or type(data) ~= "string" or type(given) ~= "string" then return false end
  local prefix = opts.prefix or ""
  if given:sub(1, #prefix) ~= prefix then return false end
  local want = crypto.hmac(opts.alg or "sha256", secret, data, opts.enc or "hex")
  return crypto.compare(given:sub(#prefix + 1), want)
end

--- Whether TIMESTAMP (unix seconds, or milliseconds) is within WINDOW seconds of now.
function M.fresh(timestamp, window)
  local t = tonumber(timestamp)
  if not t then return false end
  if t > 1e12 then t = t / 1000 end
  return math.abs(time.now() - t) <= (window or 300)
end

--- The text Twilio-style webhook signatures cover: URL followed by every form parameter
--- as name..value, sorted by name (then value, for a repeated name). PAIRS: {name, value}.
function M.url_and_params(url, pairs_list)
  local sorted = {}
  for i, kv in ipairs(pairs_list) do sorted[i] = kv end
  table.sort(sorted, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
  local parts = { url }
  for _, kv in ipairs(sorted) do parts[#parts + 1] = kv[1] .. kv[2] end
  return table.concat(parts)
end

return M
