---@meta handoff.time
-- runtime/script/bindings/time.c

---@class handoff.time.Local
---@field year integer
---@field month integer
---@field day integer
---@field hour integer
---@field min integer
---@field sec integer
---@field wday integer 1 = Monday
---@field isdst boolean

---@class handoff.time
local time = {}

---Unix time in seconds, with fractions.
---@return number
function time.now() end

---@param tz string an IANA zone name, e.g. "Europe/Paris"
---@param t number unix time (time.now() for now)
---@return handoff.time.Local|nil
---@return string? err "unknown time zone"
function time.localtime(tz, t) end

return time
