/* desk.c - runs what the relay asks of the hub scripts (relay/relay_desk.h): a hub call
 * (relay.lua's run) or a handoff's escalation (relay.lua's escalate: the routing rules and
 * the desk's escalate on one handoff object), each as a task of the conversation, and
 * turns the answer into a relay_outcome. The only place where the relay's plain structs
 * meet a lua_State. */
#include "script/desk.h"

#include "base/config.h"
#include "base/hd_runtime.h"
#include "relay/relay.h"
#include "script/bindings/handoff_object.h"
#include "script/json_table.h"
#include "script/routing.h"
#include "script/script_gen.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>

/* One task: a hub call, or an escalation (HANDOFF set). */
struct desk_task {
	struct hd_runtime *rt;
	struct relay_hub_call call;	/* role, fn, arg unused for an escalation */
	const struct hd_handoff *handoff;
	const struct route_decision *route;
	struct routing_settle settle;
	relay_outcome_fn done;
	void *arg;
};

static void push_string_or_nil(lua_State *L, const char *json)
{
	if (json)
		lua_pushstring(L, json);
	else
		lua_pushnil(L);
}

void desk_push_conversation(lua_State *L, const struct relay_conv_view *v)
{
	const struct {
		const char *name, *value;
	} fields[] = {
		{ "key", v->key }, { "id", v->id }, { "state", v->state }, { "user", v->user_json },
		{ "data", v->data_json }, { "handoff_id", v->handoff_id },
		{ "dl_conversation_id", v->dl_conversation_id },
	};

	lua_createtable(L, 0, (int)(sizeof(fields) / sizeof(fields[0])));
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		push_string_or_nil(L, fields[i].value);
		lua_setfield(L, -2, fields[i].name);
	}
}

/* stored(id): conv.data as stored now (JSON text), or nil. */
static int l_stored_data(lua_State *L)
{
	struct relay *r = lua_touserdata(L, lua_upvalueindex(1));
	struct relay_conv_view v;

	if (r && relay_conversation_of(r, luaL_checkstring(L, 1), &v) == 0)
		push_string_or_nil(L, v.data_json);
	else
		lua_pushnil(L);
	return 1;
}

/* The hub module of ROLE: a desk-only setup has two, others one for both roles. */
static void push_module(lua_State *co, const struct desk_task *t, enum relay_role role)
{
	bool desk_only = t->rt->config->front_module != NULL;
	const char *reg = !desk_only ? SCRIPT_REG_HUB : role == RELAY_DESK ? SCRIPT_REG_DESK : SCRIPT_REG_FRONT;

	lua_getfield(co, LUA_REGISTRYINDEX, reg);
}

/* Pushes FN_REG's function, the module and the conversation as it is now. */
static int push_head(lua_State *co, const struct desk_task *t, const char *fn_reg, enum relay_role role)
{
	struct relay_conv_view v;

	if (relay_conversation_of(t->call.relay, t->call.id, &v) < 0)
		return -ENOENT;	/* it left while the task waited its turn */
	lua_getfield(co, LUA_REGISTRYINDEX, fn_reg);
	push_module(co, t, role);
	desk_push_conversation(co, &v);
	return 0;
}

static void push_stored_data(lua_State *co, const struct desk_task *t)
{
	lua_pushlightuserdata(co, t->call.relay);
	lua_pushcclosure(co, l_stored_data, 1);
}

/* run(module, fn, conv, arg, stored): ARG decoded here when it is plain JSON (cjson
 * would build the same table, slower), else the text, for relay.lua to decode. */
static int push_call(lua_State *co, void *arg)
{
	struct desk_task *t = arg;

	if (push_head(co, t, SCRIPT_REG_RELAY_RUN, t->call.role) < 0)
		return -ENOENT;
	lua_pushstring(co, t->call.fn);
	lua_insert(co, -2);	/* fn before conv */
	if (json_table_push(t->rt->scripts->json, co, t->call.arg, t->call.arg_len) < 0)
		lua_pushlstring(co, t->call.arg, t->call.arg_len);
	push_stored_data(co, t);
	return 5;
}

/* escalate(module, conv, h, route, stored, rules, evaluate, settle) */
static int push_escalation(lua_State *co, void *arg)
{
	struct desk_task *t = arg;

	if (push_head(co, t, SCRIPT_REG_RELAY_ESCALATE, RELAY_DESK) < 0)
		return -ENOENT;
	handoff_object_push(co, t->handoff);
	if (t->route)
		routing_push_route(co, t->route);
	else
		lua_pushnil(co);
	push_stored_data(co, t);
	routing_push_rules(co, &t->settle);
	return 8;
}

/* The hub function's answer: ok, err, retry, data_json (relay.lua's run). */
static void outcome_of(lua_State *co, int base, int nres, struct relay_outcome *o)
{
	o->delivered = nres >= 1 && lua_toboolean(co, base);
	if (o->delivered && lua_type(co, base) == LUA_TSTRING)
		o->answer = lua_tostring(co, base);
	if (!o->delivered)
		o->error = nres >= 2 && lua_isstring(co, base + 1) ? lua_tostring(co, base + 1)
								 : "the hub script returned no result";
	if (nres >= 3 && lua_toboolean(co, base + 2)) {
		/* a number is the hub's Retry-After in seconds */
		o->retry = true;
		o->retry_after_s = lua_type(co, base + 2) == LUA_TNUMBER ? lua_tonumber(co, base + 2) : 0;
	}
	if (nres >= 4 && lua_type(co, base + 3) == LUA_TSTRING)
		o->data_json = lua_tostring(co, base + 3);
}

static void task_done(lua_State *co, bool ok, int nres, void *arg)
{
	struct desk_task *t = arg;
	struct relay_outcome o = { 0 };

	if (!co)
		o.error = "aborted";
	else if (!ok)
		o.error = "script error";
	else
		outcome_of(co, lua_gettop(co) - nres + 1, nres, &o);
	if (co && t->handoff && !t->route && !t->settle.decided && !o.delivered) {
		/* The task failed while routing (past what the rules' pcall catches: its CPU
		 * budget, say): the fallback destination is decided, and escalated to by the
		 * retry, in a task with a budget of its own. */
		routing_settle_failed(&t->settle, !ok && lua_isstring(co, -1) ? lua_tostring(co, -1) : o.error);
		o.retry = true;
		o.retry_after_s = 0;
	}
	t->done(&o, t->arg);
	free(t);
}

static int spawn(struct desk_task *t, const char *what, script_push_fn push)
{
	int rc = script_host_spawn(t->rt->scripts, t->call.key, what, push, task_done, t);

	if (rc < 0)
		free(t);
	return rc;
}

static int desk_call(void *ctx, const struct relay_hub_call *call, relay_outcome_fn done, void *arg)
{
	struct desk_task *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	*t = (struct desk_task){ .rt = ctx, .call = *call, .done = done, .arg = arg };
	return spawn(t, "hub call", push_call);
}

static int desk_escalate(void *ctx, const struct relay_escalation *e, relay_routed_fn routed,
			 relay_outcome_fn done, void *arg)
{
	struct desk_task *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	*t = (struct desk_task){
		.rt = ctx, .call = { .relay = e->relay, .key = e->key, .id = e->id, .role = RELAY_DESK, .fn = "escalate" },
		.handoff = e->handoff, .route = e->route,
		.settle = { .rt = ctx, .key = e->key, .done = routed, .arg = arg },
		.done = done, .arg = arg,
	};
	return spawn(t, "hub escalate", push_escalation);
}

struct relay_desk_ops desk_ops(struct hd_runtime *rt)
{
	return (struct relay_desk_ops){ .ctx = rt, .call = desk_call, .escalate = desk_escalate };
}
