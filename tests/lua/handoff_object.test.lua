-- Runs inside the real runtime (`handoffd test`): the handoff object as routing rules
-- and hub scripts get it, built in C from a Direct Line payload, never decoded in Lua.
local json = require "cjson"
local payload = require "handoff.payload"
local T = {}

local function event(value, attachments, extra)
  local ev = { type = "event", name = "handoff.initiate", id = "conv-1|0000009",
               conversation = { id = "conv-1" }, value = value, attachments = attachments,
               from = { id = "bot-1", name = "Bot", role = "bot" },
               recipient = { id = "dl_u1", name = "Ann", role = "user" } }
  for k, v in pairs(extra or {}) do ev[k] = v end
  return ev
end

local function transcript(n)
  local acts = {}
  for i = 1, n do
    acts[i] = { type = "message", id = "conv-1|" .. i, timestamp = "2026-11-20T09:15:0" .. (i % 10) .. "Z",
                from = { id = i % 2 == 1 and "dl_u1" or "bot-1", role = i % 2 == 1 and "user" or "bot",
                         name = i % 2 == 1 and "Ann" or "Bot" },
                text = "line " .. i .. " \u{e9}\u{1F600}", channelData = { deep = { deeper = { i } } } }
  end
  return { activities = acts }
end

local function parse(set)
  return assert(payload.handoff(json.encode(set)))
end

function T.routing_reads_tables()
  local h = parse({ watermark = "9", activities = {
    { type = "message", id = "conv-1|0000008", text = "Transferring you" },
    event({ va_Language = "fr-FR", va_Topics = { "Billing" }, ["Global.CustomerTier"] = "gold",
            va_AgentMessage = "wants a refund", va_Scope = "bot" },
          { { contentType = "application/json", name = "Transcript", content = transcript(4) } }) } })
  assert(h.context.language == "fr-FR" and h.context.topics[1] == "Billing")
  assert(h.context.vars["Global.CustomerTier"] == "gold")
  assert(h.reason == "wants a refund" and h.activity_id == "conv-1|0000009")
  assert(h.user.id == "dl_u1" and h.bot.name == "Bot" and h.conversation_id == "conv-1")
  assert(#h.transcript == 4 and h.transcript[4].role == "bot" and h.transcript[3].text == "line 3 \u{e9}\u{1F600}")
  -- the routing example of DESIGN.md, unchanged
  local route = function(x)
    if x.context.language == "fr-FR" then return { queue = "support-fr" } end
    if x.context.vars["Global.CustomerTier"] == "gold" then return { queue = "vip", priority = 1 } end
    return { queue = "general" }
  end
  assert(route(h).queue == "support-fr")
end

function T.hub_forwards_raw_transcript_verbatim()
  local sent = transcript(3)
  local h = parse(event({ va_Scope = "bot" }, { { name = "transcript", content = json.encode(sent) } }))
  local raw = h.raw:transcript()
  assert(raw == json.encode(sent), "the decoded string, byte for byte")
  assert(json.decode(h.raw:entry(2)).channelData.deep.deeper[1] == 2)
  local body = json.encode({ transcript = h.transcript })   -- the entries encode as a JSON array
  assert(body:match('^{"transcript":%[{'), body)
end

function T.broken_transcript_keeps_the_handoff()
  local h = parse(event({ va_Scope = "bot" }, { { name = "Transcript", content = '{"activities": [' } }))
  assert(h.context.scope == "bot")
  assert(#h.transcript == 0 and h.transcript_error:match("^malformed JSON"), h.transcript_error)
end

function T.bad_payloads_are_refused_with_a_reason()
  local v, err = payload.handoff('{"activities":[{"type":"event","name":"handoff.initiate","value":{"a":tru}}]}')
  assert(v == nil and err == "malformed JSON: invalid literal at byte 70", err)
  v, err = payload.handoff('{"activities":{}}')
  assert(v == nil and err:match("^wrong shape: activities is not an array at byte 14$"), err)
  v, err = payload.handoff('{"activities":[{"text":"\xff"}]}')
  assert(v == nil and err == "invalid UTF-8 at byte 24", err)
  local ok = pcall(payload.handoff, {})
  assert(not ok, "a table is not a payload")
end

-- The context, transcript and parties are built when first read; routing and hub code
-- must not be able to tell: ipairs, #, pairs, handoff.json and the route DSL all see
-- plain tables.
function T.lazy_object_reads_like_plain_tables()
  local hjson = require "handoff.json"
  local route = require "handoff.route"
  local set = event({ va_Language = "de-DE", va_Topics = { "Billing" }, ["Global.X"] = { 1, 2 } },
                    { { name = "Transcript", content = transcript(5) } })
  local h = parse(set)
  local n = 0
  for i, e in ipairs(h.transcript) do
    n = i
    assert(e.text == "line " .. i .. " \u{e9}\u{1F600}" and e.id == "conv-1|" .. i)
  end
  assert(n == 5 and #h.transcript == 5 and h.transcript[3].role == "user")
  local vars = {}
  for k, v in pairs(h.context.vars) do vars[k] = v end
  assert(vars.va_Language == "de-DE" and vars["Global.X"][2] == 2 and vars.va_Topics == h.context.topics)
  local back = hjson.decode(hjson.encode({ transcript = h.transcript, context = h.context, user = h.user }))
  assert(#back.transcript == 5 and back.transcript[5].id == "conv-1|5" and back.context.language == "de-DE")
  for _, e in ipairs(back.transcript) do
    local k = 0
    for _ in pairs(e) do k = k + 1 end
    assert(k == 6, "id, type, role, name, text, timestamp and nothing else")
  end
  assert(back.context.vars["Global.X"][1] == 1 and back.user.id == "dl_u1")
  local rules = { route.var("Global.X", function(x) return #x == 2 end, route.queue("vars")),
                  route.always(route.queue("general")) }
  assert(route.evaluate(rules, parse(set), 0).queue == "vars")
  rules[1] = route.topic("Billing", route.queue("billing"))
  assert(route.evaluate(rules, parse(set), 0).queue == "billing")
  local keys = {}
  for k in pairs(parse(set)) do keys[#keys + 1] = k end
  table.sort(keys)
  assert(table.concat(keys, " ") == "activity_id bot context conversation_id raw transcript user", table.concat(keys, " "))
end

return T
