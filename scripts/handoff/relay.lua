--[[ handoff.relay - the Lua side of the runtime's relay (runtime/script/desk.c).

The runtime calls run() in a task of the conversation for every delivery to a hub: a
bot message or typing for the customer (front.to_user), a customer message for the
agent (desk.to_agent), the news that a conversation ended other than by the front's
word (front.conversation_end, optional: a hub without it is not told). A handoff is one
task too, escalate(): the routing rules and then desk.escalate, on one handoff object.
Each decodes what the runtime stored, calls the hub module and hands back its answer,
plus the conversation's `data` when the call changed it (the runtime keeps it, durably,
for the next call). conv.data is decoded once per call; a copy of it taken before the
call tells what the call changed, without encoding anything.

A call may wait on the network, and a webhook may store data with hd.set_data meanwhile
(an agent who joined, say). So what goes back is not the call's copy but the data as it
is NOW with what the call changed put onto it, key by key: each top-level key the call
set, changed or removed (relative to the data it started with) takes the call's value;
every other key keeps what is stored now. A call that changed nothing hands back nothing.
(When nothing else changed the stored data meanwhile, that is the call's own table.)

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

-- A deep copy of V: what the data was before the call, to compare with afterwards.
local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

-- Whether A and B hold the same JSON value (tables member by member).
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

-- conv.user is the same JSON text on every call of a conversation: it is decoded once
-- and every call gets a copy of its own (a hub may change what it got). A full cache is
-- dropped as a whole, so it stays small however many conversations come and go.
local USERS_MAX = 1024
local users, nusers = {}, 0

local function decode_user(text)
  if text == nil then return nil end
  local v = users[text]
  if v == nil then
    v = decode(text)
    if v == nil then return nil end
    if nusers >= USERS_MAX then users, nusers = {}, 0 end
    users[text], nusers = v, nusers + 1
  end
  return copy(v)
end

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

-- The conversation's data as stored now with DIFF put onto it, as JSON. TEXT is what was
-- stored when the call began; stored(id) reads what is stored now (nil: the conversation
-- is gone). No yield between this and the runtime storing the result.
local function settled(conv, text, before, diff, stored)
  local now = stored(conv.id)
  if now == nil or now == text then return json.encode(conv.data) end
  local data = decode(now)
  if type(data) ~= "table" then data = before end
  for k, v in pairs(diff) do
    if v == REMOVED then data[k] = nil else data[k] = v end
  end
  return json.encode(data)
end

-- Calls module[fn](conv, ...) and returns ok, err, retry, data_json (nil when the call
-- changed nothing).
local function call(module, fn, conv, stored, ...)
  local f = module[fn]
  if type(f) ~= "function" then return nil, "the hub module has no " .. fn .. "()" end
  local text = conv.data
  conv.user = decode_user(conv.user)
  conv.data = decode(text) or {}
  local before = text == nil and {} or copy(conv.data)
  local ok, err, retry = f(conv, ...)
  local diff = type(conv.data) == "table" and changes(before, conv.data)
  return ok, err, retry, diff and settled(conv, text, before, diff, stored) or nil
end

--- The destination of handoff H: settle (C) turns what the rules answered (pcall's
--- results, or nothing when there are no rules) into the destination table, the
--- configured fallback when they did not decide.
function M.route(h, rules, evaluate, settle)
  if rules == nil then return settle() end
  return settle(pcall(evaluate, rules, h))
end

--- Delivers one outbox item. module: the hub module; fn: "to_user", "to_agent" or
--- "conversation_end" (arg: {id, reason}); conv: {key, id, state, user, data,
--- handoff_id, dl_conversation_id} with user and data as JSON text; arg: the activity
--- or event, decoded by the runtime already (the table cjson would make) or as JSON
--- text; stored(id): the conversation's data as stored now.
--- Returns ok, err, retry, data_json (nil when the call changed nothing).
function M.run(module, fn, conv, arg, stored)
  if module[fn] == nil and fn == "conversation_end" then return true end
  if type(module[fn]) ~= "function" then return nil, "the hub module has no " .. fn .. "()" end
  local activity, jerr = arg, nil
  if type(arg) == "string" then activity, jerr = json.decode(arg) end
  if not activity then return nil, "bad activity: " .. tostring(jerr) end
  return call(module, fn, conv, stored, activity)
end

--- The handoff: the routing rules on handoff object H (unless ROUTE is the destination
--- decided already: a retry), then module.escalate(conv, h, route). Returns as run().
function M.escalate(module, conv, h, route, stored, rules, evaluate, settle)
  if route == nil then route = M.route(h, rules, evaluate, settle) end
  return call(module, "escalate", conv, stored, h, route)
end

return M
