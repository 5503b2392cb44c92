-- handoff.context sized as JSON (Sunshine's 4 KB metadata) and cut on UTF-8 boundaries.
-- Run inside the runtime with the real modules.
local context = require "handoff.context"
local json = require "handoff.json"
local T = {}

local function handoff(nvars, value)
  local vars = {}
  for i = 1, nvars do vars[("Global.Custom%03d"):format(i)] = value or ("value " .. i) end
  return { context = { last_topic = "Order status", language = "en-US", vars = vars } }
end

function T.json_size_stays_within_the_limit()
  for _, max in ipairs({ 2, 64, 500, 4096 }) do
    local flat, dropped = context.flat(handoff(300), { queue = "orders" }, { json = true, max_bytes = max })
    local size = #json.encode(flat)
    assert(size <= max, ("%d bytes over %d"):format(size, max))
    assert(#dropped > 0)
  end
end

function T.json_size_is_exact_and_fills_the_room()
  local h = handoff(300)
  local flat = context.flat(h, nil, { json = true, max_bytes = 4096 })
  local size = #json.encode(flat)
  assert(size > 4096 - 40, "room left: " .. (4096 - size))
  -- what json.encode escapes ("/" and quotes) is counted too
  flat = context.flat(handoff(200, 'a/b "c"'), nil, { json = true, max_bytes = 1000 })
  assert(#json.encode(flat) <= 1000)
  -- without json only keys and values count: the encoded table is larger
  flat = context.flat(h, nil, { max_bytes = 4096 })
  assert(#json.encode(flat) > 4096)
end

function T.long_values_are_cut_on_a_character_boundary()
  local h = { context = { last_phrase = string.rep("é", 400) } }   -- 800 bytes of 2-byte characters
  for _, max_value in ipairs({ 100, 101, 512 }) do
    local v = context.flat(h, nil, { max_value = max_value }).last_phrase
    assert(#v <= max_value and v:sub(-3) == "...", v)
    assert(utf8.len(v), "valid UTF-8 after the cut")
  end
end

return T
