--[[ handoff.transcript - the bot-customer transcript as people read it.

  local transcript = require "handoff.transcript"
  local text, truncated = transcript.text(h, { max_bytes = 8000, names = { user = "Dana" } })

Each message line is "Name: text" in order (timestamps optional); non-message activities
(events, typing) are left out. When the text would exceed max_bytes the oldest lines are
dropped and the first line says how many, so the agent sees the latest part.
]]
local M = {}

local function speaker(entry, names)
  if names and names[entry.role] then return names[entry.role] end
  if type(entry.name) == "string" and entry.name ~= "" then return entry.name end
  return entry.role == "bot" and "Bot" or "Customer"
end

--- Lines "Name: text" of the handoff's message entries, oldest first.
function M.lines(h, opts)
  opts = opts or {}
  local out = {}
  for _, e in ipairs(h.transcript or {}) do
    if e.type == "message" and type(e.text) == "string" and e.text ~= "" then
      local stamp = opts.timestamps and type(e.timestamp) == "string" and ("[" .. e.timestamp:sub(12, 19) .. "] ") or ""
      out[#out + 1] = stamp .. speaker(e, opts.names) .. ": " .. e.text
    end
  end
  return out
end

--- The transcript as one text of at most opts.max_bytes (default 16000). Returns the
--- text and how many lines were left out.
function M.text(h, opts)
  opts = opts or {}
  local max = opts.max_bytes or 16000
  local lines = M.lines(h, opts)
  local total, first = 0, #lines + 1
  for i = #lines, 1, -1 do
    if total + #lines[i] + 1 > max then break end
    total = total + #lines[i] + 1
    first = i
  end
  local kept = table.concat(lines, "\n", first)
  local dropped = first - 1
  if dropped > 0 then
    kept = ("(%d earlier lines left out)\n"):format(dropped) .. kept
  end
  return kept, dropped
end

return M
