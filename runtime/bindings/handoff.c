/* bindings/handoff.c - the `handoff` module: the runtime API scripts call.
 * Translation only: each function checks its arguments and calls into the runtime. */
#include "bindings.h"

#include "runtime.h"

#include <lauxlib.h>

static int l_handoff_conversations(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)runtime_conversations(bind_runtime(L)));
	return 1;
}

static const luaL_Reg handoff_funcs[] = {
	{ "conversations", l_handoff_conversations },
	{ NULL, NULL },
};

int luaopen_handoff(lua_State *L)
{
	luaL_newlib(L, handoff_funcs);
	lua_pushliteral(L, HANDOFFD_VERSION);
	lua_setfield(L, -2, "version");
	luaL_requiref(L, "handoff.log", luaopen_handoff_log, 0);
	lua_setfield(L, -2, "log");
	return 1;
}
