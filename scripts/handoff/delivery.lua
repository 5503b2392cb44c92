--[[ handoff.delivery - what a hub's HTTP answer means for the runtime's retry policy.

Hub functions (to_user, escalate, to_agent) return `true`, or `nil, err` (failed for good:
never retried), or `nil, err, retry` where retry is `true` (retry with backoff and jitter)
or a number of seconds (the hub's Retry-After). This module turns an http.request result
into that shape, the same way for every hub:
  no answer (timeout, refused, reset)  -> nil, reason, true
  2xx                                  -> res
  408, 429, 5xx                        -> nil, "HTTP <status>", Retry-After or true
  any other status                     -> nil, "HTTP <status>: <start of the body>"
`told_end` is the same for a hub's conversation_end, where a final failure is dropped.
]]
local log = require "handoff.log"

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

--- What a hub's conversation_end returns for the result RES, ERR, RETRY of its call: the
--- conversation is ending whatever the hub answers, so a transient failure is retried and
--- a final one (the conversation deleted or closed already, a refused token) is logged as
--- HUB.end_refused and dropped.
function M.told_end(hub, conv, event, res, err, retry)
  if res then return true end
  if retry then return nil, err, retry end
  log.warn(hub .. ".end_refused", { conv = conv.id, reason = event.reason, error = err })
  return true
end

--- Runs the steps of a handoff ({name, fn} in order; a false fn is skipped) once per
--- handoff: the steps that succeeded are kept in conv.data, so a retry after a failed step
--- starts at that step (no second note). Returns true, or nil, "<name>: err", retry.
function M.steps(conv, steps)
  if conv.data.handoff ~= conv.handoff_id then conv.data.handoff, conv.data.done = conv.handoff_id, {} end
  local done = conv.data.done
  for _, s in ipairs(steps) do
    if s[2] and not done[s[1]] then
      local res, err, retry = s[2]()
      if not res then return nil, s[1] .. ": " .. tostring(err), retry end
      done[s[1]] = true
    end
  end
  return true
end

return M
