--[[ hubs.genesys - Genesys Cloud Open Messaging as the desk behind another front
(DESIGN.md "Front and desk"; hubs.md section 5). Configure it with

  front = { module = "hubs.webhook", ... },
  desk  = { module = "hubs.genesys", region = "mypurecloud.ie",          -- or api_url + login_url
            client_id = os.getenv("GENESYS_CLIENT_ID"), client_secret = os.getenv("GENESYS_CLIENT_SECRET"),
            integration_id = "<Open Messaging integration id>",
            webhook_secret = os.getenv("GENESYS_WEBHOOK_SECRET"),         -- the integration's signature secret
            disconnect_token = os.getenv("GENESYS_DISCONNECT_TOKEN"),    -- optional, see below
            quiet_check_s = 30 }                                          -- optional, see below

The customer is an Open Messaging user whose `from.id` is the front's conversation id
(idType Opaque; the front user's name as nickname/first/last name), so Genesys's answers,
addressed `channel.to.id`, lead back to the conversation without a lookup table.
  escalate  one inbound message opens the Genesys conversation: the readable transcript as
            its text, the routing decision and the flat handoff context (handoff.context)
            as channel.metadata.customAttributes, with handoffd_conversation,
            handoffd_handoff, customer_id and customer_name. The inbound message flow bound
            to the integration routes it (Transfer to ACD). Returns true: acceptance comes
            with the agent's first message or typing.
  to_agent  each customer message while the desk has the conversation: one inbound message.
  conversation_end  the conversation ended while Genesys had it, without Genesys's word (the
            front ended it, or limits.idle_timeout): one last inbound message tells the
            agent, unless the Genesys conversation is over already (see M.conversation_end).
Every API call carries an OAuth client-credentials token (handoff.oauth, cached and renewed);
a 401 drops the token and the call is made once more with a new one.

Genesys -> handoffd:
  POST /hubs/genesys/messages      the integration's outboundNotificationWebhookUrl. Checked:
      X-Hub-Signature-256: sha256=<base64 HMAC-SHA256(webhook_secret, raw body)>, else 401.
      Text from the agent (originatingEntity Human) or agent typing while routing: accepted
      (the agent's name from the conversation's agent participant). Text: relayed to the
      customer (hd.agent). A message id seen before is answered 200 without a second effect.
The agent leaving: Open Messaging sends no event for it, so handoffd reads the conversation
(GET /api/v2/conversations/messages/{id}) once Genesys has been quiet for quiet_check_s
(default 30 s, then again every quiet_check_s) and before relaying each customer message;
when the customer participant has left, or an agent took part and no one but the customer
is connected, the handoff ends: "completed" (back to the bot, or closed when return_to_bot
= false), or "failed" when no agent ever took it. A customer message that finds the
conversation over goes to the bot instead. Fast path, optional:
  POST /hubs/genesys/disconnected  {"conversationId": "<Genesys conversation id>"} from a
      Genesys Trigger (v2.detail.events.conversation.{id}.user.end) -> Workflow -> Web
      Services Data Action, with Authorization: Bearer <disconnect_token>; the notice is
      only a hint, checked with the same read. A Presence/Disconnect event on the webhook
      (a Web Messaging event, not documented for Open Messaging) is honoured too.
]]
local hd = require "handoff"
local http = require "handoff.http"
local json = require "handoff.json"
local crypto = require "handoff.crypto"
local log = require "handoff.log"
local delivery = require "handoff.delivery"
local events = require "handoff.events"
local transcript = require "handoff.transcript"
local context = require "handoff.context"
local oauth = require "handoff.oauth"
local sig = require "handoff.signature"
local time = require "handoff.time"
local timer = require "handoff.timer"

local M = {}

local conf                                -- set by init; a reload builds a fresh one (and a new token cache)

local WITH_DESK = { routing = true, agent = true }
local NOT_WITH_AGENT = "not with an agent"  -- hd.agent's answer once the handoff is over
local GONE = { disconnected = true, terminated = true }

local function urls(s)
  if s.api_url or s.login_url then
    assert(type(s.api_url) == "string" and s.api_url:match("^https?://"), "hubs.genesys: api_url must be http(s)")
    assert(type(s.login_url) == "string" and s.login_url:match("^https?://"), "hubs.genesys: login_url must be http(s)")
    return (s.api_url:gsub("/+$", "")), (s.login_url:gsub("/+$", ""))
  end
  assert(type(s.region) == "string" and s.region:match("^[%w%.%-]+$"),
         "hubs.genesys: region (e.g. mypurecloud.com) or api_url and login_url are required")
  return "https://api." .. s.region, "https://login." .. s.region
end

local function required(s, key, min)
  assert(type(s[key]) == "string" and #s[key] >= (min or 1),
         ("hubs.genesys: %s is required%s"):format(key, min and (" (at least " .. min .. " characters)") or ""))
  return s[key]
end

--- Checks the settings; raising rejects the (re)load.
function M.init(s)
  local api_url, login_url = urls(s)
  assert(s.disconnect_token == nil or (type(s.disconnect_token) == "string" and #s.disconnect_token >= 16),
         "hubs.genesys: disconnect_token must be a string of at least 16 characters")
  conf = {
    api_url = api_url, integration_id = required(s, "integration_id"),
    webhook_secret = required(s, "webhook_secret", 16), disconnect_token = s.disconnect_token,
    return_to_bot = s.return_to_bot ~= false, timeout_ms = s.timeout_ms or 10000, ca_file = s.ca_file,
    transcript_max_bytes = s.transcript_max_bytes or 4000,
    attributes_max_bytes = s.attributes_max_bytes or 2048, attribute_prefix = s.attribute_prefix or "",
    quiet_check_s = s.quiet_check_s or 30,
    watches = {},                         -- our conversation id -> the pending check's timer
  }
  assert(type(conf.quiet_check_s) == "number" and conf.quiet_check_s > 0,
         "hubs.genesys: quiet_check_s must be a positive number of seconds")
  conf.tokens = oauth.client({ url = login_url .. "/oauth/token", client_id = required(s, "client_id"),
                               client_secret = required(s, "client_secret"), timeout_ms = conf.timeout_ms,
                               ca_file = conf.ca_file })
end

-- {==== Genesys API

local function send(method, path, body, token)
  return http.request(conf.api_url .. path, {
    method = method, timeout_ms = conf.timeout_ms, ca_file = conf.ca_file, body = body,
    headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json",
                ["Accept"] = "application/json" },
  })
end

--- One API call with a valid token. Returns the response, or nil, err, retry.
local function api(method, path, payload)
  local body = payload and json.encode(payload)
  for _ = 1, 2 do
    local token, err, retry = conf.tokens:get()
    if not token then return nil, err, retry end
    local res, herr = send(method, path, body, token)
    if not res or res.status ~= 401 then return delivery.result(res, herr) end
    conf.tokens:invalidate(token)         -- expired or revoked early: log in again, once
  end
  return nil, "HTTP 401: the API refused a fresh token"
end

local function iso_now()
  local now = time.now()
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(now)) .. (".%03dZ"):format(math.floor(now % 1 * 1000))
end

-- The front's user, or the bot conversation's when the front named none.
local function user_of(conv, h)
  if type(conv.user) == "table" then return conv.user end
  return h and type(h.user) == "table" and h.user or {}
end

-- The customer as an Open Messaging user; from.id is our conversation id (see the header).
local function customer(conv, user)
  local name = type(user.name) == "string" and user.name ~= "" and user.name or nil
  local first, last = (name or ""):match("^(%S+)%s+(.-)%s*$")
  return { id = conv.id, idType = "Opaque", nickname = name or user.id,
           firstName = first or name, lastName = last }
end

local function inbound(conv, message_id, text, extra)
  local channel = { messageId = message_id, time = iso_now(), from = customer(conv, extra.user or user_of(conv)) }
  if extra.attributes then channel.metadata = { customAttributes = extra.attributes } end
  return api("POST", ("/api/v2/conversations/messages/%s/inbound/open/message%s"):format(
                conf.integration_id, extra.prefetch and "?prefetchConversationId=true" or ""),
             { channel = channel, text = text, content = extra.content })
end

-- }====

-- {==== Is the Genesys conversation over?
-- Open Messaging's outbound webhook carries messages, typing and receipts, and no event for
-- "the agent disconnected". handoffd reads the conversation's participants instead (GET
-- /api/v2/conversations/messages/{id}, MessageConversation): once Genesys has been quiet for
-- quiet_check_s (and every quiet_check_s while it stays quiet), before relaying a customer
-- message, and on a Trigger's disconnect notice (the fast path).

--- The Genesys conversation as the API shows it, or nil, err, retry.
local function read_conversation(gid)
  local res, err, retry = api("GET", "/api/v2/conversations/messages/" .. gid)
  if not res then return nil, err, retry end
  local doc = json.decode(res.body)
  if type(doc) ~= "table" then return nil, "the Conversations API answered no JSON object" end
  return doc
end

local function participants(doc)
  local out = {}
  for _, p in ipairs(type(doc.participants) == "table" and doc.participants or {}) do
    if type(p) == "table" then out[#out + 1] = p end
  end
  return out
end

--- Whether the conversation is over for the customer: the customer participant left (the
--- agent ended the interaction, or the flow disconnected it), or an agent took part and no
--- one but the customer is connected any more (a transfer keeps another participant).
local function ended(doc)
  local agents, others = 0, 0
  for _, p in ipairs(participants(doc)) do
    local gone = GONE[p.state] == true
    if p.purpose == "customer" and gone then return true end
    if p.purpose == "agent" then agents = agents + 1 end
    if p.purpose ~= "customer" and not gone then others = others + 1 end
  end
  return agents > 0 and others == 0
end

-- Our conversation id: the customer participant's handoffd_conversation attribute (escalate's).
local function ours(doc)
  for _, p in ipairs(participants(doc)) do
    local attrs = p.purpose == "customer" and type(p.attributes) == "table" and p.attributes or {}
    if type(attrs.handoffd_conversation) == "string" then return attrs.handoffd_conversation end
  end
  return nil
end

-- The connected agent {id, name}: the participant's name is the Genesys user's. (The
-- outbound messages' channel.from is the integration, not the agent.)
local function agent_of(doc)
  for _, p in ipairs(participants(doc)) do
    if p.purpose == "agent" and p.state == "connected" then
      local user = type(p.user) == "table" and p.user or {}
      return { id = type(user.id) == "string" and user.id or nil,
               name = type(p.name) == "string" and p.name or type(user.name) == "string" and user.name or nil }
    end
  end
  return nil
end

-- The agent left: completed; the Genesys conversation ended before an agent took it: failed.
local function agent_left(conv)
  if conv.state == "agent" then
    return hd.handoff_event(conv.id, "completed", { handoff_id = conv.handoff_id, return_to_bot = conf.return_to_bot })
  elseif conv.state == "routing" then
    return hd.handoff_event(conv.id, "failed", { handoff_id = conv.handoff_id,
                                                 reason = "the Genesys conversation ended before an agent took it" })
  end
  return true                             -- the handoff is over already
end

--- Reads the conversation handoffd opened last and ends the handoff when it is over: true
--- (it was over), false (it goes on, or its id is unknown), or nil, err, retry.
local function ended_now(conv)
  local gid = type(conv.data) == "table" and conv.data.genesys_conversation
  if not gid then return false end
  local doc, err, retry = read_conversation(gid)
  if not doc then return nil, err, retry end
  if not ended(doc) then return false end
  log.info("genesys.conversation_ended", { conv = conv.key, genesys_conversation = gid })
  local ok, ferr = agent_left(conv)
  if not ok then return nil, ferr, true end
  return true
end

local watch                               -- check and watch arm each other

-- The quiet check of conversation ID; while it goes on (or cannot be read now), again later.
local function check(premature, id)
  if premature then return end            -- a reload or shutdown: the next event arms a new one
  conf.watches[id] = nil
  local conv = hd.conversation(id)
  if not conv or not WITH_DESK[conv.state] then return end
  local over, err = ended_now(conv)
  if over == nil then log.warn("genesys.check_failed", { conv = conv.key, error = err }) end
  if not over then watch(id) end
end

--- (Re)arms the quiet check of conversation ID: news from Genesys pushes it back.
function watch(id)
  if conf.watches[id] then conf.watches[id]:cancel() end
  conf.watches[id] = timer.after(conf.quiet_check_s, check, id)
end

-- }====

-- {==== handoffd -> Genesys

local function attributes(conv, h, route, user)
  local own = { handoffd_conversation = conv.id, handoffd_handoff = conv.handoff_id,
                customer_id = user.id, customer_name = user.name }
  local used = 0
  for k, v in pairs(own) do used = used + #k + #tostring(v) end
  local flat, dropped = context.flat(h, route, { max_bytes = math.max(0, conf.attributes_max_bytes - used),
                                                 prefix = conf.attribute_prefix })
  if #dropped > 0 then
    log.warn("genesys.attributes_dropped", { conv = conv.key, keys = table.concat(dropped, ",") })
  end
  for k, v in pairs(own) do flat[k] = tostring(v) end
  return flat
end

local function handoff_text(h, user)
  local reason = h.reason or (h.context and h.context.agent_message)
  local head = "Conversation with the bot before the handoff"
  if type(reason) == "string" and reason ~= "" then head = head .. " (reason: " .. reason .. ")" end
  local names = type(user.name) == "string" and user.name ~= "" and { user = user.name } or nil
  local body = transcript.text(h, { max_bytes = conf.transcript_max_bytes, names = names })
  return body == "" and (head .. ": no messages.") or (head .. ":\n" .. body)
end

--- Opens the Genesys conversation: identity, routing hints as custom attributes, and the
--- transcript as one readable message. true, or nil, err, retry.
function M.escalate(conv, h, route)
  local user = user_of(conv, h)
  local res, err, retry = inbound(conv, conv.handoff_id .. "-0", handoff_text(h, user),
                                  { attributes = attributes(conv, h, route, user), user = user, prefetch = true })
  if not res then return nil, err, retry end
  local doc = json.decode(res.body)
  conv.data.genesys_conversation = type(doc) == "table" and type(doc.conversationId) == "string"
                                   and doc.conversationId or nil
  watch(conv.id)
  return true
end

local MEDIA_TYPES = { image = "Image", video = "Video", audio = "Audio" }

local function content_of(attachments)
  local out = {}
  for _, a in ipairs(type(attachments) == "table" and attachments or {}) do
    if type(a) == "table" and type(a.contentUrl) == "string" and a.contentUrl:match("^https?://") then
      local mime = type(a.contentType) == "string" and a.contentType or "application/octet-stream"
      out[#out + 1] = { contentType = "Attachment",
                        attachment = { mediaType = MEDIA_TYPES[mime:match("^(%a+)/")] or "File",
                                       url = a.contentUrl, mime = mime, filename = a.name } }
    end
  end
  return #out > 0 and out or nil
end

--- A customer message while the desk has the conversation. Its message id counts per
--- conversation and is only advanced on success, so a retry sends the same id again. The
--- conversation is read first: a message to a Genesys conversation that is over would open
--- a new one, routed without the handoff; such a message ends the handoff and goes on as
--- the customer's next message (to the bot).
function M.to_agent(conv, activity)
  -- Queued before a handoff failed or ended: sending it would open a new Genesys conversation.
  if activity.type ~= "message" or not WITH_DESK[conv.state] then return true end
  local text = type(activity.text) == "string" and activity.text ~= "" and activity.text or nil
  local content = content_of(activity.attachments)
  if not text and not content then return true end
  local over, cerr, cretry = ended_now(conv)
  if over == nil and cretry then return nil, cerr, cretry end
  if over == nil then log.warn("genesys.check_failed", { conv = conv.key, error = cerr }) end
  if over then
    local ok, err = hd.customer(conv.id, activity, type(conv.user) == "table" and conv.user or nil)
    if not ok then return nil, err, true end
    return true
  end
  if not conf.watches[conv.id] then watch(conv.id) end   -- after a restart or reload
  local n = (conv.data.sent or 0) + 1
  local res, err, retry = inbound(conv, ("%s-%d"):format(conv.handoff_id or conv.id, n), text, { content = content })
  if not res then return nil, err, retry end
  conv.data.sent = n
  return true
end

-- What the agent reads when the conversation ends without Genesys's word.
local END_TEXT = "The customer's conversation has ended%s. You can close this interaction."
local END_CAUSES = { idle = " (no one wrote for too long)" }

--- The conversation ended while Genesys had it (routing or agent), not by Genesys's word
--- (event.reason "hub": the front ended it; "idle": limits.idle_timeout). hubs.md (section
--- 5) documents no way for the customer's side of an Open Messaging conversation to leave:
--- the inbound API takes messages, typing and receipts. (Disconnecting the customer
--- participant with the Conversations API is not documented for Open Messaging there, and
--- it would need a permission beyond the two the setup grants.) So the agent is told with
--- one last customer message (messageId <handoff id>-end, the same on a retry) and ends the
--- interaction as usual. Nothing is sent when the Genesys conversation is over already (a
--- message would open a new one) or was never opened. An end Genesys decided (the agent
--- left) is never told back: the runtime calls this only for ends the desk did not decide.
function M.conversation_end(conv, event)
  local watching = conf.watches[conv.id]
  if watching then watching:cancel(); conf.watches[conv.id] = nil end
  local gid = type(conv.data) == "table" and conv.data.genesys_conversation
  if not gid then return true end
  local doc, err, retry = read_conversation(gid)
  if not doc and retry then return nil, err, retry end
  if doc and ended(doc) then return true end
  local res, ierr, iretry = inbound(conv, (conv.handoff_id or conv.id) .. "-end",
                                    END_TEXT:format(END_CAUSES[event.reason] or ""), {})
  return delivery.told_end("genesys", conv, event, res, ierr, iretry)
end

-- }====

-- {==== Genesys -> handoffd

-- An agent took the conversation; who, the Conversations API says (best effort).
local function accept(conv)
  if conv.state ~= "routing" then return true end
  local gid, agent = type(conv.data) == "table" and conv.data.genesys_conversation, nil
  if gid then
    local doc, err = read_conversation(gid)
    agent = doc and agent_of(doc)
    if not doc then log.warn("genesys.agent_unknown", { conv = conv.key, error = err }) end
  end
  log.info("genesys.accepted", { conv = conv.key, agent = agent and agent.name, agent_id = agent and agent.id })
  return hd.handoff_event(conv.id, "accepted", { handoff_id = conv.handoff_id, agent = agent })
end

local function activity_of(msg)
  local attachments = {}
  for _, c in ipairs(type(msg.content) == "table" and msg.content or {}) do
    local a = type(c) == "table" and c.attachment
    if type(a) == "table" and type(a.url) == "string" then
      attachments[#attachments + 1] = { contentType = a.mime, contentUrl = a.url, name = a.filename }
    end
  end
  return { type = "message", id = "genesys-" .. msg.id, text = msg.text, attachments = attachments }
end

local function on_text(conv, msg)
  if msg.originatingEntity ~= "Bot" then  -- a flow's automatic answer is not an agent taking it
    local ok, err = accept(conv)
    if not ok then return nil, err end
  end
  return hd.agent(conv.id, activity_of(msg))
end

local function on_events(conv, msg)
  for _, ev in ipairs(type(msg.events) == "table" and msg.events or {}) do
    if type(ev) == "table" and ev.eventType == "Presence" and type(ev.presence) == "table"
       and ev.presence.type == "Disconnect" then
      return agent_left(conv)
    elseif type(ev) == "table" and ev.eventType == "Typing" then
      local ok, err = accept(conv)
      if not ok then return nil, err end
    end
  end
  return true
end

--- Checks a normalized outbound message; returns nil or the reason it is malformed.
local function malformed(msg)
  if type(msg) ~= "table" then return "the body must be a JSON object" end
  if type(msg.id) ~= "string" or msg.id == "" then return "id must be a non-empty string" end
  if type(msg.type) ~= "string" then return "type must be a string" end
  if type(msg.channel) ~= "table" or type(msg.channel.to) ~= "table" or type(msg.channel.to.id) ~= "string" then
    return "channel.to.id must be a string"
  end
  return nil
end

local function apply(conv, msg)
  if msg.type == "Text" then return on_text(conv, msg) end
  if msg.type == "Event" then return on_events(conv, msg) end
  return true                             -- receipts and the like: nothing to do
end

local function on_message(req)
  if not sig.hmac_ok(conf.webhook_secret, req.body, req.headers["x-hub-signature-256"],
                     { enc = "base64", prefix = "sha256=" }) then
    return 401, { error = "bad signature" }
  end
  local msg = json.decode(req.body)
  local why = malformed(msg)
  if why then return 400, { error = why } end
  local conv = hd.conversation(msg.channel.to.id)
  if not conv then
    log.info("genesys.ignored", { to = msg.channel.to.id, why = "unknown conversation" })
    return 200, { ok = true, ignored = "unknown conversation" }
  end
  local done, err = events.once("genesys:" .. msg.id, function() return apply(conv, msg) end)
  if err == NOT_WITH_AGENT then
    -- the runtime keeps an agent's message from a customer the bot has again
    log.info("genesys.ignored", { conv = conv.key, why = err })
    return 200, { ok = true, ignored = err }
  end
  if done == nil then return events.status(err, 503), { error = err } end
  if not done then return 200, { ok = true, duplicate = true } end
  local now = hd.conversation(conv.id)
  if now and WITH_DESK[now.state] then watch(conv.id) end
  return 200, { ok = true }
end

-- The conversation a disconnect notice is about, or nil and why it changes nothing.
local function noticed(gid, doc)
  local id = ours(doc)
  local conv = id and hd.conversation(id)
  if not conv then return nil, "not a handoffd conversation" end
  if not ended(doc) then return nil, "the conversation goes on" end
  local last = type(conv.data) == "table" and conv.data.genesys_conversation
  if last and last ~= gid then return nil, "an older conversation" end
  return conv
end

local function on_disconnected(req)
  if not conf.disconnect_token then return 404, { error = "disconnect notices are not configured" } end
  if not crypto.compare(req.headers["authorization"] or "", "Bearer " .. conf.disconnect_token) then
    return 401, { error = "bad token" }
  end
  local note = json.decode(req.body)
  local gid = type(note) == "table" and note.conversationId
  if type(gid) ~= "string" or not gid:match("^[%w%-]+$") then return 400, { error = "conversationId is required" } end
  -- The notice is a hint; the Conversations API says whether the agent really left.
  local doc, err, retry = read_conversation(gid)
  if not doc then
    log.warn("genesys.notice_unchecked", { genesys_conversation = gid, error = err })
    if retry then return 503, { error = err } end   -- the workflow may try again
    return 200, { ok = true, ignored = err }
  end
  local conv, why = noticed(gid, doc)
  if not conv then return 200, { ok = true, ignored = why } end
  local ok, ferr = agent_left(conv)
  if not ok then return events.status(ferr, 503), { error = ferr } end
  return 200, { ok = true }
end

-- }====

M.webhooks = {
  ["POST /hubs/genesys/messages"] = on_message,
  ["POST /hubs/genesys/disconnected"] = on_disconnected,
}

return M
