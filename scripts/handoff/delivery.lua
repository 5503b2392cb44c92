--[[ handoff.delivery - what a hub's HTTP answer means for the runtime's retry policy.

Hub functions (to_user, escalate, to_agent) return `true`, or `nil, err` (failed for good:
never retried), or `nil, err, retry` where retry is `true` (retry with backoff and jitter)
or a number of seconds (the hub's Retry-After). This module turns an http.request result
into that shape, the same way for every hub:
  no answer (timeout, refused, reset)  -> nil, reason, true
  2xx                                  -> res
  408, 429, 5xx                        -> nil, "HTTP <status>", Retry-After or true
  any other status                     -> nil, "HTTP <status>: <start of the body>"
]]
local M = {}

local RETRIED = { [408] = true, [429] = true }

--- Retry-After as seconds: a number, or an HTTP date, or nil.
function M.retry_after(value)
  if type(value) ~= "string" then return nil end
  local n = tonumber(value)
  if n then return math.max(0, n) end
  return nil                      -- HTTP dates: let the backoff decide
end

--- res, err (from http.request) -> res | nil, err, retry
function M.result(res, err)
  if not res then return nil, err, true end
  if res.status >= 200 and res.status < 300 then return res end
  local why = "HTTP " .. res.status
  if res.status >= 500 or RETRIED[res.status] then
    return nil, why, M.retry_after(res.headers["retry-after"]) or true
  end
  local body = type(res.body) == "string" and res.body:sub(1, 200):gsub("%s+", " ") or ""
  return nil, body ~= "" and (why .. ": " .. body) or why
end

return M
