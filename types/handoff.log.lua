---@meta handoff.log
-- runtime/script/bindings/log.c: lines in the daemon's log format, with its levels and secret
-- redaction: `time level event key=value ...`.

---@class handoff.log
local log = {}

---@param event string e.g. "myhub.sent"
---@param fields? table<string, any>|string key = value pairs, or a message (msg="...")
function log.debug(event, fields) end

---@param event string
---@param fields? table<string, any>|string
function log.info(event, fields) end

---@param event string
---@param fields? table<string, any>|string
function log.warn(event, fields) end

---@param event string
---@param fields? table<string, any>|string
function log.error(event, fields) end

return log
