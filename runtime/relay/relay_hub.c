/* relay_hub.c - the relay's deliveries to hub scripts: bot messages and typing for the
 * customer (front.to_user), customer messages for the agent (desk.to_agent), and the
 * handoff's escalation (routing, desk.escalate, the fallback). Each call runs as a task of
 * the conversation through scripts/handoff/relay.lua; the hub's answer decides between
 * done, retry and give-up (relay.c's queue runner does the waiting). */
#include "relay/relay_internal.h"

#include "script/bindings/handoff_object.h"
#include "base/clock.h"
#include "base/config.h"
#include "relay/conv_events.h"
#include "base/json_text.h"
#include "base/log.h"
#include "base/metrics.h"
#include "script/routing.h"
#include "base/hd_runtime.h"
#include "script/script_gen.h"

#include <errno.h>
#include <handoffd/activity.h>
#include <handoffd/handoff.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* What a to_hub delivery waits on: the item and, for a handoff, the routing decision. */
struct hub_call {
	struct relay *r;
	char *key;
	struct store_item item;
	char *route_json;	/* escalations: the destination, as JSON */
	uint64_t started_ms;	/* the script call started (wall clock) */
};

static void hub_call_free(struct hub_call *hc)
{
	store_item_clear(&hc->item);
	free(hc->route_json);
	free(hc->key);
	free(hc);
}

static void push_json_or_nil(lua_State *co, const char *json)
{
	if (json)
		lua_pushstring(co, json);
	else
		lua_pushnil(co);
}

void relay_push_conversation(lua_State *co, const struct conversation *c)
{
	lua_createtable(co, 0, 7);
	lua_pushstring(co, c->key);
	lua_setfield(co, -2, "key");
	lua_pushstring(co, c->id);
	lua_setfield(co, -2, "id");
	lua_pushstring(co, conv_state_name(c->state));
	lua_setfield(co, -2, "state");
	push_json_or_nil(co, c->user_json);
	lua_setfield(co, -2, "user");
	push_json_or_nil(co, c->hub_data);
	lua_setfield(co, -2, "data");
	push_json_or_nil(co, c->handoff_id);
	lua_setfield(co, -2, "handoff_id");
	push_json_or_nil(co, c->dl_conversation_id);
	lua_setfield(co, -2, "dl_conversation_id");
}

/* An outbox item for a hub is `{"role":"R","fn":"F","M":RAW}`: the role and function
 * are read from that fixed head and RAW (an activity or an event, as received) is
 * handed on without decoding. */
struct item_parts {
	bool desk;
	char fn[24];		
	const char *raw;
	size_t raw_len;
};

static int item_split(const struct store_item *it, struct item_parts *p)
{
	const char *fn = strstr(it->payload, "\"fn\":\"");
	const char *end = fn ? strchr(fn + 6, '"') : NULL;
	const char *member = end ? strstr(end, "\":") : NULL;

	if (!member || (size_t)(end - fn - 6) >= sizeof(p->fn) || it->payload_len < 2)
		return -EINVAL;
	p->desk = strncmp(it->payload, DESK_PREFIX, strlen(DESK_PREFIX)) == 0;
	memcpy(p->fn, fn + 6, (size_t)(end - fn - 6));
	p->fn[end - fn - 6] = '\0';
	member = strstr(end + 1, "\":");	/* after the member name */
	if (!member)
		return -EINVAL;
	p->raw = member + 2;
	p->raw_len = it->payload_len - (size_t)(p->raw - it->payload) - 1;
	return 0;
}

/* The handoff object of a raw handoff.initiate event (for the rules and escalate). */
static int push_handoff_of(struct relay *r, lua_State *co, const char *raw, size_t len)
{
	struct hd_activity_set set;
	struct hd_parse_error perr;
	const struct hd_handoff *h = NULL;

	if (hd_activity_parse(r->parser, raw, len, len, &set, &perr) == 0)
		h = hd_activity_set_handoff(&set);
	if (!h)
		return -EINVAL;
	handoff_object_push(co, h);
	return 0;
}

/* relay.run(module, fn, conv, arg, route_json) of scripts/handoff/relay.lua. */
static int push_hub_call(lua_State *co, void *arg)
{
	struct hub_call *hc = arg;
	struct conversation *c = convstore_get(hc->r->convs, hc->key);
	struct item_parts p;

	if (!c || item_split(&hc->item, &p) < 0)
		return -EINVAL;
	lua_getfield(co, LUA_REGISTRYINDEX, SCRIPT_REG_RELAY_RUN);
	lua_getfield(co, LUA_REGISTRYINDEX, p.desk ? hc->r->desk_reg : hc->r->front_reg);
	lua_pushstring(co, p.fn);
	relay_push_conversation(co, c);
	if (strcmp(p.fn, "escalate") == 0) {
		if (push_handoff_of(hc->r, co, p.raw, p.raw_len) < 0)
			return -EINVAL;
	} else {
		lua_pushlstring(co, p.raw, p.raw_len);
	}
	push_json_or_nil(co, hc->route_json);
	return 5;
}

void relay_hub_accepted(struct relay *r, struct conversation *c, const char *why)
{
	if (c->state != CONV_ROUTING && c->state != CONV_BOT)
		return;
	relay_set_state(r, c, CONV_AGENT, why);
	relay_observe_accepted(r, c, why);
	metrics_inc(r->m_handoffs_accepted);
	relay_report_status(r, c, "accepted", NULL);
}

void relay_hub_failed(struct relay *r, struct conversation *c, const char *reason)
{
	char msg[600];

	metrics_inc(r->m_handoffs_failed);
	log_warn(r->rt->log, "handoff.failed", "conv=%s reason=\"%s\"", c->key, reason);
	conv_events_add(&c->events, CONV_EV_FAILED, "%s", reason);
	if (c->state == CONV_ENDING)
		return;	/* the conversation is over: there is no one to give back to the bot */
	relay_set_state(r, c, CONV_BOT, "handoff failed");
	json_text_string(msg, sizeof(msg), 0, reason);
	relay_report_status(r, c, "failed", msg);
}

static void spawn_hub_call(struct hub_call *hc);

/* The hub's answer to an escalation. */
/* escalate returned a true value: "accepted" means an agent has it already. */
static void escalate_result(struct relay *r, struct conversation *c, lua_State *co, int base)
{
	const char *res = lua_type(co, base) == LUA_TSTRING ? lua_tostring(co, base) : NULL;

	relay_observe_answer(r, c, res ? res : "delivered");
	if (res && strcmp(res, "accepted") == 0)
		relay_hub_accepted(r, c, "the hub accepted at once");
	else
		log_info(r->rt->log, "handoff.delivered", "conv=%s handoff=%s", c->key, c->handoff_id ? c->handoff_id : "-");
}

static void hub_call_done(lua_State *co, bool ok_call, int nres, void *arg);

/* The escalation of C could not be delivered: try the fallback destination once, then
 * give the customer back to the bot. Returns true when the fallback is being tried. */
bool relay_hub_escalation_failed(struct relay *r, struct conversation *c, int64_t item, const char *err)
{
	const struct config_route *fb = &r->rt->config->fallback;
	struct route_decision d = { .queue = fb->queue, .skill = fb->skill, .agent = fb->agent,
				    .reason = fb->reason, .priority = fb->priority,
				    .has_priority = fb->priority != 0, .fallback = true };
	char json[1024];

	if (c->route_item == item && !c->route_fallback) {
		snprintf(d.why, sizeof(d.why), "the first destination failed: %s", err);
		if (routing_decision_json(&d, json, sizeof(json)) > 0 && conv_set_string(&c->route_json, json) == 0) {
			log_warn(r->rt->log, "handoff.fallback", "conv=%s queue=%s", c->key, fb->queue);
			c->route_fallback = true;
			return true;
		}
	}
	relay_hub_failed(r, c, err);
	return false;
}

/* A failure that will not be retried. */
static void hub_call_gave_up(struct hub_call *hc, struct conversation *c, const char *err)
{
	struct relay *r = hc->r;

	log_error(r->rt->log, "relay.to_hub_failed", "conv=%s attempts=%d error=\"%s\"", c->key,
		  hc->item.attempts + 1, err);
	conv_events_add(&c->events, CONV_EV_ERROR, "to_hub given up after %d attempts", hc->item.attempts + 1);
	metrics_inc(r->m_dropped);
	if (is_escalation(&hc->item) && relay_hub_escalation_failed(r, c, hc->item.id, err)) {
		c->queues[QUEUE_TO_HUB].busy = false;
		relay_kick(r, c, QUEUE_TO_HUB);	/* the same item, to the fallback */
	} else {
		relay_item_finished(r, c, QUEUE_TO_HUB, hc->item.id);
	}
	hub_call_free(hc);
}

static void hub_call_done(lua_State *co, bool ok_call, int nres, void *arg)
{
	struct hub_call *hc = arg;
	struct relay *r = hc->r;
	struct conversation *c = convstore_get(r->convs, hc->key);
	int base = co ? lua_gettop(co) - nres + 1 : 0;
	const char *err;
	bool done = ok_call && nres >= 1 && lua_toboolean(co, base);
	struct item_parts p;

	if (item_split(&hc->item, &p) == 0)
		relay_observe_hub_call(r, p.desk, p.fn, hc->started_ms);
	if (!c) {
		hub_call_free(hc);
		return;
	}
	if (ok_call && nres >= 4 && lua_type(co, base + 3) == LUA_TSTRING)
		conv_set_string(&c->hub_data, lua_tostring(co, base + 3));
	if (done) {
		metrics_inc(r->m_to_hub);
		relay_observe_delivered(r, c, QUEUE_TO_HUB, hc->item.created_ms);
		if (is_escalation(&hc->item))
			escalate_result(r, c, co, base);
		relay_save(r, c);
		relay_item_finished(r, c, QUEUE_TO_HUB, hc->item.id);
		hub_call_free(hc);
		return;
	}
	err = !co ? "aborted" : !ok_call ? "script error" : nres >= 2 && lua_isstring(co, base + 1)
		? lua_tostring(co, base + 1) : "the hub script returned no result";
	if (ok_call && nres >= 3 && lua_toboolean(co, base + 2)) {
		/* Retryable: a number is the hub's Retry-After in seconds. The queue runner gives
		 * up once retry.give_up_after has passed. */
		double after = lua_type(co, base + 2) == LUA_TNUMBER ? lua_tonumber(co, base + 2) : 0;

		log_warn(r->rt->log, "relay.to_hub_retry", "conv=%s attempt=%d error=\"%s\"", c->key,
			 hc->item.attempts + 1, err);
		metrics_inc(r->m_retries);
		relay_retry_later(r, c, QUEUE_TO_HUB, hc->item.id, hc->item.attempts + 1,
			    after > 0 ? (uint64_t)(after * 1000.0) : 0);
		hub_call_free(hc);
		return;
	}
	hub_call_gave_up(hc, c, err);
}

static void spawn_hub_call(struct hub_call *hc)
{
	int rc;
	struct conversation *c;

	hc->started_ms = clock_wall_ms();
	rc = script_host_spawn(hc->r->rt->scripts, hc->key, "hub call", push_hub_call, hub_call_done, hc);

	if (rc == 0)
		return;
	c = convstore_get(hc->r->convs, hc->key);
	if (c)
		relay_retry_later(hc->r, c, QUEUE_TO_HUB, hc->item.id, hc->item.attempts + 1, 0);
	hub_call_free(hc);
}

/* The handoff object of an escalation item, for the routing rules. */
static int push_item_handoff(lua_State *co, void *arg)
{
	struct hub_call *hc = arg;
	struct item_parts p;

	if (item_split(&hc->item, &p) < 0 || push_handoff_of(hc->r, co, p.raw, p.raw_len) < 0)
		return -EINVAL;
	return 1;
}

static void routed(const struct route_decision *d, void *arg)
{
	struct hub_call *hc = arg;
	struct relay *r = hc->r;
	struct conversation *c = convstore_get(r->convs, hc->key);
	char json[1024];

	if (!c || !d || routing_decision_json(d, json, sizeof(json)) < 0 || conv_set_string(&hc->route_json, json) < 0) {
		if (c)
			relay_retry_later(r, c, QUEUE_TO_HUB, hc->item.id, hc->item.attempts + 1, 0);
		hub_call_free(hc);
		return;
	}
	c->route_item = hc->item.id;
	c->route_fallback = d->fallback;
	conv_set_string(&c->route_json, json);
	log_info(r->rt->log, "handoff.routed", "conv=%s handoff=%s queue=%s rule=%d fallback=%s", c->key,
		 c->handoff_id ? c->handoff_id : "-", d->queue, d->rule, d->fallback ? "yes" : "no");
	if (d->fallback)
		conv_events_add(&c->events, CONV_EV_ROUTED, "queue=%s (fallback: %s)", d->queue ? d->queue : "-", d->why);
	else
		conv_events_add(&c->events, CONV_EV_ROUTED, "queue=%s: rule %d matched", d->queue ? d->queue : "-", d->rule);
	spawn_hub_call(hc);
}

void relay_hub_deliver(struct relay *r, struct conversation *c, struct store_item *it)
{
	struct hub_call *hc = calloc(1, sizeof(*hc));

	if (!hc || !(hc->key = strdup(c->key))) {
		free(hc);
		relay_retry_later(r, c, QUEUE_TO_HUB, it->id, it->attempts + 1, 0);
		store_item_clear(it);
		return;
	}
	hc->r = r;
	hc->item = *it;
	memset(it, 0, sizeof(*it));
	if (is_escalation(&hc->item) && c->route_item == hc->item.id && c->route_json) {
		if (conv_set_string(&hc->route_json, c->route_json) == 0) {	/* decided already */
			spawn_hub_call(hc);
			return;
		}
	}
	if (is_escalation(&hc->item)) {
		/* The rules run when the escalation is first delivered (and again after a
		 * restart), in the conversation's order, so the destination uses the rules in
		 * force; retries keep the decision. */
		if (routing_decide(r->rt, hc->key, push_item_handoff, hc, routed, hc) < 0) {
			relay_retry_later(r, c, QUEUE_TO_HUB, hc->item.id, hc->item.attempts + 1, 0);
			hub_call_free(hc);
		}
		return;
	}
	spawn_hub_call(hc);
}

/* Queues "{role, fn, <member>: <raw JSON>}" for the hub. */
int relay_hub_enqueue(struct relay *r, struct conversation *c, const char *role, const char *fn,
		       const char *member, const char *raw, size_t len, bool from_front)
{
	char head[128];
	int n = snprintf(head, sizeof(head), "{\"role\":\"%s\",\"fn\":\"%s\",\"%s\":", role, fn, member);
	char *buf = malloc((size_t)n + len + 2);
	int rc;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, head, (size_t)n);
	memcpy(buf + n, raw, len);
	buf[(size_t)n + len] = '}';
	rc = relay_enqueue_from(r, c, QUEUE_TO_HUB, buf, (size_t)n + len + 1, from_front);
	free(buf);
	return rc;
}

static char *new_handoff_id(struct relay *r)
{
	char *id = malloc(24);

	if (id)
		snprintf(id, 24, "h-%016llx", (unsigned long long)rng_next(&r->rng));
	return id;
}

void relay_hub_start_handoff(struct relay *r, struct conversation *c, const struct hd_activity *a)
{
	char *hid = new_handoff_id(r);

	if (!hid)
		return;
	free(c->handoff_id);
	c->handoff_id = hid;
	metrics_inc(r->m_handoffs_started);
	log_info(r->rt->log, "handoff.initiate", "conv=%s handoff=%s transcript=%zu", c->key, hid,
		 a->handoff ? a->handoff->transcript.count : (size_t)0);
	relay_set_state(r, c, CONV_ROUTING, "handoff.initiate");
	relay_observe_handoff(r, c);
	relay_save(r, c);
	relay_hub_enqueue(r, c, "desk", "escalate", "handoff", a->raw.ptr, a->raw.len, false);
}

static void typing_done(lua_State *co, bool ok, int nres, void *arg)
{
	(void)co;
	(void)ok;
	(void)nres;
	hub_call_free(arg);
}

/* Typing is best effort: straight to the front, never stored or retried. */
void relay_hub_typing(struct relay *r, struct conversation *c, const struct hd_activity *a)
{
	static const char head[] = FRONT_PREFIX ",\"fn\":\"to_user\",\"activity\":";
	struct hub_call *hc = calloc(1, sizeof(*hc));
	size_t n = sizeof(head) - 1;

	if (!hc)
		return;
	hc->r = r;
	hc->key = strdup(c->key);
	hc->item.payload = malloc(n + a->raw.len + 2);
	if (!hc->key || !hc->item.payload) {
		hub_call_free(hc);
		return;
	}
	memcpy(hc->item.payload, head, n);
	memcpy(hc->item.payload + n, a->raw.ptr, a->raw.len);
	hc->item.payload[n + a->raw.len] = '}';
	hc->item.payload[n + a->raw.len + 1] = '\0';
	hc->item.payload_len = n + a->raw.len + 1;
	if (script_host_spawn(r->rt->scripts, c->key, "typing", push_hub_call, typing_done, hc) < 0)
		hub_call_free(hc);
}
