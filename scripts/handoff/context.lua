--[[ handoff.context - the handoff context as flat key/value pairs, within a size limit.

Hubs take context as flat attributes (Chatwoot custom attributes, Sunshine metadata with
its 4 KB limit, Genesys customAttributes). flat() turns the routing decision and the
context into string values with stable keys, and drops what does not fit, reporting it:

  local flat, dropped = require("handoff.context").flat(h, route, { max_bytes = 4096, prefix = "handoff_" })
]]
local json = require "handoff.json"

local M = {}

local function as_string(v)
  if type(v) == "string" then return v end
  -- JSON numbers arrive as floats: a priority of 2 must read "2", not "2.0".
  if type(v) == "number" then return math.tointeger(v) and string.format("%d", v) or tostring(v) end
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

--- A flat table of at most opts.max_bytes (sum of key and value lengths; default 4096).
--- Values longer than opts.max_value (default 512) are cut. Returns the table and the
--- list of keys left out.
function M.flat(h, route, opts)
  opts = opts or {}
  local max, max_value = opts.max_bytes or 4096, opts.max_value or 512
  local flat, dropped, used = {}, {}, 0
  for _, kv in ipairs(M.pairs(h, route, opts.prefix)) do
    local k, v = kv[1], kv[2]
    if #v > max_value then v = v:sub(1, max_value - 3) .. "..." end
    if used + #k + #v <= max then
      flat[k] = v
      used = used + #k + #v
    else
      dropped[#dropped + 1] = k
    end
  end
  return flat, dropped
end

return M
