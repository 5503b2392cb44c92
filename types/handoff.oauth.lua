---@meta handoff.oauth
-- scripts/handoff/oauth.lua: OAuth 2.0 client-credentials tokens, cached until shortly
-- before they expire; failures in handoff.delivery's shape.

---@class handoff.oauth.Options
---@field url string the token endpoint (http or https)
---@field client_id string
---@field client_secret string
---@field scope? string
---@field margin? number seconds before expiry to renew (60 by default)
---@field timeout_ms? integer 10000 by default
---@field ca_file? string

---@class handoff.oauth.Client
local Client = {}

---The cached token or a fresh one.
---@return string|nil token
---@return string? err
---@return (boolean|number)? retry
function Client:get() end

---Forgets TOKEN if it is still the cached one (the API answered 401 with it).
---@param token string?
function Client:invalidate(token) end

---@class handoff.oauth
local oauth = {}

---A token cache for one client; raises on wrong settings.
---@param opts handoff.oauth.Options
---@return handoff.oauth.Client
function oauth.client(opts) end

return oauth
