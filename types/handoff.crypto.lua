---@meta handoff.crypto
-- runtime/script/bindings/crypto.c: OpenSSL's HMAC, digests, base64, constant-time comparison,
-- RSA signature checks and random bytes. Failures are nil, err.

---@alias handoff.crypto.Digest "sha1"|"sha256"|"sha512"
---@alias handoff.crypto.Encoding "hex"|"base64"|"raw"

---@class handoff.crypto
local crypto = {}

---@param alg handoff.crypto.Digest
---@param key string
---@param data string
---@param enc? handoff.crypto.Encoding "hex" by default
---@return string
function crypto.hmac(alg, key, data, enc) end

---@param data string
---@param enc? handoff.crypto.Encoding "hex" by default
---@return string
function crypto.sha256(data, enc) end

---@param data string
---@param enc? handoff.crypto.Encoding "hex" by default
---@return string
function crypto.sha1(data, enc) end

---@param data string
---@return string
function crypto.base64_encode(data) end

---@param text string
---@return string|nil data
---@return string? err
function crypto.base64_decode(text) end

---@param data string
---@return string
function crypto.base64url_encode(data) end

---@param text string
---@return string|nil data
---@return string? err
function crypto.base64url_decode(text) end

---Equality in a time that depends on the length of A only.
---@param a string
---@param b string
---@return boolean
function crypto.compare(a, b) end

---PKCS#1 v1.5 signature check.
---@param pem_public_key string
---@param data string
---@param signature string raw bytes
---@param alg? handoff.crypto.Digest "sha256" by default
---@return boolean|nil ok
---@return string? err
function crypto.rsa_verify(pem_public_key, data, signature, alg) end

---N random bytes (at most 1024).
---@param n integer
---@param enc? handoff.crypto.Encoding "hex" by default
---@return string
function crypto.random(n, enc) end

---A random (version 4) UUID, lowercase.
---@return string
function crypto.uuid() end

return crypto
