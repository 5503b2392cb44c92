--[[ handoff.route - the routing-rules DSL: where a handed-off conversation goes.

A routes file returns a list of rules; the first rule that matches the handoff object
(DESIGN.md "Handoff object") gives the destination. Each rule is a filter followed by its
destination:

  local route = require "handoff.route"
  local queue = route.queue
  local office = { tz = "Europe/Berlin", mon = "09:00-17:00", tue = "09:00-17:00",
                   holidays = { "2026-12-25" } }
  return {
    route.closed(office,                   queue("after-hours")),
    route.topic({ "Billing", "Refund" },   queue("billing", { priority = 2 })),
    route.language("de",                   queue("support-de")),
    route.phrase("cancel",                 queue("retention", { skill = "save-desk" })),
    route.var("Global.CustomerTier", "gold", queue("vip", { priority = 1 })),
    route.when(function (h) return #h.transcript > 20 end, queue("long-chats")),
    route.always(                          queue("general")),
    examples = {
      { name = "german", context = { language = "de-DE" }, now = 1774864800,
        expect = { queue = "support-de" } },
    },
  }

A routes file may instead return a function(h) that returns a destination table.
A destination is { queue = string, skill = string, priority = integer, agent = string,
reason = string }, queue required; route.queue(name, opts) builds one.

Filters (topic, language and phrase compare ASCII case-insensitively; var compares exactly;
a missing or mistyped field never matches and never raises):
  topic(name | list)        context.last_topic or any of context.topics equals a name
  language(prefix | list)   context.language is the prefix or starts with prefix.."-" or "_"
                            ("de" matches "de-DE" and "de", not "den")
  phrase(text | list)       context.last_phrase or any of context.phrases contains the text
  var(name, expected)       context.vars[name] == expected; a number and a string compare as
                            numbers ("3" matches 3.0, which is how JSON numbers arrive); a list
                            means any of its values; a function is called as fn(value, h)
  when(fn)                  fn(h) returns a true value
  hours(spec) / closed(spec) the clock is inside / outside weekly windows in a time zone:
                            { tz = "Europe/Berlin", mon = "09:00-17:00",
                              tue = { "09:00-12:00", "13:00-17:00" }, holidays = { "2026-12-25" } }
                            A window starts at its first minute and ends before its last
                            ("24:00" ends the day); a day that is absent is closed; a holiday
                            is closed all day. Windows cannot cross midnight: split them.
  always()                  matches every handoff

Mistakes in the rules file raise when it loads, naming the file and line of the mistake, so
a reload with a typo fails and the running rules stay. At run time nothing raises:
evaluate() returns nil and the reason, and the runtime uses its fallback destination.

`examples` are handoffs the rules must route as stated; the runtime runs them before it
swaps a reloaded rules file in. Missing fields of an example's handoff are empty (context
.vars, .topics and .phrases are {}, transcript is {}). An example without `now` must not
reach an hours or closed rule, so that a reload never depends on the time of day.

The runtime (script_host.c) calls check() and run_examples() on what a routes file returned
before it swaps the file in, and evaluate() for each handoff. This module keeps no state
between calls and only reads the clock through handoff.time.
]]
local time = require "handoff.time"

local M = {}

local Rule = {}                  -- metatable of every rule object
Rule.__tostring = function(r) return "route." .. r.kind .. " rule (" .. r.where .. ")" end

local DEST_TYPES = { queue = "string", skill = "string", priority = "number", agent = "string",
                    reason = "string" }
local DEST_ORDER = { "queue", "skill", "priority", "agent", "reason" }
local DAYS = { mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6, sun = 7 }
local EXAMPLE_KEYS = { name = true, context = true, transcript = true, user = true, bot = true,
                      conversation_id = true, activity_id = true, reason = true, now = true,
                      expect = true }
local EMPTY = {}

-- "file:line" of the Lua code that called the public function calling where(). C frames
-- (pcall) are skipped so the line is the user's even when a rule is built through one.
local function where()
  local level = 3
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return "?" end
    if info.currentline >= 0 then return info.short_src .. ":" .. info.currentline end
    level = level + 1
  end
end

-- Raises MSG as if at AT, the way error(msg, level) would, so the user sees their line.
local function raise(at, fmt, ...)
  error(at .. ": " .. string.format(fmt, ...), 0)
end

-- The reason DEST is not a destination, or nil when it is one.
local function dest_error(dest)
  if type(dest) ~= "table" then
    return "destination must be a table like route.queue(name), not " .. type(dest)
  end
  for k, v in pairs(dest) do
    local want = DEST_TYPES[k]
    if not want then return "unknown destination key '" .. tostring(k) .. "'" end
    if type(v) ~= want then
      return "destination " .. k .. " must be a " .. want .. ", not " .. type(v)
    end
  end
  if dest.queue == nil or dest.queue == "" then return "destination has no queue" end
  if dest.priority and math.type(dest.priority) ~= "integer" then
    return "destination priority must be an integer"
  end
  return nil
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function new_rule(kind, at, test, dest)
  local err = dest_error(dest)
  if err then raise(at, "route.%s: %s", kind, err) end
  return setmetatable({ kind = kind, where = at, test = test, dest = dest }, Rule)
end

-- A string or a non-empty list of non-empty strings, lowercased; raises otherwise.
local function names(v, at, kind)
  local list = type(v) == "string" and { v } or v
  if type(list) ~= "table" or #list == 0 then
    raise(at, "route.%s: expects a string or a list of strings, not %s", kind, type(v))
  end
  local out = {}
  for i, s in pairs(list) do
    if math.type(i) ~= "integer" or type(s) ~= "string" or s == "" then
      raise(at, "route.%s: entry %s must be a non-empty string", kind, tostring(i))
    end
    out[#out + 1] = s:lower()
  end
  return out
end

local function context(h)
  local c = type(h) == "table" and h.context
  return type(c) == "table" and c or EMPTY
end

-- True when PRED(x) holds for an entry X of LIST.
local function any_of(list, pred)
  for _, x in ipairs(list) do
    if pred(x) then return true end
  end
  return false
end

-- True when MATCH(text) holds for the string CTX[ONE] or any string in the list CTX[MANY]
-- (MANY may be nil), each lowercased.
local function any_text(ctx, one, many, match)
  if type(ctx[one]) == "string" and match(ctx[one]:lower()) then return true end
  local list = many and ctx[many]
  if type(list) ~= "table" then return false end
  for _, s in ipairs(list) do
    if type(s) == "string" and match(s:lower()) then return true end
  end
  return false
end

--- route.queue(name, opts) -> destination
-- name: the hub queue; opts: optional { skill = string, priority = integer, agent = string,
-- reason = string }. Raises on an unknown key or a wrong type.
function M.queue(name, opts)
  local at = where()
  if type(name) ~= "string" or name == "" then
    raise(at, "route.queue: queue name must be a non-empty string, not %s", type(name))
  end
  if opts ~= nil and type(opts) ~= "table" then
    raise(at, "route.queue: options must be a table, not %s", type(opts))
  end
  local dest = copy(opts or EMPTY)
  if dest.queue ~= nil then raise(at, "route.queue: unknown destination key 'queue' in options") end
  dest.queue = name
  local err = dest_error(dest)
  if err then raise(at, "route.queue: %s", err) end
  return dest
end

-- A filter over text fields of the context: its rule matches when MATCHES(text, wanted)
-- holds for the field ONE or an entry of the list field MANY, and one wanted string.
local function text_filter(kind, one, many, matches)
  return function(v, dest)
    local at = where()
    local wanted = names(v, at, kind)
    return new_rule(kind, at, function(h)
      return any_text(context(h), one, many, function(text)
        return any_of(wanted, function(w) return matches(text, w) end)
      end)
    end, dest)
  end
end

--- route.topic(name | list, dest) -> rule
-- Matches when context.last_topic or any of context.topics equals one of the names.
M.topic = text_filter("topic", "last_topic", "topics", function(topic, name) return topic == name end)

--- route.language(prefix | list, dest) -> rule
-- Matches when context.language is a prefix or starts with prefix .. "-" (or "_").
M.language = text_filter("language", "language", nil, function(lang, prefix)
  local sep = lang:sub(#prefix + 1, #prefix + 1)
  return lang:sub(1, #prefix) == prefix and (sep == "" or sep == "-" or sep == "_")
end)

--- route.phrase(text | list, dest) -> rule
-- Matches when context.last_phrase or any of context.phrases contains one of the texts.
M.phrase = text_filter("phrase", "last_phrase", "phrases", function(phrase, text)
  return phrase:find(text, 1, true) ~= nil
end)

-- Whether the variable's VALUE equals EXPECTED (a number and a string compare as numbers).
local function same(value, expected)
  if value == expected then return true end
  if type(value) == "number" and type(expected) == "string" then return tonumber(expected) == value end
  if type(value) == "string" and type(expected) == "number" then return tonumber(value) == expected end
  return false
end

--- route.var(name, expected, dest) -> rule
-- Looks up context.vars[name]. expected: a string, number or boolean (equality), a list of
-- them (any), or a function(value, h) whose true result matches.
function M.var(name, expected, dest)
  local at = where()
  if type(name) ~= "string" or name == "" then
    raise(at, "route.var: variable name must be a non-empty string, not %s", type(name))
  end
  local test
  if type(expected) == "function" then
    test = expected
  elseif type(expected) == "table" and #expected > 0 then
    test = function(value)
      return any_of(expected, function(e) return same(value, e) end)
    end
  elseif type(expected) == "string" or type(expected) == "number" or type(expected) == "boolean" then
    test = function(value) return same(value, expected) end
  else
    raise(at, "route.var: expected value must be a string, number, boolean, function or non-empty "
      .. "list, not %s", type(expected))
  end
  return new_rule("var", at, function(h)
    local vars = context(h).vars
    return test(type(vars) == "table" and vars[name] or nil, h)
  end, dest)
end

--- route.when(fn, dest) -> rule
-- Matches when fn(h) returns a true value. An error in fn makes evaluate() return nil, err.
function M.when(fn, dest)
  local at = where()
  if type(fn) ~= "function" then raise(at, "route.when: expects a function, not %s", type(fn)) end
  return new_rule("when", at, function(h) return fn(h) end, dest)
end

-- "HH:MM-HH:MM" -> { from = minute, to = minute } of the day; raises when malformed.
local function parse_window(s, at, day)
  local h1, m1, h2, m2 = tostring(s):match("^%s*(%d%d?):(%d%d)%s*%-%s*(%d%d?):(%d%d)%s*$")
  local from = h1 and tonumber(h1) * 60 + tonumber(m1)
  local to = h1 and tonumber(h2) * 60 + tonumber(m2)
  if type(s) ~= "string" or not h1 or tonumber(m1) > 59 or tonumber(m2) > 59 or from >= 24 * 60
     or to > 24 * 60 then
    raise(at, "route.hours: %s: window '%s' must look like \"09:00-17:00\"", day, tostring(s))
  end
  if from >= to then
    raise(at, "route.hours: %s: window '%s' ends before it starts (split a window that "
      .. "crosses midnight across two days)", day, s)
  end
  return { from = from, to = to }
end

local function parse_holidays(list, at)
  local set = {}
  if type(list) ~= "table" then raise(at, "route.hours: holidays must be a list of \"YYYY-MM-DD\"") end
  for _, d in pairs(list) do
    local y, m, dd = tostring(d):match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
    if type(d) ~= "string" or not y or tonumber(m) < 1 or tonumber(m) > 12 or tonumber(dd) < 1
       or tonumber(dd) > 31 then
      raise(at, "route.hours: holiday '%s' must look like \"2026-12-25\"", tostring(d))
    end
    set[d] = true
  end
  return set
end

-- Checks SPEC and returns { tz, holidays = set, [1..7] = list of windows }.
local function parse_schedule(spec, at, kind)
  if type(spec) ~= "table" then raise(at, "route.%s: expects a table of opening hours", kind) end
  if type(spec.tz) ~= "string" then raise(at, "route.%s: tz (an IANA time zone) is required", kind) end
  if not time.localtime(spec.tz, 0) then raise(at, "route.%s: unknown time zone '%s'", kind, spec.tz) end
  local sched = { tz = spec.tz, holidays = parse_holidays(spec.holidays or EMPTY, at) }
  for d = 1, 7 do sched[d] = {} end
  for k, v in pairs(spec) do
    local d = DAYS[k]
    if d then
      for _, w in ipairs(type(v) == "table" and v or { v }) do
        table.insert(sched[d], parse_window(w, at, k))
      end
    elseif k ~= "tz" and k ~= "holidays" then
      raise(at, "route.%s: unknown key '%s' (days are mon..sun)", kind, tostring(k))
    end
  end
  return sched
end

-- Whether NOW falls inside SCHED's windows; raises when there is no clock (an example
-- without `now`) or the zone vanished since load.
local function is_open(sched, now)
  if not now then
    error("the example has no `now` (epoch seconds) and this rule reads the clock", 0)
  end
  local t = assert(time.localtime(sched.tz, now))
  if sched.holidays[string.format("%04d-%02d-%02d", t.year, t.month, t.day)] then return false end
  local minute = t.hour * 60 + t.min
  for _, w in ipairs(sched[t.wday]) do
    if minute >= w.from and minute < w.to then return true end
  end
  return false
end

--- route.hours(spec, dest) -> rule
-- Matches while the clock is inside the weekly windows of spec (see the header).
function M.hours(spec, dest)
  local at = where()
  local sched = parse_schedule(spec, at, "hours")
  return new_rule("hours", at, function(_, now) return is_open(sched, now) end, dest)
end

--- route.closed(spec, dest) -> rule
-- Matches while the clock is outside the weekly windows of spec, holidays included.
function M.closed(spec, dest)
  local at = where()
  local sched = parse_schedule(spec, at, "closed")
  return new_rule("closed", at, function(_, now) return not is_open(sched, now) end, dest)
end

--- route.always(dest) -> rule
-- Matches every handoff; the usual last rule.
function M.always(dest)
  return new_rule("always", where(), function() return true end, dest)
end

-- evaluate() with NOW false meaning "no clock" (examples without `now`).
local function run(rules, h, now)
  if type(rules) == "function" then
    local ok, dest = pcall(rules, h)
    if not ok then return nil, "rules function: " .. tostring(dest) end
    local err = dest_error(dest)
    if err then return nil, "rules function: " .. err end
    return copy(dest)
  end
  if type(rules) ~= "table" then
    return nil, "rules must be a list or a function, not " .. type(rules)
  end
  for i, rule in ipairs(rules) do
    if getmetatable(rule) ~= Rule then return nil, "rule " .. i .. " is not a rule" end
    local ok, hit = pcall(rule.test, h, now)
    if not ok then return nil, string.format("rule %d (%s): %s", i, rule.where, tostring(hit)) end
    if hit then return copy(rule.dest), i end
  end
  return nil, "no match"
end

--- route.evaluate(rules, h, now) -> dest, index | nil, err
-- rules: a rules list or a function(h) returning a destination; h: the handoff object;
-- now: epoch seconds (default: the current time). Returns a fresh copy of the first
-- matching rule's destination and the rule's index (no index for a function), or nil and
-- "no match", or "rule N (file:line): <error>" when a filter raised. Never raises.
function M.evaluate(rules, h, now)
  if now == nil then now = time.now() end
  if type(now) ~= "number" then return nil, "now must be epoch seconds, not " .. type(now) end
  return run(rules, h, now)
end

-- The reason EX is not a well-formed example, or nil.
local function example_error(ex)
  if type(ex) ~= "table" then return "must be a table" end
  for k in pairs(ex) do
    if not EXAMPLE_KEYS[k] then return "unknown key '" .. tostring(k) .. "'" end
  end
  for _, k in ipairs({ "context", "transcript", "expect" }) do
    if ex[k] ~= nil and type(ex[k]) ~= "table" then return k .. " must be a table" end
  end
  if ex.now ~= nil and type(ex.now) ~= "number" then return "now must be epoch seconds" end
  if ex.expect == nil or next(ex.expect) == nil then
    return 'expect (a destination such as { queue = "general" }) is required'
  end
  for k in pairs(ex.expect) do
    if not DEST_TYPES[k] then return "unknown expect key '" .. tostring(k) .. "'" end
  end
  return nil
end

local function examples_error(examples)
  if type(examples) ~= "table" then return "examples must be a list of examples" end
  for i, ex in pairs(examples) do
    if math.type(i) ~= "integer" then
      return "examples must be a list (unexpected key '" .. tostring(i) .. "')"
    end
    local err = example_error(ex)
    if err then return "example " .. i .. ": " .. err end
  end
  return nil
end

--- route.check(rules) -> true | nil, err
-- Validates what a routes file returned: a function, or a non-empty list in which every
-- entry is a rule built by this module, plus an optional well-formed `examples` list.
function M.check(rules)
  if type(rules) == "function" then return true end
  if type(rules) ~= "table" then
    return nil, "rules must be a list or a function, not " .. type(rules)
  end
  local last = 0
  for k in pairs(rules) do
    if math.type(k) == "integer" and k >= 1 then
      last = math.max(last, k)
    elseif k ~= "examples" then
      return nil, "unexpected key '" .. tostring(k) .. "' in the rules list (only rules and examples)"
    end
  end
  if last == 0 then return nil, "the rules list is empty" end
  for i = 1, last do
    local r = rules[i]
    if getmetatable(r) ~= Rule then
      local hint = type(r) == "table" and r.queue and " (a destination: wrap it in route.always)" or ""
      return nil, "rule " .. i .. " is a " .. type(r) .. ", not a rule built with handoff.route" .. hint
    end
  end
  local err = rules.examples ~= nil and examples_error(rules.examples)
  if err then return nil, err end
  return true
end

-- The handoff object of example EX, with empty defaults for what it leaves out.
local function example_handoff(ex, i)
  local ctx = copy(ex.context or EMPTY)
  ctx.vars = ctx.vars or {}
  ctx.topics = ctx.topics or {}
  ctx.phrases = ctx.phrases or {}
  return { context = ctx, transcript = ex.transcript or {}, user = ex.user or {}, bot = ex.bot or {},
           conversation_id = ex.conversation_id or ("example-" .. i), activity_id = ex.activity_id,
           reason = ex.reason }
end

local function show(v)
  return v == nil and "nothing" or tostring(v)
end

--- route.run_examples(rules, examples) -> true | nil, err
-- Routes each example (default: rules.examples) and compares every key of its `expect`
-- with the destination. err names the first failing example and key:
-- "example 2 'french goes to support-fr': want queue support-fr, got general".
function M.run_examples(rules, examples)
  examples = examples or (type(rules) == "table" and rules.examples) or nil
  if examples == nil then return true end
  local bad = examples_error(examples)
  if bad then return nil, bad end
  for i, ex in ipairs(examples) do
    local label = "example " .. i .. (ex.name and (" '" .. tostring(ex.name) .. "'") or "")
    local dest, err = run(rules, example_handoff(ex, i), ex.now or false)
    for _, k in ipairs(DEST_ORDER) do
      local want = ex.expect[k]
      if want ~= nil and (not dest or dest[k] ~= want) then
        return nil, string.format("%s: want %s %s, got %s", label, k, tostring(want),
          dest and show(dest[k]) or err)
      end
    end
  end
  return true
end

return M
