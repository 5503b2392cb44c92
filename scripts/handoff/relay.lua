--[[ handoff.relay - the Lua side of the runtime's relay (runtime/relay.c).

The runtime calls run() in a task of the conversation for every delivery to a hub: a
bot message or typing for the customer (front.to_user), a handoff (desk.escalate), a
customer message for the agent (desk.to_agent), the news that a conversation ended
other than by the front's word (front.conversation_end, optional: a hub without it
is not told). It decodes what the runtime stored,
calls the hub module and hands back its answer, plus the conversation's `data` table
when the call changed it (the runtime keeps it, durably, for the next call; a call that
left it alone hands back nothing, so it cannot undo what a webhook stored meanwhile with
hd.set_data).

Hub functions return:
  true                  delivered (escalate: handed over; the hub reports acceptance later)
  "accepted"            escalate only: an agent has the conversation already
  nil, err              failed for good (a 400, a refused handoff); never retried
  nil, err, true        failed for now: retried with backoff and jitter
  nil, err, seconds     failed for now: retried no sooner than that (Retry-After)
]]
local json = require "handoff.json"

local M = {}

local function decode(s)
  if s == nil then return nil end
  local v = json.decode(s)
  return v
end

--- Delivers one outbox item. module: the hub module; fn: "to_user", "to_agent",
--- "conversation_end" (arg: {id, reason}) or "escalate"; conv: {key, id, state, user, data, handoff_id, dl_conversation_id} with
--- user and data as JSON text; arg: the activity as JSON text, or for escalate the
--- handoff object (built in C from the stored event); route_json: the destination.
--- Returns ok, err, retry, data_json (nil when unchanged).
function M.run(module, fn, conv, arg, route_json)
  conv.user = decode(conv.user)
  conv.data = decode(conv.data) or {}
  local data, before = conv.data, json.encode(conv.data)
  local f = module[fn]
  if f == nil and fn == "conversation_end" then return true end
  if type(f) ~= "function" then return nil, "the hub module has no " .. fn .. "()" end
  local ok, err, retry
  if fn == "escalate" then
    ok, err, retry = f(conv, arg, decode(route_json))
  else
    local activity, jerr = json.decode(arg)
    if not activity then return nil, "bad activity: " .. tostring(jerr) end
    ok, err, retry = f(conv, activity)
  end
  -- The same table encodes the same way twice: a different text means a change.
  local after = json.encode(conv.data)
  return ok, err, retry, (conv.data ~= data or after ~= before) and after or nil
end

return M
