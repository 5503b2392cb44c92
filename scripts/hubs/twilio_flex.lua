--[[ hubs.twilio_flex - Twilio Conversations as the front, Twilio Flex as the desk (model A).

The customer chats in a Twilio Conversation (Flex Webchat, SMS, WhatsApp, ...) of one
Conversations Service. The service's post-event webhook brings the customer's messages to
handoffd, the bot answers into the same conversation through the Conversations API, and a
handoff creates a Flex Interaction for that conversation, so a TaskRouter task with the
routing attributes, the context and the transcript reaches an agent. Flex then carries the
chat; the bot stays silent until the agent leaves or the conversation is closed.

  hub = { module = "hubs.twilio_flex",
          account_sid = "AC...", auth_token = os.getenv("TWILIO_AUTH_TOKEN"),
          -- api_key_sid = "SK...", api_key_secret = os.getenv("TWILIO_API_KEY_SECRET"),
          chat_service_sid = "IS...",
          webhook_url = "https://handoffd.example.com/hubs/twilio/events",  -- as typed into Twilio
          workspace_sid = "WS...", workflow_sid = "WW...", task_channel = "chat",
          bot_identity = "handoffd-bot" }

Twilio -> handoffd: POST /hubs/twilio/events, form-encoded, X-Twilio-Signature =
base64(HMAC-SHA1(auth_token, webhook_url .. every name..value pair sorted by name)), else 403.
Each event takes effect once: onMessageAdded by MessageSid, the others by
I-Twilio-Idempotency-Token (the event's own fields when it is missing). Answers come once
the effect is durable, in milliseconds: the bot is reached afterwards through the outbox,
well inside Twilio's 5 s webhook timeout.
  onMessageAdded              the customer's message -> the bot (the bot's own messages and
                              those of agents are skipped; while Flex has the conversation the
                              runtime keeps customer messages away from the bot)
  onParticipantAdded          a participant other than the customer and the bot while Flex
                              has the conversation: an agent joined (the first -> accepted)
  onParticipantRemoved        the last agent left (Flex wrap-up) -> completed, back to the bot
  onConversationStateUpdated  closed -> completed and closed (or endOfConversation to the bot)

handoffd -> Twilio, HTTP Basic (account SID and auth token, or an API key), form-encoded:
  POST {conversations}/v1/Services/{IS}/Conversations/{CH}/Messages   bot messages, Author =
       bot_identity, X-Twilio-Webhook-Enabled: false, Attributes {handoffd_activity_id}
  GET  the same, Order=desc: after an unclear failure (5xx, timeout), whether the message
       was created after all, so a retry never posts it twice
  POST {flex}/v1/Interactions   the handoff: Channel {type, initiated_by, properties
       {media_channel_sid}}, Routing {properties {workspace_sid, workflow_sid,
       task_channel_unique_name, attributes}}
  GET  {taskrouter}/v1/Workspaces/{WS}/Tasks?EvaluateTaskAttributes=handoffd_handoff_id == "h-..."
       after an unclear failure of the handoff, so a retry never makes a second task
  POST {conversations}/v1/Services/{IS}/Conversations/{CH}   State=closed: the conversation
       ended without Twilio's word (the bot, limits.idle_timeout, the bot's conversation gone)
Typing has no REST call in Conversations (only the client SDKs send it): it is dropped.

conv.data: customer / customer_identity (the customer's participant), agents (identities of
the agents in the conversation), handoff / interaction / unsure (the handoff under way),
unsure_activity (a bot message whose POST had no clear answer). Webhooks change it with
hd.set_data; what a hub call changes goes onto the data as it is when the call ends
(handoff.relay), so a call waiting on Twilio never undoes a webhook's change.
]]
local hd = require "handoff"
local http = require "handoff.http"
local json = require "handoff.json"
local crypto = require "handoff.crypto"
local log = require "handoff.log"
local form = require "handoff.form"
local delivery = require "handoff.delivery"
local events = require "handoff.events"
local signature = require "handoff.signature"
local transcript = require "handoff.transcript"
local context = require "handoff.context"

local M = {}

local BODY_MAX = 1600              -- characters in one Conversations message (the spec's limit)
local CHECK_PAGE = 50              -- latest messages read to find a message of an unclear POST
local EVENT_PREFIX = "twilio:"     -- event ids share the runtime's table with other hubs

local conf                         -- set by init; a reload builds a fresh one

local function sid_setting(settings, name, prefix)
  local v = settings[name]
  assert(type(v) == "string" and v:match("^" .. prefix .. "%x+$") and #v == 34,
         ("hubs.twilio_flex: %s is required (%s followed by 32 hex digits)"):format(name, prefix))
  return v
end

local CHANNEL_TYPES = { voice = true, sms = true, email = true, web = true, whatsapp = true, chat = true,
                        messenger = true, gbm = true }   -- interaction_channel_enum_type in the Flex spec

local function url_setting(settings, name, default)
  local v = settings[name] or default
  assert(type(v) == "string" and v:match("^https?://"), "hubs.twilio_flex: " .. name .. " must start with http(s)://")
  return (v:gsub("/+$", ""))
end

--- Checks the settings; raising rejects the (re)load.
function M.init(settings)
  local token = settings.auth_token
  assert(type(token) == "string" and #token >= 16, "hubs.twilio_flex: auth_token is required (it signs the webhooks)")
  local user, secret = sid_setting(settings, "account_sid", "AC"), token
  if settings.api_key_sid ~= nil then
    user = sid_setting(settings, "api_key_sid", "SK")
    secret = settings.api_key_secret
    assert(type(secret) == "string" and secret ~= "", "hubs.twilio_flex: api_key_secret goes with api_key_sid")
  end
  local webhook_url = settings.webhook_url
  assert(type(webhook_url) == "string" and webhook_url:match("^https?://[^/]+/"),
         "hubs.twilio_flex: webhook_url is required: the URL Twilio calls, exactly as configured there")
  assert(settings.channel_type == nil or CHANNEL_TYPES[settings.channel_type],
         "hubs.twilio_flex: channel_type must be one of web, sms, whatsapp, chat, messenger, gbm, email, voice")
  local bot = settings.bot_identity or "handoffd-bot"
  assert(type(bot) == "string" and bot ~= "", "hubs.twilio_flex: bot_identity must be a string")
  conf = {
    account_sid = settings.account_sid, auth_token = token, webhook_url = webhook_url,
    auth = "Basic " .. crypto.base64_encode(user .. ":" .. secret),
    service = sid_setting(settings, "chat_service_sid", "IS"),
    workspace = sid_setting(settings, "workspace_sid", "WS"),
    workflow = sid_setting(settings, "workflow_sid", "WW"),
    task_channel = settings.task_channel or "chat",
    channel_type = settings.channel_type or "web",
    bot = bot,
    conversations_url = url_setting(settings, "conversations_url", "https://conversations.twilio.com"),
    flex_url = url_setting(settings, "flex_url", "https://flex-api.twilio.com"),
    taskrouter_url = url_setting(settings, "taskrouter_url", "https://taskrouter.twilio.com"),
    transcript_bytes = settings.transcript_bytes or 8000,
    context_bytes = settings.context_bytes or 4096,
    timeout_ms = settings.timeout_ms or 10000, ca_file = settings.ca_file,
  }
end

-- ---- handoffd -> Twilio --------------------------------------------------------------

local function call(method, url, fields, extra_headers)
  local headers = { ["Authorization"] = conf.auth, ["Accept"] = "application/json" }
  local body
  if fields then
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    body = form.encode(fields)
  end
  for k, v in pairs(extra_headers or {}) do headers[k] = v end
  return delivery.result(http.request(url, { method = method, headers = headers, body = body,
                                             timeout_ms = conf.timeout_ms, ca_file = conf.ca_file }))
end

-- Whether a failed call may have taken effect anyway (no answer, or the server failed
-- while answering); a 429 or a 4xx never did.
local function unclear(err)
  return not tostring(err):match("^HTTP [1-4]%d%d")
end

local function messages_url(conv_id)
  return ("%s/v1/Services/%s/Conversations/%s/Messages"):format(conf.conversations_url, conf.service, conv_id)
end

local function str(v) return type(v) == "string" and v ~= "" and v or nil end

-- S within N characters (UTF-8; bytes when S is not UTF-8), cut ones marked with "...".
local function cut(s, n)
  local chars = utf8.len(s)
  if (chars or #s) <= n then return s end
  local stop = chars and utf8.offset(s, n - 2) or (n - 2)
  return s:sub(1, stop - 1) .. "..."
end

-- A hero or thumbnail card as lines of text: title, subtitle, text, image, buttons.
local function card_lines(c, lines)
  if str(c.title) then lines[#lines + 1] = "*" .. c.title .. "*" end
  if str(c.subtitle) then lines[#lines + 1] = c.subtitle end
  if str(c.text) then lines[#lines + 1] = c.text end
  local image = type(c.images) == "table" and type(c.images[1]) == "table" and str(c.images[1].url)
  if image then lines[#lines + 1] = image end
  for _, b in ipairs(type(c.buttons) == "table" and c.buttons or {}) do
    local title = str(b.title) or str(b.value)
    if title and b.type == "openUrl" and str(b.value) and b.value ~= title then
      lines[#lines + 1] = "- " .. title .. ": " .. b.value
    elseif title then
      lines[#lines + 1] = "- " .. title
    end
  end
end

local CARDS = { ["application/vnd.microsoft.card.hero"] = true, ["application/vnd.microsoft.card.thumbnail"] = true }

-- The suggested actions as {title, value} (for the text and for a UI that reads attributes).
local function actions_of(activity)
  local out = {}
  local sa = type(activity.suggestedActions) == "table" and activity.suggestedActions.actions
  for _, a in ipairs(type(sa) == "table" and sa or {}) do
    local title = type(a) == "table" and (str(a.title) or str(a.value))
    if title then out[#out + 1] = { title = title, value = str(a.value) or title } end
  end
  return out
end

--- A bot activity as the text of one Conversations message, or nil (nothing to show):
--- the text, then cards and files as lines, then the suggested actions as options.
local function text_of(activity, actions)
  local lines = { str(activity.text) }
  for _, a in ipairs(type(activity.attachments) == "table" and activity.attachments or {}) do
    if type(a) == "table" and CARDS[a.contentType] and type(a.content) == "table" then
      card_lines(a.content, lines)
    elseif type(a) == "table" and str(a.contentUrl) then
      lines[#lines + 1] = (str(a.name) and (a.name .. ": ") or "") .. a.contentUrl
    end
  end
  for _, a in ipairs(actions) do lines[#lines + 1] = "- " .. a.title end
  if #lines == 0 then return nil end
  return table.concat(lines, "\n")
end

-- Whether a message with our attribute handoffd_activity_id = ID is among the latest of the
-- conversation: true / false, or nil, err, retry.
local function already_posted(conv_id, id)
  local res, err, retry = call("GET", messages_url(conv_id) .. "?Order=desc&PageSize=" .. CHECK_PAGE)
  if not res then return nil, err, retry end
  local doc = json.decode(res.body)
  for _, m in ipairs(type(doc) == "table" and type(doc.messages) == "table" and doc.messages or {}) do
    local attrs = type(m) == "table" and type(m.attributes) == "string" and json.decode(m.attributes)
    if type(attrs) == "table" and attrs.handoffd_activity_id == id then return true end
  end
  return false
end

-- Posts one bot message; conv.data.unsure_activity names a message whose POST had no
-- clear answer.
local function post_message(conv, activity)
  local data = conv.data
  local actions = actions_of(activity)
  local text = text_of(activity, actions)
  if not text then return true end
  local id = str(activity.id) or crypto.uuid()
  if data.unsure_activity == id then
    local found, err, retry = already_posted(conv.id, id)
    if found == nil then return nil, err, retry end
    data.unsure_activity = nil
    if found then return true end
  end
  local whole = text
  text = cut(text, BODY_MAX)
  if text ~= whole then log.warn("twilio.message_cut", { conv = conv.id, bytes = #whole }) end
  local attrs = { handoffd_activity_id = id, actions = #actions > 0 and actions or nil }
  local res, err, retry = call("POST", messages_url(conv.id), {
    { "Author", conf.bot }, { "Body", text }, { "Attributes", json.encode(attrs) },
  }, { ["X-Twilio-Webhook-Enabled"] = "false" })
  if not res then
    if unclear(err) then data.unsure_activity = id end
    return nil, err, retry
  end
  return true
end

--- The bot said something: one message authored by the bot identity. Typing is dropped
--- (no REST call exists for it). After a POST without a clear answer, the retry first
--- looks for the message, so a customer never reads it twice.
function M.to_user(conv, activity)
  if activity.type ~= "message" then return true end
  return post_message(conv, activity)
end

--- The conversation ended without Twilio's word (event.reason: bot, idle, directline):
--- close it (UpdateServiceConversation State=closed), as Flex does when a task completes,
--- so it does not stay active until the service's inactive/closed timers. Webhooks stay
--- enabled for this call: Flex and any Studio flow learn of the close from them, and the
--- onConversationStateUpdated that comes back to us finds the conversation ending or gone.
--- A close Twilio sent us is never told back (the runtime calls this only for ends it did
--- not hear of). A 404 (the conversation was deleted) is logged and dropped.
function M.conversation_end(conv, event)
  local url = ("%s/v1/Services/%s/Conversations/%s"):format(conf.conversations_url, conf.service, conv.id)
  return delivery.told_end("twilio", conv, event, call("POST", url, { { "State", "closed" } }))
end

-- The task attributes: the route's fields at the top (what workflow filters test), Flex's
-- customer fields, and handoffd's context and transcript.
local function attributes_of(conv, h, route)
  local user = type(conv.user) == "table" and conv.user or {}
  local flat, dropped = context.flat(h, route, { max_bytes = conf.context_bytes, json = true })
  if #dropped > 0 then
    log.warn("twilio.context_truncated", { conv = conv.id, dropped = #dropped, first_dropped = dropped[1] })
  end
  local names = str(user.name) and { user = user.name } or nil
  local text = transcript.text(h, { max_bytes = conf.transcript_bytes, names = names })
  return {
    queue = route.queue, skill = route.skill, priority = math.tointeger(route.priority) or route.priority,
    reason = route.reason or h.reason, agent = route.agent,
    customerName = str(user.name) or conv.data.customer_identity,
    from = conv.data.customer_identity or str(user.id),
    handoffd_handoff_id = conv.handoff_id,
    handoffd = { conversation = conv.id, context = flat, transcript = text },
  }
end

-- Whether a task of this handoff exists already: its sid, false, or nil, err, retry.
local function task_of(handoff_id)
  local expr = ('handoffd_handoff_id == "%s"'):format(handoff_id)
  local url = ("%s/v1/Workspaces/%s/Tasks?EvaluateTaskAttributes=%s&PageSize=1"):format(
    conf.taskrouter_url, conf.workspace, form.escape(expr))
  local res, err, retry = call("GET", url)
  if not res then return nil, err, retry end
  local doc = json.decode(res.body)
  local task = type(doc) == "table" and type(doc.tasks) == "table" and doc.tasks[1]
  return type(task) == "table" and (str(task.sid) or true) or false
end

-- Creates the Interaction once per handoff; conv.data keeps handoff, interaction and unsure.
local function create_interaction(conv, h, route)
  local data = conv.data
  if data.handoff ~= conv.handoff_id then data.handoff, data.interaction, data.unsure = conv.handoff_id, nil, nil end
  if data.interaction then return true end
  if data.unsure then                  -- the last try had no clear answer: is the task there?
    local task, err, retry = task_of(conv.handoff_id)
    if task == nil then return nil, "task lookup: " .. err, retry end
    if task then
      data.interaction, data.unsure = "task:" .. tostring(task), nil
      return true
    end
  end
  local channel = { type = conf.channel_type, initiated_by = "customer",
                    properties = { media_channel_sid = conv.id } }
  local routing = { properties = { workspace_sid = conf.workspace, workflow_sid = conf.workflow,
                                   task_channel_unique_name = conf.task_channel,
                                   attributes = attributes_of(conv, h, route) } }
  local res, err, retry = call("POST", conf.flex_url .. "/v1/Interactions", {
    { "Channel", json.encode(channel) }, { "Routing", json.encode(routing) },
  })
  if not res then
    if unclear(err) then data.unsure = true end
    return nil, err, retry
  end
  local doc = json.decode(res.body)
  data.interaction, data.unsure = type(doc) == "table" and str(doc.sid) or "created", nil
  log.info("twilio.interaction", { conv = conv.id, handoff = conv.handoff_id, interaction = data.interaction })
  return true
end

--- Hands the conversation to Flex: one Interaction for the existing conversation. The
--- handoff is accepted when an agent joins the conversation (onParticipantAdded).
function M.escalate(conv, h, route)
  return create_interaction(conv, h, route)
end

-- ---- Twilio -> handoffd --------------------------------------------------------------

-- X-Twilio-Signature over the configured URL and every parameter, sorted by name (then value).
local function signed(req, list)
  return signature.hmac_ok(conf.auth_token, signature.url_and_params(conf.webhook_url, list),
                           req.headers["x-twilio-signature"], { alg = "sha1", enc = "base64" })
end

local function data_of(id)
  local c = hd.conversation(id)
  return c, c and type(c.data) == "table" and c.data or {}
end

-- Whether participant P (the event's fields) is someone other than the customer and the bot.
local function is_other(p, data)
  if p.Identity == conf.bot or p.Author == conf.bot then return false end
  if p.ParticipantSid and p.ParticipantSid == data.customer then return false end
  return str(p.Identity) ~= nil and p.Identity ~= data.customer_identity
end

-- The customer's files, which the bot cannot fetch (they need our credentials): named in the text.
local function media_note(p)
  local media = str(p.Media) and json.decode(p.Media)
  local names = {}
  for _, m in ipairs(type(media) == "table" and media or {}) do
    if type(m) == "table" then
      names[#names + 1] = ("[file: %s (%s)]"):format(str(m.Filename) or str(m.Sid) or "?", str(m.ContentType) or "?")
    end
  end
  return #names > 0 and table.concat(names, " ") or nil
end

-- Keeps the customer's participant with the conversation (once). Best effort: the message
-- reached the runtime already (a retry would send it twice), and the next one notes it.
local function note_customer(id, p)
  local c, data = data_of(id)
  if not c or (data.customer == p.ParticipantSid and data.customer_identity == p.Author) then return true end
  data.customer, data.customer_identity = p.ParticipantSid, p.Author
  local ok, err = hd.set_data(id, data)
  if not ok then log.warn("twilio.customer_unnoted", { conv = id, error = err }) end
  return true
end

local function on_message(id, p)
  if p.Author == conf.bot then return nil, "our own message" end
  -- "system" is the author of REST messages that name none (Flex's and others' notices)
  if p.Author == nil or p.Author == "system" then return nil, "a system message" end
  local _, data = data_of(id)
  if type(data.agents) == "table" and data.agents[p.Author] then return nil, "an agent's message" end
  local parts = {}
  for _, part in ipairs({ str(p.Body) or false, media_note(p) or false }) do
    if part then parts[#parts + 1] = part end
  end
  local text = table.concat(parts, "\n")
  if text == "" then return nil, "nothing a bot can read" end
  return function()
    local user = { id = p.Author, name = p.Author }
    local ok, err = hd.customer(id, { type = "message", text = text, from = user }, user)
    if not ok then return nil, err end
    return note_customer(id, p)
  end
end

-- Agents come and go while Flex has the conversation: data.agents holds the identities
-- present. The first to join accepts the handoff; it is completed when the last one leaves
-- (a transfer where the next agent joins before the first leaves keeps it with Flex).
-- CHANGE(c, data) runs on the conversation as it is when the event is taken (remembering
-- the event may have yielded).
local function agent_event(id, p, what, change)
  local c, data = data_of(id)
  if not c or (c.state ~= "routing" and c.state ~= "agent") or not is_other(p, data) then
    return nil, "not an agent " .. what .. " a handoff"
  end
  return function()
    c, data = data_of(id)
    if not c then return true end
    data.agents = type(data.agents) == "table" and data.agents or {}
    return change(c, data)
  end
end

local function on_participant_added(id, p)
  return agent_event(id, p, "joining", function(c, data)
    data.agents[p.Identity] = true
    local ok, err = hd.set_data(id, data)
    if not ok or c.state ~= "routing" then return ok, err end
    return hd.handoff_event(id, "accepted", { agent = { id = p.Identity, name = p.Identity } })
  end)
end

local function on_participant_removed(id, p)
  return agent_event(id, p, "leaving", function(_, data)
    data.agents[p.Identity] = nil
    local ok, err = hd.set_data(id, data)
    if not ok then return nil, err end
    if next(data.agents) then
      log.info("twilio.agent_left", { conv = id, agent = p.Identity, note = "other agents stay" })
      return true
    end
    return hd.handoff_event(id, "completed", { return_to_bot = true, reason = "the agent left the conversation" })
  end)
end

local function on_state(id, p)
  local c = hd.conversation(id)
  if not c or p.StateTo ~= "closed" then return nil, "not a close" end
  if c.state == "routing" or c.state == "agent" then
    return function()
      return hd.handoff_event(id, "completed", { return_to_bot = false, reason = "the conversation was closed" })
    end
  elseif c.state == "bot" then
    return function() return hd.end_conversation(id) end
  end
  return nil, "already closed"
end

local HANDLERS = { onMessageAdded = on_message, onParticipantAdded = on_participant_added,
                   onParticipantRemoved = on_participant_removed, onConversationStateUpdated = on_state }

-- The key that makes a replay of the event a no-op.
local function event_key(req, p)
  if p.EventType == "onMessageAdded" and str(p.MessageSid) then return "msg:" .. p.MessageSid end
  local token = str(req.headers["i-twilio-idempotency-token"]) or str(req.headers["x-twilio-idempotency-token"])
  if token then return "tok:" .. token end
  return table.concat({ p.EventType, p.ConversationSid, p.ParticipantSid or "", p.StateTo or "",
                        p.DateUpdated or p.DateCreated or "" }, ":")
end

-- Twilio retries the webhook on a 429 or 5xx (same token).
local RETRY_STATUS = { busy = 429, fault = 503 }

local function on_event(req)
  local p, list = form.decode(req.body)
  if not signed(req, list) then return 403, { error = "bad X-Twilio-Signature" } end
  if p.AccountSid ~= conf.account_sid or (p.ChatServiceSid and p.ChatServiceSid ~= conf.service) then
    return 200, { ok = true, ignored = "another account or service" }
  end
  local id = p.ConversationSid
  if type(id) ~= "string" or not id:match("^CH%x+$") or #id ~= 34 then return 400, { error = "no ConversationSid" } end
  local handler = HANDLERS[p.EventType]
  if not handler then return 200, { ok = true, ignored = "event not used" } end
  local effect, why = handler(id, p)
  if not effect then return 200, { ok = true, ignored = why } end
  local done, err = events.once(EVENT_PREFIX .. event_key(req, p), effect)
  if done then return 200, { ok = true } end
  if done == false then return 200, { ok = true, duplicate = true } end
  if events.passing(err) then return events.status(err, RETRY_STATUS), { error = err } end
  log.warn("twilio.event_skipped", { conv = id, event = p.EventType, reason = err })
  return 200, { ok = true, skipped = err }
end

M.webhooks = {
  ["POST /hubs/twilio/events"] = on_event,
}

return M
