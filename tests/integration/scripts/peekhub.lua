-- The webhook hub with one more route, for the cluster tests: GET /peek/<conversation id>
-- answers what hd.conversation says of it (a conversation held by another instance is
-- read from the database), or 404.
local webhook = require "hubs.webhook"
local hd = require "handoff"

local M = setmetatable({}, { __index = webhook })

M.webhooks = {
  ["POST /hubs/webhook/events"] = webhook.webhooks["POST /hubs/webhook/events"],
  ["GET /peek"] = function(req)
    local conv = hd.conversation(req.query.id)
    if not conv then return 404, { error = "unknown conversation" } end
    return 200, { key = conv.key, id = conv.id, state = conv.state, user = conv.user }
  end,
}

return M
