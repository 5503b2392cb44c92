---@meta handoff.signature
-- scripts/handoff/signature.lua: checks of signed webhooks, in constant time.

---@class handoff.signature
local signature = {}

---Whether GIVEN is the HMAC of DATA under SECRET.
---@param secret string
---@param data string
---@param given string?
---@param opts? { alg?: handoff.crypto.Digest, enc?: handoff.crypto.Encoding, prefix?: string }
---@return boolean
function signature.hmac_ok(secret, data, given, opts) end

---Whether TIMESTAMP (unix seconds, or milliseconds) is within WINDOW seconds of now.
---@param timestamp string|number|nil
---@param window? number 300 by default
---@return boolean
function signature.fresh(timestamp, window) end

---What Twilio-style signatures cover: URL, then every name..value sorted by name.
---@param url string
---@param pairs_list { [1]: string, [2]: string }[]
---@return string
function signature.url_and_params(url, pairs_list) end

return signature
