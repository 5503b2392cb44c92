---@meta handoff.payload
-- runtime/script/bindings/handoff_object.c: the parser `handoffd parse` uses.

---@class handoff.payload
local payload = {}

---The handoff object of a Direct Line payload (a GET /activities answer, one activity,
---or an activity set), or nil and why.
---@param json_text string
---@return handoff.Handoff|nil
---@return string? err
function payload.handoff(json_text) end

return payload
