--[[ hubs.sunshine - Zendesk Sunshine Conversations API v2 with the Switchboard (model A).

The customer chats in a Sunshine Conversations channel (Web Messenger, WhatsApp, ...) and
handoffd is a custom integration in the app's switchboard. While handoffd is the
conversation's active switchboard integration, customer messages go to the bot and the
bot's messages and typing come back through the API; a handoff passes control to the
agents' switchboard integration (Zendesk Agent Workspace by default). This file owns the
translation; the state machine, the outbox and the retries are the runtime's.

  hub = { module = "hubs.sunshine", url = "https://acme.zendesk.com/sc", app_id = "5ebee0975ac5",
          key_id = "app_5f1...", key_secret = os.getenv("SUNCO_KEY_SECRET"),
          webhook_secret = os.getenv("SUNCO_WEBHOOK_SECRET"),
          switchboard_integration = "handoffd",   -- ours: its name or id
          pass_to = "zd:agentWorkspace" }         -- who gets the conversation on a handoff

Sunshine -> handoffd: POST /hubs/sunshine/events, the custom integration's v2 webhook
{app, webhook, events: [{id, type, createdAt, payload}]}. X-API-Key must equal the webhook
secret (else 401). Each event id takes effect once. Events used:
  conversation:message        a user's message while we are active -> the bot (a reply
                              button's answer: its payload)
  switchboard:passControl,    control moved: back to us during a handoff -> completed;
  switchboard:acceptControl   to another integration while routing -> accepted
  switchboard:releaseControl  the agents gave control up -> completed
  switchboard:*:failure       a control change failed -> the handoff failed
Answers: 200 once every event is durably handled or skipped (not ours, a duplicate);
400 malformed body or another app; 401 X-API-Key; 503 overloaded (Sunshine retries).

handoffd -> Sunshine, Basic key_id:key_secret, JSON:
  POST {url}/v2/apps/{app}/conversations/{conv}/messages     bot messages (author business);
       a text over 4,096 characters goes in several messages, altText is cut to 128
       characters (the spec's limits: Sunshine answers 400 beyond them)
  POST {url}/v2/apps/{app}/conversations/{conv}/activity     typing:start, best effort
  POST {url}/v2/apps/{app}/conversations/{conv}/passControl  the handoff, with flat metadata
       of at most 4 KB as JSON (routing, context and variables; what does not fit is left
       out and reported) and first_message_id, so the agent sees the whole conversation.
  POST {url}/v2/apps/{app}/conversations/{conv}/releaseControl  no body: the conversation
       ended without Sunshine's word (the bot ended it, limits.idle_timeout, the bot's
       conversation gone) while we are the active integration; see M.conversation_end.

conv.data (kept by the runtime): first_message_id, the first customer message we relayed;
active and active_at, the active switchboard integration as the latest switchboard event
said (bot messages wait for nobody while another integration has the customer).
]]
local hd = require "handoff"
local http = require "handoff.http"
local json = require "handoff.json"
local crypto = require "handoff.crypto"
local log = require "handoff.log"
local delivery = require "handoff.delivery"
local events = require "handoff.events"
local context = require "handoff.context"

local M = {}

local METADATA_MAX = 4096          -- Sunshine's limit on passControl metadata, as JSON
local TEXT_MAX = 4096              -- characters in a text message (textMessage.text maxLength)
local ALT_TEXT_MAX = 128           -- characters in an image's or file's altText
local MAX_ACTIONS = 10             -- reply buttons on one message
local EVENT_PREFIX = "sunshine:"   -- event ids share the runtime's table with other hubs

local conf                         -- set by init; a reload builds a fresh one

local function need(settings, name, min_len)
  local v = settings[name]
  assert(type(v) == "string" and #v >= (min_len or 1),
         ("hubs.sunshine: %s is required (a string of at least %d characters)"):format(name, min_len or 1))
  return v
end

--- Checks the settings; raising rejects the (re)load.
function M.init(settings)
  local url = need(settings, "url")
  assert(url:match("^https?://"), "hubs.sunshine: url must start with http:// or https://")
  local app_id = need(settings, "app_id")
  assert(app_id:match("^[%w_%-]+$"), "hubs.sunshine: app_id has characters an id never has")
  conf = {
    base = url:gsub("/+$", "") .. "/v2/apps/" .. app_id .. "/conversations/",
    app_id = app_id,
    auth = "Basic " .. crypto.base64_encode(need(settings, "key_id") .. ":" .. need(settings, "key_secret")),
    webhook_secret = need(settings, "webhook_secret", 16),
    me = need(settings, "switchboard_integration"),
    pass_to = settings.pass_to or "zd:agentWorkspace",
    display_name = settings.display_name,
    timeout_ms = settings.timeout_ms or 10000,
    ca_file = settings.ca_file,
  }
  assert(type(conf.pass_to) == "string", "hubs.sunshine: pass_to must be a string")
end

-- ---- handoffd -> Sunshine ------------------------------------------------------------

--- POSTs PAYLOAD to the conversation's OP endpoint. The response, or nil, err, retry.
local function post(conv_id, op, payload)
  return delivery.result(http.request(conf.base .. conv_id .. "/" .. op, {
    method = "POST", timeout_ms = conf.timeout_ms, ca_file = conf.ca_file, body = json.encode(payload),
    headers = { ["Authorization"] = conf.auth, ["Content-Type"] = "application/json" },
  }))
end

local function is_us(integration)
  return type(integration) == "table" and (integration.id == conf.me or integration.name == conf.me)
end

-- Whether DATA says another integration has the customer.
local function standby(data)
  return type(data.active) == "table" and not is_us(data.active)
end

-- The bot's suggested actions as reply buttons.
local function actions_of(activity)
  local sa = activity.suggestedActions
  if type(sa) ~= "table" or type(sa.actions) ~= "table" then return nil end
  local out = {}
  for _, a in ipairs(sa.actions) do
    local text = type(a) == "table" and (type(a.title) == "string" and a.title or a.value)
    if type(text) == "string" and text ~= "" and #out < MAX_ACTIONS then
      out[#out + 1] = { type = "reply", text = text, payload = type(a.value) == "string" and a.value or text }
    end
  end
  return #out > 0 and out or nil
end

-- S cut to its first MAX characters (UTF-8; bytes when S is not UTF-8).
local function first_chars(s, max)
  if not utf8.len(s) then return s:sub(1, max) end
  local stop = utf8.offset(s, max + 1)
  return stop and s:sub(1, stop - 1) or s
end

-- S in pieces of at most MAX characters, each ending after the last white space that keeps
-- it within MAX (a hard cut when the piece would get shorter than half), so that the pieces
-- together are S exactly. Sunshine refuses a longer text with a 400, which is not retried.
local function pieces(s, max)
  local out = {}
  while true do
    local head = first_chars(s, max)
    if #head == #s then out[#out + 1] = s; return out end
    local at = head:find("%s[^%s]*$")
    if at and at > #head // 2 then head = head:sub(1, at) end
    out[#out + 1] = head
    s = s:sub(#head + 1)
  end
end

-- A bot message as Sunshine contents: its text in pieces within TEXT_MAX (reply buttons
-- on the last), else its first linked file or image; an empty list when there is nothing
-- a channel can show.
local function contents_of(activity)
  if type(activity.text) == "string" and activity.text ~= "" then
    local out = {}
    for i, text in ipairs(pieces(activity.text, TEXT_MAX)) do out[i] = { type = "text", text = text } end
    out[#out].actions = actions_of(activity)
    return out
  end
  for _, a in ipairs(type(activity.attachments) == "table" and activity.attachments or {}) do
    if type(a) == "table" and type(a.contentUrl) == "string" and a.contentUrl:match("^https?://") then
      local image = type(a.contentType) == "string" and a.contentType:match("^image/")
      return { { type = image and "image" or "file", mediaUrl = a.contentUrl,
                 altText = type(a.name) == "string" and first_chars(a.name, ALT_TEXT_MAX) or nil } }
    end
  end
  return {}
end

--- The bot said something: messages to .../messages, typing (best effort) to .../activity.
--- Nothing goes out while another switchboard integration has the customer. A text split
--- in pieces is sent piece by piece; conv.data.pieces_sent keeps how many went out, so a
--- retry after a failed piece does not send the earlier ones again.
function M.to_user(conv, activity)
  if standby(conv.data) then
    log.info("sunshine.standby", { conv = conv.id, activity = activity.type })
    return true
  end
  if activity.type == "typing" then
    post(conv.id, "activity", { author = { type = "business" }, type = "typing:start" })
    return true
  end
  local contents = activity.type == "message" and contents_of(activity) or {}
  local from = type(activity.from) == "table" and type(activity.from.name) == "string" and activity.from.name
  local progress = type(conv.data.pieces_sent) == "table" and conv.data.pieces_sent.activity == activity.id
                   and conv.data.pieces_sent or { activity = activity.id, n = 0 }
  for i = progress.n + 1, #contents do
    local res, err, retry = post(conv.id, "messages", {
      author = { type = "business", displayName = conf.display_name or from or nil },
      content = contents[i],
      -- a retried delivery can be told apart; the piece when the text was split
      metadata = { handoffd_activity_id = activity.id, handoffd_part = #contents > 1 and i or nil },
    })
    if not res then
      conv.data.pieces_sent = i > 1 and progress or nil
      return nil, err, retry
    end
    progress.n = i
  end
  conv.data.pieces_sent = nil
  return true
end

--- The passControl metadata: first_message_id, the handoff id, then routing and context
--- (handoff.context, prefixed handoffd_) while the JSON stays within METADATA_MAX.
--- Returns the table and the keys left out (their count is in handoffd_truncated).
local function metadata(conv, h, route)
  local fixed = { first_message_id = conv.data.first_message_id, handoffd_handoff_id = conv.handoff_id,
                  handoffd_truncated = "999999" }        -- room for the count, set below
  local flat, dropped = context.flat(h, route, { json = true, prefix = "handoffd_",
                                                 max_bytes = METADATA_MAX + 1 - #json.encode(fixed) })
  fixed.handoffd_truncated = #dropped > 0 and tostring(math.min(#dropped, 999999)) or nil
  for k, v in pairs(fixed) do flat[k] = v end
  return flat, dropped
end

--- Hands the conversation over: passControl to pass_to. Control moves at once, so a 2xx
--- is "accepted"; a failure event may still come and fail the handoff.
function M.escalate(conv, h, route)
  local meta, dropped = metadata(conv, h, route)
  if #dropped > 0 then
    log.warn("sunshine.metadata_truncated", { conv = conv.id, handoff = conv.handoff_id,
                                              dropped = #dropped, first_dropped = dropped[1] })
  end
  local res, err, retry = post(conv.id, "passControl", { switchboardIntegration = conf.pass_to, metadata = meta })
  if not res then return nil, err, retry end
  -- Webhooks may have moved the handoff on while we waited for the answer (accepted by
  -- the passControl echo, or even completed): only a handoff still routing is accepted here.
  local now = hd.conversation(conv.id)
  return (now and now.state == "routing") and "accepted" or true
end

--- The conversation ended without Sunshine's word (event.reason: bot, idle, directline).
--- Sunshine conversations have no closed state: what stays behind is our switchboard
--- control, so we give it up with releaseControl ("releases the control of the
--- conversation by nullifying its switchboard state"; no body), and the customer's next
--- message goes to the switchboard's default integration, as a new conversation if that is
--- us. Only while we are the active integration: with an app-scoped key releaseControl
--- would take control from the agents too, and their integration owns the conversation
--- then. No closing message: the bot said its goodbye, and after an idle timeout nobody
--- reads it. An end Sunshine decided (control released to another integration during a
--- handoff) is never told back: the runtime calls this only for ends it did not hear of.
function M.conversation_end(conv, event)
  if standby(conv.data) then
    log.info("sunshine.end_not_ours", { conv = conv.id, reason = event.reason,
                                        active = conv.data.active.name or conv.data.active.id })
    return true
  end
  local res, err, retry = delivery.result(http.request(conf.base .. conv.id .. "/releaseControl", {
    method = "POST", timeout_ms = conf.timeout_ms, ca_file = conf.ca_file,
    headers = { ["Authorization"] = conf.auth, ["Accept"] = "application/json" },
  }))
  return delivery.told_end("sunshine", conv, event, res, err, retry)
end

-- ---- Sunshine -> handoffd -------------------------------------------------------------

-- A Sunshine user message as an activity for the bot, or nil (nothing a bot can read).
local function activity_of(m)
  local c = m.content
  if type(c) ~= "table" then return nil end
  -- A reply button's answer carries the button's payload (textMessage.payload): the bot
  -- offered that value, the text is only the button's title.
  local text = type(c.payload) == "string" and c.payload ~= "" and c.payload
               or type(c.text) == "string" and c.text ~= "" and c.text or nil
  if (c.type == "image" or c.type == "file") and type(c.mediaUrl) == "string" then
    return { type = "message", text = text, attachments = { {
      contentType = type(c.mediaType) == "string" and c.mediaType
                    or (c.type == "image" and "image/*" or "application/octet-stream"),
      contentUrl = c.mediaUrl, name = type(c.altText) == "string" and c.altText or nil } } }
  end
  return text and { type = "message", text = text } or nil
end

local function active_of(conversation)
  local a = conversation.activeSwitchboardIntegration
  return type(a) == "table" and a or nil
end

-- Stores the first customer message id, once per conversation. Best effort: the message
-- reached the runtime already (a retry would send it twice), and the next one notes its id.
local function note_first_message(conv_id, message_id)
  local c = hd.conversation(conv_id)
  if not c or type(message_id) ~= "string" then return true end
  local data = type(c.data) == "table" and c.data or {}
  if data.first_message_id then return true end
  data.first_message_id = message_id
  local ok, err = hd.set_data(conv_id, data)
  if not ok then log.warn("sunshine.first_message_unnoted", { conv = conv_id, error = err }) end
  return true
end

-- conversation:message -> the action to take, or nil: only users' messages while we are
-- active (no switchboard, or us) reach the bot; business messages are ours or the agents'.
local function on_message(p, conv_id)
  local m = p.message
  if type(m) ~= "table" or type(m.author) ~= "table" or m.author.type ~= "user" then return nil end
  local active = active_of(p.conversation)
  if active and not is_us(active) then return nil end
  local activity = activity_of(m)
  if not activity then return nil end
  local user = { id = type(m.author.userId) == "string" and m.author.userId or nil,
                 name = type(m.author.displayName) == "string" and m.author.displayName or nil }
  activity.from = user
  return function()
    local ok, err = hd.customer(conv_id, activity, user)
    if not ok then return nil, err end
    return note_first_message(conv_id, m.id)
  end
end

-- Records the active integration from a switchboard event: true, or false for an event
-- older than the one recorded (Sunshine's retries can deliver out of order), or nil, err.
local function track_active(conv_id, ev, conversation)
  local c = hd.conversation(conv_id)
  if not c then return false end
  local data = type(c.data) == "table" and c.data or {}
  local at = type(ev.createdAt) == "string" and ev.createdAt or nil
  if at and type(data.active_at) == "string" and at < data.active_at then return false end
  data.active, data.active_at = active_of(conversation), at
  return hd.set_data(conv_id, data)
end

local function failure_reason(ev, p)
  local e = type(p.error) == "table" and p.error or {}
  local why = type(e.message) == "string" and e.message or type(e.code) == "string" and e.code or ""
  return (ev.type .. " " .. why):sub(1, 200)
end

-- What a switchboard event means for a handoff under way (state routing or agent).
local function switchboard_effect(conv_id, ev, p, state)
  local active = active_of(p.conversation)
  if ev.type:match(":failure$") then
    log.warn("sunshine.control_failure", { conv = conv_id, event = ev.type, reason = failure_reason(ev, p) })
    return hd.handoff_event(conv_id, "failed", { reason = failure_reason(ev, p) })
  elseif ev.type == "switchboard:releaseControl" then
    return hd.handoff_event(conv_id, "completed", { return_to_bot = active == nil or is_us(active),
                                                    reason = type(p.reason) == "string" and p.reason or nil })
  elseif is_us(active) then     -- passControl / acceptControl back to us
    return hd.handoff_event(conv_id, "completed", { return_to_bot = true,
                                                    reason = type(p.reason) == "string" and p.reason or nil })
  elseif active and state == "routing" then
    return hd.handoff_event(conv_id, "accepted", { agent = { id = active.id, name = active.name } })
  end
  return true
end

local SWITCHBOARD = { ["switchboard:passControl"] = true, ["switchboard:acceptControl"] = true,
                      ["switchboard:releaseControl"] = true }

-- switchboard:* -> the action to take, or nil (a conversation we never had).
local function on_switchboard(ev, p, conv_id)
  if not (SWITCHBOARD[ev.type] or ev.type:match("^switchboard:%a+:failure$")) then return nil end
  local c = hd.conversation(conv_id)
  -- An ending conversation takes no news (our own releaseControl comes back as an event).
  if not c or c.state == "ending" then return nil end
  return function()
    local fresh, err = track_active(conv_id, ev, p.conversation)
    if fresh == nil then return nil, err end
    if not fresh then return true end
    local state = hd.conversation(conv_id).state
    if state ~= "routing" and state ~= "agent" then return true end
    return switchboard_effect(conv_id, ev, p, state)
  end
end

-- The action an event calls for, or nil when it is not for us.
local function action_of(ev)
  if type(ev) ~= "table" or type(ev.id) ~= "string" or ev.id == "" or type(ev.type) ~= "string" then return nil end
  local p = ev.payload
  if type(p) ~= "table" or type(p.conversation) ~= "table" then return nil end
  local conv_id = p.conversation.id
  -- The id goes into API paths: only what Sunshine ids are made of.
  if type(conv_id) ~= "string" or #conv_id > 128 or not conv_id:match("^[%w_%-]+$") then return nil end
  if ev.type == "conversation:message" then return on_message(p, conv_id) end
  return on_switchboard(ev, p, conv_id)
end

--- One event: true when done or skipped, nil and a reason when Sunshine should retry.
local function handle(ev)
  local action = action_of(ev)
  if not action then return true end
  local done, why = events.once(EVENT_PREFIX .. ev.id, action)
  if done ~= nil then return true end          -- applied, or a replay that took effect already
  if events.passing(why) then return nil, why end
  log.warn("sunshine.event_skipped", { event = ev.id, type = ev.type, reason = why })
  return true
end

local function authorized(req)
  local key = req.headers["x-api-key"]
  return type(key) == "string" and crypto.compare(key, conf.webhook_secret)
end

local function on_events(req)
  if not authorized(req) then return 401, { error = "bad X-API-Key" } end
  local body = json.decode(req.body)
  if type(body) ~= "table" or type(body.events) ~= "table" then return 400, { error = "events must be an array" } end
  if type(body.app) == "table" and body.app.id ~= conf.app_id then return 400, { error = "another app" } end
  for _, ev in ipairs(body.events) do
    local ok, err = handle(ev)
    -- Events before this one are remembered: the retried body skips them.
    if not ok then return 503, { error = err } end
  end
  return 200, { ok = true }
end

M.webhooks = {
  ["POST /hubs/sunshine/events"] = on_events,
}

return M
