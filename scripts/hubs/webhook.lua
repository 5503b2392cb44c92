--[[ hubs.webhook - the generic webhook hub: handoffd's own contract (normative).

The hub fronts the customer and hosts the agents (both roles). Configure it with

  hub = { module = "hubs.webhook", url = "https://hub.example/handoffd",
          secret = os.getenv("HUB_SECRET"), token = os.getenv("HUB_TOKEN") }

Every request, both ways, carries X-Handoffd-Timestamp (unix seconds), X-Handoffd-Delivery
(a unique id) and X-Handoffd-Signature: v1=<hex HMAC-SHA256(secret, timestamp "." body)>.
A missing or wrong signature, or a timestamp more than 300 s away, is answered 401.

Hub -> handoffd: POST /hubs/webhook/events, one JSON event per request:
  message            {id, type, conversation, user {id,name}, text, attachments?, locale?}
  handoff.accepted   {id, type, conversation, handoff_id, agent?}
  handoff.failed     {id, type, conversation, handoff_id, reason}
  handoff.completed  {id, type, conversation, handoff_id, return_to_bot}
  conversation.end   {id, type, conversation}
Answers: 202 {"ok":true} once durably recorded; 200 {"ok":true,"duplicate":true} for an id
seen before; 200 {"ok":true,"open":false} for a conversation.end of a conversation that is
not open (ended already or never seen); 400 {"error":...} malformed or unknown;
401 signature; 413 too large; 503 {"error":"overloaded"|"conversation ending"|...} with
Retry-After (the hub retries). A message for a conversation that ended starts a new one.

handoffd -> hub: POST {url}/messages, POST {url}/typing (best effort), POST {url}/handoffs,
POST {url}/end {id, type = "conversation.end", conversation, reason} when the conversation
ended without the hub's word: reason "bot" (the bot ended it), "idle" (limits.idle_timeout),
"directline" (the bot's conversation is gone), "handoff" (as the front of a desk-only setup:
the desk completed the handoff without return to the bot). A hub that answers 404 to /end is not told
again for that conversation (hubs predating it keep working).
Retried by the runtime with backoff and jitter on network errors, 429 (Retry-After) and
5xx; never on 400, 401, 403, 404, 410, 422. A retry carries the same id / handoff_id.
]]
local hd = require "handoff"
local http = require "handoff.http"
local json = require "handoff.json"
local crypto = require "handoff.crypto"
local time = require "handoff.time"
local delivery = require "handoff.delivery"
local events = require "handoff.events"
local signature_ok = require "handoff.signature"

local M = {}

local MAX_SKEW_S = 300
local EVENT_TYPES = { ["message"] = true, ["handoff.accepted"] = true, ["handoff.failed"] = true,
                      ["handoff.completed"] = true, ["conversation.end"] = true }

local conf                                -- set by init; a reload builds a fresh one

--- Checks the settings; raising rejects the (re)load.
function M.init(settings)
  assert(type(settings.url) == "string" and settings.url:match("^https?://"),
         "hubs.webhook: url is required (http:// or https://)")
  assert(type(settings.secret) == "string" and #settings.secret >= 16,
         "hubs.webhook: secret is required (at least 16 characters)")
  assert(settings.token == nil or type(settings.token) == "string", "hubs.webhook: token must be a string")
  conf = { url = settings.url:gsub("/+$", ""), secret = settings.secret, token = settings.token,
           timeout_ms = settings.timeout_ms or 10000, ca_file = settings.ca_file }
end

-- lua-cjson encodes an empty table as {}; these members are arrays in the contract.
local EMPTY_ARRAYS = { { '"attachments":{}', '"attachments":[]' }, { '"transcript":{}', '"transcript":[]' },
                       { '"topics":{}', '"topics":[]' }, { '"phrases":{}', '"phrases":[]' } }

-- Plain searches only (a message without attachments has one on every delivery): a
-- pattern would be tried at every position of the body.
local function encode(payload)
  local body = json.encode(payload)
  if not body:find('":{}', 1, true) then return body end
  for _, pair in ipairs(EMPTY_ARRAYS) do
    local at = body:find(pair[1], 1, true)
    while at do
      body = body:sub(1, at - 1) .. pair[2] .. body:sub(at + #pair[1])
      at = body:find(pair[1], at + #pair[2], true)
    end
  end
  return body
end

local function signature(ts, body)
  return "v1=" .. crypto.hmac("sha256", conf.secret, ts .. "." .. body)
end

local SIGNATURE = { prefix = "v1=" }

local function signed(req)
  local ts = req.headers["x-handoffd-timestamp"]
  return signature_ok.fresh(ts, MAX_SKEW_S) and ts:match("^%d+$") ~= nil
     and signature_ok.hmac_ok(conf.secret, ts .. "." .. req.body, req.headers["x-handoffd-signature"], SIGNATURE)
end

--- POSTs PAYLOAD to the hub, signed. Returns the response, or nil, err, retry (true or
--- the hub's Retry-After in seconds) for the runtime's retry policy.
local function post(path, payload)
  local body = encode(payload)
  local ts = tostring(math.floor(time.now()))   -- an integer: its digits, as %d
  local headers = { ["Content-Type"] = "application/json", ["X-Handoffd-Timestamp"] = ts,
                    ["X-Handoffd-Delivery"] = crypto.uuid(), ["X-Handoffd-Signature"] = signature(ts, body) }
  if conf.token then headers["Authorization"] = "Bearer " .. conf.token end
  return delivery.result(http.request(conf.url .. path, { method = "POST", headers = headers, body = body,
                                                          timeout_ms = conf.timeout_ms, ca_file = conf.ca_file }))
end

--- The bot said something: messages go to {url}/messages, typing (best effort) to {url}/typing.
function M.to_user(conv, activity)
  if activity.type == "typing" then
    post("/typing", { conversation = conv.id })
    return true
  end
  if activity.type ~= "message" then return true end
  local res, err, retry = post("/messages", {
    id = activity.id, conversation = conv.id,
    activity = { type = "message", text = activity.text, textFormat = activity.textFormat,
                 attachments = activity.attachments or {}, suggestedActions = activity.suggestedActions,
                 inputHint = activity.inputHint },
  })
  if not res then return nil, err, retry end
  return true
end

--- The conversation ended without the hub's word: POST {url}/end. A 404 means the hub
--- does not take end notices.
function M.conversation_end(conv, event)
  local res, err, retry = post("/end", { id = event.id, type = "conversation.end", conversation = conv.id,
                                          reason = event.reason })
  if not res and err:match("^HTTP 404") then return true end
  if not res then return nil, err, retry end
  return true
end

local function transcript_of(h)
  local out = {}
  for _, e in ipairs(h.transcript) do
    if e.type == "message" then
      out[#out + 1] = { id = e.id, role = e.role, name = e.name, text = e.text, timestamp = e.timestamp }
    end
  end
  return out
end

--- Hands the conversation to the hub's agents: {url}/handoffs with routing, context and
--- transcript. "accepted" when the hub answers {"accepted":true}, else true (the hub
--- sends handoff.accepted later).
function M.escalate(conv, h, route)
  local ctx = h.context
  local res, err, retry = post("/handoffs", {
    handoff_id = conv.handoff_id, conversation = conv.id,
    user = conv.user or { id = h.user.id, name = h.user.name },
    routing = { queue = route.queue, skill = route.skill, priority = route.priority,
                reason = route.reason or h.reason },
    context = { last_topic = ctx.last_topic, topics = ctx.topics, last_phrase = ctx.last_phrase,
                phrases = ctx.phrases, agent_message = ctx.agent_message, language = ctx.language,
                bot_id = ctx.bot_id, bot_name = ctx.bot_name,
                conversation_id = conv.dl_conversation_id or h.conversation_id, vars = ctx.vars },
    transcript = transcript_of(h),
  })
  if not res then return nil, err, retry end
  local answer = json.decode(res.body)
  if type(answer) == "table" and answer.accepted == true then return "accepted" end
  return true
end

local function reply(status, body, headers) return status, body, headers end

local function bad(reason) return reply(400, { error = reason }) end

--- Checks an event's fields; returns nil or the reason it is malformed.
local function malformed(ev)
  if type(ev) ~= "table" then return "the body must be a JSON object" end
  if type(ev.id) ~= "string" or ev.id == "" then return "id must be a non-empty string" end
  if type(ev.conversation) ~= "string" or ev.conversation == "" then return "conversation must be a non-empty string" end
  if not EVENT_TYPES[ev.type] then return "unknown type " .. tostring(ev.type) end
  if ev.type == "message" then
    if type(ev.user) ~= "table" or type(ev.user.id) ~= "string" then return "message needs user.id" end
    if type(ev.text) ~= "string" and type(ev.attachments) ~= "table" then return "message needs text or attachments" end
  end
  return nil
end

local function apply(ev)
  local id = ev.conversation
  if ev.type == "message" then
    local user = { id = ev.user.id, name = ev.user.name }
    return hd.customer(id, { type = "message", text = ev.text, attachments = ev.attachments,
                             locale = ev.locale, from = user }, user)
  elseif ev.type == "handoff.accepted" then
    return hd.handoff_event(id, "accepted", { handoff_id = ev.handoff_id, agent = ev.agent })
  elseif ev.type == "handoff.failed" then
    return hd.handoff_event(id, "failed", { handoff_id = ev.handoff_id, reason = ev.reason })
  elseif ev.type == "handoff.completed" then
    return hd.handoff_event(id, "completed", { handoff_id = ev.handoff_id, return_to_bot = ev.return_to_bot ~= false })
  end
  return hd.end_conversation(id)
end

local function failure(err)
  local status = events.status(err, 503)
  local headers = status == 503 and { ["Retry-After"] = tostring(events.retry_after(err)) } or nil
  return reply(status, { error = err }, headers)
end

local function on_event(req)
  if not signed(req) then return reply(401, { error = "bad signature" }) end
  local ev = json.decode(req.body)
  local why = malformed(ev)
  if why then return bad(why) end
  local done, note = events.once(ev.id, function() return apply(ev) end)
  if done == nil then return failure(note) end
  if not done then return reply(200, { ok = true, duplicate = true }) end
  -- hd.end_conversation: "not open" when the conversation ended already or was never seen
  if note == "not open" then return reply(200, { ok = true, open = false }) end
  return reply(202, { ok = true })
end

M.webhooks = {
  ["POST /hubs/webhook/events"] = on_event,
}

return M
