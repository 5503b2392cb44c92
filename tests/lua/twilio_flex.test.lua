-- hubs.twilio_flex's settings check: what init refuses (a raise rejects the (re)load).
local hub = require "hubs.twilio_flex"
local T = {}

local function good()
  return { account_sid = "AC" .. ("1"):rep(32), auth_token = "0123456789abcdef0123456789abcdef",
           chat_service_sid = "IS" .. ("a"):rep(32), workspace_sid = "WS" .. ("b"):rep(32),
           workflow_sid = "WW" .. ("c"):rep(32), webhook_url = "https://handoffd.example.com/hubs/twilio/events" }
end

local function raises(fragment, change)
  local settings = good()
  change(settings)
  local ok, err = pcall(hub.init, settings)
  assert(not ok and tostring(err):find(fragment, 1, true), ("wanted %q, got %s"):format(fragment, tostring(err)))
end

function T.good_settings_load()
  hub.init(good())
  local s = good()
  s.api_key_sid, s.api_key_secret, s.channel_type = "SK" .. ("d"):rep(32), "secret", "whatsapp"
  hub.init(s)
end

function T.bad_settings_raise()
  raises("webhook_url is required", function(s) s.webhook_url = nil end)
  raises("webhook_url is required", function(s) s.webhook_url = "/hubs/twilio/events" end)
  raises("auth_token is required", function(s) s.auth_token = "short" end)
  raises("account_sid is required", function(s) s.account_sid = "AC123" end)
  raises("chat_service_sid is required", function(s) s.chat_service_sid = "CH" .. ("a"):rep(32) end)
  raises("workflow_sid is required", function(s) s.workflow_sid = nil end)
  raises("api_key_secret goes with api_key_sid", function(s) s.api_key_sid = "SK" .. ("d"):rep(32) end)
  raises("channel_type must be one of", function(s) s.channel_type = "pigeon" end)
  raises("flex_url must start with http", function(s) s.flex_url = "flex-api.twilio.com" end)
end

return T
