-- The pieces hub scripts share (scripts/handoff/): delivery results, transcripts, flat
-- context, signature checks. Run inside the runtime with the real modules.
local delivery = require "handoff.delivery"
local transcript = require "handoff.transcript"
local context = require "handoff.context"
local sig = require "handoff.signature"
local crypto = require "handoff.crypto"
local time = require "handoff.time"
local T = {}

local function res(status, headers, body) return { status = status, headers = headers or {}, body = body or "" } end

function T.delivery_classifies_answers()
  assert(delivery.result(res(201)).status == 201)
  local ok, err, retry = delivery.result(nil, "timeout")
  assert(ok == nil and err == "timeout" and retry == true)
  ok, err, retry = delivery.result(res(503))
  assert(ok == nil and err == "HTTP 503" and retry == true)
  ok, err, retry = delivery.result(res(429, { ["retry-after"] = "7" }))
  assert(ok == nil and err == "HTTP 429" and retry == 7)
  ok, err, retry = delivery.result(res(400, {}, '{"error":"bad field"}'))
  assert(ok == nil and err == 'HTTP 400: {"error":"bad field"}' and retry == nil)
  ok, err, retry = delivery.result(res(404))
  assert(ok == nil and err == "HTTP 404" and retry == nil)
end

local H = {
  transcript = {
    { type = "message", role = "user", name = "Dana", text = "hello", timestamp = "2026-11-20T09:15:00.000Z" },
    { type = "typing", role = "bot" },
    { type = "message", role = "bot", name = "Support Bot", text = "Hi Dana" },
    { type = "message", role = "user", text = "I want a human" },
  },
  context = { last_topic = "Order status", language = "en-US", topics = { "Greeting", "Order status" },
              vars = { ["Global.CustomerTier"] = "gold", ["va_LastTopic"] = "Order status", n = 3 } },
}

function T.transcript_reads_like_a_chat()
  local text, dropped = transcript.text(H)
  assert(text == "Dana: hello\nSupport Bot: Hi Dana\nCustomer: I want a human", text)
  assert(dropped == 0)
  text, dropped = transcript.text(H, { max_bytes = 40 })
  assert(dropped == 2 and text == "(2 earlier lines left out)\nCustomer: I want a human", text)
  assert(transcript.lines(H, { timestamps = true })[1] == "[09:15:00] Dana: hello")
  assert(transcript.text({ transcript = {} }) == "")
end

function T.context_is_flat_and_bounded()
  local flat, dropped = context.flat(H, { queue = "orders", priority = 2 }, { prefix = "h_" })
  assert(flat.h_queue == "orders" and flat.h_priority == "2" and flat.h_language == "en-US")
  assert(flat["h_var.Global.CustomerTier"] == "gold" and flat["h_var.n"] == "3")
  assert(flat.h_topics == '["Greeting","Order status"]')
  assert(#dropped == 0)
  assert(context.flat(H, { priority = 2.0 }).priority == "2", "a decoded JSON number")
  assert(context.flat(H, { priority = 2.5 }).priority == "2.5")
  flat, dropped = context.flat(H, { queue = "orders" }, { max_bytes = 40 })
  assert(flat.queue == "orders" and #dropped > 0)
  local size = 0
  for k, v in pairs(flat) do size = size + #k + #v end
  assert(size <= 40)
end

function T.context_as_snake_case_attributes_and_a_summary()
  local attrs = context.snake(H, { queue = "orders" }, { prefix = "handoff_" })
  assert(attrs.handoff_var_global_customertier == "gold" and attrs.handoff_var_va_lasttopic == "Order status")
  assert(attrs.handoff_queue == "orders" and attrs["handoff_var.n"] == nil)
  local lines = context.summary(H, { queue = "orders", priority = 2.0, skill = "late" }, { name = "Dana" },
                                { queue_suffix = " (no team)" })
  assert(table.concat(lines, "|") == "Customer: Dana|Queue: orders (no team)|Skill: late|Priority: 2|"
         .. "Topic: Order status|Language: en-US", table.concat(lines, "|"))
end

function T.handoff_steps_run_once_each()
  local conv, calls = { handoff_id = "h1", data = {} }, {}
  local fail_b = true
  local steps = {
    { "a", function() calls[#calls + 1] = "a"; return true end },
    { "skipped", false },
    { "b", function()
      calls[#calls + 1] = "b"
      if fail_b then return nil, "HTTP 503", true end
      return true
    end },
  }
  local ok, err, retry = delivery.steps(conv, steps)
  assert(ok == nil and err == "b: HTTP 503" and retry == true)
  fail_b = false
  assert(delivery.steps(conv, steps) == true)
  assert(table.concat(calls, ",") == "a,b,b", "a is not done again on the retry")
  conv.handoff_id = "h2"
  assert(delivery.steps(conv, steps) == true)
  assert(table.concat(calls, ",") == "a,b,b,a,b", "a new handoff runs every step")
end

function T.signatures()
  local body = '{"a":1}'
  local good = "sha256=" .. crypto.hmac("sha256", "s3cret", body)
  assert(sig.hmac_ok("s3cret", body, good, { prefix = "sha256=" }))
  assert(not sig.hmac_ok("s3cret", body .. " ", good, { prefix = "sha256=" }))
  assert(not sig.hmac_ok("s3cret", body, good:sub(8), { prefix = "sha256=" }))
  assert(not sig.hmac_ok("s3cret", body, nil))
  assert(sig.hmac_ok("k", "d", crypto.hmac("sha1", "k", "d", "base64"), { alg = "sha1", enc = "base64" }))
  assert(sig.hmac_ok("k", "d", "sha1=" .. crypto.hmac("sha1", "k", "d"), { alg = "sha1", prefix = "sha1=" }),
         "Intercom's X-Hub-Signature")
  assert(sig.fresh(math.floor(time.now()), 300))
  assert(sig.fresh(math.floor(time.now() * 1000), 300), "milliseconds too")
  assert(not sig.fresh(math.floor(time.now()) - 301, 300))
  assert(not sig.fresh("soon", 300))
end

return T
