---@meta handoff.context
-- scripts/handoff/context.lua: the handoff context as flat key/value pairs within a size
-- limit, for hubs that take flat attributes.

---@class handoff.context.Options
---@field max_bytes? integer 4096 by default
---@field max_value? integer longer values are cut (512 by default)
---@field prefix? string put before every key, e.g. "handoff_"
---@field json? boolean measure the size as the JSON-encoded table

---@class handoff.context
local context = {}

---Ordered {key, value} pairs: routing first, then the well-known context fields, then
---every variable ("var.<name>", sorted).
---@param h handoff.Handoff
---@param route? handoff.Route|handoff.Destination
---@param prefix? string
---@return { [1]: string, [2]: string }[]
function context.pairs(h, route, prefix) end

---A flat table within opts.max_bytes and the keys left out.
---@param h handoff.Handoff
---@param route? handoff.Route|handoff.Destination
---@param opts? handoff.context.Options
---@return table<string, string> flat
---@return string[] dropped
function context.flat(h, route, opts) end

---flat() with snake_case keys ("handoff_var.Global.X" -> "handoff_var_global_x").
---@param h handoff.Handoff
---@param route? handoff.Route|handoff.Destination
---@param opts? handoff.context.Options
---@return table<string, string> flat
---@return string[] dropped
function context.snake(h, route, opts) end

---"Label: value" lines for a note to the agent (customer, reason, queue, skill, ...).
---@param h handoff.Handoff
---@param route handoff.Route|handoff.Destination
---@param user? { name?: string }
---@param opts? { queue_suffix?: string }
---@return string[]
function context.summary(h, route, user, opts) end

return context
