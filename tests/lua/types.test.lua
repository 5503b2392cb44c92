-- types/ holds the LuaLS definitions of what the runtime gives scripts. Each module's
-- definition file must declare exactly the functions the module exports, so a function
-- added to a binding or a library module without its definition fails here.
local T = {}

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local TYPES = here .. "../../types/"

local MODULES = { "handoff", "handoff.http", "handoff.timer", "handoff.crypto", "handoff.time",
                  "handoff.payload", "handoff.log", "handoff.route", "handoff.context",
                  "handoff.delivery", "handoff.events", "handoff.form", "handoff.oauth", "handoff.signature",
                  "handoff.transcript" }

local function read(path)
  local f = assert(io.open(path))
  local text = f:read("a")
  f:close()
  return text
end

-- The names of `function <module local>.name(` in a definition file.
local function declared(name)
  local text = read(TYPES .. name .. ".lua")
  assert(text:match("^%-%-%-@meta " .. name:gsub("%.", "%%.") .. "\n"), name .. ": no ---@meta line")
  local local_name = assert(text:match("\nreturn ([%w_]+)%s*$"), name .. ": no return at the end")
  local set = {}
  for fn in text:gmatch("\nfunction " .. local_name .. "%.([%w_]+)%(") do set[fn] = true end
  return set
end

local function exported(name)
  local set = {}
  for k, v in pairs(require(name)) do
    if type(v) == "function" then set[k] = true end
  end
  return set
end

local function missing(a, b)
  local out = {}
  for k in pairs(a) do
    if not b[k] then out[#out + 1] = k end
  end
  table.sort(out)
  return table.concat(out, ", ")
end

function T.every_module_is_declared_exactly()
  for _, name in ipairs(MODULES) do
    local have, decl = exported(name), declared(name)
    assert(next(have), name .. " exports no function")
    assert(missing(have, decl) == "", name .. ": not in types/: " .. missing(have, decl))
    assert(missing(decl, have) == "", name .. ": in types/ but not exported: " .. missing(decl, have))
  end
end

function T.json_declares_what_cjson_safe_has()
  local json, decl = require "handoff.json", declared("handoff.json")
  for fn in pairs(decl) do assert(type(json[fn]) == "function", "handoff.json." .. fn) end
  assert(decl.encode and decl.decode)
end

return T
