--[[ handoff.events - a hub's inbound event, taken once, and what the runtime's failures mean.

Hubs send an event again when they got no answer or one they retry, so a webhook answers
once the event's effect is durable and takes each event once:

  local done, note = events.once(key, effect)
    true, note  the effect ran and is durable (with the key: both, or neither); NOTE is
                what it returned after true (hd.end_conversation's "not open")
    false       the key was seen before (a duplicate): the effect did not run
    nil, err    remembering the key failed, or the effect did: the key is forgotten, so the
                hub's next delivery applies the event again; except "not confirmed" (a
                PostgreSQL state could not commit in time): the effect and the key stay and
                are written once the database is back, so the retry finds the key

EFFECT is a function returning true, or nil, err (the runtime's calls: hd.customer,
hd.handoff_event, ...). A runtime call that fails changed nothing; an effect of several
calls puts those that are harmless to run again (hd.set_data, accepting a handoff) before
the last one, so a retry after a failure repeats nothing that matters. A nil KEY takes no
part in dedupe: the effect runs every time.

The runtime's failures that pass (the hub should deliver its event again) are `busy` (handoffd
cannot take it now) or a `fault` of handoffd's own; any other ("bad activity", "unknown
conversation", "not with an agent", ...) is for good. `status` turns one into the hub's
answer, `retry_after` into seconds to wait.
]]
local hd = require "handoff"

local M = {}

-- A conversation ending drains in a moment; a full daemon or queue frees up more slowly.
local TRANSIENT = {
  overloaded = { kind = "busy", after_s = 5 },
  ["queue full"] = { kind = "busy", after_s = 5 },
  ["conversation ending"] = { kind = "busy", after_s = 1 },
  ["state not writable"] = { kind = "fault", after_s = 5 },
  ["not confirmed"] = { kind = "fault", after_s = 5 },
  ["out of memory"] = { kind = "fault", after_s = 5 },
}

--- Whether the runtime failure ERR passes (the hub should deliver the event again).
function M.passing(err)
  return TRANSIENT[err] ~= nil
end

--- The status a webhook answers for the runtime failure ERR: 400 for one that is for good;
--- for one that passes STATUSES, a status the hub retries or a table of them by kind
--- ({busy = 429, fault = 500}).
function M.status(err, statuses)
  local t = TRANSIENT[err]
  if not t then return 400 end
  return type(statuses) == "table" and statuses[t.kind] or statuses
end

--- Seconds the hub should wait before it delivers again after the runtime failure ERR.
function M.retry_after(err)
  local t = TRANSIENT[err]
  return t and t.after_s or nil
end

--- Applies EFFECT once per KEY (see the header): true and the effect's note, false (a
--- duplicate), or nil, err.
function M.once(key, effect)
  if key ~= nil then
    local fresh, err = hd.remember_event(key)
    if fresh == nil then return nil, err end
    if not fresh then return false end
  end
  local ok, err = effect()
  if ok then return true, err end
  if key ~= nil and err ~= "not confirmed" then hd.forget_event(key) end
  return nil, err
end

return M
