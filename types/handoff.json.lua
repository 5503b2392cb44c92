---@meta handoff.json
-- lua-cjson's safe interface (cjson.safe): decode and encode return nil, err instead of
-- raising.

---@class handoff.json
---@field null lightuserdata JSON null
---@field empty_array lightuserdata encodes as []
---@field array_mt table a table with this metatable encodes as an array, even empty
local json = {}

---@param text string
---@return any|nil value
---@return string? err
function json.decode(text) end

---@param value any
---@return string|nil text
---@return string? err
function json.encode(value) end

return json
