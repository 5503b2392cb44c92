/* bindings/time.c - the `handoff.time` module: the wall clock and local time in a named
 * IANA zone, for routing rules with opening hours (scripts/handoff/route.lua).
 * Zone files come from the system (Debian's tzdata, /usr/share/zoneinfo); this file only
 * checks the name and asks libc. Calendar logic (weekly windows, holidays) is Lua's. */
#include "script/bindings/bindings.h"
#include "base/clock.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define TIME_ZONEINFO_DIR "/usr/share/zoneinfo"
#define TIME_ZONE_NAME_MAX 128
/* 9999-12-31T23:59:59Z: beyond it a struct tm year may overflow, and casting a larger
 * double to time_t is undefined. */
#define TIME_EPOCH_MAX 253402300799.0

/* time.now() -> epoch seconds with fractions. */
static int l_time_now(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)clock_wall_ms() / 1e3);
	return 1;
}

/* Writes the zone file's path for NAME to PATH. 0 when NAME is a plausible zone name and
 * the file exists; glibc would otherwise fall back to UTC without a word. */
static int zone_path(const char *name, char *path, size_t cap)
{
	struct stat st;
	int n;

	if (!name[0] || name[0] == '/' || strstr(name, "..") || strlen(name) > TIME_ZONE_NAME_MAX)
		return -EINVAL;
	n = snprintf(path, cap, "%s/%s", TIME_ZONEINFO_DIR, name);
	if (n < 0 || (size_t)n >= cap)
		return -EINVAL;
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return -ENOENT;
	return 0;
}

/* Breaks T down in the zone whose file is PATH. glibc has no per-call zone API
 * (localtime_rz is NetBSD's), so this points TZ at the file, re-reads it with tzset()
 * (localtime_r does not), converts, and puts the previous TZ back. The environment is
 * process-wide, which is safe only because the daemon runs Lua on one thread. OLD_TZ is
 * a copy of TZ on entry (NULL when unset). Returns 0 or -EINVAL. */
static int local_in_zone(const char *path, const char *old_tz, time_t t, struct tm *tm)
{
	char tz[sizeof(TIME_ZONEINFO_DIR) + TIME_ZONE_NAME_MAX + 2];
	int ok;

	snprintf(tz, sizeof(tz), ":%s", path);
	if (setenv("TZ", tz, 1) < 0)
		return -EINVAL;
	tzset();
	ok = localtime_r(&t, tm) != NULL;
	if (old_tz)
		setenv("TZ", old_tz, 1);
	else
		unsetenv("TZ");
	tzset();
	return ok ? 0 : -EINVAL;
}

static void set_int(lua_State *L, const char *key, int v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, key);
}

/* time.localtime(tz, epoch) -> {year, month, day, hour, min, sec, wday (1 = Monday),
 * isdst}, or nil, "unknown time zone". */
static int l_time_localtime(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	lua_Number epoch = luaL_checknumber(L, 2);
	char path[sizeof(TIME_ZONEINFO_DIR) + TIME_ZONE_NAME_MAX + 1];
	const char *old_tz;
	struct tm tm;

	luaL_argcheck(L, epoch >= -TIME_EPOCH_MAX && epoch <= TIME_EPOCH_MAX, 2,
		      "epoch out of range");
	if (zone_path(name, path, sizeof(path)) < 0) {
		luaL_pushfail(L);
		lua_pushliteral(L, "unknown time zone");
		return 2;
	}
	/* Copied onto the Lua stack before setenv can invalidate it; pushing may raise, so it
	 * happens before TZ changes. */
	old_tz = getenv("TZ");
	if (old_tz)
		old_tz = lua_pushstring(L, old_tz);
	if (local_in_zone(path, old_tz, (time_t)epoch, &tm) < 0) {
		luaL_pushfail(L);
		lua_pushliteral(L, "time out of range");
		return 2;
	}
	lua_createtable(L, 0, 8);
	set_int(L, "year", tm.tm_year + 1900);
	set_int(L, "month", tm.tm_mon + 1);
	set_int(L, "day", tm.tm_mday);
	set_int(L, "hour", tm.tm_hour);
	set_int(L, "min", tm.tm_min);
	set_int(L, "sec", tm.tm_sec);
	set_int(L, "wday", (tm.tm_wday + 6) % 7 + 1);
	lua_pushboolean(L, tm.tm_isdst > 0);
	lua_setfield(L, -2, "isdst");
	return 1;
}

static const luaL_Reg time_funcs[] = {
	{ "localtime", l_time_localtime },
	{ "now", l_time_now },
	{ NULL, NULL },
};

int luaopen_handoff_time(lua_State *L)
{
	luaL_newlib(L, time_funcs);
	return 1;
}
