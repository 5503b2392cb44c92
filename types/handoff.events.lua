---@meta handoff.events
-- scripts/handoff/events.lua: a hub's inbound event taken once, and what the runtime's
-- failures mean for the hub's answer.

---@class handoff.events
local events = {}

---Applies `effect` once per `key`: remembers the key (`handoff.remember_event`) with the
---effect's changes, both durable or neither. A key seen before: false, the effect does not
---run. The effect failing (or remembering the key): the key is forgotten, so the hub's next
---delivery applies the event again. A nil key: the effect runs every time.
---@param key string?
---@param effect fun(): any, string?
---@return boolean|nil done true applied, false a duplicate
---@return string? err_or_note nil, err on failure; with true, what the effect returned after true
function events.once(key, effect) end

---Whether a failure of the runtime's calls (`handoff.customer`, `handoff.remember_event`, ...)
---passes: "overloaded", "queue full", "conversation ending" (busy), "state not writable",
---"not confirmed", "out of memory" (fault). The hub should deliver its event again later.
---@param err string
---@return boolean
function events.passing(err) end

---The status a webhook answers for the runtime failure `err`: 400 for one that is for good;
---for one that passes, `statuses` (a status the hub retries, or a table of them by kind:
---`{busy = 429, fault = 500}`).
---@param err string
---@param statuses integer|{ busy: integer, fault: integer }
---@return integer
function events.status(err, statuses) end

---Seconds the hub should wait before delivering again after the runtime failure `err`
---(1 for a conversation ending, 5 for the others), or nil for a failure that is for good.
---@param err string
---@return integer?
function events.retry_after(err) end

return events
