/* bindings/handoff.c - the `handoff` module: the runtime API hub scripts call.
 *   local hd = require "handoff"
 *   hd.customer(id, activity [, user])   a customer message arrived at the front
 *   hd.to_bot(id, activity)              straight to the bot, whatever the state
 *   hd.agent(id, activity)               an agent message arrived at the desk
 *   hd.handoff_event(id, "accepted" | "failed" | "completed" [, detail])
 *   hd.end_conversation(id)              the front closed the conversation (true, "not
 *                                        open" when it was ended already or never seen)
 *   hd.remember_event(event_id)          true the first time, false for a duplicate
 *   hd.forget_event(event_id)            undoes remember_event when the effect failed
 *   hd.conversation(id)                  {key, id, state, user, data, handoff_id, ...} or nil
 *                                        (a cluster member reads one held elsewhere from the
 *                                        database: the task waits)
 *   hd.set_data(id, data)                replaces conv.data (what later hub calls see)
 * ID is the front hub's conversation id. Calls that change something return true once
 * the change is durable (the task waits for the commit), or nil and a short reason:
 * "overloaded" (conversation limit), "queue full", "conversation ending" (the previous
 * conversation of that id still drains after customer/to_bot waited 3 s for it to leave:
 * retry shortly), "unknown conversation", "not with an agent" (hd.agent while the bot
 * has the conversation: agents speak only once it is routing to them or theirs), "bad
 * activity", "bad id" (an id or event id holding a NUL byte, which C would cut short and
 * so merge two conversations), "no relay" (no hub configured), "state not writable",
 * "not confirmed" (a PostgreSQL state could not commit in time: the change stays and is
 * written once the database is back, so it must not be undone; the hub retries).
 * Translation only: the work happens in relay.c. */
#include "script/bindings/bindings.h"

#include "relay/relay.h"
#include "base/hd_runtime.h"
#include "script/desk.h"
#include "script/script_host.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

static struct relay *check_relay(lua_State *L)
{
	struct relay *r = bind_runtime(L)->relay;

	if (!r)
		luaL_error(L, "handoff: no relay is running (no hub in the config, or not in the daemon)");
	return r;
}

static int push_failure(lua_State *L, int rc)
{
	const char *why = rc == -ENOSPC ? "overloaded" : rc == -ENOBUFS ? "queue full"
		: rc == -EAGAIN ? "conversation ending"
		: rc == -ENOENT ? "unknown conversation" : rc == -EINVAL ? "bad activity"
		: rc == -EPERM ? "not with an agent"
		: rc == -EIO ? "state not writable" : "out of memory";

	luaL_pushfail(L);
	lua_pushstring(L, why);
	return 2;
}

/* The id argument at IDX (a string; raises otherwise), or NULL when it holds a NUL byte:
 * "c\0x" must not become "c". The caller answers nil, "bad id". */
static const char *check_id(lua_State *L, int idx)
{
	size_t len;
	const char *id = luaL_checklstring(L, idx, &len);

	return strlen(id) == len ? id : NULL;
}

static int push_bad_id(lua_State *L)
{
	luaL_pushfail(L);
	lua_pushliteral(L, "bad id");
	return 2;
}

/* A task waiting for the commit of what it wrote. Freed by whichever comes last: the
 * commit or the task's abort. */
struct commit_wait {
	struct script_task *task;
	struct relay *relay;
	bool aborted;
};

static void on_committed(void *arg)
{
	struct commit_wait *w = arg;
	lua_State *co;

	if (w->aborted) {
		free(w);
		return;
	}
	co = script_task_thread(w->task);
	if (relay_commit_error(w->relay) < 0) {
		luaL_pushfail(co);
		lua_pushliteral(co, "not confirmed");
		script_task_resume(w->task, 2);
	} else {
		lua_pushboolean(co, 1);
		script_task_resume(w->task, 1);
	}
	free(w);
}

static void on_abort(void *arg)
{
	((struct commit_wait *)arg)->aborted = true;
}

/* Returns true now when nothing is pending, else yields until the commit. */
static int wait_durable(lua_State *L, struct relay *r)
{
	struct script_task *task = script_task_of(L);
	struct commit_wait *w;

	/* Nothing to wait for, or no task to suspend (a script-made coroutine): the write
	 * is committed at the end of this loop turn anyway. */
	if (!relay_write_pending(r) || !task || !(w = calloc(1, sizeof(*w)))) {
		lua_pushboolean(L, 1);
		return 1;
	}
	w->task = task;
	w->relay = r;
	if (relay_after_commit(r, on_committed, w) < 0) {
		free(w);
		return push_failure(L, -ENOMEM);
	}
	script_task_wait(task, on_abort, w);
	return lua_yield(L, 0);
}

/* Pushes MODULE.FN(the value at IDX), MODULE being lua-cjson's. */
static void push_cjson(lua_State *L, const char *module, const char *fn, int idx)
{
	idx = lua_absindex(L, idx);
	lua_getglobal(L, "require");
	lua_pushstring(L, module);
	lua_call(L, 1, 1);
	lua_getfield(L, -1, fn);
	lua_pushvalue(L, idx);
	lua_call(L, 1, 1);
	lua_remove(L, -2);
}

/* The activity argument as JSON text: a table is encoded, a string is taken as is. */
static const char *activity_json(lua_State *L, int idx, size_t *len)
{
	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) == LUA_TSTRING)
		return lua_tolstring(L, idx, len);
	luaL_checktype(L, idx, LUA_TTABLE);
	push_cjson(L, "cjson", "encode", idx);
	lua_replace(L, idx);
	return lua_tolstring(L, idx, len);
}

static const char *optional_json(lua_State *L, int idx)
{
	size_t len;

	return lua_isnoneornil(L, idx) ? NULL : activity_json(L, idx, &len);
}

/* {===== the hub event a task works on (a cluster member stores each call for the
 * conversation's owner under an origin made of it: a delivery the hub retries at another
 * instance, its first commit not confirmed, adds the same rows, not new ones) */

#define TASK_EVENTS "handoff.task_events"
#define ORIGIN_MAX 600

/* Pushes the table of L's thread's event ({id, n}), created when CREATE; else nil. */
static void push_task_event(lua_State *L, bool create)
{
	if (lua_getfield(L, LUA_REGISTRYINDEX, TASK_EVENTS) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_createtable(L, 0, 1);
		lua_pushliteral(L, "k");
		lua_setfield(L, -2, "__mode");	/* a finished task's entry goes with its thread */
		lua_setmetatable(L, -2);
		lua_pushvalue(L, -1);
		lua_setfield(L, LUA_REGISTRYINDEX, TASK_EVENTS);
	}
	lua_pushthread(L);
	if (lua_rawget(L, -2) != LUA_TTABLE && create) {
		lua_pop(L, 1);
		lua_createtable(L, 0, 2);
		lua_pushthread(L);
		lua_pushvalue(L, -2);
		lua_rawset(L, -4);
	}
	lua_remove(L, -2);
}

static void set_task_event(lua_State *L, const char *id)
{
	push_task_event(L, true);
	lua_pushstring(L, id);
	lua_setfield(L, -2, "id");
	lua_pushinteger(L, 0);
	lua_setfield(L, -2, "n");
	lua_pop(L, 1);
}

/* The next call's origin in OUT ("<event id>#<call>"), or NULL without an event. */
static const char *next_origin(lua_State *L, char *out, size_t cap)
{
	const char *id;
	lua_Integer n;
	int len = -1;

	push_task_event(L, false);
	if (lua_istable(L, -1)) {
		lua_getfield(L, -1, "id");
		lua_getfield(L, -2, "n");
		id = lua_tostring(L, -2);
		n = lua_tointeger(L, -1) + 1;
		lua_pop(L, 1);
		lua_pushinteger(L, n);
		lua_setfield(L, -3, "n");
		if (id)
			len = snprintf(out, cap, "%s#%lld", id, (long long)n);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	return len > 0 && (size_t)len < cap ? out : NULL;
}

/* The relay's next call comes from this task's event (BUF holds its origin until
 * origin_end). */
static void origin_begin(lua_State *L, struct relay *r, char *buf, size_t cap)
{
	relay_set_origin(r, next_origin(L, buf, cap));
}

static int origin_end(struct relay *r, int rc)
{
	relay_set_origin(r, NULL);
	return rc;
}

/* }===== */

static int finish_write(lua_State *L, struct relay *r, int rc)
{
	return rc < 0 ? push_failure(L, rc) : wait_durable(L, r);
}

/* A front message for a conversation whose previous life is still draining (its goodbyes
 * on their way, usually a moment) waits for it to leave instead of failing at once: not
 * every hub retries a 503. The wait stays well inside the hubs' webhook timeouts (5 s). */
#define ENDING_WAIT_MS 50
#define ENDING_WAIT_TRIES 60

/* finish_write, but a conversation still ending is tried again by K after a pause. */
static int finish_front_write(lua_State *L, struct relay *r, int rc, lua_KContext tries, lua_KFunction k)
{
	if (rc == -EAGAIN && tries < ENDING_WAIT_TRIES && bind_task_pause(L, ENDING_WAIT_MS) == 0)
		return lua_yieldk(L, 0, tries + 1, k);
	return finish_write(L, r, rc);
}

static int customer_k(lua_State *L, int status, lua_KContext tries)
{
	struct relay *r = check_relay(L);
	const char *id = check_id(L, 1);
	size_t len;
	const char *activity = activity_json(L, 2, &len);
	const char *user = optional_json(L, 3);

	char origin[ORIGIN_MAX];

	(void)status;
	if (!id)
		return push_bad_id(L);
	origin_begin(L, r, origin, sizeof(origin));
	return finish_front_write(L, r, origin_end(r, relay_customer(r, id, user, activity, len)), tries, customer_k);
}

static int l_handoff_customer(lua_State *L)
{
	return customer_k(L, LUA_OK, 0);
}

static int to_bot_k(lua_State *L, int status, lua_KContext tries)
{
	struct relay *r = check_relay(L);
	const char *id = check_id(L, 1);
	size_t len;
	const char *activity = activity_json(L, 2, &len);

	char origin[ORIGIN_MAX];

	(void)status;
	if (!id)
		return push_bad_id(L);
	origin_begin(L, r, origin, sizeof(origin));
	return finish_front_write(L, r, origin_end(r, relay_to_bot(r, id, activity, len)), tries, to_bot_k);
}

static int l_handoff_to_bot(lua_State *L)
{
	return to_bot_k(L, LUA_OK, 0);
}

static int l_handoff_agent(lua_State *L)
{
	struct relay *r = check_relay(L);
	const char *id = check_id(L, 1);
	size_t len;
	const char *activity = activity_json(L, 2, &len);
	char origin[ORIGIN_MAX];

	if (!id)
		return push_bad_id(L);
	origin_begin(L, r, origin, sizeof(origin));
	return finish_write(L, r, origin_end(r, relay_agent(r, id, activity, len)));
}

/* Pushes the decoded value of the JSON text at IDX (nil when it is not JSON). */
static void push_decoded(lua_State *L, int idx)
{
	push_cjson(L, "cjson.safe", "decode", idx);
}

/* Whether the detail at IDX (a table, its JSON text, or nothing) lets the bot have the
 * conversation back: only return_to_bot = false keeps it from the bot. */
static bool returns_to_bot(lua_State *L, int idx)
{
	bool to_bot = true;

	if (lua_isnoneornil(L, idx))
		return true;
	if (lua_type(L, idx) == LUA_TSTRING) {
		push_decoded(L, idx);
	} else {
		luaL_checktype(L, idx, LUA_TTABLE);
		lua_pushvalue(L, idx);
	}
	if (lua_istable(L, -1)) {
		lua_getfield(L, -1, "return_to_bot");
		to_bot = !(lua_isboolean(L, -1) && !lua_toboolean(L, -1));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	return to_bot;
}

static int l_handoff_event(lua_State *L)
{
	static const char *const states[] = { "accepted", "failed", "completed", NULL };
	struct relay *r = check_relay(L);
	const char *id = check_id(L, 1);
	int state = luaL_checkoption(L, 2, NULL, states);
	bool to_bot = returns_to_bot(L, 3);
	char origin[ORIGIN_MAX];

	if (!id)
		return push_bad_id(L);
	origin_begin(L, r, origin, sizeof(origin));
	return finish_write(L, r, origin_end(r, relay_handoff_event(r, id, states[state], to_bot)));
}

static int l_handoff_end(lua_State *L)
{
	struct relay *r = check_relay(L);
	const char *id = check_id(L, 1);
	char origin[ORIGIN_MAX];
	int rc;

	if (!id)
		return push_bad_id(L);
	origin_begin(L, r, origin, sizeof(origin));
	rc = origin_end(r, relay_end(r, id));
	if (rc == 1) {		/* nothing open to end: no change to wait for */
		lua_pushboolean(L, 1);
		lua_pushliteral(L, "not open");
		return 2;
	}
	return finish_write(L, r, rc);
}

/* An event id's answer: true new, false seen, or nil and the failure. */
static int push_event_answer(lua_State *L, int rc)
{
	if (rc < 0)
		return push_failure(L, rc == -EOPNOTSUPP ? -EIO : rc);
	lua_pushboolean(L, rc == 1);
	return 1;
}

static void on_event_answer(void *arg, int rc)
{
	struct commit_wait *w = arg;

	if (!w->aborted)
		script_task_resume(w->task, push_event_answer(script_task_thread(w->task), rc));
	free(w);
}

/* A PostgreSQL state answers from the database: the task waits for it. */
static int l_handoff_remember_event(lua_State *L)
{
	struct relay *r = check_relay(L);
	const char *id = check_id(L, 1);
	struct script_task *task = script_task_of(L);
	struct commit_wait *w;
	int rc;

	if (!id)
		return push_bad_id(L);
	set_task_event(L, id);
	if (!task)	/* a script-made coroutine cannot wait: SQLite answers, PostgreSQL refuses */
		return push_event_answer(L, relay_event_seen(r, id));
	if (!(w = calloc(1, sizeof(*w))))
		return push_failure(L, -ENOMEM);
	w->task = task;
	w->relay = r;
	rc = relay_event_seen_async(r, id, on_event_answer, w);
	if (rc != -EINPROGRESS) {
		free(w);
		return push_event_answer(L, rc);
	}
	script_task_wait(task, on_abort, w);
	return lua_yield(L, 0);
}

static int l_handoff_forget_event(lua_State *L)
{
	struct relay *r = check_relay(L);
	const char *id = check_id(L, 1);
	int rc;

	if (!id)
		return push_bad_id(L);
	rc = relay_event_forget(r, id);
	if (rc < 0)
		return push_failure(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_handoff_set_data(lua_State *L)
{
	struct relay *r = check_relay(L);
	const char *id = check_id(L, 1);
	size_t len;
	const char *data;
	char origin[ORIGIN_MAX];

	luaL_checktype(L, 2, LUA_TTABLE);
	if (!id)
		return push_bad_id(L);
	data = activity_json(L, 2, &len);
	origin_begin(L, r, origin, sizeof(origin));
	return finish_write(L, r, origin_end(r, relay_set_data(r, id, data)));
}

/* Replaces the JSON text in field NAME of the table on top with its decoded value. */
static void decode_field(lua_State *L, const char *name)
{
	lua_getfield(L, -1, name);
	if (lua_isstring(L, -1)) {
		push_decoded(L, -1);
		lua_setfield(L, -3, name);
	}
	lua_pop(L, 1);
}

/* Pushes the script's view of V, or nil. */
static void push_view(lua_State *L, const struct relay_conv_view *v)
{
	if (!v) {
		lua_pushnil(L);
		return;
	}
	desk_push_conversation(L, v);
	decode_field(L, "user");
	decode_field(L, "data");
}

static void on_conv_answer(void *arg, int err, const struct relay_conv_view *v)
{
	struct commit_wait *w = arg;

	if (!w->aborted) {
		push_view(script_task_thread(w->task), err ? NULL : v);
		script_task_resume(w->task, 1);
	}
	free(w);
}

/* A conversation held by another instance of a cluster is read from the database: the
 * task waits for it (a snapshot; nothing changes it from here). */
static int l_handoff_conversation(lua_State *L)
{
	struct relay *r = check_relay(L);
	const char *id = check_id(L, 1);
	struct script_task *task = script_task_of(L);
	struct relay_conv_view v;
	struct commit_wait *w;

	if (!id)
		return push_bad_id(L);
	if (relay_conversation_of(r, id, &v) == 0) {
		push_view(L, &v);
		return 1;
	}
	if (!task || !(w = calloc(1, sizeof(*w)))) {
		lua_pushnil(L);
		return 1;
	}
	w->task = task;
	w->relay = r;
	if (relay_conversation_fetch(r, id, on_conv_answer, w) != -EINPROGRESS) {
		free(w);
		lua_pushnil(L);	/* not a cluster member: nobody else has it */
		return 1;
	}
	script_task_wait(task, on_abort, w);
	return lua_yield(L, 0);
}

static int l_handoff_conversations(lua_State *L)
{
	struct relay *r = bind_runtime(L)->relay;

	lua_pushinteger(L, r ? (lua_Integer)relay_conversation_count(r) : 0);
	return 1;
}

static const luaL_Reg handoff_funcs[] = {
	{ "agent", l_handoff_agent },
	{ "conversation", l_handoff_conversation },
	{ "conversations", l_handoff_conversations },
	{ "customer", l_handoff_customer },
	{ "end_conversation", l_handoff_end },
	{ "forget_event", l_handoff_forget_event },
	{ "handoff_event", l_handoff_event },
	{ "remember_event", l_handoff_remember_event },
	{ "set_data", l_handoff_set_data },
	{ "to_bot", l_handoff_to_bot },
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
