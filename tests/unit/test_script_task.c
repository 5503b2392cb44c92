/* test_script_task.c - tasks: per-key order while tasks wait, keys independent, errors
 * and aborts end only their own task. Runs real coroutines on the real loop. */
#include "base/config.h"
#include "base/log.h"
#include "net/loop.h"
#include "daemon/runtime.h"
#include "script/script_host.h"

#include <lauxlib.h>
#include <lua.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Appends "key:i:start", sleeps, appends "key:i:end" to the shared record; raises when
 * asked to. */
static const char *const TASK_SRC =
	"local rec, key, i, delay, fail = ...\n"
	"rec[#rec + 1] = key .. ':' .. i .. ':start'\n"
	"require('handoff.timer').sleep(delay)\n"
	"if fail then error('task failed on purpose') end\n"
	"rec[#rec + 1] = key .. ':' .. i .. ':end'\n";

struct fixture {
	struct log *lg;
	struct hd_runtime *rt;
	int rec_ref;		/* the record table, in the generation's registry */
	int pending;
	int failed;
	int aborted;
};

struct job {
	struct fixture *f;
	const char *key;
	int i;
	double delay;
	int fail;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];

	f->lg = log_new();
	f->rt = runtime_new(config_new_defaults(), f->lg);
	assert_non_null(f->rt);
	assert_int_equal(script_host_load(f->rt->scripts, err, sizeof(err)), 0);
	f->rec_ref = LUA_NOREF;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	runtime_free(f->rt);
	log_free(f->lg);
	free(f);
	return 0;
}

static int push_job(lua_State *co, void *arg)
{
	struct job *j = arg;

	if (luaL_loadstring(co, TASK_SRC) != LUA_OK)
		return -1;
	if (j->f->rec_ref == LUA_NOREF) {
		lua_newtable(co);
		j->f->rec_ref = luaL_ref(co, LUA_REGISTRYINDEX);
	}
	lua_rawgeti(co, LUA_REGISTRYINDEX, j->f->rec_ref);
	lua_pushstring(co, j->key ? j->key : "-");
	lua_pushinteger(co, j->i);
	lua_pushnumber(co, j->delay);
	lua_pushboolean(co, j->fail);
	return 5;
}

static void job_done(lua_State *co, bool ok, int nres, void *arg)
{
	struct job *j = arg;

	(void)nres;
	if (!ok && co && strstr(lua_tostring(co, -1), "aborted"))
		j->f->aborted++;
	else if (!ok)
		j->f->failed++;
	if (--j->f->pending == 0)
		loop_stop(j->f->rt->loop);
}

/* The record as one string "a:1:start,a:1:end,...". */
static char *record(struct fixture *f, lua_State *L)
{
	luaL_Buffer b;
	char *out;

	lua_rawgeti(L, LUA_REGISTRYINDEX, f->rec_ref);
	luaL_buffinit(L, &b);
	for (lua_Integer i = 1; i <= (lua_Integer)luaL_len(L, -2); i++) {
		lua_rawgeti(L, -2, i);
		luaL_addvalue(&b);
		luaL_addchar(&b, ',');
	}
	luaL_pushresult(&b);
	out = strdup(lua_tostring(L, -1));
	lua_pop(L, 2);
	return out;
}

static int push_capture(lua_State *co, void *arg)
{
	*(lua_State **)arg = co;
	lua_pushcfunction(co, lua_gettop);	/* any function: returns at once */
	return 0;
}

static lua_State *capture_state(struct fixture *f)
{
	lua_State *co = NULL;

	assert_int_equal(script_host_spawn(f->rt->scripts, NULL, "capture", push_capture, NULL, &co), 0);
	assert_non_null(co);
	return co;	/* finished, but still a thread of the generation until collected */
}

static void spawn_all(struct fixture *f, struct job *jobs, int n)
{
	f->pending = n;
	for (int i = 0; i < n; i++) {
		jobs[i].f = f;
		assert_int_equal(script_host_spawn(f->rt->scripts, jobs[i].key, "job", push_job, job_done,
						   &jobs[i]), 0);
	}
}

static void test_same_key_runs_in_order_while_waiting(void **state)
{
	struct fixture *f = *state;
	struct job jobs[] = {
		{ .key = "a", .i = 1, .delay = 0.03 }, { .key = "b", .i = 1, .delay = 0.001 },
		{ .key = "a", .i = 2, .delay = 0.001 }, { .key = "b", .i = 2, .delay = 0.02 },
		{ .key = "a", .i = 3, .delay = 0.0 }, { .key = "b", .i = 3, .delay = 0.0 },
	};
	char *rec;

	spawn_all(f, jobs, 6);
	assert_int_equal(loop_run(f->rt->loop), 0);
	assert_int_equal(f->pending, 0);
	rec = record(f, capture_state(f));
	/* a's tasks never overlap although a:1 sleeps longest; b runs meanwhile. */
	assert_non_null(strstr(rec, "a:1:start,"));
	assert_true(strstr(rec, "a:1:end") < strstr(rec, "a:2:start"));
	assert_true(strstr(rec, "a:2:end") < strstr(rec, "a:3:start"));
	assert_true(strstr(rec, "b:1:end") < strstr(rec, "b:2:start"));
	assert_true(strstr(rec, "b:2:end") < strstr(rec, "b:3:start"));
	assert_true(strstr(rec, "b:1:end") < strstr(rec, "a:1:end"));	/* keys do not wait for each other */
	assert_int_equal(script_host_tasks(f->rt->scripts), 0);
	free(rec);
}

static void test_error_ends_only_its_task(void **state)
{
	struct fixture *f = *state;
	struct job jobs[] = {
		{ .key = "c", .i = 1, .delay = 0.001, .fail = 1 },
		{ .key = "c", .i = 2, .delay = 0.0 },
	};
	char *rec;

	spawn_all(f, jobs, 2);
	assert_int_equal(loop_run(f->rt->loop), 0);
	assert_int_equal(f->failed, 1);
	rec = record(f, capture_state(f));
	assert_string_equal(rec, "c:1:start,c:2:start,c:2:end,");
	free(rec);
}

static void test_free_aborts_waiting_and_queued_tasks(void **state)
{
	struct fixture *f = *state;
	struct job jobs[] = {
		{ .key = "d", .i = 1, .delay = 60 },
		{ .key = "d", .i = 2, .delay = 60 },
		{ .key = NULL, .i = 3, .delay = 60 },
	};

	jobs[2].key = NULL;
	spawn_all(f, jobs, 3);
	assert_int_equal(script_host_tasks(f->rt->scripts), 3);
	script_host_free(f->rt->scripts);	/* what runtime_free does at exit */
	f->rt->scripts = script_host_new(f->rt);
	assert_int_equal(f->pending, 0);
	assert_int_equal(f->aborted, 2);	/* the two that had started and wait */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_same_key_runs_in_order_while_waiting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_ends_only_its_task, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_aborts_waiting_and_queued_tasks, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
