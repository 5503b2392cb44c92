-- A hub module made for the secrets and log tests: it logs what it is given and names
-- ids to the runtime, answering with what the runtime said.
local hd = require "handoff"
local log = require "handoff.log"
local json = require "cjson.safe"

local M = {}

function M.init(settings)
  if settings.fail then
    error("secrethub: refusing client_secret " .. settings.oauth.client_secret)
  end
  log.info("secrethub.init", { client_secret = settings.oauth.client_secret, note = "configured" })
end

--- Calls hd[name](id, ...) and answers 200 {ok, err}.
local function call(name, id, ...)
  local ok, err = hd[name](id, ...)
  return 200, { ok = ok ~= nil and ok ~= false, err = err or json.null }
end

M.webhooks = {
  ["POST /s/log"] = function(req)
    local ev = json.decode(req.body)
    log.info("secrethub.said", { id = ev.id, text = ev.text })
    return 200, { logged = true }
  end,
  ["POST /s/call"] = function(req)
    local ev = json.decode(req.body)
    if ev.fn == "customer" or ev.fn == "to_bot" or ev.fn == "agent" then
      return call(ev.fn, ev.id, { type = "message", text = "hi" })
    elseif ev.fn == "handoff_event" then
      return call(ev.fn, ev.id, "accepted")
    elseif ev.fn == "set_data" then
      return call(ev.fn, ev.id, { a = 1 })
    elseif ev.fn == "conversation" then
      local c, err = hd.conversation(ev.id)
      return 200, { ok = c ~= nil, err = err or json.null }
    end
    return call(ev.fn, ev.id)
  end,
}

return M
