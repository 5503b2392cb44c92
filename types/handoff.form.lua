---@meta handoff.form
-- scripts/handoff/form.lua: application/x-www-form-urlencoded bodies, both ways.

---@class handoff.form
local form = {}

---Percent-encodes all but RFC 3986 unreserved characters.
---@param s any
---@return string
function form.escape(s) end

---{name, value} pairs, in order, as a form body; nil values are left out.
---@param pairs_list { [1]: string, [2]: any }[]
---@return string
function form.encode(pairs_list) end

---A form body as {name = first value} and the list of every {name, value} pair.
---@param body string?
---@return table<string, string> fields
---@return { [1]: string, [2]: string }[] list
function form.decode(body) end

return form
