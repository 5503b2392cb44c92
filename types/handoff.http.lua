---@meta handoff.http
-- runtime/script/bindings/http.c. Inside a hook the call yields the task, not the loop.

---@class handoff.http.Options
---@field method? string "GET" by default
---@field headers? table<string, string>
---@field body? string
---@field timeout_ms? integer
---@field max_body? integer bytes of the answer's body at most ("body too large" beyond)
---@field ca_file? string extra trust anchor (PEM)

---Any HTTP status is a response; only "no answer" is nil, err.
---@class handoff.http.Response
---@field status integer
---@field headers table<string, string> names in lowercase; repeated headers joined with ", "
---@field body string

---@class handoff.http
local http = {}

---@param url string
---@param opts? handoff.http.Options
---@return handoff.http.Response|nil res
---@return string? err "timeout", "connection refused", "body too large", ...
function http.request(url, opts) end

return http
