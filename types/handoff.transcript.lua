---@meta handoff.transcript
-- scripts/handoff/transcript.lua: the bot-customer transcript as people read it.

---@class handoff.transcript.Options
---@field max_bytes? integer text(): 16000 by default; the oldest lines go first
---@field names? table<string, string> role ("user", "bot") -> name shown
---@field timestamps? boolean prefix each line with [HH:MM:SS]

---@class handoff.transcript
local transcript = {}

---"Name: text" lines of the message entries, oldest first.
---@param h handoff.Handoff
---@param opts? handoff.transcript.Options
---@return string[]
function transcript.lines(h, opts) end

---The transcript as one text, and how many lines were left out.
---@param h handoff.Handoff
---@param opts? handoff.transcript.Options
---@return string text
---@return integer dropped
function transcript.text(h, opts) end

return transcript
