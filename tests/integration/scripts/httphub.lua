-- A hub module for the handoff.http tests: each webhook makes one outbound request to
-- the fake server named in settings and answers with what came back.
local http = require "handoff.http"
local json = require "handoff.json"

local M = {}
local target

function M.init(settings)
  assert(type(settings.target) == "string", "httphub: target is required")
  target = settings.target
end

local function call(path, opts)
  local res, err = http.request(target .. path, opts)
  if not res then return 200, { err = err } end
  return 200, { status = res.status, body = res.body, ctype = res.headers["content-type"],
                x = res.headers["x-reply"], twice = res.headers["x-twice"] }
end

M.webhooks = {
  ["POST /h/echo"] = function(req)
    return call("/echo?q=1", { method = "POST", body = req.body,
                               headers = { ["Content-Type"] = "text/plain", ["X-Hub"] = "abc" } })
  end,
  ["GET /h/status"] = function(req) return call("/status/" .. req.query.code) end,
  ["GET /h/hang"] = function() return call("/hang", { timeout_ms = 300 }) end,
  ["GET /h/big"] = function() return call("/big", { max_body = 1000 }) end,
  ["GET /h/seq"] = function(req) return call("/seq/" .. req.query.n) end,
}

return M
