--[[ handoff.form - application/x-www-form-urlencoded bodies, both ways.

  local form = require "handoff.form"
  form.escape("a b&c")                          --> "a%20b%26c"
  form.encode({ { "Body", "hi" }, { "Author", "bot" } })   --> "Body=hi&Author=bot" (order kept)
  local fields, list = form.decode("a=1&b=x+y") --> { a = "1", b = "x y" }, { {"a","1"}, {"b","x y"} }

escape() leaves only RFC 3986 unreserved characters as they are, which every form parser
reads back. decode() takes "+" as a space and %XX as a byte; a repeated name keeps its
first value in `fields`, while `list` has every pair in body order (what signatures that
cover all parameters, like Twilio's, need).
]]
local M = {}

function M.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- PAIRS ({name, value} in order) as a form body; pairs whose value is nil are left out.
function M.encode(pairs_list)
  local out = {}
  for _, kv in ipairs(pairs_list) do
    if kv[2] ~= nil then out[#out + 1] = M.escape(kv[1]) .. "=" .. M.escape(kv[2]) end
  end
  return table.concat(out, "&")
end

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- A form body as {name = first value} and the list of every {name, value} pair.
function M.decode(body)
  local fields, list = {}, {}
  for part in tostring(body or ""):gmatch("[^&]+") do
    local k, v = part:match("^([^=]*)=?(.*)$")
    k, v = unescape(k), unescape(v)
    list[#list + 1] = { k, v }
    if fields[k] == nil then fields[k] = v end
  end
  return fields, list
end

return M
