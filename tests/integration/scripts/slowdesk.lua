-- A desk for the test of conv.data during a hub call: escalate changes conv.data, then
-- waits on an HTTP call the test holds, while the test stores data through a webhook; and
-- for the runtime's rule on agent messages (POST /slowdesk/agent calls hd.agent).
local hd = require "handoff"
local http = require "handoff.http"
local json = require "handoff.json"

local M = {}
local target

function M.init(settings)
  target = assert(settings.target, "slowdesk: target is required")
end

--- Removes `gone`, marks the handoff, and keeps what the held call answers.
function M.escalate(conv)
  conv.data.gone = nil
  conv.data.escalated = conv.handoff_id
  local res, err = http.request(target .. "/hold", { method = "POST", body = conv.id, timeout_ms = 20000 })
  if not res then return nil, err end
  conv.data.interaction = res.body
  return true
end

function M.to_agent() return true end

M.webhooks = {
  -- {"id": conversation, "data": table}: hd.set_data, as a hub's webhook would.
  ["POST /slowdesk/data"] = function(req)
    local doc = json.decode(req.body)
    local ok, err = hd.set_data(doc.id, doc.data)
    return ok and 200 or 500, { ok = ok, err = err }
  end,
  -- {"id": conversation, "text": ...}: an agent's message, as a desk's webhook reports it.
  ["POST /slowdesk/agent"] = function(req)
    local doc = json.decode(req.body)
    local ok, err = hd.agent(doc.id, { type = "message", text = doc.text })
    return 200, { ok = ok or false, err = err }
  end,
  ["GET /slowdesk/data"] = function(req)
    local c = hd.conversation(req.query.id)
    return 200, c and c.data or { none = true }
  end,
}

return M
