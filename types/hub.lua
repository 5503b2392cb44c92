---@meta
-- The shapes the runtime passes to scripts: the handoff object, the rules' destination,
-- the route a hub's escalate gets, a webhook request, and the hub module interface.
-- Annotate a hub module with `---@type handoff.Hub` on its table and a routes file's
-- function with `---@param h handoff.Handoff` `---@return handoff.Destination`.

---One transcript entry (DESIGN.md "Handoff object").
---@class handoff.TranscriptEntry
---@field id? string
---@field type string "message", "event", "typing", ...
---@field role "user"|"bot"|string
---@field name? string
---@field text? string
---@field timestamp? string ISO 8601

---The handoff.initiate event's value, under friendly names.
---@class handoff.Context
---@field scope? string
---@field last_topic? string
---@field topics? string[]
---@field last_phrase? string
---@field phrases? string[]
---@field agent_message? string the "Transfer to agent" node's message for the agent
---@field bot_id? string
---@field bot_name? string
---@field language? string e.g. "en-US"
---@field conversation_id? string
---@field vars table<string, any> every variable exactly as sent: va_*, Global.*, ...

---The raw JSON of the payload, on demand.
---@class handoff.Raw
local Raw = {}
---@return string json the handoff.initiate activity
function Raw:activity() end
---@return string|nil json the transcript attachment's content
function Raw:transcript() end
---@param i integer
---@return string|nil json the transcript's I-th activity
function Raw:entry(i) end
---@return string|nil json the event's value
function Raw:context() end

---The handoff object routing rules and `escalate` receive. Fields are built when first
---read; `pairs(h)` lists them all.
---@class handoff.Handoff
---@field context handoff.Context
---@field transcript handoff.TranscriptEntry[]
---@field user? { id: string, name?: string }
---@field bot? { id: string, name?: string }
---@field activity_id? string
---@field conversation_id? string
---@field reason? string the agent message
---@field raw handoff.Raw

---Where a handed-off conversation goes: what a rule or a rules function returns.
---@class handoff.Destination
---@field queue string
---@field skill? string
---@field priority? number
---@field agent? string
---@field reason? string

---The decision a hub's `escalate` gets: the destination plus how it was reached.
---@class handoff.Route: handoff.Destination
---@field fallback boolean true when the rules failed or matched nothing (config `fallback`)
---@field rule integer the index of the list rule that matched (see `handoffd route`)
---@field why? string with fallback: the reason

---An inbound request to a hub's webhook.
---@class handoff.Request
---@field method string
---@field path string
---@field query table<string, string>
---@field headers table<string, string> names in lowercase
---@field body string
---@field peer string the client's address

---A webhook handler: returns status, body (a string, or a table sent as JSON) and headers.
---@alias handoff.Webhook fun(req: handoff.Request): integer?, (string|table)?, table<string, string>?

---What the hub functions return: true (escalate may return "accepted"), nil and err
---(failed for good), or nil, err and true or seconds (retried).
---@alias handoff.HubResult true|"accepted"|nil

---A hub module (README "Hubs"): the runtime calls these.
---@class handoff.Hub
---@field webhooks? table<string, handoff.Webhook> keys like "POST /hubs/myhub/events"
local Hub = {}

---On every (re)load with the config's hub table; raising rejects the reload.
---@param settings table
function Hub.init(settings) end

---The bot said something: deliver it to the customer.
---@param conv handoff.Conversation
---@param activity handoff.Activity
---@return handoff.HubResult ok
---@return string? err
---@return (boolean|number)? retry
function Hub.to_user(conv, activity) end

---Hand the conversation to a human.
---@param conv handoff.Conversation
---@param h handoff.Handoff
---@param route handoff.Route
---@return handoff.HubResult ok
---@return string? err
---@return (boolean|number)? retry
function Hub.escalate(conv, h, route) end

---Desk-only hubs: relay a customer message to the agent.
---@param conv handoff.Conversation
---@param activity handoff.Activity
---@return handoff.HubResult ok
---@return string? err
---@return (boolean|number)? retry
function Hub.to_agent(conv, activity) end

---What `conversation_end` hears: the end's id (the same on every retry) and why it ended.
---@class handoff.EndEvent
---@field id string
---@field reason "bot"|"idle"|"directline"|"handoff"|"hub" "hub": the front ended it (told to a desk only)

---Optional: the conversation ended other than by this hub's word (README "Conversation
---lifecycle"); close it on the hub's side. A final failure is best logged and dropped
---(handoff.delivery.told_end): the conversation is ending anyway.
---@param conv handoff.Conversation
---@param event handoff.EndEvent
---@return handoff.HubResult ok
---@return string? err
---@return (boolean|number)? retry
function Hub.conversation_end(conv, event) end
