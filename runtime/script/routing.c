/* routing.c - runs handoff.route's evaluate (or a rules function) for one handoff and
 * turns its answer, or its failure, into a route_decision. */
#include "script/routing.h"

#include "base/config.h"
#include "base/json_text.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/hd_runtime.h"
#include "script/script_gen.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct routing_call {
	struct hd_runtime *rt;
	script_push_fn push_handoff;
	void *push_arg;
	routing_done_fn done;
	void *arg;
};

static int no_decision(lua_State *L)
{
	(void)L;
	return 0;
}

/* evaluate(rules, h): the task's function. Without rules the task returns nothing and
 * the fallback applies. */
static int push_evaluate(lua_State *co, void *arg)
{
	struct routing_call *c = arg;

	lua_getfield(co, LUA_REGISTRYINDEX, SCRIPT_REG_ROUTES);
	if (lua_isnil(co, -1)) {
		lua_pop(co, 1);
		lua_pushcfunction(co, no_decision);
		return 0;
	}
	lua_getfield(co, LUA_REGISTRYINDEX, SCRIPT_REG_EVALUATE);
	lua_insert(co, -2);
	return c->push_handoff(co, c->push_arg) < 0 ? -ENOMEM : 2;
}

static char *opt_field(lua_State *L, int idx, const char *name)
{
	char *v = NULL;

	lua_getfield(L, idx, name);
	if (lua_type(L, -1) == LUA_TSTRING)
		v = strdup(lua_tostring(L, -1));
	lua_pop(L, 1);
	return v;
}

static int from_table(struct route_decision *d, lua_State *L, int idx)
{
	d->queue = opt_field(L, idx, "queue");
	d->skill = opt_field(L, idx, "skill");
	d->agent = opt_field(L, idx, "agent");
	d->reason = opt_field(L, idx, "reason");
	lua_getfield(L, idx, "priority");
	d->has_priority = lua_type(L, -1) == LUA_TNUMBER;
	d->priority = lua_tonumber(L, -1);
	lua_pop(L, 1);
	return d->queue ? 0 : -EINVAL;
}

static void use_fallback(struct route_decision *d, const struct config_route *fb)
{
	free(d->queue);
	free(d->skill);
	free(d->agent);
	free(d->reason);
	d->queue = strdup(fb->queue);
	d->skill = fb->skill ? strdup(fb->skill) : NULL;
	d->agent = fb->agent ? strdup(fb->agent) : NULL;
	d->reason = fb->reason ? strdup(fb->reason) : NULL;
	d->has_priority = fb->priority != 0;
	d->priority = fb->priority;
	d->rule = 0;
	d->fallback = true;
}

static void evaluate_done(lua_State *co, bool ok, int nres, void *arg)
{
	struct routing_call *c = arg;
	struct route_decision d = { 0 };
	int base = co ? lua_gettop(co) - nres + 1 : 0;

	if (ok && nres >= 1 && lua_istable(co, base) && from_table(&d, co, base) == 0) {
		d.rule = nres >= 2 ? (int)lua_tointeger(co, base + 1) : 0;
	} else {
		const char *why = !co ? "aborted" : !ok ? lua_tostring(co, -1)
			: nres >= 2 && lua_isstring(co, base + 1) ? lua_tostring(co, base + 1)
			: nres == 0 ? "no routing rules configured" : "the rules returned no destination";

		snprintf(d.why, sizeof(d.why), "%s", why ? why : "?");
		use_fallback(&d, &c->rt->config->fallback);
		log_warn(c->rt->log, "route.fallback", "queue=%s reason=\"%s\"", d.queue ? d.queue : "-", d.why);
		metrics_inc(routing_fallbacks_counter(c->rt->metrics));
	}
	c->done(d.queue ? &d : NULL, c->arg);
	free(d.queue);
	free(d.skill);
	free(d.agent);
	free(d.reason);
	free(c);
}

uint64_t *routing_fallbacks_counter(struct metrics *m)
{
	return metrics_counter(m, "handoffd_route_fallbacks_total", NULL, "Handoffs routed to the fallback destination");
}

int routing_decide(struct hd_runtime *rt, const char *key, script_push_fn push_handoff,
		   void *push_arg, routing_done_fn done, void *arg)
{
	struct routing_call *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	*c = (struct routing_call){ rt, push_handoff, push_arg, done, arg };
	rc = script_host_spawn(rt->scripts, key, "route", push_evaluate, evaluate_done, c);
	if (rc < 0)
		free(c);
	return rc;
}

/* Appends ,"key":"value", or nothing for NULL. */
static size_t json_member(char *buf, size_t cap, size_t n, const char *key, const char *v)
{
	if (!v || n >= cap)
		return n;
	n += (size_t)snprintf(buf + n, cap - n, ",\"%s\":", key);
	return n < cap ? json_text_string(buf, cap, n, v) : n;
}

int routing_decision_json(const struct route_decision *d, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "{\"fallback\":%s", d->fallback ? "true" : "false");

	n = json_member(buf, cap, n, "queue", d->queue);
	n = json_member(buf, cap, n, "skill", d->skill);
	if (d->has_priority && n < cap)
		n += (size_t)snprintf(buf + n, cap - n, ",\"priority\":%.15g", d->priority);
	n = json_member(buf, cap, n, "agent", d->agent);
	n = json_member(buf, cap, n, "reason", d->reason);
	if (n < cap)
		n += (size_t)snprintf(buf + n, cap - n, ",\"rule\":%d", d->rule);
	if (d->fallback)
		n = json_member(buf, cap, n, "why", d->why);
	if (n + 2 > cap)
		return -ENOSPC;
	buf[n++] = '}';
	buf[n] = '\0';
	return (int)n;
}
