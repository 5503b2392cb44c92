--[[ handoff.context - the handoff context as flat key/value pairs, within a size limit.

Hubs take context as flat attributes (Chatwoot custom attributes, Sunshine metadata with
its 4 KB limit, Genesys customAttributes). flat() turns the routing decision and the
context into string values with stable keys, and drops what does not fit, reporting it:

  local flat, dropped = require("handoff.context").flat(h, route, { max_bytes = 4096, prefix = "handoff_" })
  -- json = true: json.encode(flat) itself stays within max_bytes (Sunshine measures that)
]]
local json = require "handoff.json"

local M = {}

local function as_string(v)
  if type(v) == "string" then return v end
  -- JSON numbers decode as floats: a priority of 2 must read "2", not "2.0".
  if type(v) == "number" then return tostring(math.tointeger(v) or v) end
  if type(v) == "boolean" then return tostring(v) end
  if type(v) == "table" then return json.encode(v) end
  return nil                      -- nil and JSON null leave the key out
end

--- Ordered {key, value} pairs: routing first, then the well-known context fields, then
--- every variable as sent (sorted by name, so truncation is deterministic).
function M.pairs(h, route, prefix)
  prefix = prefix or ""
  local out, ctx = {}, h.context or {}
  local function add(k, v)
    local s = as_string(v)
    if s then out[#out + 1] = { prefix .. k, s } end
  end
  if route then
    add("queue", route.queue); add("skill", route.skill); add("priority", route.priority)
    add("reason", route.reason)
  end
  for _, k in ipairs({ "last_topic", "last_phrase", "agent_message", "language", "bot_name",
                       "conversation_id", "topics" }) do
    add(k, ctx[k])
  end
  local names = {}
  for k in pairs(ctx.vars or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do add("var." .. k, ctx.vars[k]) end
  return out
end

-- S cut to at most N bytes without splitting a UTF-8 sequence, marked with "...".
local function cut(s, n)
  local stop = n - 3
  while stop > 0 and (s:byte(stop + 1) or 0) & 0xC0 == 0x80 do stop = stop - 1 end
  return s:sub(1, stop) .. "..."
end

-- What a pair costs: its bytes, or with as_json its bytes in a JSON object ("k":"v" and
-- a comma or a brace), so that json.encode(flat) stays within max_bytes.
local function cost(k, v, as_json)
  if not as_json then return #k + #v end
  return #json.encode(k) + #json.encode(v) + 2
end

--- A flat table of at most opts.max_bytes (sum of key and value lengths, or with
--- opts.json the size of the table encoded as JSON; default 4096). Values longer than
--- opts.max_value (default 512) are cut. Returns the table and the list of keys left out.
function M.flat(h, route, opts)
  opts = opts or {}
  local max, max_value = opts.max_bytes or 4096, opts.max_value or 512
  local flat, dropped, used = {}, {}, opts.json and 1 or 0
  for _, kv in ipairs(M.pairs(h, route, opts.prefix)) do
    local k, v = kv[1], kv[2]
    if #v > max_value then v = cut(v, max_value) end
    local c = cost(k, v, opts.json)
    if used + c <= max then
      flat[k] = v
      used = used + c
    else
      dropped[#dropped + 1] = k
    end
  end
  return flat, dropped
end

--- flat() with every key made a snake_case identifier, as helpdesks name their custom
--- attributes: "handoff_var.Global.CustomerTier" becomes "handoff_var_global_customertier".
function M.snake(h, route, opts)
  local flat, dropped = M.flat(h, route, opts)
  local out = {}
  for k, v in pairs(flat) do out[(k:lower():gsub("[^%w_]+", "_"))] = v end
  return out, dropped
end

--- The "Label: value" lines that head a note for the agent: who asked, why, where it was
--- routed, the topic and the language. user: the customer ({name}); opts.queue_suffix is
--- appended to the queue (e.g. " (no team mapped)").
function M.summary(h, route, user, opts)
  local ctx, lines = h.context or {}, {}
  local function line(label, v)
    if v ~= nil and v ~= "" then lines[#lines + 1] = label .. ": " .. tostring(v) end
  end
  line("Customer", user and user.name)
  line("Reason", route.reason or h.reason)
  line("Queue", route.queue and (route.queue .. (opts and opts.queue_suffix or "")))
  line("Skill", route.skill)
  line("Priority", math.tointeger(route.priority) or route.priority)
  line("Agent", route.agent)
  line("Topic", ctx.last_topic)
  line("Language", ctx.language)
  return lines
end

return M
