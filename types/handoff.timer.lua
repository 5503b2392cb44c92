---@meta handoff.timer
-- runtime/script/bindings/timer.c. Callbacks run as tasks of the generation that created the
-- timer; when a reload or a shutdown retires it, pending timers fire at once with
-- premature = true.

---@class handoff.timer.Timer
local Timer = {}

---@return boolean pending true when the timer was still pending
function Timer:cancel() end

---@class handoff.timer
local timer = {}

---Calls fn(premature, ...) once after SECONDS.
---@param seconds number
---@param fn fun(premature: boolean, ...: any)
---@param ... any
---@return handoff.timer.Timer
function timer.after(seconds, fn, ...) end

---Calls fn(premature, ...) every SECONDS until cancelled or retired.
---@param seconds number
---@param fn fun(premature: boolean, ...: any)
---@param ... any
---@return handoff.timer.Timer
function timer.every(seconds, fn, ...) end

---Waits SECONDS; the task yields and the loop goes on.
---@param seconds number
function timer.sleep(seconds) end

return timer
