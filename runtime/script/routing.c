/* routing.c - turns what handoff.route's evaluate (or a rules function) answered for one
 * handoff, or its failure, into a route_decision, and hands it on. */
#include "script/routing.h"

#include "base/config.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/hd_runtime.h"
#include "script/script_gen.h"
#include "script/bindings/handoff_object.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const DEST_FIELDS[] = { "queue", "skill", "agent", "reason", "priority" };
#define NDEST_FIELDS (sizeof(DEST_FIELDS) / sizeof(DEST_FIELDS[0]))

/* Reads the destination table at IDX into D. Its fields stay pushed (NDEST_FIELDS
 * values) so that D's strings stay valid until the caller pops them. */
static int from_table(struct route_decision *d, lua_State *L, int idx)
{
	const char **slot[] = { &d->queue, &d->skill, &d->agent, &d->reason };

	for (size_t i = 0; i < NDEST_FIELDS; i++)
		lua_getfield(L, idx, DEST_FIELDS[i]);
	for (size_t i = 0; i < NDEST_FIELDS - 1; i++) {
		int at = -(int)NDEST_FIELDS + (int)i;

		*slot[i] = lua_type(L, at) == LUA_TSTRING ? lua_tostring(L, at) : NULL;
	}
	d->has_priority = lua_type(L, -1) == LUA_TNUMBER;
	d->priority = lua_tonumber(L, -1);
	return d->queue ? 0 : -EINVAL;
}

static void use_fallback(struct routing_settle *s, struct route_decision *d, const char *why)
{
	route_decision_fallback(d, &s->rt->config->fallback, why);
	log_warn(s->rt->log, "route.fallback", "queue=%s reason=\"%s\"", d->queue ? d->queue : "-", d->why);
	metrics_inc(route_fallbacks_counter(s->rt->metrics));
}

/* A rules function that raised: logged and counted as the task's error would be. */
static void rules_error(struct routing_settle *s, lua_State *L, const char *msg)
{
	metrics_inc(script_gen_of(L)->sh->errors);
	log_error(s->rt->log, "script.error", "what=\"route\" key=%s error=\"%s\"", s->key ? s->key : "-",
		  msg ? msg : "?");
}

/* settle(...): the arguments are pcall(evaluate, rules, h)'s results (ok, dest, rule or
 * false, err), or none when there are no rules. Returns the destination table. */
static int l_settle(lua_State *L)
{
	struct routing_settle *s = lua_touserdata(L, lua_upvalueindex(1));
	int n = lua_gettop(L);
	struct route_decision d = { 0 };

	if (!s || s->decided)
		return luaL_error(L, "settle: called twice");
	if (n >= 2 && lua_toboolean(L, 1) && lua_istable(L, 2) && from_table(&d, L, 2) == 0) {
		d.rule = n >= 3 ? (int)lua_tointeger(L, 3) : 0;
	} else {
		const char *why = n == 0 ? "no routing rules configured"
			: !lua_toboolean(L, 1) ? lua_tostring(L, 2)
			: n >= 3 && lua_isstring(L, 3) ? lua_tostring(L, 3) : "the rules returned no destination";

		if (n >= 1 && !lua_toboolean(L, 1))
			rules_error(s, L, why);
		use_fallback(s, &d, why);
	}
	s->decided = true;
	if (s->done)
		s->done(&d, s->arg);
	routing_push_route(L, &d);
	return 1;
}

void routing_settle_failed(struct routing_settle *s, const char *why)
{
	struct route_decision d;

	if (s->decided)
		return;
	use_fallback(s, &d, why);
	s->decided = true;
	if (s->done)
		s->done(&d, s->arg);
}

void routing_push_rules(lua_State *co, struct routing_settle *s)
{
	lua_getfield(co, LUA_REGISTRYINDEX, SCRIPT_REG_ROUTES);
	lua_getfield(co, LUA_REGISTRYINDEX, SCRIPT_REG_EVALUATE);
	lua_pushlightuserdata(co, s);
	lua_pushcclosure(co, l_settle, 1);
}

static void set_string(lua_State *co, const char *name, const char *v)
{
	if (!v)
		return;
	lua_pushstring(co, v);
	lua_setfield(co, -2, name);
}

void routing_push_route(lua_State *co, const struct route_decision *d)
{
	lua_createtable(co, 0, 8);
	lua_pushboolean(co, d->fallback);
	lua_setfield(co, -2, "fallback");
	set_string(co, "queue", d->queue);
	set_string(co, "skill", d->skill);
	if (d->has_priority) {
		lua_pushnumber(co, d->priority);
		lua_setfield(co, -2, "priority");
	}
	set_string(co, "agent", d->agent);
	set_string(co, "reason", d->reason);
	lua_pushnumber(co, d->rule);	/* a number as JSON gave it, not an integer */
	lua_setfield(co, -2, "rule");
	if (d->fallback)
		set_string(co, "why", d->why);
}

/* ---- routing alone: `handoffd route` ------------------------------------------------ */

struct routing_call {
	struct routing_settle settle;
	const struct hd_handoff *handoff;
};

/* handoff.relay's route(h, rules, evaluate, settle). */
static int push_route(lua_State *co, void *arg)
{
	struct routing_call *c = arg;

	lua_getfield(co, LUA_REGISTRYINDEX, SCRIPT_REG_RELAY_ROUTE);
	handoff_object_push(co, c->handoff);
	routing_push_rules(co, &c->settle);
	return 4;
}

static void route_done(lua_State *co, bool ok, int nres, void *arg)
{
	struct routing_call *c = arg;

	(void)nres;
	routing_settle_failed(&c->settle, !co ? "aborted" : !ok ? lua_tostring(co, -1) : "the rules returned no destination");
	free(c);
}

int routing_decide(struct hd_runtime *rt, const char *key, const struct hd_handoff *handoff,
		   routing_done_fn done, void *arg)
{
	struct routing_call *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	*c = (struct routing_call){ { rt, key, done, arg, false }, handoff };
	rc = script_host_spawn(rt->scripts, key, "route", push_route, route_done, c);
	if (rc < 0)
		free(c);
	return rc;
}
