/* bindings.c - the module registry and the helpers all binding files share. */
#include "script/bindings/bindings.h"

#include "script/bindings/handoff_object.h"
#include "script/script_host.h"

#include <ctype.h>
#include <lauxlib.h>
#include <lua-cjson.h>
#include <string.h>

int luaopen_cjson_safe(lua_State *L);	/* lua-cjson's header declares only luaopen_cjson */

static const luaL_Reg preloaded[] = {
	{ "cjson", luaopen_cjson },
	{ "cjson.safe", luaopen_cjson_safe },
	{ "handoff", luaopen_handoff },
	{ "handoff.crypto", luaopen_handoff_crypto },
	{ "handoff.http", luaopen_handoff_http },
	{ "handoff.json", luaopen_cjson_safe },
	{ "handoff.log", luaopen_handoff_log },
	{ "handoff.payload", luaopen_handoff_payload },
	{ "handoff.time", luaopen_handoff_time },
	{ "handoff.timer", luaopen_handoff_timer },
	{ NULL, NULL },
};

void bindings_preload(lua_State *L)
{
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
	for (const luaL_Reg *m = preloaded; m->name; m++) {
		lua_pushcfunction(L, m->func);
		lua_setfield(L, -2, m->name);
	}
	lua_pop(L, 1);
}

struct hd_runtime *bind_runtime(lua_State *L)
{
	return (*(struct script_ctx **)lua_getextraspace(L))->rt;
}

void bind_reject_unknown_keys(lua_State *L, int idx, const char *const names[])
{
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		size_t i = 0;

		while (key && names[i] && strcmp(names[i], key) != 0)
			i++;
		if (!key || !names[i])
			luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'",
							      key ? key : luaL_typename(L, -2)));
		lua_pop(L, 1);
	}
}

void bind_header_add(lua_State *L, const char *name, const char *value)
{
	char lower[256];
	size_t n = 0;

	for (; name[n] && n < sizeof(lower) - 1; n++)
		lower[n] = (char)tolower((unsigned char)name[n]);
	lua_pushlstring(L, lower, n);
	lua_pushvalue(L, -1);
	if (lua_rawget(L, -3) == LUA_TSTRING) {
		lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), value);
		lua_remove(L, -2);
	} else {
		lua_pop(L, 1);
		lua_pushstring(L, value);
	}
	lua_rawset(L, -3);
}
