/* script_host.c - builds Lua generations and swaps them in.
 * Owns every lua_State of the daemon. A generation is loaded in a fixed order: the
 * runtime's modules in package.preload, the search path, the config table (for the
 * hub settings), the hub module(s) and their init, the routing rules; then globals are
 * locked. Any failure discards the new state and leaves the running one alone
 * (the order Redis's functions.c uses: build, check, then swap). */
#include "script_host.h"

#include "bindings/bindings.h"
#include "config.h"
#include "log.h"
#include "runtime.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef HANDOFFD_SCRIPT_DIR
#define HANDOFFD_SCRIPT_DIR "/usr/share/handoffd/scripts"
#endif

/* Registry keys of a generation. */
#define REG_HUB "handoffd.hub"
#define REG_FRONT "handoffd.front"
#define REG_DESK "handoffd.desk"
#define REG_ROUTES "handoffd.routes"

struct script_host {
	struct hd_runtime *rt;
	lua_State *L;			/* the current generation, or NULL before the first load */
	unsigned long generation;
};

struct script_host *script_host_new(struct hd_runtime *rt)
{
	struct script_host *sh = calloc(1, sizeof(*sh));

	if (sh)
		sh->rt = rt;
	return sh;
}

void script_host_free(struct script_host *sh)
{
	if (!sh)
		return;
	if (sh->L)
		lua_close(sh->L);
	free(sh);
}

unsigned long script_host_generation(const struct script_host *sh)
{
	return sh->generation;
}

/* Message handler for lua_pcall: the error plus a traceback naming file and line. */
static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	if (!msg)
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	luaL_traceback(L, L, msg, 1);
	return 1;
}

/* Calls the function below NARGS arguments; on error copies the first line of the
 * message (file:line: reason) to ERR and logs the whole traceback. */
static int pcall_reporting(struct script_host *sh, lua_State *L, int nargs, int nres,
			   const char *what, char *err, size_t errlen)
{
	int base = lua_gettop(L) - nargs;
	int rc;

	lua_pushcfunction(L, traceback);
	lua_insert(L, base);
	rc = lua_pcall(L, nargs, nres, base);
	lua_remove(L, base);
	if (rc == LUA_OK)
		return 0;
	const char *msg = lua_tostring(L, -1);
	const char *nl = msg ? strchr(msg, '\n') : NULL;

	snprintf(err, errlen, "%s: %.*s", what, nl ? (int)(nl - msg) : (int)strlen(msg ? msg : ""),
		 msg ? msg : "");
	log_debug(sh->rt->log, "script.error", "what=\"%s\" traceback=\"%s\"", what, msg ? msg : "");
	lua_pop(L, 1);
	return -EINVAL;
}

static void set_search_path(lua_State *L, const struct config *cfg)
{
	const char *extra = cfg->script_path ? cfg->script_path : "";

	lua_getglobal(L, "package");
	lua_pushfstring(L, "%s%s%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua", extra,
			extra[0] ? ";" : "", cfg->dir, cfg->dir, HANDOFFD_SCRIPT_DIR, HANDOFFD_SCRIPT_DIR);
	lua_setfield(L, -2, "path");
	lua_pop(L, 1);
}

/* Leaves the config file's table on the stack: scripts get the same settings the core
 * validated, read fresh at every reload. */
static int load_config_table(struct script_host *sh, lua_State *L, char *err, size_t errlen)
{
	const struct config *cfg = sh->rt->config;

	if (!cfg->file) {
		lua_newtable(L);
		return 0;
	}
	if (luaL_loadfilex(L, cfg->file, "t") != LUA_OK) {
		snprintf(err, errlen, "%s", lua_tostring(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	return pcall_reporting(sh, L, 0, 1, "config", err, errlen);
}

/* require()s the module named in config key KEY, runs its init with the key's table and
 * stores the module under REGKEY. The config table is on top of the stack. */
static int load_hub(struct script_host *sh, lua_State *L, const char *key, const char *module,
		    const char *regkey, char *err, size_t errlen)
{
	int rc;

	if (!module)
		return 0;
	lua_getglobal(L, "require");
	lua_pushstring(L, module);
	rc = pcall_reporting(sh, L, 1, 1, key, err, errlen);
	if (rc < 0)
		return rc;
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen, "%s: module '%s' must return a table, not %s", key, module,
			 luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	lua_getfield(L, -1, "init");
	if (lua_isfunction(L, -1)) {
		lua_getfield(L, -3, key);
		rc = pcall_reporting(sh, L, 1, 0, key, err, errlen);
		if (rc < 0) {
			lua_pop(L, 1);
			return rc;
		}
	} else {
		lua_pop(L, 1);
	}
	lua_setfield(L, LUA_REGISTRYINDEX, regkey);
	return 0;
}

static int load_routes(struct script_host *sh, lua_State *L, char *err, size_t errlen)
{
	const char *path = sh->rt->config->routes;
	int rc;

	if (!path)
		return 0;
	if (luaL_loadfilex(L, path, "t") != LUA_OK) {
		snprintf(err, errlen, "routes: %s", lua_tostring(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	rc = pcall_reporting(sh, L, 0, 1, "routes", err, errlen);
	if (rc < 0)
		return rc;
	if (!lua_isfunction(L, -1) && !lua_istable(L, -1)) {
		snprintf(err, errlen, "routes: %s must return a function or a list of rules, not %s", path,
			 luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	lua_setfield(L, LUA_REGISTRYINDEX, REG_ROUTES);
	return 0;
}

static int undeclared_global(lua_State *L)
{
	return luaL_error(L, "undeclared global '%s'", luaL_optstring(L, 2, "?"));
}

static int assign_global(lua_State *L)
{
	return luaL_error(L, "assignment to undeclared global '%s' (use local)", luaL_optstring(L, 2, "?"));
}

/* After load, a mistyped name fails at first use instead of quietly being nil
 * (lsyncd's lockGlobals). */
static void lock_globals(lua_State *L)
{
	lua_pushglobaltable(L);
	lua_newtable(L);
	lua_pushcfunction(L, undeclared_global);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, assign_global);
	lua_setfield(L, -2, "__newindex");
	lua_setmetatable(L, -2);
	lua_pop(L, 1);
}

static lua_State *new_state(struct script_host *sh)
{
	lua_State *L = luaL_newstate();

	if (!L)
		return NULL;
	*(struct hd_runtime **)lua_getextraspace(L) = sh->rt;
	luaL_openlibs(L);
	bindings_preload(L);
	set_search_path(L, sh->rt->config);
	return L;
}

/* Builds a generation in a new state. Returns it, or NULL with ERR set. */
static lua_State *build_generation(struct script_host *sh, char *err, size_t errlen)
{
	const struct config *cfg = sh->rt->config;
	lua_State *L = new_state(sh);
	int rc;

	if (!L) {
		snprintf(err, errlen, "out of memory creating a Lua state");
		return NULL;
	}
	rc = load_config_table(sh, L, err, errlen);
	if (rc == 0)
		rc = load_hub(sh, L, "hub", cfg->hub_module, REG_HUB, err, errlen);
	if (rc == 0)
		rc = load_hub(sh, L, "front", cfg->front_module, REG_FRONT, err, errlen);
	if (rc == 0)
		rc = load_hub(sh, L, "desk", cfg->desk_module, REG_DESK, err, errlen);
	if (rc == 0)
		rc = load_routes(sh, L, err, errlen);
	if (rc < 0) {
		lua_close(L);
		return NULL;
	}
	lua_pop(L, 1);	/* the config table */
	lock_globals(L);
	return L;
}

int script_host_load(struct script_host *sh, char *err, size_t errlen)
{
	lua_State *L = build_generation(sh, err, errlen);

	if (!L)
		return -EINVAL;
	/* No coroutine outlives a call yet, so the old state can go at once. */
	if (sh->L)
		lua_close(sh->L);
	sh->L = L;
	sh->generation++;
	return 0;
}

/* Runs one test function in a coroutine of L; returns 1 when it passed. */
static int run_one_test(lua_State *L, const char *name)
{
	lua_State *co = lua_newthread(L);
	int nres, rc;

	lua_pushvalue(L, -2);	/* the test function */
	lua_xmove(L, co, 1);
	rc = lua_resume(co, L, 0, &nres);
	if (rc == LUA_OK) {
		printf("ok - %s\n", name);
		lua_pop(L, 1);
		return 1;
	}
	if (rc == LUA_YIELD)
		lua_pushstring(co, "test yielded outside a runtime call");
	luaL_traceback(L, co, lua_tostring(co, -1), 0);
	printf("not ok - %s\n  %s\n", name, lua_tostring(L, -1));
	lua_pop(L, 2);
	return 0;
}

/* Collects test names and runs them in name order, so output is stable. */
static void run_test_table(lua_State *L, unsigned *passed, unsigned *failed)
{
	int n = 0;

	lua_newtable(L);	/* names */
	lua_pushnil(L);
	while (lua_next(L, -3)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING) {
			lua_pushvalue(L, -1);
			lua_rawseti(L, -3, ++n);
		}
	}
	lua_getglobal(L, "table");
	lua_getfield(L, -1, "sort");
	lua_pushvalue(L, -3);
	lua_call(L, 1, 0);
	lua_pop(L, 1);
	for (int i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, i);
		const char *name = lua_tostring(L, -1);

		lua_gettable(L, -3);	/* names[i] -> tests[name] */
		if (run_one_test(L, name))
			(*passed)++;
		else
			(*failed)++;
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

int script_host_run_tests(struct script_host *sh, const char *file, unsigned *passed,
			  unsigned *failed)
{
	char err[1024];
	lua_State *L = build_generation(sh, err, sizeof(err));
	int rc = 0;

	if (!L) {
		fprintf(stderr, "handoffd: %s\n", err);
		return -EINVAL;
	}
	if (luaL_loadfilex(L, file, "t") != LUA_OK) {
		fprintf(stderr, "handoffd: %s\n", lua_tostring(L, -1));
		rc = -EINVAL;
	} else if (pcall_reporting(sh, L, 0, 1, file, err, sizeof(err)) < 0) {
		fprintf(stderr, "handoffd: %s\n", err);
		rc = -EINVAL;
	} else if (!lua_istable(L, -1)) {
		fprintf(stderr, "handoffd: %s must return a table of tests\n", file);
		rc = -EINVAL;
	} else {
		run_test_table(L, passed, failed);
	}
	lua_close(L);
	return rc;
}
