---@meta handoff.route
-- scripts/handoff/route.lua: the routing-rules DSL. Each filter takes its argument and a
-- destination (route.queue) and returns a rule; a routes file returns a list of rules,
-- first match wins, plus optional `examples`.

---@class handoff.route.Rule

---@class handoff.route.Example
---@field name? string
---@field now? number unix time the example is routed at (required to reach hours/closed)
---@field context? handoff.Context|table
---@field transcript? handoff.TranscriptEntry[]
---@field user? table
---@field bot? table
---@field conversation_id? string
---@field activity_id? string
---@field reason? string
---@field expect handoff.Destination|table

---A weekly schedule: days "mon".."sun" -> "HH:MM-HH:MM" or a list of them; absent days
---are closed.
---@class handoff.route.Schedule
---@field tz string IANA zone
---@field holidays? string[] "YYYY-MM-DD", closed all day
---@field mon? string|string[]
---@field tue? string|string[]
---@field wed? string|string[]
---@field thu? string|string[]
---@field fri? string|string[]
---@field sat? string|string[]
---@field sun? string|string[]

---@class handoff.route.QueueOptions
---@field skill? string
---@field priority? number
---@field agent? string
---@field reason? string

---@class handoff.route
local route = {}

---A destination. Raises on an unknown option or a wrong type.
---@param name string
---@param opts? handoff.route.QueueOptions
---@return handoff.Destination
function route.queue(name, opts) end

---context.last_topic or any of context.topics equals a name (ASCII case-insensitive).
---@param names string|string[]
---@param dest handoff.Destination
---@return handoff.route.Rule
function route.topic(names, dest) end

---context.language is the prefix or starts with prefix.."-" or "_".
---@param prefixes string|string[]
---@param dest handoff.Destination
---@return handoff.route.Rule
function route.language(prefixes, dest) end

---context.last_phrase or any of context.phrases contains the text.
---@param texts string|string[]
---@param dest handoff.Destination
---@return handoff.route.Rule
function route.phrase(texts, dest) end

---context.vars[name] == expected (numbers and numeric strings compare as numbers; a list
---means any of its values; a function is called as fn(value, h)).
---@param name string
---@param expected any|any[]|fun(value: any, h: handoff.Handoff): boolean
---@param dest handoff.Destination
---@return handoff.route.Rule
function route.var(name, expected, dest) end

---fn(h) returns a true value.
---@param fn fun(h: handoff.Handoff): any
---@param dest handoff.Destination
---@return handoff.route.Rule
function route.when(fn, dest) end

---The clock is inside the schedule's windows.
---@param spec handoff.route.Schedule
---@param dest handoff.Destination
---@return handoff.route.Rule
function route.hours(spec, dest) end

---The clock is outside the schedule's windows.
---@param spec handoff.route.Schedule
---@param dest handoff.Destination
---@return handoff.route.Rule
function route.closed(spec, dest) end

---Matches every handoff.
---@param dest handoff.Destination
---@return handoff.route.Rule
function route.always(dest) end

---Runs RULES (a list or a function) on H at NOW; nil and the reason when nothing matched
---or a rule failed.
---@param rules handoff.route.Rule[]|fun(h: handoff.Handoff): handoff.Destination
---@param h handoff.Handoff
---@param now? number
---@return handoff.Destination|nil dest
---@return (string|integer)? index_or_err the rule's index, or why nothing matched
function route.evaluate(rules, h, now) end

---@param rules handoff.route.Rule[]
---@return true|nil ok
---@return string? err
function route.check(rules) end

---@param rules handoff.route.Rule[]
---@param examples? handoff.route.Example[]
---@return true|nil ok
---@return string? err
function route.run_examples(rules, examples) end

return route
