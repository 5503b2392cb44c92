/* bench_scripts.c - what scripting costs: a reload of the shipped script set, one hook
 * call (task spawn, coroutine resume, return), and the same with a wait on a timer.
 * Prints figures; asserts nothing about time.
 *
 *   build/tests/bench/bench_scripts [CONFIG]   (default: scripts/examples/config.lua) */
#include "base/config.h"
#include "base/log.h"
#include "net/loop.h"
#include "daemon/runtime.h"
#include "script/script_host.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RELOADS 200
#define CALLS 200000

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The function is compiled once and kept in the registry, so a call measures the task,
 * not the compiler. */
static int push_trivial(lua_State *co, void *arg)
{
	(void)arg;
	if (lua_getfield(co, LUA_REGISTRYINDEX, "bench.trivial") != LUA_TFUNCTION) {
		lua_pop(co, 1);
		luaL_loadstring(co, "local a, b = ... return a + b");
		lua_pushvalue(co, -1);
		lua_setfield(co, LUA_REGISTRYINDEX, "bench.trivial");
	}
	lua_pushinteger(co, 1);
	lua_pushinteger(co, 2);
	return 2;
}

static int push_sleeper(lua_State *co, void *arg)
{
	(void)arg;
	if (lua_getfield(co, LUA_REGISTRYINDEX, "bench.sleeper") != LUA_TFUNCTION) {
		lua_pop(co, 1);
		luaL_loadstring(co, "require('handoff.timer').sleep(0)");
		lua_pushvalue(co, -1);
		lua_setfield(co, LUA_REGISTRYINDEX, "bench.sleeper");
	}
	return 0;
}

struct counter {
	struct hd_runtime *rt;
	long left;
};

static void count_done(lua_State *co, bool ok, int nres, void *arg)
{
	struct counter *c = arg;

	(void)co;
	(void)nres;
	if (!ok)
		fprintf(stderr, "bench: a task failed\n");
	if (--c->left == 0)
		loop_stop(c->rt->loop);
}

static void bench_reload(struct hd_runtime *rt)
{
	char err[1024];
	double t0 = now_s();

	for (int i = 0; i < RELOADS; i++) {
		if (script_host_load(rt->scripts, err, sizeof(err)) < 0) {
			fprintf(stderr, "bench: reload failed: %s\n", err);
			exit(1);
		}
	}
	printf("reload of %s: %.3f ms each (%d reloads)\n", rt->config->path ? rt->config->path : "(defaults)",
	       (now_s() - t0) * 1000.0 / RELOADS, RELOADS);
}

/* Spawns CALLS tasks, BATCH at a time (tasks that wait stay alive until the loop runs). */
static void bench_calls(struct hd_runtime *rt, const char *label, script_push_fn push, const char *key,
			long batch)
{
	double t0 = now_s();

	for (long done = 0; done < CALLS; done += batch) {
		struct counter c = { rt, batch };

		for (long i = 0; i < batch; i++)
			script_host_spawn(rt->scripts, key, "bench", push, count_done, &c);
		if (c.left > 0)
			loop_run(rt->loop);
	}
	printf("%-44s %.3f us per call (%d calls)\n", label, (now_s() - t0) * 1e6 / CALLS, CALLS);
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : HANDOFFD_SCRIPT_DIR "/examples/config.lua";
	char err[1024];
	struct log *lg = log_new();
	struct config *cfg = config_load(path, err, sizeof(err));
	struct hd_runtime *rt;

	if (!cfg) {
		fprintf(stderr, "bench: %s\n", err);
		return 1;
	}
	log_set_level(lg, LEVEL_ERROR);
	rt = runtime_new(cfg, lg);
	if (!rt || script_host_load(rt->scripts, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench: %s\n", rt ? err : "out of memory");
		return 1;
	}
	bench_reload(rt);
	bench_calls(rt, "hook call (spawn, resume, return)", push_trivial, NULL, CALLS);
	bench_calls(rt, "hook call, one conversation key", push_trivial, "conv-1", CALLS);
	bench_calls(rt, "hook call with a yield (timer.sleep(0))", push_sleeper, NULL, 1000);
	runtime_free(rt);
	log_free(lg);
	return 0;
}
