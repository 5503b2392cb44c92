--[[ hubs.intercom - Intercom as the front and the desk, the bot being one of its admins (model A).

The bot is a teammate (an admin) of the workspace: Intercom assigns it the conversations it
should answer (a Workflow or an assignment rule), handoffd relays the customer's messages to
the Direct Line bot and posts the bot's answers as that admin. A handoff leaves a note, sets
conversation attributes and assigns the team (or admin) the routing rules chose. Configure it
with

  hub = { module = "hubs.intercom",
          token = os.getenv("INTERCOM_TOKEN"),                  -- the app's access token
          client_secret = os.getenv("INTERCOM_CLIENT_SECRET"),  -- signs the webhooks
          bot_admin_id = "5017690",                             -- the bot's admin id
          teams = { orders = "5017691" },                       -- route.queue -> team id
          admins = { sam = "991267715" } }                      -- route.agent -> admin id

Intercom -> handoffd (POST /hubs/intercom/events, API version 2.11 notifications; each is
answered in milliseconds, the bot is reached afterwards: Intercom waits 5 s at most):
  - X-Hub-Signature must be sha1=<hex HMAC-SHA1(client_secret, raw body)>, else 401. The
    notification id, the conversation part id (or "source" for the first message) make a
    re-delivered notification a no-op.
  - conversation.user.created / conversation.user.replied: the customer's message goes to
    the bot while handoffd's bot has the conversation. A conversation handoffd does not know
    yet is taken when it is assigned to the bot admin (or, with take_unassigned, to nobody).
  - conversation.admin.assigned: to the bot admin while the humans have it -> handoff
    completed, back to the bot; to the bot for a new conversation -> its first message goes to
    the bot; to a human while the handoff waits (or while the bot has it) -> accepted.
  - conversation.admin.replied by a human while the handoff waits (or the bot has it) ->
    accepted. The humans' replies reach the customer in Intercom itself, never the bot.
  - conversation.admin.closed: while the humans have it -> handoff completed, back to the
    bot (the customer's next message, which reopens it in Intercom, goes to the bot; the bot's first
    answer assigns the conversation back to the bot admin); while the bot has it ->
    endOfConversation to the bot. conversation.admin.snoozed changes nothing.
  - What the bot admin did itself (its replies, notes, assignments) is ignored.
handoffd -> Intercom ({url}, Authorization: Bearer <token>, Intercom-Version: 2.11):
  POST /conversations/{id}/reply {message_type comment, type admin, admin_id, body (HTML)};
  a handoff: POST .../reply note, PUT /conversations/{id} {custom_attributes}, POST
  /conversations/{id}/parts {message_type assignment} for the admin, then the team; when
  the conversation ends without Intercom's word (the bot ended it, limits.idle_timeout, the
  bot's conversation gone): POST /conversations/{id}/parts {message_type close}. Retried
  on network errors, 429 (X-RateLimit-Reset honoured) and 5xx.
]]
local hd = require "handoff"
local http = require "handoff.http"
local json = require "handoff.json"
local log = require "handoff.log"
local time = require "handoff.time"
local delivery = require "handoff.delivery"
local events = require "handoff.events"
local signature = require "handoff.signature"
local transcript = require "handoff.transcript"
local context = require "handoff.context"

local M = {}

local API_VERSION = "2.11"               -- the Intercom-Version this script was checked against
local MAX_RATE_WAIT_S = 60               -- a later X-RateLimit-Reset is left to the backoff
local MAX_ATTACHMENT_URLS = 10           -- admin_reply_conversation_request.attachment_urls
local CUSTOMER = { user = true, lead = true, contact = true }

local conf                               -- set by init; a reload builds a fresh one

-- An Intercom id: a string of digits (JSON numbers accepted), or nil.
local function idstr(v)
  if type(v) == "number" then v = math.tointeger(v) and string.format("%d", v) end
  return type(v) == "string" and v:match("^%d+$") and v or nil
end

local function str(v) return type(v) == "string" and v ~= "" and v or nil end

-- {[name] = id string}; raises with the setting's name otherwise.
local function id_map(t, what)
  local out = {}
  assert(t == nil or type(t) == "table", "hubs.intercom: " .. what .. " must be a table of name = id")
  for k, v in pairs(t or {}) do
    assert(type(k) == "string" and idstr(v), "hubs.intercom: " .. what .. "." .. tostring(k) .. " must be an Intercom id")
    out[k] = idstr(v)
  end
  return out
end

-- `attributes`: true (default: every key), false (none) or a list of names -> a set.
local function attribute_names(v)
  if v == nil then return true end
  assert(type(v) == "boolean" or type(v) == "table", "hubs.intercom: attributes must be true, false or a list of names")
  if v ~= true and v ~= false then
    local names = {}
    for _, name in ipairs(v) do
      assert(str(name), "hubs.intercom: attributes must list attribute names (strings)")
      names[name] = true
    end
    return names
  end
  return v
end

--- Checks the settings; raising rejects the (re)load.
function M.init(settings)
  local url = settings.url or "https://api.intercom.io"
  assert(type(url) == "string" and url:match("^https?://"), "hubs.intercom: url must be http:// or https://")
  assert(type(settings.token) == "string" and settings.token ~= "",
         "hubs.intercom: token is required (the app's access token)")
  assert(type(settings.client_secret) == "string" and #settings.client_secret >= 16,
         "hubs.intercom: client_secret is required (the app's client secret, which signs the webhooks)")
  assert(idstr(settings.bot_admin_id), "hubs.intercom: bot_admin_id is required (the bot's admin id)")
  assert(settings.app_id == nil or str(settings.app_id), "hubs.intercom: app_id must be a non-empty string")
  conf = { url = url:gsub("/+$", ""), token = settings.token, client_secret = settings.client_secret,
           bot = idstr(settings.bot_admin_id), app_id = settings.app_id,
           teams = id_map(settings.teams, "teams"), admins = id_map(settings.admins, "admins"),
           take_unassigned = settings.take_unassigned == true, attributes = attribute_names(settings.attributes),
           attribute_prefix = settings.attribute_prefix or "handoff_",
           transcript_bytes = settings.transcript_bytes or 16000,
           timeout_ms = settings.timeout_ms or 10000, ca_file = settings.ca_file }
end

-- ---- handoffd -> Intercom ------------------------------------------------------------

-- Intercom's 429 says when the window resets (X-RateLimit-Reset, epoch seconds) rather
-- than Retry-After: the seconds to wait, or nil.
local function rate_wait(headers)
  local reset = tonumber(headers["x-ratelimit-reset"])
  if not reset then return nil end
  local wait = reset - time.now()
  return wait <= MAX_RATE_WAIT_S and math.max(0, wait) or nil
end

--- METHOD PATH with PAYLOAD as JSON. Returns the response, or nil, err, retry.
local function api(method, path, payload)
  local res, err = http.request(conf.url .. path, {
    method = method, body = json.encode(payload), timeout_ms = conf.timeout_ms, ca_file = conf.ca_file,
    headers = { ["Authorization"] = "Bearer " .. conf.token, ["Intercom-Version"] = API_VERSION,
                ["Content-Type"] = "application/json", ["Accept"] = "application/json" },
  })
  local ok, why, retry = delivery.result(res, err)
  if not ok and res and res.status == 429 and retry == true then retry = rate_wait(res.headers) or true end
  return ok, why, retry
end

local function conversation_path(id, suffix)
  return "/conversations/" .. id .. (suffix or "")
end

local function assignment(kind, assignee)
  return { message_type = "assignment", type = kind, admin_id = conf.bot, assignee_id = assignee }
end

local ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

local function escape(s) return (tostring(s):gsub("[&<>\"']", ESCAPES)) end

-- Text as HTML paragraphs (a blank line starts one, a newline is a <br>): Intercom's reply
-- body is HTML.
local function paragraphs(text)
  local out = {}
  for para in (text:gsub("\r\n", "\n") .. "\n\n"):gmatch("(.-)\n\n+") do
    if para:match("%S") then out[#out + 1] = "<p>" .. escape(para):gsub("\n", "<br>") .. "</p>" end
  end
  return table.concat(out)
end

local function link(url, text)
  return ('<a href="%s">%s</a>'):format(escape(url), escape(text or url))
end

local function list(items)
  if #items == 0 then return "" end
  return "<ul><li>" .. table.concat(items, "</li><li>") .. "</li></ul>"
end

-- Buttons and suggested actions: links open, the others are choices the customer types.
local function actions_html(actions)
  local items = {}
  for _, a in ipairs(type(actions) == "table" and actions or {}) do
    local title, value = str(a.title) or str(a.text) or str(a.value), str(a.value)
    if title and a.type == "openUrl" and value then
      items[#items + 1] = link(value, title)
    elseif title then
      items[#items + 1] = escape(title)
    end
  end
  return list(items)
end

-- A hero (or thumbnail) card as HTML; its image joins the reply's attachment_urls.
local function card_html(c, images)
  local parts = {}
  if str(c.title) then parts[#parts + 1] = "<p><b>" .. escape(c.title) .. "</b></p>" end
  if str(c.subtitle) then parts[#parts + 1] = "<p><i>" .. escape(c.subtitle) .. "</i></p>" end
  if str(c.text) then parts[#parts + 1] = paragraphs(c.text) end
  local image = type(c.images) == "table" and type(c.images[1]) == "table" and str(c.images[1].url)
  if image then images[#images + 1] = image end
  parts[#parts + 1] = actions_html(c.buttons)
  return table.concat(parts)
end

local CARDS = { ["application/vnd.microsoft.card.hero"] = true, ["application/vnd.microsoft.card.thumbnail"] = true }

--- The reply for a bot activity: {body (HTML), attachment_urls}, or nil when it shows nothing.
local function reply_of(activity)
  local html, images = { str(activity.text) and paragraphs(activity.text) or "" }, {}
  for _, a in ipairs(type(activity.attachments) == "table" and activity.attachments or {}) do
    if CARDS[a.contentType] and type(a.content) == "table" then
      html[#html + 1] = card_html(a.content, images)
    elseif str(a.contentUrl) and type(a.contentType) == "string" and a.contentType:match("^image/") then
      images[#images + 1] = a.contentUrl
    elseif str(a.contentUrl) then
      html[#html + 1] = "<p>" .. link(a.contentUrl, str(a.name)) .. "</p>"
    end
  end
  local sa = type(activity.suggestedActions) == "table" and activity.suggestedActions.actions
  html[#html + 1] = actions_html(sa)
  local body = table.concat(html)
  if body == "" and #images == 0 then return nil end
  if #images > MAX_ATTACHMENT_URLS then
    log.warn("intercom.images_dropped", { count = #images - MAX_ATTACHMENT_URLS })
    for i = #images, MAX_ATTACHMENT_URLS + 1, -1 do images[i] = nil end
  end
  return { body = body, attachment_urls = #images > 0 and images or nil }
end

--- The bot said something: a comment from the bot admin (after taking the assignment back
--- when the humans had closed the conversation). Intercom's API has no typing indicator
--- for admins, so typing is dropped.
function M.to_user(conv, activity)
  local reply = activity.type == "message" and reply_of(activity)
  if not reply then return true end
  if conv.data.reclaim then          -- closed by the humans, reopened by the customer
    local res, err, retry = api("POST", conversation_path(conv.id, "/parts"), assignment("admin", conf.bot))
    if not res then return nil, "reclaim: " .. err, retry end
    conv.data.reclaim = nil
  end
  local res, err, retry = api("POST", conversation_path(conv.id, "/reply"), {
    message_type = "comment", type = "admin", admin_id = conf.bot, body = reply.body,
    attachment_urls = reply.attachment_urls })
  if not res then return nil, err, retry end
  return true
end

--- The conversation ended without Intercom's word (event.reason: bot, idle, directline):
--- the bot admin closes it (close_conversation_request), so it leaves the open inbox.
--- Not when the humans closed it last and the bot has not taken it back since
--- (conv.data.reclaim): it is closed already, or the customer reopened it with its last
--- (human) assignee, who then decides. A close Intercom sent us is never told back (the
--- runtime calls this only for ends it did not hear of), and the conversation.admin.closed
--- our close causes is the bot's own action: ignored. A 404 is logged and dropped.
function M.conversation_end(conv, event)
  if conv.data.reclaim then
    log.info("intercom.end_left_closed", { conv = conv.id, reason = event.reason })
    return true
  end
  local close = { message_type = "close", type = "admin", admin_id = conf.bot }
  return delivery.told_end("intercom", conv, event, api("POST", conversation_path(conv.id, "/parts"), close))
end

-- What the agent reads first: who asked, where it was routed, then the conversation.
local function note_of(conv, h, route, team)
  local head = context.summary(h, route, conv.user, { queue_suffix = not team and " (no team mapped)" or nil })
  local names = conv.user and conv.user.name and { user = conv.user.name } or nil
  local text = transcript.text(h, { max_bytes = conf.transcript_bytes, names = names })
  return "<p><b>Handed over by the bot</b></p><p>" .. escape(table.concat(head, "\n")):gsub("\n", "<br>")
    .. "</p><p><b>Transcript</b></p><p>"
    .. (text ~= "" and escape(text):gsub("\n", "<br>") or "(no messages)") .. "</p>"
end

local function admin_of(agent)
  if agent == nil then return nil end
  return conf.admins[agent] or idstr(agent)
end

-- The attributes are a courtesy: Intercom sets only conversation attributes the workspace
-- defined and refuses the whole update (400) for any other name, which must not stop the
-- handoff (the note carries the same facts). `attributes` may list the names to send.
local function set_attributes(conv, h, route)
  local attributes = context.snake(h, route, { prefix = conf.attribute_prefix })
  if type(conf.attributes) == "table" then
    for k in pairs(attributes) do
      if not conf.attributes[k] then attributes[k] = nil end
    end
  end
  local res, err, retry = api("PUT", conversation_path(conv.id), { custom_attributes = attributes })
  if not res and not retry then
    log.warn("intercom.attributes_refused", { conv = conv.id, error = err })
    return true
  end
  return res, err, retry
end

--- Hands the conversation to the humans: a note with the transcript, the attributes, the
--- admin (the route's agent, else nobody: the bot lets go), then the team. Steps done are kept
--- in conv.data, so a retry after a 429/5xx does not post the note twice. "accepted" when a
--- named admin got it, else true (the first human reply or assignment reports acceptance).
function M.escalate(conv, h, route)
  local team, admin = conf.teams[route.queue], admin_of(route.agent)
  local ok, err, retry = delivery.steps(conv, {
    { "note", function()
      return api("POST", conversation_path(conv.id, "/reply"),
                 { message_type = "note", type = "admin", admin_id = conf.bot, body = note_of(conv, h, route, team) })
    end },
    { "attributes", conf.attributes and function() return set_attributes(conv, h, route) end },
    { "admin", function() return api("POST", conversation_path(conv.id, "/parts"), assignment("admin", admin or "0")) end },
    { "team", team and function() return api("POST", conversation_path(conv.id, "/parts"), assignment("team", team)) end },
  })
  if not ok then return nil, err, retry end
  if route.agent and not admin then log.warn("intercom.unknown_agent", { conv = conv.id, agent = route.agent }) end
  if not team then log.warn("intercom.unmapped_queue", { conv = conv.id, queue = route.queue }) end
  return admin and "accepted" or true
end

-- ---- Intercom -> handoffd ------------------------------------------------------------

local ENTITIES = { amp = "&", lt = "<", gt = ">", quot = '"', apos = "'", nbsp = " " }

local function entity(name)
  local n = name:match("^#[xX](%x+)$")
  n = n and tonumber(n, 16) or tonumber(name:match("^#(%d+)$") or "")
  if n and n > 0 and n < 0x110000 then return utf8.char(n) end
  return ENTITIES[name] or ("&" .. name .. ";")
end

-- An Intercom body (HTML) as the plain text the bot reads.
local function text_of(html)
  if type(html) ~= "string" then return nil end
  local text = html:gsub("<[bB][rR]%s*/?>", "\n"):gsub("</[pP]>%s*", "\n"):gsub("<[^>]*>", "")
  text = text:gsub("&(#?%w+);", entity):gsub("^%s+", ""):gsub("%s+$", "")
  return text ~= "" and text or nil
end

-- Intercom's part attachments ({name, url, content_type}) as Bot Framework ones.
local function files_of(list_)
  local out = {}
  for _, a in ipairs(type(list_) == "table" and list_ or {}) do
    if type(a) == "table" and str(a.url) then
      out[#out + 1] = { contentType = str(a.content_type) or "application/octet-stream", contentUrl = a.url,
                        name = str(a.name) }
    end
  end
  return #out > 0 and out or nil
end

local function state_of(id)
  local c = hd.conversation(id)
  return c and c.state
end

local function author_of(part)
  return type(part) == "table" and type(part.author) == "table" and part.author or {}
end

-- A customer's message (the conversation's source or one of its parts) as a dedupe key
-- and an effect, or nil when it carries nothing for the bot.
local function customer_message(id, key, part)
  local author = author_of(part)
  local text, files = text_of(part.body), files_of(part.attachments)
  if not CUSTOMER[author.type] or not (text or files) then return nil end
  local user = { id = "contact-" .. tostring(author.id or id), name = str(author.name) }
  return { key, function()
    return hd.customer(id, { type = "message", text = text, attachments = files, from = user }, user)
  end }
end

local function parts_of(item)
  local list_ = type(item.conversation_parts) == "table" and item.conversation_parts.conversation_parts
  return type(list_) == "table" and list_ or {}
end

-- A conversation handoffd does not know yet is the bot's when Intercom assigned it the
-- bot admin (or nobody at all, with take_unassigned).
local function for_the_bot(item)
  local admin, team = idstr(item.admin_assignee_id), idstr(item.team_assignee_id)
  if admin == conf.bot then return true end
  return conf.take_unassigned and (admin == nil or admin == "0") and (team == nil or team == "0")
end

local function first_message(id, item)
  return customer_message(id, "source:" .. id, type(item.source) == "table" and item.source or {})
end

local function event(id, kind, detail)
  return { nil, function() return hd.handoff_event(id, kind, detail) end }
end

local function human_of(part)
  local author = author_of(part)
  return { id = idstr(author.id), name = str(author.name) }
end

-- Each topic: function(id, item, state, last part) -> list of {dedupe key or nil, effect},
-- or nil and why nothing happens.
local TOPICS = {}

TOPICS["conversation.user.created"] = function(id, item, state)
  if state == nil and not for_the_bot(item) then return nil, "not assigned to the bot" end
  if state ~= nil and state ~= "bot" then return nil, "the humans have it" end
  local m = first_message(id, item)
  return m and { m }, "no text"
end

TOPICS["conversation.user.replied"] = function(id, item, state)
  if state == nil and not for_the_bot(item) then return nil, "not assigned to the bot" end
  if state == "routing" or state == "agent" then return nil, "the humans have it" end
  local out = {}
  for _, part in ipairs(parts_of(item)) do
    local pid = type(part) == "table" and idstr(part.id)
    local m = pid and customer_message(id, "part:" .. pid, part)
    if m then out[#out + 1] = m end
  end
  return #out > 0 and out or nil, "no customer message"
end

TOPICS["conversation.admin.assigned"] = function(id, item, state)
  local assignee = idstr(item.admin_assignee_id)
  if assignee == conf.bot then
    if state == "routing" or state == "agent" then return { event(id, "completed", { return_to_bot = true }) } end
    local m = state == nil and first_message(id, item)
    return m and { m }, "the bot has it already"
  end
  if assignee and assignee ~= "0" and (state == "routing" or state == "bot") then
    return { event(id, "accepted", { agent = { id = assignee } }) }
  end
  return nil, "nothing to do"
end

TOPICS["conversation.admin.replied"] = function(id, _, state, part)
  if state ~= "routing" and state ~= "bot" then return nil, "nothing to do" end
  if not part or author_of(part).type ~= "admin" then return nil, "not an admin's reply" end
  return { event(id, "accepted", { agent = human_of(part) }) }
end

-- Closed by the humans: the handoff is complete and the conversation is the bot's again
-- (it ends only by idle_timeout: handoffd must still know it when the customer writes
-- again, which reopens it in Intercom with its last assignee). The bot's first answer then
-- takes the assignment back (to_user), so the Inbox shows who answers.
local function closed_by_humans(id)
  return { nil, function()
    local data = (hd.conversation(id) or {}).data
    data = type(data) == "table" and data or {}
    data.reclaim = true
    local ok, err = hd.set_data(id, data)
    if not ok then return nil, err end
    return hd.handoff_event(id, "completed", { return_to_bot = true })
  end }
end

TOPICS["conversation.admin.closed"] = function(id, _, state)
  if state == "routing" or state == "agent" then return { closed_by_humans(id) } end
  if state == "bot" then return { { nil, function() return hd.end_conversation(id) end } } end
  return nil, "not a bot conversation"
end

TOPICS["conversation.admin.snoozed"] = function()
  return nil, "snoozed: whoever has it keeps it"
end

local RETRY_STATUS = { busy = 503, fault = 500 }

local function signed(req)
  return signature.hmac_ok(conf.client_secret, req.body, req.headers["x-hub-signature"],
                           { alg = "sha1", prefix = "sha1=" })
end

--- The notification's conversation id and its effects (a list), or nil and why it is ignored.
local function classify(ev)
  if conf.app_id and ev.app_id ~= conf.app_id then return nil, nil, "another workspace" end
  local item = type(ev.data) == "table" and ev.data.item
  local id = type(item) == "table" and item.type == "conversation" and idstr(item.id)
  if not id then return nil, nil, "not a conversation" end
  local topic = TOPICS[ev.topic]
  if not topic then return id, nil, "topic not used" end
  local parts = parts_of(item)
  local last = parts[#parts]
  -- What the bot admin did itself comes back as notifications too: never news.
  if ev.topic:match("^conversation%.admin%.") and author_of(last).type == "admin"
     and idstr(author_of(last).id) == conf.bot then
    return id, nil, "the bot's own action"
  end
  local effects, why = topic(id, item, state_of(id), last)
  return id, effects, why
end

-- Answers 2xx once the effect is durable; 503/500 (Intercom sends the notification again)
-- when handoffd cannot take it now; 400 for what will never work.
local function on_event(req)
  if not signed(req) then return 401, { error = "bad signature" } end
  local ev = json.decode(req.body)
  if type(ev) ~= "table" or ev.type ~= "notification_event" or type(ev.topic) ~= "string" then
    return 400, { error = "not an Intercom notification" }
  end
  if ev.topic == "ping" then return 200, { ok = true, ignored = "ping" } end
  local id, effects, why = classify(ev)
  if not effects then return 200, { ok = true, ignored = why } end
  local notification = str(ev.id) and ("notif:" .. ev.id)
  local applied = 0
  for _, e in ipairs(effects) do
    local key = e[1] or notification
    local done, err = events.once(key and ("intercom:" .. key), e[2])
    if done == nil then
      log.warn("intercom.event_failed", { conv = id, topic = ev.topic, error = err })
      return events.status(err, RETRY_STATUS), { error = err }
    end
    if done then applied = applied + 1 end
  end
  if applied == 0 then return 200, { ok = true, duplicate = true } end
  return 200, { ok = true }
end

M.webhooks = {
  ["POST /hubs/intercom/events"] = on_event,
}

return M
