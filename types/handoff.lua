---@meta handoff
-- LuaLS definitions of the `handoff` module (runtime/script/bindings/handoff.c): the calls a hub
-- script makes into the runtime. ID is always the front hub's conversation id. Calls
-- that change something return true once the change is durable, or nil and a short
-- reason: "overloaded", "queue full", "conversation ending", "unknown conversation",
-- "not with an agent" (handoff.agent only), "bad activity", "bad id", "state not writable",
-- "not confirmed" (a PostgreSQL state could not commit in time: the change stays and is
-- written later; do not undo it), "out of memory". Which of them pass (the hub should deliver its event again):
-- handoff.events.passing.

---A Bot Framework activity as a plain table (https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-api-reference#activity-object).
---@class handoff.Activity
---@field type "message"|"event"|"typing"|string
---@field id? string
---@field text? string
---@field name? string event name, e.g. "handoff.initiate"
---@field value? any
---@field locale? string
---@field timestamp? string
---@field from? { id: string, name?: string, role?: string }
---@field attachments? table[]
---@field channelData? table
---@field [string] any

---The customer as the front knows them.
---@class handoff.User
---@field id string
---@field name? string
---@field [string] any

---A conversation as hub functions and `handoff.conversation` see it.
---@class handoff.Conversation
---@field key string "<hub>:<id>", the state's key
---@field id string the front hub's conversation id
---@field state "bot"|"routing"|"agent"|"closed"|string
---@field user? handoff.User
---@field data table what the hub stored with `handoff.set_data` ({} until then)
---@field handoff_id? string the current handoff's id, once there is one
---@field dl_conversation_id? string the Direct Line conversation

---@class handoff
---@field version string handoffd's version, e.g. "0.1.0"
---@field log handoff.log the same table as require "handoff.log"
local handoff = {}

---A customer message arrived at the front: the runtime sends it to the bot or, while an
---agent has the conversation, to the desk. Opens the conversation when it is new.
---@param id string
---@param activity handoff.Activity
---@param user? handoff.User
---@return true|nil ok
---@return string? err
function handoff.customer(id, activity, user) end

---Straight to the bot, whatever the conversation's state.
---@param id string
---@param activity handoff.Activity
---@return true|nil ok
---@return string? err
function handoff.to_bot(id, activity) end

---An agent message arrived at the desk: the runtime sends it to the front (`to_user`).
---Only while the desk has the conversation (state "routing" or "agent"): otherwise nil,
---"not with an agent" and nothing is sent (a late message after the handoff ended), so
---a hub need not check the state itself; an ending or unknown one is "unknown conversation".
---@param id string
---@param activity handoff.Activity
---@return true|nil ok
---@return string? err
function handoff.agent(id, activity) end

---The desk reports how the handoff went; "completed" gives the conversation back to the bot.
---@param id string
---@param state "accepted"|"failed"|"completed"
---@param detail? table sent to the bot with the handoff.status event
---@return true|nil ok
---@return string? err
function handoff.handoff_event(id, state, detail) end

---The front closed the conversation. True and "not open" when there was nothing open to
---end (ended already, ending, or never seen): nothing changed.
---@param id string
---@return true|nil ok
---@return string? err_or_note nil, err on failure; "not open" with true
function handoff.end_conversation(id) end

---Dedupe of inbound hub events: true the first time EVENT_ID is seen, false after.
---`handoff.events.once` pairs it with the effect and `forget_event`. With a PostgreSQL
---state the database answers: the calling task waits for it (a script-made coroutine gets
---nil, "state not writable").
---@param event_id string
---@return boolean|nil first
---@return string? err
function handoff.remember_event(event_id) end

---Undoes `remember_event` when the event's effect failed, so a redelivery is processed.
---@param event_id string
---@return true|nil ok
---@return string? err
function handoff.forget_event(event_id) end

---The conversation, or nil when there is none.
---@param id string
---@return handoff.Conversation?
function handoff.conversation(id) end

---Open conversations, all hubs together.
---@return integer
function handoff.conversations() end

---Replaces `conv.data`, what later hub calls for this conversation get.
---@param id string
---@param data table
---@return true|nil ok
---@return string? err
function handoff.set_data(id, data) end

return handoff
