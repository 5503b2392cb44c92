-- A hub module made for the scripting tests: each webhook exercises one behaviour of
-- the script host (results, errors, budgets, waiting, reload).
local log = require "handoff.log"
local time = require "handoff.time"
local timer = require "handoff.timer"

local M = {}
local conf

function M.init(settings)
  if settings.fail then error("testhub: refusing these settings") end
  conf = { version = settings.version or "v1" }
  -- retired with the generation: fires early on reload and shutdown
  timer.every(3600, function(premature)
    if premature then log.info("testhub.premature", { version = conf.version }) end
  end)
end

M.webhooks = {
  ["POST /t/echo"] = function(req)
    return 201, { method = req.method, path = req.path, q = req.query.q,
                  x = req.headers["x-test"], body = req.body, peer = req.peer },
           { ["X-Reply"] = "yes" }
  end,
  ["GET /t/version"] = function() return 200, conf.version end,
  ["GET /t/error"] = function() error("boom in handler") end,
  ["GET /t/loop"] = function() while true do end end,
  ["GET /t/alloc"] = function()
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("x", 1e6) .. i end
  end,
  ["GET /t/sleep"] = function(req)
    log.info("testhub.sleeping", { version = conf.version })
    timer.sleep(tonumber(req.query.s))
    return 200, "slept " .. conf.version
  end,
  ["GET /t/nothing"] = function() end,
  -- blocks the whole event loop for ?s= seconds (needs scripts.max_instructions = 0)
  ["GET /t/spin"] = function(req)
    local deadline = time.now() + tonumber(req.query.s)
    while time.now() < deadline do end
    return 200, "spun"
  end,
  ["GET /t/badstatus"] = function() return "teapot" end,
}

return M
