--[[ hubs.chatwoot - Chatwoot as the front and the desk, through an Agent Bot (model A).

handoffd is the Agent Bot of one or more inboxes: Chatwoot POSTs the bot's events to
/hubs/chatwoot/events, conversations start `pending` (the bot's), and a handoff gives the
conversation to the humans. Configure it with

  hub = { module = "hubs.chatwoot", url = "https://chat.example.com", account_id = 1,
          token = os.getenv("CHATWOOT_BOT_TOKEN"),     -- the Agent Bot's access token
          secret = os.getenv("CHATWOOT_BOT_SECRET"),   -- its webhook secret (Chatwoot 2026+)
          teams = { orders = 3, vip = 4 },             -- route.queue -> team id
          agents = { sam = 12 } }                      -- route.agent -> user id (digits work too)

Chatwoot -> handoffd (each answered in milliseconds: a customer message is answered once
it is durable, the bot is reached afterwards through the outbox; Chatwoot gives up after 5 s
and then opens a pending conversation itself):
  - with a secret, X-Chatwoot-Signature must be sha256=<hex HMAC-SHA256(secret, ts "." body)>
    and X-Chatwoot-Timestamp within 300 s, else 401. X-Chatwoot-Delivery (kept across
    Chatwoot's retries) and the message id make a replayed event a no-op.
  - message_created, incoming, not private, conversation `pending`: to the bot. Everything
    else (the bot's own echoes, private notes, agents' replies, messages once the
    conversation is open) never reaches the bot; a human's public reply marks the handoff accepted.
  - message_updated with content_attributes.submitted_values (a choice from the bot's
    input_select): the chosen value goes to the bot as the customer's message.
  - conversation_status_changed / conversation_opened / conversation_resolved:
      pending  while an agent has it -> handoff completed, back to the bot
      resolved while an agent has it -> handoff completed, conversation closed
      resolved while the bot has it  -> endOfConversation to the bot
      open     while the bot has it  -> a human took over: handoff accepted
  - conversation_updated with an agent assigned while the handoff waits: handoff accepted.
handoffd -> Chatwoot ({url}/api/v1/accounts/{account_id}/conversations/{id}/..., header
api_access_token): messages (outgoing), toggle_typing_status (best effort), and on a handoff:
a private note with the transcript, custom_attributes from the context (best effort: older
Chatwoot refuses a bot token there), assignments (team, then agent), toggle_status open.
When the conversation ends without Chatwoot's word (the bot ended it, limits.idle_timeout,
the bot's conversation gone), toggle_status resolved (conversation_end), so it does not stay
pending or open in the inbox; an end Chatwoot decided itself (resolved) is not told back.
Retried on network errors, 429 and 5xx. Events of another account are ignored; the account
is `account.id`, or the embedded last message's account_id on conversation events of
Chatwoot before June 2026 (no `account`), and an event naming none is taken as ours.
]]
local hd = require "handoff"
local http = require "handoff.http"
local json = require "handoff.json"
local log = require "handoff.log"
local delivery = require "handoff.delivery"
local events = require "handoff.events"
local signature = require "handoff.signature"
local transcript = require "handoff.transcript"
local context = require "handoff.context"

local M = {}

local MAX_SKEW_S = 300
local ATTRIBUTE_TRIES = 3          -- transient failures of the custom_attributes step before it is skipped

local conf                                -- set by init; a reload builds a fresh one

-- {[name] = positive integer id}; raises with the setting's name otherwise.
local function id_map(t, what)
  local out = {}
  assert(t == nil or type(t) == "table", "hubs.chatwoot: " .. what .. " must be a table of name = id")
  for k, v in pairs(t or {}) do
    local n = math.tointeger(tonumber(v))
    assert(type(k) == "string" and n and n > 0,
           "hubs.chatwoot: " .. what .. "." .. tostring(k) .. " must be a positive integer id")
    out[k] = n
  end
  return out
end

--- Checks the settings; raising rejects the (re)load.
function M.init(settings)
  local account = math.tointeger(tonumber(settings.account_id))
  assert(type(settings.url) == "string" and settings.url:match("^https?://"),
         "hubs.chatwoot: url is required (http:// or https://)")
  assert(account and account > 0, "hubs.chatwoot: account_id is required (a positive integer)")
  assert(type(settings.token) == "string" and settings.token ~= "",
         "hubs.chatwoot: token is required (the Agent Bot's access token)")
  assert(settings.secret == nil or (type(settings.secret) == "string" and settings.secret ~= ""),
         "hubs.chatwoot: secret must be a non-empty string")
  conf = { url = settings.url:gsub("/+$", ""), account_id = account, token = settings.token,
           secret = settings.secret, teams = id_map(settings.teams, "teams"),
           agents = id_map(settings.agents, "agents"),
           attribute_prefix = settings.attribute_prefix or "handoff_",
           transcript_bytes = settings.transcript_bytes or 16000,
           timeout_ms = settings.timeout_ms or 10000, ca_file = settings.ca_file }
  if not conf.secret then
    log.warn("chatwoot.unsigned", { note = "no secret configured: webhooks are accepted unverified" })
  end
end

-- ---- handoffd -> Chatwoot ------------------------------------------------------------

--- POSTs PAYLOAD to the conversation's PATH. Returns the response, or nil, err, retry.
local function api(conv_id, path, payload)
  if not tostring(conv_id):match("^%d+$") then return nil, "not a Chatwoot conversation id: " .. tostring(conv_id) end
  local url = ("%s/api/v1/accounts/%d/conversations/%s/%s"):format(conf.url, conf.account_id, conv_id, path)
  return delivery.result(http.request(url, {
    method = "POST", body = json.encode(payload), timeout_ms = conf.timeout_ms, ca_file = conf.ca_file,
    headers = { ["Content-Type"] = "application/json", ["api_access_token"] = conf.token },
  }))
end

local function str(v) return type(v) == "string" and v ~= "" and v or nil end

-- The bot's suggested actions as input_select items {title, value}.
local function choices(activity)
  local items = {}
  local sa = type(activity.suggestedActions) == "table" and activity.suggestedActions.actions
  for _, a in ipairs(type(sa) == "table" and sa or {}) do
    local value = str(a.value) or str(a.text) or str(a.title)
    if value and a.type ~= "openUrl" then items[#items + 1] = { title = str(a.title) or value, value = value } end
  end
  return items
end

-- A hero card as a Chatwoot card {title, description, media_url, actions}; Chatwoot
-- refuses cards without actions, so those come back as markdown instead.
local function card(c)
  local actions = {}
  for _, b in ipairs(type(c.buttons) == "table" and c.buttons or {}) do
    local text, value = str(b.title) or str(b.value), str(b.value) or str(b.title)
    if text and b.type == "openUrl" then
      actions[#actions + 1] = { type = "link", text = text, uri = value }
    elseif text then
      actions[#actions + 1] = { type = "postback", text = text, payload = value }
    end
  end
  local image = type(c.images) == "table" and type(c.images[1]) == "table" and str(c.images[1].url) or nil
  local item = { title = str(c.title), description = str(c.text) or str(c.subtitle), media_url = image }
  if #actions > 0 then
    item.actions = actions
    return item
  end
  local lines = {}
  for _, l in ipairs({ item.title and ("**" .. item.title .. "**") or false, item.description or false,
                       image and ("![](" .. image .. ")") or false }) do
    if l then lines[#lines + 1] = l end
  end
  return nil, table.concat(lines, "\n")
end

-- Hero cards become Chatwoot cards; files and images become links under the text.
local function attachments(activity)
  local cards, links = {}, {}
  for _, a in ipairs(type(activity.attachments) == "table" and activity.attachments or {}) do
    if a.contentType == "application/vnd.microsoft.card.hero" and type(a.content) == "table" then
      local item, text = card(a.content)
      if item then cards[#cards + 1] = item elseif text ~= "" then links[#links + 1] = text end
    elseif str(a.contentUrl) then
      links[#links + 1] = ("[%s](%s)"):format(str(a.name) or a.contentUrl, a.contentUrl)
    end
  end
  return cards, links
end

--- The Chatwoot message for a bot activity, or nil when it has nothing to show.
local function message_of(activity)
  local cards, links = attachments(activity)
  local parts = { str(activity.text) }
  for _, l in ipairs(links) do parts[#parts + 1] = l end
  local msg = { content = table.concat(parts, "\n\n"), message_type = "outgoing", private = false,
                content_type = "text" }
  local items = choices(activity)
  if #cards > 0 then
    msg.content_type, msg.content_attributes = "cards", { items = cards }
  elseif #items > 0 then
    msg.content_type, msg.content_attributes = "input_select", { items = items }
  elseif msg.content == "" then
    return nil
  end
  return msg
end

--- The bot said something: a message (outgoing, public) or typing (best effort).
function M.to_user(conv, activity)
  if activity.type == "typing" then
    api(conv.id, "toggle_typing_status", { typing_status = "on" })
    return true
  end
  local msg = activity.type == "message" and message_of(activity)
  if not msg then return true end
  local res, err, retry = api(conv.id, "messages", msg)
  if not res then return nil, err, retry end
  return true
end

-- What the agent reads first: who asked, where it was routed, then the conversation.
local function note_of(conv, h, route, team)
  local head = context.summary(h, route, conv.user, { queue_suffix = not team and " (no team mapped)" or nil })
  table.insert(head, 1, "**Handed over by the bot**")
  local names = conv.user and conv.user.name and { user = conv.user.name } or nil
  local text = transcript.text(h, { max_bytes = conf.transcript_bytes, names = names })
  return table.concat(head, "\n") .. "\n\n**Transcript**\n" .. (text ~= "" and text or "(no messages)")
end

-- Chatwoot attribute keys are snake_case identifiers (that is what its settings page
-- creates), so "handoff_var.Global.CustomerTier" becomes "handoff_var_global_customertier".
local function attributes_of(h, route)
  return (context.snake(h, route, { prefix = conf.attribute_prefix }))
end

local function assignee_of(agent)
  if agent == nil then return nil end
  return conf.agents[agent] or (tostring(agent):match("^%d+$") and math.tointeger(tonumber(agent))) or nil
end

-- Best effort: Chatwoot before mid-2025 answers 401 to a bot token here (#11447). A refusal,
-- or ATTRIBUTE_TRIES transient failures in a handoff, skip the step (logged).
local function set_attributes(conv, h, route)
  local res, err, retry = api(conv.id, "custom_attributes", { custom_attributes = attributes_of(h, route), merge = true })
  if res then return res end
  local done = conv.data.done             -- the handoff's steps (handoff.delivery.steps)
  if retry and (done.attribute_tries or 0) < ATTRIBUTE_TRIES then
    done.attribute_tries = (done.attribute_tries or 0) + 1
    return nil, err, retry
  end
  log.warn("chatwoot.attributes_skipped", { conv = conv.id, error = err })
  return true
end

--- Hands the conversation to the humans: private note with the transcript, custom
--- attributes (best effort, see set_attributes), team then agent, status open. Steps done
--- are kept in conv.data, so a retry after a 429/5xx does not post the note twice.
--- "accepted" when a named agent got it, else true (the first human reply, or an
--- assignment, reports acceptance).
function M.escalate(conv, h, route)
  local team, agent = conf.teams[route.queue], assignee_of(route.agent)
  local ok, err, retry = delivery.steps(conv, {
    { "note", function()
      return api(conv.id, "messages", { content = note_of(conv, h, route, team), message_type = "outgoing",
                                        private = true })
    end },
    { "attributes", function() return set_attributes(conv, h, route) end },
    { "team", team and function() return api(conv.id, "assignments", { team_id = team }) end },
    { "agent", agent and function() return api(conv.id, "assignments", { assignee_id = agent }) end },
    { "open", function() return api(conv.id, "toggle_status", { status = "open" }) end },
  })
  if not ok then return nil, err, retry end
  if route.agent and not agent then log.warn("chatwoot.unknown_agent", { conv = conv.id, agent = route.agent }) end
  if not team then log.warn("chatwoot.unmapped_queue", { conv = conv.id, queue = route.queue }) end
  return agent and "accepted" or true
end

--- The conversation ended without Chatwoot's word (event.reason: bot, idle, directline,
--- or handoff when Chatwoot is the front of another desk): resolve it, so it leaves the
--- pending and open lists. Chatwoot's own resolve is never told back (the runtime calls
--- this only for ends it did not hear from Chatwoot), and the conversation_status_changed
--- our resolve causes finds the conversation ending or gone: nothing to do. A 404 (the
--- conversation was deleted) is logged and dropped.
function M.conversation_end(conv, event)
  return delivery.told_end("chatwoot", conv, event, api(conv.id, "toggle_status", { status = "resolved" }))
end

-- ---- Chatwoot -> handoffd ------------------------------------------------------------

local function signed(req)
  if not conf.secret then return true end
  local ts = req.headers["x-chatwoot-timestamp"]
  return type(ts) == "string" and ts:match("^%d+$") ~= nil and signature.fresh(ts, MAX_SKEW_S)
     and signature.hmac_ok(conf.secret, ts .. "." .. req.body, req.headers["x-chatwoot-signature"],
                           { prefix = "sha256=" })
end

-- Chatwoot ids arrive as JSON numbers: "55", never "55.0".
local function idstr(v)
  local n = math.tointeger(tonumber(v))
  return n and n > 0 and string.format("%d", n) or nil
end

local function state_of(id)
  local c = hd.conversation(id)
  return c and c.state
end

local function customer(id, ev, text, files)
  local sender = type(ev.sender) == "table" and ev.sender or {}
  local contact = idstr(sender.id)
  local user = { id = contact and ("contact-" .. contact) or ("conversation-" .. id), name = str(sender.name) }
  return hd.customer(id, { type = "message", text = text, attachments = files, from = user }, user)
end

-- Chatwoot's attachments ({file_type, data_url}) as Bot Framework ones.
local function files_of(ev)
  local out = {}
  for _, a in ipairs(type(ev.attachments) == "table" and ev.attachments or {}) do
    if str(a.data_url) then
      out[#out + 1] = { contentType = (a.file_type == "image" and "image/*") or "application/octet-stream",
                        contentUrl = a.data_url, name = str(a.file_name) }
    end
  end
  return #out > 0 and out or nil
end

local function agent_of(v)
  if type(v) ~= "table" or not idstr(v.id) then return nil end
  return { id = idstr(v.id), name = str(v.name) }
end

local function accepted(id, agent)
  return function() return hd.handoff_event(id, "accepted", { agent = agent }) end
end

-- A message event: returns a dedupe key and an effect, or nil (ignored). Only the
-- customer's public messages while the bot owns the conversation reach the bot; a
-- human's public reply while the handoff waits means an agent took it.
local function on_message(id, ev, status)
  local key = idstr(ev.id) and ("msg:" .. idstr(ev.id))
  if ev.message_type == "incoming" and ev.private ~= true and status == "pending" then
    local files = files_of(ev)
    if type(ev.content) ~= "string" and not files then return nil end
    return key, function() return customer(id, ev, ev.content, files) end
  end
  local sender = type(ev.sender) == "table" and ev.sender or {}
  if ev.message_type == "outgoing" and ev.private ~= true and sender.type == "user" and state_of(id) == "routing" then
    return key, accepted(id, agent_of(sender))
  end
  return nil
end

-- The customer picked one of the bot's input_select choices: its value goes to the bot.
local function on_choice(id, ev, status)
  local values = type(ev.content_attributes) == "table" and ev.content_attributes.submitted_values
  local v = type(values) == "table" and type(values[1]) == "table" and values[1]
  local text = v and (str(v.value) or str(v.title))
  if status ~= "pending" or not text or not idstr(ev.id) then return nil end
  return "choice:" .. idstr(ev.id), function() return customer(id, ev, text) end
end

-- The status a conversation event reports a change to. conversation_updated is left
-- out: it repeats the current status, which may be older than a change seen already.
local function changed_status(ev)
  if ev.event == "conversation_opened" then return "open" end
  if ev.event == "conversation_resolved" then return "resolved" end
  if ev.event ~= "conversation_status_changed" then return nil end
  for _, change in ipairs(type(ev.changed_attributes) == "table" and ev.changed_attributes or {}) do
    if type(change) == "table" and type(change.status) == "table" then return change.status.current_value end
  end
  return ev.status
end

-- A conversation event: the new status decides who has the conversation now.
local function on_conversation(id, ev)
  local status, state = changed_status(ev), state_of(id)
  local assignee = agent_of(type(ev.meta) == "table" and ev.meta.assignee)
  if (status == "pending" or status == "resolved") and (state == "agent" or state == "routing") then
    local back = status == "pending"
    return function() return hd.handoff_event(id, "completed", { return_to_bot = back }) end
  elseif status == "resolved" and state == "bot" then
    return function() return hd.end_conversation(id) end
  elseif (status == "open" and state == "bot") or (state == "routing" and assignee and ev.status == "open") then
    return accepted(id, assignee)
  end
  return nil
end

local CONVERSATION_EVENTS = { conversation_status_changed = true, conversation_opened = true,
                              conversation_resolved = true, conversation_updated = true }

-- The account an event names: `account.id`, else (conversation events before chatwoot#14673,
-- June 2026, carry no `account`) the account_id of the last message it embeds, else nil.
local function account_of(ev)
  if type(ev.account) == "table" then return math.tointeger(tonumber(ev.account.id)) or false end
  local last = type(ev.messages) == "table" and ev.messages[#ev.messages]
  if type(last) == "table" and last.account_id ~= nil then return math.tointeger(tonumber(last.account_id)) or false end
  return nil
end

--- The event's conversation id, dedupe key and effect; or no effect and why it is ignored.
--- An event that names no account is taken as ours: the bot's token belongs to one account,
--- and conversation events only act on conversations handoffd already has.
local function classify(ev, req)
  local account = account_of(ev)
  local delivery_id = req.headers["x-chatwoot-delivery"]
  local key, effect
  if account ~= nil and account ~= conf.account_id then return nil, nil, nil, "another account" end
  if ev.event == "message_created" or ev.event == "message_updated" then
    local conv = type(ev.conversation) == "table" and ev.conversation or {}
    local id = idstr(conv.id)
    if not id then return nil, nil, nil, "no conversation" end
    if ev.event == "message_created" then key, effect = on_message(id, ev, conv.status)
    else key, effect = on_choice(id, ev, conv.status) end
    return id, key or (delivery_id and ("delivery:" .. delivery_id)), effect, "not for the bot"
  end
  if not CONVERSATION_EVENTS[ev.event] then return nil, nil, nil, "event not used" end
  local id = idstr(ev.id)
  if not id or not hd.conversation(id) then return id, nil, nil, "not a bot conversation" end
  return id, delivery_id and ("delivery:" .. delivery_id), on_conversation(id, ev), "nothing to do"
end

-- 429 and 500 are the answers Chatwoot retries (same delivery id); anything else non-2xx
-- makes it open a pending conversation, which is the right fallback for a bad event.
local RETRY_STATUS = { busy = 429, fault = 500 }

local function on_event(req)
  if not signed(req) then return 401, { error = "bad signature" } end
  local ev = json.decode(req.body)
  if type(ev) ~= "table" or type(ev.event) ~= "string" then return 400, { error = "not a Chatwoot event" } end
  local id, key, effect, why = classify(ev, req)
  if not effect then return 200, { ok = true, ignored = why } end
  local done, err = events.once(key and ("chatwoot:" .. conf.account_id .. ":" .. key), effect)
  if done == nil then
    log.warn("chatwoot.event_failed", { conv = id, event = ev.event, error = err })
    return events.status(err, RETRY_STATUS), { error = err }
  end
  if not done then return 200, { ok = true, duplicate = true } end
  return 200, { ok = true }
end

M.webhooks = {
  ["POST /hubs/chatwoot/events"] = on_event,
}

return M
