-- handoff.route: the routing-rules DSL (scripts/handoff/route.lua), run inside the daemon.
-- Rules files are loaded from strings named "routes.lua", so errors can be checked down to
-- the line. Epochs were checked with `TZ=<zone> date -d @<epoch>`.
local route = require "handoff.route"
local queue = route.queue
local T = {}

-- Runs SRC as a routes file (route and queue are in scope). Returns ok, rules-or-error.
local function load_rules(src)
  local chunk = assert(load("local route = require 'handoff.route'; local queue = route.queue\n"
    .. src, "@routes.lua", "t"))
  return pcall(chunk)
end

-- Asserts that SRC fails to load with exactly MSG (a "routes.lua:LINE: ..." string).
local function load_fails(src, msg)
  local ok, err = load_rules(src)
  assert(not ok, "should not load: " .. src)
  assert(err == msg, "\n got: " .. tostring(err) .. "\nwant: " .. msg)
end

local function ctx(c) return { context = c, transcript = {} } end

local function routes_to(rules, h, want, now)
  local dest, err = route.evaluate(rules, h, now or 0)
  local got = dest and dest.queue or err
  assert(got == want, "want " .. tostring(want) .. ", got " .. tostring(got))
end

-- Destinations ----------------------------------------------------------------------------

function T.queue_builds_a_destination()
  local d = queue("billing", { skill = "invoices", priority = 2, agent = "ann", reason = "bill" })
  assert(d.queue == "billing" and d.skill == "invoices" and d.priority == 2 and d.agent == "ann"
    and d.reason == "bill")
  local plain = queue("general")
  assert(plain.queue == "general" and next(plain, next(plain)) == nil, "only the queue is set")
end

function T.queue_misuse_raises_at_the_rules_line()
  load_fails('local d = queue("x", { prio = 1 })',
    "routes.lua:2: route.queue: unknown destination key 'prio'")
  load_fails('\nlocal d = queue("x", { priority = "high" })',
    "routes.lua:3: route.queue: destination priority must be a number, not string")
  load_fails('local d = queue("x", { priority = 1.5 })',
    "routes.lua:2: route.queue: destination priority must be an integer")
  load_fails("local d = queue()", "routes.lua:2: route.queue: queue name must be a non-empty string, not nil")
  load_fails('local d = queue("x", "vip")', "routes.lua:2: route.queue: options must be a table, not string")
  load_fails('local d = queue("x", { queue = "y" })',
    "routes.lua:2: route.queue: unknown destination key 'queue' in options")
end

function T.rule_construction_errors_name_the_callers_line()
  local cases = {
    { "route.topic(nil, queue('x'))", "route.topic: expects a string or a list of strings, not nil" },
    { "route.topic({}, queue('x'))", "route.topic: expects a string or a list of strings, not table" },
    { "route.topic({ 'a', 3 }, queue('x'))", "route.topic: entry 2 must be a non-empty string" },
    { "route.language(42, queue('x'))", "route.language: expects a string or a list of strings, not number" },
    { "route.phrase({ '' }, queue('x'))", "route.phrase: entry 1 must be a non-empty string" },
    { "route.var(nil, 'x', queue('x'))", "route.var: variable name must be a non-empty string, not nil" },
    { "route.var('tier', nil, queue('x'))", "route.var: expected value must be a string, number, "
      .. "boolean, function or non-empty list, not nil" },
    { "route.when('yes', queue('x'))", "route.when: expects a function, not string" },
    { "route.always()", "route.always: destination must be a table like route.queue(name), not nil" },
    { "route.always({ skill = 'x' })", "route.always: destination has no queue" },
    { "route.always({ queue = 'x', prio = 1 })", "route.always: unknown destination key 'prio'" },
    { "route.topic('Billing', 'billing')",
      "route.topic: destination must be a table like route.queue(name), not string" },
  }
  for _, c in ipairs(cases) do
    load_fails("return {\n  route.always(queue('a')),\n  " .. c[1] .. ",\n}", "routes.lua:4: " .. c[2])
  end
end

function T.construction_through_pcall_names_the_lua_caller()
  local line = debug.getinfo(1, "l").currentline + 1
  local ok, err = pcall(route.topic, nil, queue("x"))
  assert(not ok and err:match(":(%d+): route%.topic: ") == tostring(line), err)
end

function T.hours_spec_errors_raise_at_the_rules_line()
  local cases = {
    { "{ mon = '09:00-17:00' }", "route.hours: tz (an IANA time zone) is required" },
    { "{ tz = 'Mars/Olympus' }", "route.hours: unknown time zone 'Mars/Olympus'" },
    { "{ tz = 'UTC', monday = '09:00-17:00' }", "route.hours: unknown key 'monday' (days are mon..sun)" },
    { "{ tz = 'UTC', mon = '9-17' }", "route.hours: mon: window '9-17' must look like \"09:00-17:00\"" },
    { "{ tz = 'UTC', tue = { '09:00-12:00', '13:00-25:00' } }",
      "route.hours: tue: window '13:00-25:00' must look like \"09:00-17:00\"" },
    { "{ tz = 'UTC', fri = '09:60-17:00' }",
      "route.hours: fri: window '09:60-17:00' must look like \"09:00-17:00\"" },
    { "{ tz = 'UTC', sat = '22:00-02:00' }", "route.hours: sat: window '22:00-02:00' ends before it "
      .. "starts (split a window that crosses midnight across two days)" },
    { "{ tz = 'UTC', holidays = { '25/12/2026' } }",
      "route.hours: holiday '25/12/2026' must look like \"2026-12-25\"" },
    { "{ tz = 'UTC', holidays = '2026-12-25' }", "route.hours: holidays must be a list of \"YYYY-MM-DD\"" },
    { "'weekdays'", "route.hours: expects a table of opening hours" },
  }
  for _, c in ipairs(cases) do
    load_fails("local r = route.hours(" .. c[1] .. ", queue('x'))", "routes.lua:2: " .. c[2])
  end
  load_fails("local r = route.closed({ tz = 'Nowhere' }, queue('x'))",
    "routes.lua:2: route.closed: unknown time zone 'Nowhere'")
end

-- Filters ---------------------------------------------------------------------------------

function T.topic_matches_last_or_any_topic_case_insensitively()
  local rules = { route.topic({ "Billing", "Refund" }, queue("billing")) }
  routes_to(rules, ctx({ last_topic = "billing" }), "billing")
  routes_to(rules, ctx({ last_topic = "REFUND" }), "billing")
  routes_to(rules, ctx({ last_topic = "Greeting", topics = { "Greeting", "Refund" } }), "billing")
  routes_to(rules, ctx({ last_topic = "Bill" }), "no match")
  routes_to(rules, ctx({ last_topic = "Billing issues" }), "no match")
  routes_to(rules, ctx({ topics = { "Greeting" } }), "no match")
end

function T.language_matches_a_prefix_on_a_subtag_boundary()
  local rules = { route.language("de", queue("de")), route.language({ "fr", "pt-BR" }, queue("other")) }
  routes_to(rules, ctx({ language = "de-DE" }), "de")
  routes_to(rules, ctx({ language = "De-de" }), "de")
  routes_to(rules, ctx({ language = "de" }), "de")
  routes_to(rules, ctx({ language = "de_AT" }), "de")
  routes_to(rules, ctx({ language = "fr-CA" }), "other")
  routes_to(rules, ctx({ language = "pt-br" }), "other")
  routes_to(rules, ctx({ language = "pt-PT" }), "no match")
  routes_to(rules, ctx({ language = "den" }), "no match")
  routes_to(rules, ctx({ language = "en-DE" }), "no match")
end

function T.phrase_is_a_plain_case_insensitive_substring()
  local rules = { route.phrase({ "Cancel my", "50% off (promo" }, queue("retention")) }
  routes_to(rules, ctx({ last_phrase = "Please CANCEL MY subscription" }), "retention")
  routes_to(rules, ctx({ phrases = { "hi", "I saw 50% OFF (promo code)" } }), "retention")
  routes_to(rules, ctx({ last_phrase = "cancel" }), "no match")
  routes_to(rules, ctx({ last_phrase = "50 off promo" }), "no match")
end

function T.var_compares_values_lists_and_predicates()
  local seen
  local rules = {
    route.var("Global.CustomerTier", "gold", queue("vip")),
    route.var("va_Orders", 3, queue("three")),
    route.var("Global.Region", { "EU", "UK" }, queue("europe")),
    route.var("Global.Beta", true, queue("beta")),
    route.var("Global.Score", function(v, h) seen = h; return type(v) == "number" and v > 90 end,
      queue("high")),
  }
  local function vars(v) return ctx({ vars = v }) end
  routes_to(rules, vars({ ["Global.CustomerTier"] = "gold" }), "vip")
  routes_to(rules, vars({ ["Global.CustomerTier"] = "Gold" }), "no match")
  routes_to(rules, vars({ va_Orders = 3.0 }), "three")		-- how cjson decodes 3
  routes_to(rules, vars({ va_Orders = "3" }), "three")
  routes_to(rules, vars({ va_Orders = "3 orders" }), "no match")
  routes_to(rules, vars({ ["Global.Region"] = "UK" }), "europe")
  routes_to(rules, vars({ ["Global.Region"] = "US" }), "no match")
  routes_to(rules, vars({ ["Global.Beta"] = true }), "beta")
  routes_to(rules, vars({ ["Global.Beta"] = "true" }), "no match")
  local h = vars({ ["Global.Score"] = 95 })
  routes_to(rules, h, "high")
  assert(seen == h, "the predicate gets the handoff")
  routes_to(rules, vars({ ["Global.Score"] = 50 }), "no match")
  routes_to(rules, vars({}), "no match")
end

function T.var_numbers_match_numeric_strings()
  local rules = { route.var("n", "3", queue("three")) }
  routes_to(rules, ctx({ vars = { n = 3 } }), "three")
  routes_to(rules, ctx({ vars = { n = 3.0 } }), "three")
  routes_to(rules, ctx({ vars = { n = 4 } }), "no match")
end

function T.when_calls_the_predicate_with_the_handoff()
  local rules = { route.when(function(h) return #h.transcript > 2 end, queue("long")) }
  routes_to(rules, { context = {}, transcript = { {}, {}, {} } }, "long")
  routes_to(rules, { context = {}, transcript = { {} } }, "no match")
end

function T.always_matches_everything()
  routes_to({ route.always(queue("general")) }, nil, "general")
end

function T.missing_or_odd_fields_never_crash()
  local rules = {
    route.topic("Billing", queue("t")), route.language("de", queue("l")),
    route.phrase("cancel", queue("p")), route.var("tier", "gold", queue("v")),
    route.var("tier", function(v) return v == "gold" end, queue("f")),
    route.hours({ tz = "UTC", mon = "00:00-24:00" }, queue("h")),
  }
  local odd = {
    nil, {}, { context = {} }, { context = "text" }, 42,
    ctx({ last_topic = 5, topics = "Billing", language = false, last_phrase = {}, phrases = { 1, {} },
          vars = "tier=gold" }),
    ctx({ topics = { nil, "x" }, vars = { tier = {} } }),
  }
  for i = 1, 7 do
    local dest, err = route.evaluate(rules, odd[i], 1774692000)	-- a Saturday
    assert(dest == nil and err == "no match", "handoff " .. i .. ": " .. tostring(err))
  end
end

-- Evaluation ------------------------------------------------------------------------------

function T.first_match_wins_and_reports_its_index()
  local rules = {
    route.language("fr", queue("fr")),
    route.topic("Billing", queue("billing")),
    route.always(queue("general")),
  }
  local dest, i = route.evaluate(rules, ctx({ language = "fr-FR", last_topic = "Billing" }))
  assert(dest.queue == "fr" and i == 1)
  dest, i = route.evaluate(rules, ctx({ language = "en", last_topic = "Billing" }))
  assert(dest.queue == "billing" and i == 2)
  dest, i = route.evaluate(rules, ctx({}))
  assert(dest.queue == "general" and i == 3)
end

function T.evaluate_returns_a_copy_of_the_destination()
  local rules = { route.always(queue("general", { priority = 3 })) }
  local dest = route.evaluate(rules, ctx({}))
  dest.priority, dest.queue = 1, "changed"
  dest = route.evaluate(rules, ctx({}))
  assert(dest.queue == "general" and dest.priority == 3, "a hook cannot change the rules")
end

function T.a_raising_filter_names_the_rule_and_never_raises()
  local ok, rules = load_rules([[
return {
  route.topic("Billing", queue("billing")),
  route.when(function (h) return h.context.vars.tier:lower() == "gold" end, queue("vip")),
  route.always(queue("general")),
}]])
  assert(ok, rules)
  local dest, err = route.evaluate(rules, ctx({ vars = {} }))
  assert(dest == nil, "no destination after an error")
  assert(err:match("^rule 2 %(routes%.lua:4%): routes%.lua:4: attempt to index a nil value"), err)
  routes_to(rules, ctx({ last_topic = "billing" }), "billing")	-- rules before it still decide
  dest, err = route.evaluate({ route.when(function() error({}) end, queue("x")) }, ctx({}))
  assert(dest == nil and err:match("^rule 1 %(.-%): table: "), err)
end

function T.rules_as_a_function()
  routes_to(function(h) return { queue = h.context.language or "none" } end, ctx({ language = "fr" }), "fr")
  local dest, err = route.evaluate(function() error("boom", 0) end, ctx({}))
  assert(dest == nil and err == "rules function: boom", err)
  dest, err = route.evaluate(function() return "general" end, ctx({}))
  assert(dest == nil and err:match("^rules function: destination must be a table"), err)
  dest, err = route.evaluate(function() return { queue = "x", prio = 1 } end, ctx({}))
  assert(dest == nil and err == "rules function: unknown destination key 'prio'", err)
  dest, err = route.evaluate(function() end, ctx({}))
  assert(dest == nil and err:match("not nil"), err)
end

function T.evaluate_rejects_bad_arguments_without_raising()
  local dest, err = route.evaluate(42, ctx({}))
  assert(dest == nil and err == "rules must be a list or a function, not number", err)
  dest, err = route.evaluate({ queue("general") }, ctx({}))
  assert(dest == nil and err == "rule 1 is not a rule", err)
  dest, err = route.evaluate({ route.always(queue("x")) }, ctx({}), "noon")
  assert(dest == nil and err == "now must be epoch seconds, not string", err)
end

-- Opening hours ---------------------------------------------------------------------------

local berlin = { tz = "Europe/Berlin", mon = "09:00-17:00", tue = { "09:00-12:00", "13:00-17:00" },
                 wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00",
                 holidays = { "2026-12-25" } }
local new_york = { tz = "America/New_York", mon = "09:00-17:00", tue = "09:00-17:00",
                   wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }

local function open_in(spec, now)
  local dest = route.evaluate({ route.hours(spec, queue("open")), route.always(queue("closed")) }, ctx({}), now)
  local inverse = route.evaluate({ route.closed(spec, queue("closed")), route.always(queue("open")) },
    ctx({}), now)
  assert(dest.queue == inverse.queue, "closed() is the inverse of hours()")
  return dest.queue == "open"
end

function T.hours_follow_berlin_across_the_dst_change()
  -- DST began Sun 2026-03-29. The same UTC time of day gives different answers either side.
  assert(open_in(berlin, 1774600200), "Fri 2026-03-27 08:30 UTC = 09:30 CET: open")
  assert(open_in(berlin, 1774855800), "Mon 2026-03-30 07:30 UTC = 09:30 CEST: open")
  assert(not open_in(berlin, 1774884600), "Mon 2026-03-30 15:30 UTC = 17:30 CEST: closed")
  assert(not open_in(berlin, 1774692000), "Sat 2026-03-28 11:00 CET: no saturday, closed")
end

function T.hours_windows_start_inclusive_end_exclusive()
  assert(not open_in(berlin, 1774953000), "Tue 12:30 CEST: lunch break, closed")
  assert(open_in(berlin, 1774956600), "Tue 13:30 CEST: open")
  assert(open_in(berlin, 1774969140), "Tue 16:59 CEST: open")
  assert(not open_in(berlin, 1774969200), "Tue 17:00 CEST: closed")
end

function T.hours_close_on_holidays()
  assert(open_in(berlin, 1798102800), "Thu 2026-12-24 10:00 CET: open")
  assert(not open_in(berlin, 1798189200), "Fri 2026-12-25 10:00 CET: holiday, closed")
end

function T.hours_in_two_zones()
  -- Mon 2026-03-30 07:30 UTC: 09:30 in Berlin, 03:30 in New York
  assert(open_in(berlin, 1774855800) and not open_in(new_york, 1774855800))
  -- New York's DST began Sun 2026-03-08: 21:30 UTC is 16:30 EST on Friday, 17:30 EDT on Monday
  assert(open_in(new_york, 1772832600), "Fri 2026-03-06 16:30 EST: open")
  assert(not open_in(new_york, 1773091800), "Mon 2026-03-09 17:30 EDT: closed")
end

function T.hours_default_to_the_current_time()
  local all_week = { tz = "UTC" }
  for _, d in ipairs({ "mon", "tue", "wed", "thu", "fri", "sat", "sun" }) do all_week[d] = "00:00-24:00" end
  assert(route.evaluate({ route.hours(all_week, queue("open")) }, ctx({})).queue == "open")
  local dest, err = route.evaluate({ route.hours({ tz = "UTC" }, queue("open")) }, ctx({}))
  assert(dest == nil and err == "no match", "no days means always closed")
end

-- check and examples ----------------------------------------------------------------------

function T.check_accepts_rules_and_functions()
  assert(route.check({ route.always(queue("general")) }) == true)
  assert(route.check(function() end) == true)
  assert(route.check({ route.always(queue("x")), examples = {} }) == true)
end

function T.check_rejects_what_is_not_a_rules_list()
  local function rejects(rules, msg)
    local ok, err = route.check(rules)
    assert(ok == nil and err == msg, "\n got: " .. tostring(err) .. "\nwant: " .. msg)
  end
  rejects("rules", "rules must be a list or a function, not string")
  rejects({}, "the rules list is empty")
  rejects({ route.always(queue("x")), queue("y") },
    "rule 2 is a table, not a rule built with handoff.route (a destination: wrap it in route.always)")
  rejects({ route.always(queue("x")), nil, route.always(queue("y")) },
    "rule 2 is a nil, not a rule built with handoff.route")
  rejects({ route.always(queue("x")), example = {} },
    "unexpected key 'example' in the rules list (only rules and examples)")
  rejects({ route.always(queue("x")), examples = { { expected = { queue = "x" } } } },
    "example 1: unknown key 'expected'")
  rejects({ route.always(queue("x")), examples = { { context = {} } } },
    "example 1: expect (a destination such as { queue = \"general\" }) is required")
  rejects({ route.always(queue("x")), examples = { { expect = { queue = "x" } }, { expect = { prio = 1 } } } },
    "example 2: unknown expect key 'prio'")
  rejects({ route.always(queue("x")), examples = { { now = "monday", expect = { queue = "x" } } } },
    "example 1: now must be epoch seconds")
end

local function with_examples(examples)
  return {
    route.closed({ tz = "Europe/Paris", mon = "08:00-18:00" }, queue("after-hours")),
    route.var("Global.CustomerTier", "gold", queue("vip", { priority = 1 })),
    route.language("fr", queue("support-fr")),
    route.always(queue("general")),
    examples = examples,
  }
end

local MONDAY_NOON = 1774864800	-- Mon 2026-03-30 12:00 Paris

function T.examples_pass()
  local rules = with_examples({
    { name = "french", now = MONDAY_NOON, context = { language = "fr-FR" }, expect = { queue = "support-fr" } },
    { now = MONDAY_NOON, context = { vars = { ["Global.CustomerTier"] = "gold" } },
      expect = { queue = "vip", priority = 1 } },
    { now = MONDAY_NOON - 86400, expect = { queue = "after-hours" } },
  })
  assert(route.check(rules))
  local ok, err = route.run_examples(rules)
  assert(ok == true, err)
  assert(route.run_examples({ route.always(queue("x")) }) == true, "no examples, nothing to run")
end

function T.a_failing_example_is_named()
  local function fails(examples, msg)
    local ok, err = route.run_examples(with_examples(examples))
    assert(ok == nil and err == msg, "\n got: " .. tostring(err) .. "\nwant: " .. msg)
  end
  local good = { now = MONDAY_NOON, expect = { queue = "general" } }
  fails({ good, { name = "french goes to support-fr", now = MONDAY_NOON, context = { language = "en" },
                  expect = { queue = "support-fr" } } },
    "example 2 'french goes to support-fr': want queue support-fr, got general")
  fails({ { now = MONDAY_NOON, context = { vars = { ["Global.CustomerTier"] = "gold" } },
            expect = { queue = "vip", priority = 2 } } },
    "example 1: want priority 2, got 1")
  fails({ { now = MONDAY_NOON, expect = { queue = "general", skill = "x" } } },
    "example 1: want skill x, got nothing")
end

function T.an_example_without_now_must_not_read_the_clock()
  local ok, err = route.run_examples(with_examples({ { name = "no clock", expect = { queue = "general" } } }))
  assert(ok == nil and err:match("^example 1 'no clock': want queue general, got rule 1 %(.-%): the example "
    .. "has no `now`"), err)
  -- rules that never reach the clock need no `now`
  assert(route.run_examples({ route.language("fr", queue("fr")), route.always(queue("x")),
    examples = { { context = { language = "fr" }, expect = { queue = "fr" } } } }))
end

function T.examples_report_errors_and_no_match()
  local ok, err = route.run_examples({ route.topic("x", queue("x")),
    examples = { { name = "nothing", expect = { queue = "x" } } } })
  assert(ok == nil and err == "example 1 'nothing': want queue x, got no match", err)
  ok, err = route.run_examples(function(h) return { queue = h.context.language } end,
    { { context = { language = "fr" }, expect = { queue = "fr" } },
      { context = {}, expect = { queue = "fr" } } })
  assert(ok == nil and err:match("^example 2: want queue fr, got rules function: destination"), err)
  ok, err = route.run_examples({ route.always(queue("x")) }, "not a list")
  assert(ok == nil and err == "examples must be a list of examples", err)
end

function T.examples_do_not_change_the_fixture()
  local ex = { context = { language = "fr" }, now = MONDAY_NOON, expect = { queue = "support-fr" } }
  assert(route.run_examples(with_examples({ ex })))
  assert(ex.context.vars == nil and ex.transcript == nil, "defaults go into a copy")
end

function T.the_shipped_example_rules_pass_their_examples()
  local root = debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/[^/]*$")
  local rules = dofile(root .. "/scripts/examples/routes.lua")
  assert(route.check(rules))
  local ok, err = route.run_examples(rules)
  assert(ok, err)
  assert(#rules.examples >= 2)
end

return T
