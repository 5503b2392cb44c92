-- luacheck settings for the Lua that runs inside handoffd (ctest runs `luacheck scripts
-- tests/lua` as lint.luacheck). Scripts see Lua 5.4's standard library and get the rest
-- through require; the runtime locks globals after load, so none may be set.
std = "lua54"
max_line_length = 125
exclude_files = { "types/**" }	-- LuaLS definitions: declarations with empty bodies

-- This test assigns and reads undeclared globals on purpose: the runtime must refuse both.
files["tests/lua/runtime.test.lua"] = { ignore = { "111", "113" } }
