/* script_host.c - builds Lua generations, swaps them in and retires them.
 * Owns every lua_State of the daemon and its memory accounting. A generation is loaded
 * in a fixed order: the runtime's modules in package.preload, the search path, the
 * config table (for the hub settings), the hub module(s) and their init, the routing
 * rules and their examples, the hubs' webhooks; then globals are locked. Any failure
 * discards the new state and leaves the running one alone (the order Redis's
 * functions.c uses: build, check, then swap). Tasks live in script_task.c. */
#include "script/script_gen.h"

#include "script/bindings/bindings.h"
#include "base/config.h"
#include "net/http_server.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"
#include "base/hd_runtime.h"
#include "script/json_table.h"
#include "script/script_dir.h"
#include "base/secrets.h"
#include "script/webhooks.h"

#include <errno.h>
#include <limits.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_TIMEOUT_MS 30000

/* ---- generations ---------------------------------------------------------------- */

/* Lua's allocator, counting bytes. The cap applies only while scripts run: the C side's
 * own calls into the Lua API (outside any protected call) must never fail, or Lua
 * would panic and take the daemon down. */
static void *gen_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct script_gen *g = ud;
	size_t old = ptr ? osize : 0;
	void *p;

	if (nsize == 0) {
		free(ptr);
		g->mem_used -= old;
		return NULL;
	}
	if (nsize > old && g->in_script > 0 && g->mem_limit && g->mem_used - old + nsize > g->mem_limit)
		return NULL;
	p = realloc(ptr, nsize);
	if (p)
		g->mem_used = g->mem_used - old + nsize;
	return p;
}

static void gen_close(struct script_gen *g)
{
	if (!g)
		return;
	loop_timer_free(g->retire_timer);
	webhooks_free(g);
	if (g->L)
		lua_close(g->L);
	free(g);
}

struct script_gen *script_gen_of(lua_State *L)
{
	return (*(struct script_ctx **)lua_getextraspace(L))->gen;
}

void script_gen_add_retire_hook(struct script_gen *g, struct script_retire_hook *hook)
{
	hook->next = g->retire_hooks.next;
	hook->prev = &g->retire_hooks;
	g->retire_hooks.next->prev = hook;
	g->retire_hooks.next = hook;
}

void script_gen_remove_retire_hook(struct script_retire_hook *hook)
{
	if (!hook->next)
		return;
	hook->prev->next = hook->next;
	hook->next->prev = hook->prev;
	hook->next = hook->prev = NULL;
}

static void unlink_retired(struct script_host *sh, struct script_gen *g)
{
	for (struct script_gen **p = &sh->retired; *p; p = &(*p)->next) {
		if (*p == g) {
			*p = g->next;
			return;
		}
	}
}

void script_gen_task_ended(struct script_gen *g)
{
	struct script_host *sh = g->sh;

	if (!g->retired || g->tasks > 0 || sh->closing)
		return;
	log_info(sh->rt->log, "script.generation_closed", "generation=%lu", g->id);
	unlink_retired(sh, g);
	gen_close(g);
}

/* retire_after passed: whatever the old generation still waits on is cut off. */
static void on_retire_timeout(void *arg)
{
	struct script_gen *g = arg;

	log_warn(g->sh->rt->log, "script.generation_forced", "generation=%lu tasks=%u", g->id, g->tasks);
	script_task_abort_gen(g->sh, g);	/* the last task's end closes it */
}

static void run_retire_hooks(struct script_gen *g)
{
	while (g->retire_hooks.next != &g->retire_hooks) {
		struct script_retire_hook *hook = g->retire_hooks.next;

		script_gen_remove_retire_hook(hook);
		hook->fn(hook);	/* timers fire with premature = true */
	}
}

void script_host_shutdown(struct script_host *sh)
{
	if (sh->current)
		run_retire_hooks(sh->current);
}

/* G serves no new work from now on; it closes when its last task ends. */
static void gen_retire(struct script_host *sh, struct script_gen *g)
{
	g->retired = true;
	if (sh->rt->http)
		webhooks_detach(sh->rt->http, g);
	g->tasks++;	/* a premature timer's task must not close G under our feet */
	run_retire_hooks(g);
	g->tasks--;
	if (g->tasks == 0) {
		gen_close(g);
		return;
	}
	g->next = sh->retired;
	sh->retired = g;
	g->retire_timer = loop_timer_new(sh->rt->loop, on_retire_timeout, g);
	if (g->retire_timer)
		loop_timer_start(g->retire_timer, (uint64_t)(sh->rt->config->scripts.retire_after * 1000.0), 0);
}

/* ---- loading -------------------------------------------------------------------- */

int script_traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	if (!msg)
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	luaL_traceback(L, L, msg, 1);
	return 1;
}

/* "WHAT: MSG" on one line, without the traceback. require's "module 'x' not found:" puts
 * every path it tried on a line of its own: those are what the reader needs to see. */
static void copy_error(char *err, size_t errlen, const char *what, const char *msg)
{
	const char *end = strstr(msg, "\nstack traceback:");
	size_t len = end ? (size_t)(end - msg) : strlen(msg);
	int n = snprintf(err, errlen, "%s: ", what);
	size_t o = n > 0 && (size_t)n < errlen ? (size_t)n : 0;

	for (size_t i = 0; i < len && o + 1 < errlen; i++) {
		if (msg[i] == '\t')
			continue;
		err[o++] = msg[i] == '\n' ? ' ' : msg[i];
	}
	if (errlen > 0)
		err[o < errlen ? o : errlen - 1] = '\0';
}

/* Calls the function below NARGS arguments in G; on error copies the message (file:line:
 * reason) to ERR, prefixed by WHAT, and logs the traceback. */
static int gen_pcall(struct script_gen *g, int nargs, int nres, const char *what, char *err, size_t errlen)
{
	lua_State *L = g->L;
	int base = lua_gettop(L) - nargs;
	int rc;

	lua_pushcfunction(L, script_traceback);
	lua_insert(L, base);
	g->in_script++;
	rc = lua_pcall(L, nargs, nres, base);
	g->in_script--;
	lua_remove(L, base);
	if (rc == LUA_OK)
		return 0;
	const char *msg = lua_tostring(L, -1);

	if (!g->failure)	/* require() reports a module that does not compile this way */
		g->failure = msg && strstr(msg, "error loading module") ? "syntax" : g->stage;
	copy_error(err, errlen, what, msg ? msg : "");
	log_debug(g->sh->rt->log, "script.load_error", "what=\"%s\" traceback=\"%s\"", what, msg ? msg : "");
	lua_pop(L, 1);
	return -EINVAL;
}

static int gen_loadfile(struct script_gen *g, const char *path, const char *what, char *err, size_t errlen)
{
	if (luaL_loadfilex(g->L, path, "t") == LUA_OK)
		return 0;
	g->failure = "syntax";
	snprintf(err, errlen, "%s: %s", what, lua_tostring(g->L, -1));
	lua_pop(g->L, 1);
	return -EINVAL;
}

/* Keeps the absolute entries of the C module path: a relative one (Lua's default ends in
 * ./?.so) would load native code from whatever directory the daemon runs in. */
static void set_cpath(lua_State *L)
{
	luaL_Buffer b;
	const char *cpath;

	lua_getfield(L, -1, "cpath");
	cpath = lua_tostring(L, -1);
	luaL_buffinit(L, &b);
	for (const char *p = cpath ? cpath : ""; *p;) {
		size_t n = strcspn(p, ";");

		if (p[0] == '/') {
			if (luaL_bufflen(&b) > 0)
				luaL_addchar(&b, ';');
			luaL_addlstring(&b, p, n);
		}
		p += n + (p[n] == ';');
	}
	luaL_pushresult(&b);
	lua_setfield(L, -3, "cpath");
	lua_pop(L, 1);
}

static void set_search_path(lua_State *L, const struct config *cfg)
{
	const char *extra = cfg->script_path ? cfg->script_path : "";
	char shipped[PATH_MAX];

	script_dir_find(shipped, sizeof(shipped));	/* too long: truncated, then not found */
	lua_getglobal(L, "package");
	lua_pushfstring(L, "%s%s%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua", extra,
			extra[0] ? ";" : "", cfg->dir, cfg->dir, shipped, shipped);
	lua_setfield(L, -2, "path");
	set_cpath(L);
	lua_pop(L, 1);
}

static void add_log_secret(void *arg, const char *s)
{
	log_add_secret(arg, s);
}

/* Leaves the config file's table on the stack: scripts get the same settings the core
 * validated, read fresh at every reload. Its secrets join the log's list before any
 * script runs, so an init error that quotes one is redacted; a file that does not
 * compile is searched as text, since Lua's message quotes the source near the error. */
static int load_config_table(struct script_gen *g, char *err, size_t errlen)
{
	const struct config *cfg = g->sh->rt->config;
	struct log *lg = g->sh->rt->log;

	g->stage = "config";
	if (!cfg->file) {
		lua_newtable(g->L);
		return 0;
	}
	if (gen_loadfile(g, cfg->file, "config", err, errlen) < 0) {
		secrets_from_file(cfg->file, add_log_secret, lg);
		return -EINVAL;
	}
	if (gen_pcall(g, 0, 1, "config", err, errlen) < 0)
		return -EINVAL;
	secrets_from_config(g->L, -1, add_log_secret, lg);
	return 0;
}

/* require()s the module named in config key KEY, runs its init with the key's table and
 * stores the module under REGKEY. The config table is on top of the stack. */
static int load_hub(struct script_gen *g, const char *key, const char *module, const char *regkey,
		    char *err, size_t errlen)
{
	lua_State *L = g->L;

	if (!module)
		return 0;
	g->stage = "runtime";
	lua_getglobal(L, "require");
	lua_pushstring(L, module);
	if (gen_pcall(g, 1, 1, key, err, errlen) < 0)
		return -EINVAL;
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen, "%s: module '%s' must return a table, not %s", key, module,
			 luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	lua_getfield(L, -1, "init");
	if (lua_isfunction(L, -1)) {
		g->stage = "init";
		lua_getfield(L, -3, key);
		if (gen_pcall(g, 1, 0, key, err, errlen) < 0) {
			lua_pop(L, 1);
			return -EINVAL;
		}
	} else {
		lua_pop(L, 1);
	}
	lua_setfield(L, LUA_REGISTRYINDEX, regkey);
	return 0;
}

/* The Lua side of the relay: handoff.relay's run (every hub delivery), escalate (a
 * handoff) and route (`handoffd route`), called by desk.c and routing.c. */
static int load_relay(struct script_gen *g, char *err, size_t errlen)
{
	lua_getglobal(g->L, "require");
	lua_pushliteral(g->L, "handoff.relay");
	if (gen_pcall(g, 1, 1, "relay", err, errlen) < 0)
		return -EINVAL;
	lua_getfield(g->L, -1, "run");
	lua_setfield(g->L, LUA_REGISTRYINDEX, SCRIPT_REG_RELAY_RUN);
	lua_getfield(g->L, -1, "escalate");
	lua_setfield(g->L, LUA_REGISTRYINDEX, SCRIPT_REG_RELAY_ESCALATE);
	lua_getfield(g->L, -1, "route");
	lua_setfield(g->L, LUA_REGISTRYINDEX, SCRIPT_REG_RELAY_ROUTE);
	lua_pop(g->L, 1);
	return 0;
}

/* Calls handoff.route's FN(rules) when the rules are a list; it returns true or nil, err. */
static int check_rules(struct script_gen *g, const char *fn, char *err, size_t errlen)
{
	lua_State *L = g->L;
	int rc = 0;

	g->stage = strcmp(fn, "check") == 0 ? "rules" : "examples";
	lua_getglobal(L, "require");
	lua_pushliteral(L, "handoff.route");
	if (gen_pcall(g, 1, 1, "routes", err, errlen) < 0)
		return -EINVAL;
	lua_getfield(L, -1, fn);
	lua_getfield(L, LUA_REGISTRYINDEX, SCRIPT_REG_ROUTES);
	if (gen_pcall(g, 1, 2, "routes", err, errlen) < 0) {
		lua_pop(L, 1);
		return -EINVAL;
	}
	if (!lua_toboolean(L, -2)) {
		snprintf(err, errlen, "routes: %s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "rejected");
		rc = -EINVAL;
	}
	lua_pop(L, 3);
	return rc;
}

static int load_routes(struct script_gen *g, char *err, size_t errlen)
{
	const char *path = g->sh->rt->config->routes;
	lua_State *L = g->L;

	if (!path)
		return 0;
	g->stage = "runtime";
	if (gen_loadfile(g, path, "routes", err, errlen) < 0 || gen_pcall(g, 0, 1, "routes", err, errlen) < 0)
		return -EINVAL;
	if (!lua_isfunction(L, -1) && !lua_istable(L, -1)) {
		snprintf(err, errlen, "routes: %s must return a function or a list of rules, not %s", path,
			 luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	lua_setfield(L, LUA_REGISTRYINDEX, SCRIPT_REG_ROUTES);
	/* evaluate() runs every rules file, a function or a list, under its protection. */
	lua_getglobal(L, "require");
	lua_pushliteral(L, "handoff.route");
	if (gen_pcall(g, 1, 1, "routes", err, errlen) < 0)
		return -EINVAL;
	lua_getfield(L, -1, "evaluate");
	lua_setfield(L, LUA_REGISTRYINDEX, SCRIPT_REG_EVALUATE);
	lua_pop(L, 1);
	lua_getfield(L, LUA_REGISTRYINDEX, SCRIPT_REG_ROUTES);
	if (!lua_istable(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	lua_pop(L, 1);
	if (check_rules(g, "check", err, errlen) < 0)
		return -EINVAL;
	return check_rules(g, "run_examples", err, errlen);
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

static struct script_gen *gen_new(struct script_host *sh)
{
	struct script_gen *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->sh = sh;
	g->ctx.rt = sh->rt;
	g->ctx.gen = g;
	g->retire_hooks.next = g->retire_hooks.prev = &g->retire_hooks;
	g->mem_limit = (size_t)(sh->rt->config->scripts.max_memory_mb * 1024 * 1024);
	g->L = lua_newstate(gen_alloc, g);
	if (!g->L) {
		free(g);
		return NULL;
	}
	*(struct script_ctx **)lua_getextraspace(g->L) = &g->ctx;
	luaL_openlibs(g->L);
	bindings_preload(g->L);
	set_search_path(g->L, sh->rt->config);
	script_task_set_budget_hook(g->L);
	return g;
}

/* Builds a generation. Returns it, or NULL with ERR set. */
static struct script_gen *build_generation(struct script_host *sh, char *err, size_t errlen)
{
	const struct config *cfg = sh->rt->config;
	struct script_gen *g = gen_new(sh);
	int rc;

	if (!g) {
		sh->failure = "internal";
		snprintf(err, errlen, "out of memory creating a Lua state");
		return NULL;
	}
	rc = load_config_table(g, err, errlen);
	if (rc == 0)
		rc = load_hub(g, "hub", cfg->hub_module, SCRIPT_REG_HUB, err, errlen);
	if (rc == 0)
		rc = load_hub(g, "front", cfg->front_module, SCRIPT_REG_FRONT, err, errlen);
	if (rc == 0)
		rc = load_hub(g, "desk", cfg->desk_module, SCRIPT_REG_DESK, err, errlen);
	if (rc == 0)	/* routing uses it too, hub or not (`handoffd route`) */
		rc = load_relay(g, err, errlen);
	if (rc == 0)
		lua_pop(g->L, 1);	/* the config table */
	if (rc == 0)
		rc = load_routes(g, err, errlen);
	if (rc == 0) {
		g->stage = "webhooks";
		rc = webhooks_collect(g, err, errlen);
	}
	if (rc < 0) {
		sh->failure = g->failure ? g->failure : g->stage;
		gen_close(g);
		return NULL;
	}
	lock_globals(g->L);
	lua_sethook(g->L, NULL, 0, 0);	/* tasks carry their own budget from here */
	return g;
}

/* ---- the host ------------------------------------------------------------------- */

struct script_host *script_host_new(struct hd_runtime *rt)
{
	struct script_host *sh = calloc(1, sizeof(*sh));

	if (!sh)
		return NULL;
	sh->rt = rt;
	sh->errors = metrics_counter(rt->metrics, "handoffd_script_errors_total", NULL,
				     "Script callbacks that ended in an error");
	sh->keys = script_task_table_new();
	sh->json = json_table_new();
	if (!sh->keys || !sh->json) {
		script_task_table_free(sh->keys);
		json_table_free(sh->json);
		free(sh);
		return NULL;
	}
	return sh;
}

void script_host_free(struct script_host *sh)
{
	if (!sh)
		return;
	script_task_abort_all(sh);
	while (sh->retired) {
		struct script_gen *g = sh->retired;

		sh->retired = g->next;
		gen_close(g);
	}
	gen_close(sh->current);
	script_task_table_free(sh->keys);
	json_table_free(sh->json);
	free(sh);
}

unsigned long script_host_generation(const struct script_host *sh)
{
	return sh->generations;
}

const char *script_host_failure(const struct script_host *sh)
{
	return sh->failure;
}

unsigned script_host_tasks(const struct script_host *sh)
{
	return sh->tasks;
}

int script_host_load(struct script_host *sh, char *err, size_t errlen)
{
	struct script_gen *g = build_generation(sh, err, errlen);
	struct script_gen *old = sh->current;

	if (!g)
		return -EINVAL;
	if (old && sh->rt->http)
		webhooks_detach(sh->rt->http, old);
	if (sh->rt->http && webhooks_attach(sh->rt->http, g, err, errlen) < 0) {
		char ignored[256];

		if (old)
			webhooks_attach(sh->rt->http, old, ignored, sizeof(ignored));
		gen_close(g);
		sh->failure = "webhooks";
		return -EINVAL;
	}
	g->id = ++sh->generations;
	sh->current = g;
	if (old)
		gen_retire(sh, old);
	return 0;
}

/* ---- the test runner ------------------------------------------------------------ */

struct test_run {
	struct script_host *sh;
	struct script_gen *g;
	struct loop_timer *timeout;
	const char *name;
	bool finished, passed;
};

static int push_test(lua_State *co, void *arg)
{
	struct test_run *tr = arg;

	lua_getfield(co, LUA_REGISTRYINDEX, "handoffd.tests");
	lua_getfield(co, -1, tr->name);
	lua_remove(co, -2);
	return 0;
}

static void test_done(lua_State *co, bool ok, int nres, void *arg)
{
	struct test_run *tr = arg;

	(void)nres;
	tr->finished = true;
	tr->passed = ok;
	if (ok)
		printf("ok - %s\n", tr->name);
	else
		printf("not ok - %s\n  %s\n", tr->name, co && lua_isstring(co, -1) ? lua_tostring(co, -1) : "?");
	fflush(stdout);
	loop_stop(tr->sh->rt->loop);
}

static void on_test_timeout(void *arg)
{
	struct test_run *tr = arg;

	script_task_abort_gen(tr->sh, tr->g);
}

/* Runs one test as a task, driving the loop until it ends (tests may wait on timers
 * and HTTP like hooks do). */
static bool run_test(struct test_run *tr, const char *name)
{
	tr->name = name;
	tr->finished = false;
	if (script_task_spawn_on(tr->sh, tr->g, NULL, name, push_test, test_done, tr) < 0) {
		printf("not ok - %s\n  could not start\n", name);
		return false;
	}
	loop_timer_start(tr->timeout, TEST_TIMEOUT_MS, 0);
	while (!tr->finished) {
		if (loop_run(tr->sh->rt->loop) < 0 || (!tr->finished && !loop_timer_pending(tr->timeout)))
			break;
	}
	loop_timer_stop(tr->timeout);
	if (!tr->finished)
		script_task_abort_gen(tr->sh, tr->g);
	return tr->passed;
}

/* Test names in sorted order, so output is stable. */
static int sorted_names(lua_State *L)
{
	int n = 0;

	lua_newtable(L);
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
	return n;
}

static int load_tests(struct script_gen *g, const char *file)
{
	char err[1024];

	if (gen_loadfile(g, file, file, err, sizeof(err)) < 0 || gen_pcall(g, 0, 1, file, err, sizeof(err)) < 0) {
		fprintf(stderr, "handoffd: %s\n", err);
		return -EINVAL;
	}
	if (!lua_istable(g->L, -1)) {
		fprintf(stderr, "handoffd: %s must return a table of tests\n", file);
		lua_pop(g->L, 1);
		return -EINVAL;
	}
	lua_pushvalue(g->L, -1);
	lua_setfield(g->L, LUA_REGISTRYINDEX, "handoffd.tests");
	return 0;
}

int script_host_run_tests(struct script_host *sh, const char *file, unsigned *passed,
			  unsigned *failed)
{
	char err[1024];
	struct test_run tr = { .sh = sh };
	int n;

	tr.g = build_generation(sh, err, sizeof(err));
	if (!tr.g) {
		fprintf(stderr, "handoffd: %s\n", err);
		return -EINVAL;
	}
	tr.g->id = ++sh->generations;
	tr.timeout = loop_timer_new(sh->rt->loop, on_test_timeout, &tr);
	if (!tr.timeout || load_tests(tr.g, file) < 0) {
		loop_timer_free(tr.timeout);
		gen_close(tr.g);
		return -EINVAL;
	}
	n = sorted_names(tr.g->L);
	for (int i = 1; i <= n; i++) {
		lua_rawgeti(tr.g->L, -1, i);
		if (run_test(&tr, lua_tostring(tr.g->L, -1)))
			(*passed)++;
		else
			(*failed)++;
		lua_pop(tr.g->L, 1);
	}
	lua_settop(tr.g->L, 0);
	loop_timer_free(tr.timeout);
	gen_retire(sh, tr.g);	/* fires its timers early; closes once its tasks are gone */
	return 0;
}
