-- Example routing rules: where a handed-off conversation goes. First match wins; a rule
-- error or no match sends the conversation to the configured fallback. Every filter is
-- described at the top of scripts/handoff/route.lua. A reload runs the `examples` below
-- and keeps the old rules when one of them is routed elsewhere.
local route = require "handoff.route"
local queue = route.queue

local office = {
  tz = "Europe/Paris",
  mon = "08:00-18:00", tue = "08:00-18:00", wed = "08:00-18:00", thu = "08:00-18:00",
  fri = "08:00-17:00",
  sat = "09:00-12:00",                      -- sunday is absent: closed
  holidays = { "2026-12-25", "2027-01-01" },
}

return {
  route.closed(office,                             queue("after-hours", { reason = "office closed" })),
  route.var("Global.CustomerTier", "gold",         queue("vip", { priority = 1 })),
  route.topic({ "Billing", "Refund" },             queue("billing", { priority = 2 })),
  route.phrase({ "cancel my", "close my account" }, queue("retention", { skill = "save-desk" })),
  route.language("fr",                             queue("support-fr")),
  route.always(                                    queue("general")),

  examples = {
    { name = "french goes to support-fr", now = 1774864800,   -- Mon 2026-03-30 12:00 Paris
      context = { language = "fr-FR" }, expect = { queue = "support-fr" } },
    { name = "gold customers first", now = 1774864800,
      context = { language = "fr-FR", vars = { ["Global.CustomerTier"] = "gold" } },
      expect = { queue = "vip", priority = 1 } },
    { name = "refunds to billing", now = 1774864800,
      context = { last_topic = "refund" }, expect = { queue = "billing" } },
    { name = "sunday is after hours", now = 1774785600,       -- Sun 2026-03-29 14:00 Paris
      context = { last_topic = "Billing" }, expect = { queue = "after-hours" } },
  },
}
