/* bindings/log.c - the `handoff.log` module: log.info("event", {key = value}) from Lua.
 * Lines go through log.c like the core's, so scripts get the same format, levels and
 * secret redaction. */
#include "script/bindings/bindings.h"

#include "base/log.h"
#include "base/hd_runtime.h"

#include <lauxlib.h>
#include <string.h>

#define SCRIPT_FIELDS_MAX 2048

/* Appends key=value for each string key of the table at IDX to BUF (log.c escapes and
 * quotes the values: a hub's id with a newline cannot forge a line); entries that do not
 * fit are dropped. */
static void format_fields(lua_State *L, struct log *lg, int idx, char *buf, size_t cap)
{
	size_t len = 0;

	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (lua_type(L, -2) == LUA_TSTRING) {
			size_t vlen;
			const char *v = luaL_tolstring(L, -1, &vlen);

			len = log_append_field(lg, buf, cap, len, lua_tostring(L, -3), v, vlen);
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
}

static int write_line(lua_State *L, enum log_level level)
{
	const char *event = luaL_checkstring(L, 1);
	struct log *lg = bind_runtime(L)->log;
	char fields[SCRIPT_FIELDS_MAX] = "";

	if (level < log_get_level(lg))
		return 0;
	if (lua_istable(L, 2)) {
		format_fields(L, lg, 2, fields, sizeof(fields));
	} else if (!lua_isnoneornil(L, 2)) {
		size_t len;
		const char *msg = luaL_checklstring(L, 2, &len);

		log_append_field(lg, fields, sizeof(fields), 0, "msg", msg, len);
	}
	log_write_fields(lg, level, event, fields);
	return 0;
}

static int l_log_debug(lua_State *L) { return write_line(L, LEVEL_DEBUG); }
static int l_log_info(lua_State *L) { return write_line(L, LEVEL_INFO); }
static int l_log_warn(lua_State *L) { return write_line(L, LEVEL_WARN); }
static int l_log_error(lua_State *L) { return write_line(L, LEVEL_ERROR); }

static const luaL_Reg log_funcs[] = {
	{ "debug", l_log_debug },
	{ "error", l_log_error },
	{ "info", l_log_info },
	{ "warn", l_log_warn },
	{ NULL, NULL },
};

int luaopen_handoff_log(lua_State *L)
{
	luaL_newlib(L, log_funcs);
	return 1;
}
