---@meta handoff.delivery
-- scripts/handoff/delivery.lua: what a hub's HTTP answer means for the retry policy.

---@class handoff.delivery
local delivery = {}

---Retry-After as seconds, or nil (an HTTP date: the backoff decides).
---@param value string?
---@return number?
function delivery.retry_after(value) end

---http.request's res, err as a hub result: 2xx -> res; no answer, 408, 429, 5xx -> nil,
---err, Retry-After or true; any other status -> nil, "HTTP <status>: <start of the body>".
---@param res handoff.http.Response?
---@param err string?
---@return handoff.http.Response|nil res
---@return string? err
---@return (boolean|number)? retry
function delivery.result(res, err) end

---A hub's conversation_end result from its call's RES, ERR, RETRY: true on success; a
---transient failure retried; a final one logged as HUB.end_refused and dropped (true).
---@param hub string the log event's prefix, e.g. "chatwoot"
---@param conv handoff.Conversation
---@param event handoff.EndEvent
---@param res any
---@param err string?
---@param retry (boolean|number)?
---@return true|nil ok
---@return string? err
---@return (boolean|number)? retry
function delivery.told_end(hub, conv, event, res, err, retry) end

---Runs the {name, fn} steps of a handoff once: the steps that succeeded are kept in
---conv.data, so a retry starts at the failed step. A false fn is skipped.
---@param conv handoff.Conversation
---@param steps { [1]: string, [2]: (fun(): any, string?, (boolean|number)?)|false }[]
---@return true|nil ok
---@return string? err "<name>: <err>"
---@return (boolean|number)? retry
function delivery.steps(conv, steps) end

return delivery
