-- A hub module for the reload-under-load test: every message posted to its webhook is
-- forwarded to the sink named in settings, tagged with the generation's version.
local http = require "handoff.http"

local M = {}
local conf

function M.init(settings)
  conf = { sink = assert(settings.sink, "forwardhub: sink is required"), version = settings.version }
end

M.webhooks = {
  ["POST /f/msg"] = function(req)
    local res, err = http.request(conf.sink .. "/sink", { method = "POST", body = req.body,
                                  headers = { ["X-Version"] = conf.version } })
    if not res then return 502, err end
    return 202, "forwarded by " .. conf.version
  end,
}

return M
