/* bindings/timer.c - the `handoff.timer` module: after, every, sleep.
 *   local t = timer.after(5, function(premature, ...) end, ...)   -- t:cancel()
 *   timer.every(60, fn)     -- until cancelled or the generation is retired
 *   timer.sleep(0.5)        -- inside a hook: yields the task, not the loop
 * A callback runs as a task of the generation that created the timer. When a reload or
 * shutdown retires that generation, pending timers fire at once with premature = true
 * (OpenResty's convention), so scripts can flush what they hold. */
#include "script/bindings/bindings.h"

#include "net/loop.h"
#include "base/hd_runtime.h"
#include "script/script_gen.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define TIMER_META "handoff.timer"
#define TIMER_MAX_SECONDS (365.0 * 24 * 3600)

/* Lives in Lua memory (the handle's userdata); anchored in the registry while pending so
 * a dropped handle still fires. */
struct script_timer {
	struct script_retire_hook hook;	/* first: the hook is the timer */
	struct script_gen *g;
	struct loop_timer *lt;
	int anchor;			/* registry ref of the userdata while pending */
	bool repeat;
	bool premature;			/* the current firing is early */
};

static struct script_timer *check_timer(lua_State *L)
{
	return luaL_checkudata(L, 1, TIMER_META);
}

/* Stops T for good and lets the collector have its handle. */
static void disarm(struct script_timer *t)
{
	if (t->anchor == LUA_NOREF)
		return;
	loop_timer_stop(t->lt);
	script_gen_remove_retire_hook(&t->hook);
	luaL_unref(t->g->L, LUA_REGISTRYINDEX, t->anchor);
	t->anchor = LUA_NOREF;
}

/* The task's function: the callback with premature and the saved arguments. */
static int push_callback(lua_State *co, void *arg)
{
	struct script_timer *t = arg;
	int n, packed;

	lua_rawgeti(co, LUA_REGISTRYINDEX, t->anchor);
	lua_getiuservalue(co, -1, 1);	/* { fn, arg1, ..., n = count } */
	lua_remove(co, -2);
	packed = lua_gettop(co);
	lua_getfield(co, packed, "n");
	n = (int)lua_tointeger(co, -1);
	lua_pop(co, 1);
	lua_rawgeti(co, packed, 1);
	lua_pushboolean(co, t->premature);
	for (int i = 2; i <= n; i++)
		lua_rawgeti(co, packed, i);
	lua_remove(co, packed);
	return n;
}

static void fire(struct script_timer *t)
{
	struct script_host *sh = t->g->sh;

	/* The push runs inside the spawn (no key, so the task starts at once), while the
	 * anchor still holds the callback; only then may a one-shot timer let go. */
	script_task_spawn_on(sh, t->g, NULL, t->premature ? "timer (premature)" : "timer", push_callback,
			     NULL, t);
	if (!t->repeat || t->premature)
		disarm(t);
}

static void on_timer(void *arg)
{
	fire(arg);
}

static void on_retire(struct script_retire_hook *hook)
{
	struct script_timer *t = (struct script_timer *)hook;

	hook->next = hook->prev = NULL;	/* already unlinked by the host */
	loop_timer_stop(t->lt);
	t->premature = true;
	fire(t);
}

static int timer_gc(lua_State *L)
{
	struct script_timer *t = check_timer(L);

	loop_timer_free(t->lt);
	t->lt = NULL;
	return 0;
}

static int start_timer(lua_State *L, bool repeat)
{
	double seconds = luaL_checknumber(L, 1);
	int nargs = lua_gettop(L) - 1;
	struct script_gen *g = script_gen_of(L);
	struct script_timer *t;

	luaL_argcheck(L, seconds >= 0 && seconds <= TIMER_MAX_SECONDS, 1, "seconds out of range");
	luaL_argcheck(L, !repeat || seconds > 0, 1, "an interval must be positive");
	luaL_checktype(L, 2, LUA_TFUNCTION);
	if (g->retired)
		return luaL_error(L, "timer: the generation is being retired");
	t = lua_newuserdatauv(L, sizeof(*t), 1);
	memset(t, 0, sizeof(*t));
	t->anchor = LUA_NOREF;
	t->g = g;
	t->repeat = repeat;
	t->hook.fn = on_retire;
	t->lt = loop_timer_new(bind_runtime(L)->loop, on_timer, t);
	luaL_setmetatable(L, TIMER_META);
	if (!t->lt)
		return luaL_error(L, "timer: out of memory");
	lua_createtable(L, nargs, 1);	/* the callback and its arguments */
	for (int i = 1; i <= nargs; i++) {
		lua_pushvalue(L, i + 1);
		lua_rawseti(L, -2, i);
	}
	lua_pushinteger(L, nargs);
	lua_setfield(L, -2, "n");
	lua_setiuservalue(L, -2, 1);
	if (loop_timer_start(t->lt, (uint64_t)(seconds * 1000.0), repeat) < 0)
		return luaL_error(L, "timer: cannot arm");
	lua_pushvalue(L, -1);
	t->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
	script_gen_add_retire_hook(g, &t->hook);
	return 1;
}

static int l_timer_after(lua_State *L)
{
	return start_timer(L, false);
}

static int l_timer_every(lua_State *L)
{
	return start_timer(L, true);
}

/* t:cancel() -> true when it was pending. */
static int l_timer_cancel(lua_State *L)
{
	struct script_timer *t = check_timer(L);
	bool pending = t->anchor != LUA_NOREF;

	disarm(t);
	lua_pushboolean(L, pending);
	return 1;
}

/* A sleeping task and the timer that wakes it; freed on wake or cancel. */
struct sleeper {
	struct loop_timer *lt;
	struct script_task *task;
};

static void on_wake(void *arg)
{
	struct sleeper *s = arg;
	struct script_task *task = s->task;

	loop_timer_free(s->lt);
	free(s);
	script_task_resume(task, 0);
}

static void cancel_sleep(void *arg)
{
	struct sleeper *s = arg;

	loop_timer_free(s->lt);
	free(s);
}

int bind_task_pause(lua_State *L, uint64_t ms)
{
	struct script_task *task = script_task_of(L);
	struct sleeper *s;

	if (!task)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (s)
		s->lt = loop_timer_new(bind_runtime(L)->loop, on_wake, s);
	if (!s || !s->lt || loop_timer_start(s->lt, ms, 0) < 0) {
		if (s)
			loop_timer_free(s->lt);
		free(s);
		return -ENOMEM;
	}
	s->task = task;
	script_task_wait(task, cancel_sleep, s);
	return 0;
}

static int l_timer_sleep(lua_State *L)
{
	double seconds = luaL_checknumber(L, 1);
	int rc;

	luaL_argcheck(L, seconds >= 0 && seconds <= TIMER_MAX_SECONDS, 1, "seconds out of range");
	rc = bind_task_pause(L, (uint64_t)(seconds * 1000.0));
	if (rc == -EINVAL)
		return luaL_error(L, "timer.sleep: only allowed inside a hook");
	if (rc < 0)
		return luaL_error(L, "timer.sleep: out of memory");
	return lua_yield(L, 0);
}

static const luaL_Reg timer_methods[] = {
	{ "cancel", l_timer_cancel },
	{ NULL, NULL },
};

static const luaL_Reg timer_funcs[] = {
	{ "after", l_timer_after },
	{ "every", l_timer_every },
	{ "sleep", l_timer_sleep },
	{ NULL, NULL },
};

int luaopen_handoff_timer(lua_State *L)
{
	if (luaL_newmetatable(L, TIMER_META)) {
		luaL_newlib(L, timer_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, timer_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	luaL_newlib(L, timer_funcs);
	return 1;
}
