--[[ handoff.relay - the Lua side of the runtime's relay (runtime/relay/relay.c).

The runtime calls run() in a task of the conversation for every delivery to a hub: a
bot message or typing for the customer (front.to_user), a handoff (desk.escalate), a
customer message for the agent (desk.to_agent), the news that a conversation ended
other than by the front's word (front.conversation_end, optional: a hub without it
is not told). It decodes what the runtime stored, calls the hub module and hands back
its answer, plus the conversation's `data` when the call changed it (the runtime keeps
it, durably, for the next call).

A call may wait on the network, and a webhook may store data with hd.set_data meanwhile
(an agent who joined, say). So what goes back is not the call's copy but the data as it
is NOW with what the call changed put onto it, key by key: each top-level key the call
set, changed or removed (relative to the data it started with) takes the call's value;
every other key keeps what is stored now. A call that changed nothing hands back nothing.

Hub functions return:
  true                  delivered (escalate: handed over; the hub reports acceptance later)
  "accepted"            escalate only: an agent has the conversation already
  nil, err              failed for good (a 400, a refused handoff); never retried
  nil, err, true        failed for now: retried with backoff and jitter
  nil, err, seconds     failed for now: retried no sooner than that (Retry-After)
]]
local hd = require "handoff"
local json = require "handoff.json"

local M = {}

local function decode(s)
  if s == nil then return nil end
  local v = json.decode(s)
  return v
end

-- Whether A and B hold the same JSON value (tables member by member: two equal tables
-- may encode in different key orders).
local function same(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local REMOVED = {}

-- The keys DATA set, changed or removed relative to BEFORE: { key = value or REMOVED },
-- or nil when there are none.
local function changes(before, data)
  local diff
  for k, v in pairs(data) do
    if not same(v, before[k]) then diff = diff or {}; diff[k] = v end
  end
  for k in pairs(before) do
    if data[k] == nil then diff = diff or {}; diff[k] = REMOVED end
  end
  return diff
end

-- The conversation's data as stored now (a webhook may have changed it during the call)
-- with DIFF put onto it. No yield between this and the runtime storing the result.
local function settled(conv, before, diff)
  local now = hd.conversation(conv.id)
  local data = now and type(now.data) == "table" and now.data or before
  for k, v in pairs(diff) do
    if v == REMOVED then data[k] = nil else data[k] = v end
  end
  return json.encode(data)
end

--- Delivers one outbox item. module: the hub module; fn: "to_user", "to_agent",
--- "conversation_end" (arg: {id, reason}) or "escalate"; conv: {key, id, state, user, data,
--- handoff_id, dl_conversation_id} with
--- user and data as JSON text; arg: the activity as JSON text, or for escalate the
--- handoff object (built in C from the stored event); route_json: the destination.
--- Returns ok, err, retry, data_json (nil when the call changed nothing).
function M.run(module, fn, conv, arg, route_json)
  local before = decode(conv.data) or {}
  conv.user = decode(conv.user)
  conv.data = decode(conv.data) or {}
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
  local diff = type(conv.data) == "table" and changes(before, conv.data)
  return ok, err, retry, diff and settled(conv, before, diff) or nil
end

return M
