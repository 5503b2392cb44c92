/* relay_hub.c - the relay's deliveries to hub scripts: bot messages and typing for the
 * customer (front.to_user), customer messages for the agent (desk.to_agent), the ends
 * (conversation_end), and the handoff's escalation (routing, desk.escalate, the
 * fallback). Each runs as a task of the conversation through the desk ops
 * (relay_desk.h), which the scripting part implements; the outcome decides between done,
 * retry and give-up (relay.c's queue runner does the waiting). Hub items are stored with
 * their role and function as columns and the activity or event as it came; a handoff
 * is parsed once, at dispatch, and that parse is kept for its escalation (after a
 * restart, the stored event is parsed once when the escalation starts). */
#include "relay/relay_internal.h"

#include "base/clock.h"
#include "base/config.h"
#include "base/json_text.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/hd_runtime.h"
#include "relay/conv_events.h"

#include <errno.h>
#include <handoffd/activity.h>
#include <handoffd/handoff.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const role_names[] = { [RELAY_FRONT] = "front", [RELAY_DESK] = "desk" };

/* What a to_hub delivery waits on: the item and, for a handoff, what the escalation
 * works on (owned here while it runs). */
struct hub_call {
	struct relay *r;
	char *key;
	struct store_item item;
	enum relay_role role;
	struct hd_handoff *handoff;		/* escalations: the parse, one block */
	struct route_decision *route;		/* escalations: decided already (a retry) */
	uint64_t started_ms;	/* the script call started (wall clock) */
};

static void hub_call_free(struct hub_call *hc)
{
	store_item_clear(&hc->item);
	free(hc->handoff);
	free(hc->route);
	free(hc->key);
	free(hc);
}

void relay_view(const struct conversation *c, struct relay_conv_view *v)
{
	*v = (struct relay_conv_view){
		.key = c->key, .id = c->id, .state = conv_state_name(c->state), .user_json = c->user_json,
		.data_json = c->hub_data, .handoff_id = c->handoff_id, .dl_conversation_id = c->dl_conversation_id,
	};
}

/* The front's conversation id inside HC's own copy of the key. */
static const char *call_id(const struct hub_call *hc, const struct conversation *c)
{
	return hc->key + (c->id - c->key);
}

/* ---- the handoff's parse -------------------------------------------------------------- */

/* A copy of H that outlives the parser's next parse (one block), or NULL. */
static struct hd_handoff *handoff_keep(const struct hd_handoff *h)
{
	size_t size = hd_handoff_copy_size(h);
	void *mem = size ? malloc(size) : NULL;

	return mem ? hd_handoff_copy_to(mem, h) : NULL;
}

/* The handoff of escalation HC: the parse kept since dispatch, or after a restart the
 * stored event parsed now (once: a retry finds it kept). -EBADMSG when it does not parse. */
static int take_handoff(struct relay *r, struct conversation *c, struct hub_call *hc)
{
	struct hd_activity_set set;
	struct hd_parse_error perr;
	const struct hd_handoff *h = NULL;

	if (c->handoff && c->handoff_item == hc->item.id) {
		hc->handoff = c->handoff;
		c->handoff = NULL;
		return 0;
	}
	if (hd_activity_parse(r->parser, hc->item.payload, hc->item.payload_len, hc->item.payload_len, &set,
			      &perr) == 0)
		h = hd_activity_set_handoff(&set);
	if (!h)
		return -EBADMSG;
	log_info(r->rt->log, "handoff.parse_stored", "conv=%s item=%lld", c->key, (long long)hc->item.id);
	hc->handoff = handoff_keep(h);
	return hc->handoff ? 0 : -ENOMEM;
}

/* The escalation will be tried again: C keeps its parse for that. */
static void give_back_handoff(struct conversation *c, struct hub_call *hc)
{
	if (!hc->handoff)
		return;
	free(c->handoff);
	c->handoff = hc->handoff;
	c->handoff_item = hc->item.id;
	hc->handoff = NULL;
}

/* ---- the route ------------------------------------------------------------------------ */

/* Records D as the destination of escalation ITEM (kept across retries, shown by the
 * admin API). */
static int set_route(struct conversation *c, int64_t item, const struct route_decision *d)
{
	char json[1024];
	struct route_decision *copy;

	if (route_decision_json(d, json, sizeof(json)) < 0 || !(copy = route_decision_dup(d)))
		return -ENOMEM;
	if (conv_set_string(&c->route_json, json) < 0) {
		free(copy);
		return -ENOMEM;
	}
	free(c->route);
	c->route = copy;
	c->route_item = item;
	c->route_fallback = d->fallback;
	return 0;
}

/* The rules decided, inside the escalation task, before the desk is called. */
static void routed(const struct route_decision *d, void *arg)
{
	struct hub_call *hc = arg;
	struct relay *r = hc->r;
	struct conversation *c = convstore_get(r->convs, hc->key);

	if (!c)
		return;
	if (set_route(c, hc->item.id, d) < 0)
		log_warn(r->rt->log, "handoff.route_lost", "conv=%s reason=\"out of memory\"", c->key);
	log_info(r->rt->log, "handoff.routed", "conv=%s handoff=%s queue=%s rule=%d fallback=%s", c->key,
		 c->handoff_id ? c->handoff_id : "-", d->queue, d->rule, d->fallback ? "yes" : "no");
	if (d->fallback)
		conv_events_add(&c->events, CONV_EV_ROUTED, "queue=%s (fallback: %s)", d->queue ? d->queue : "-", d->why);
	else
		conv_events_add(&c->events, CONV_EV_ROUTED, "queue=%s: rule %d matched", d->queue ? d->queue : "-", d->rule);
}

/* ---- the handoff's progress ----------------------------------------------------------- */

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

/* escalate returned a true value: "accepted" means an agent has it already. */
static void escalate_result(struct relay *r, struct conversation *c, const char *answer)
{
	relay_observe_answer(r, c, answer ? answer : "delivered");
	if (answer && strcmp(answer, "accepted") == 0)
		relay_hub_accepted(r, c, "the hub accepted at once");
	else
		log_info(r->rt->log, "handoff.delivered", "conv=%s handoff=%s", c->key, c->handoff_id ? c->handoff_id : "-");
}

/* The escalation of C could not be delivered: try the fallback destination once, then
 * give the customer back to the bot. Returns true when the fallback is being tried. */
bool relay_hub_escalation_failed(struct relay *r, struct conversation *c, int64_t item, const char *err)
{
	struct route_decision d;

	if (c->route_item == item && !c->route_fallback) {
		route_decision_fallback(&d, &r->rt->config->fallback, NULL);
		snprintf(d.why, sizeof(d.why), "the first destination failed: %s", err);
		if (set_route(c, item, &d) == 0) {
			log_warn(r->rt->log, "handoff.fallback", "conv=%s queue=%s", c->key, d.queue);
			return true;
		}
	}
	relay_hub_failed(r, c, err);
	return false;
}

/* ---- delivering ----------------------------------------------------------------------- */

/* A failure that will not be retried. */
static void hub_call_gave_up(struct hub_call *hc, struct conversation *c, const char *err)
{
	struct relay *r = hc->r;

	log_error(r->rt->log, "relay.to_hub_failed", "conv=%s attempts=%d error=\"%s\"", c->key,
		  hc->item.attempts + 1, err);
	conv_events_add(&c->events, CONV_EV_ERROR, "to_hub given up after %d attempts", hc->item.attempts + 1);
	metrics_inc(r->m_dropped);
	if (is_escalation(&hc->item) && relay_hub_escalation_failed(r, c, hc->item.id, err)) {
		give_back_handoff(c, hc);
		c->queues[QUEUE_TO_HUB].busy = false;
		relay_kick(r, c, QUEUE_TO_HUB);	/* the same item, to the fallback */
	} else {
		relay_item_finished(r, c, QUEUE_TO_HUB, hc->item.id);
	}
	hub_call_free(hc);
}

static void retry_later(struct hub_call *hc, struct conversation *c, uint64_t at_least_ms)
{
	give_back_handoff(c, hc);
	relay_retry_later(hc->r, c, QUEUE_TO_HUB, hc->item.id, hc->item.attempts + 1, at_least_ms);
	hub_call_free(hc);
}

static void hub_call_done(const struct relay_outcome *o, void *arg)
{
	struct hub_call *hc = arg;
	struct relay *r = hc->r;
	struct conversation *c = convstore_get(r->convs, hc->key);

	relay_observe_hub_call(r, hc->role == RELAY_DESK, hc->item.fn, hc->started_ms);
	if (!c) {
		hub_call_free(hc);
		return;
	}
	if (o->data_json)
		conv_set_string(&c->hub_data, o->data_json);
	if (o->delivered) {
		metrics_inc(r->m_to_hub);
		relay_observe_delivered(r, c, QUEUE_TO_HUB, hc->item.created_ms);
		if (is_escalation(&hc->item))
			escalate_result(r, c, o->answer);
		relay_save(r, c);
		relay_item_finished(r, c, QUEUE_TO_HUB, hc->item.id);
		hub_call_free(hc);
		return;
	}
	if (o->retry) {
		/* The queue runner gives up once retry.give_up_after has passed. */
		log_warn(r->rt->log, "relay.to_hub_retry", "conv=%s attempt=%d error=\"%s\"", c->key,
			 hc->item.attempts + 1, o->error);
		metrics_inc(r->m_retries);
		retry_later(hc, c, o->retry_after_s > 0 ? (uint64_t)(o->retry_after_s * 1000.0) : 0);
		return;
	}
	hub_call_gave_up(hc, c, o->error ? o->error : "the hub call failed");
}

static int start_call(struct hub_call *hc, struct conversation *c)
{
	struct relay_hub_call call = {
		.relay = hc->r, .key = hc->key, .id = call_id(hc, c), .role = hc->role, .fn = hc->item.fn,
		.arg = hc->item.payload, .arg_len = hc->item.payload_len,
	};

	hc->started_ms = clock_wall_ms();
	return hc->r->desk.call(hc->r->desk.ctx, &call, hub_call_done, hc);
}

/* The rules run when the escalation is first delivered (and again after a restart), in
 * the conversation's order, so the destination uses the rules in force; retries keep the
 * decision. */
static int start_escalation(struct hub_call *hc, struct conversation *c)
{
	struct relay_escalation e = { .relay = hc->r, .key = hc->key, .id = call_id(hc, c) };
	int rc = take_handoff(hc->r, c, hc);

	if (rc < 0)
		return rc;
	if (c->route_item == hc->item.id && c->route && !(hc->route = route_decision_dup(c->route)))
		return -ENOMEM;
	e.handoff = hc->handoff;
	e.route = hc->route;
	hc->started_ms = clock_wall_ms();
	return hc->r->desk.escalate(hc->r->desk.ctx, &e, routed, hub_call_done, hc);
}

void relay_hub_deliver(struct relay *r, struct conversation *c, struct store_item *it)
{
	struct hub_call *hc = calloc(1, sizeof(*hc));
	int rc;

	if (!hc || !(hc->key = strdup(c->key))) {
		free(hc);
		relay_retry_later(r, c, QUEUE_TO_HUB, it->id, it->attempts + 1, 0);
		store_item_clear(it);
		return;
	}
	hc->r = r;
	hc->item = *it;
	memset(it, 0, sizeof(*it));
	if (!hc->item.role || !hc->item.fn) {
		hub_call_gave_up(hc, c, "not a hub call (no role or function stored)");
		return;
	}
	hc->role = strcmp(hc->item.role, role_names[RELAY_DESK]) == 0 ? RELAY_DESK : RELAY_FRONT;
	rc = is_escalation(&hc->item) ? start_escalation(hc, c) : start_call(hc, c);
	if (rc == -EBADMSG)
		hub_call_gave_up(hc, c, "the stored handoff event does not parse");
	else if (rc < 0)
		retry_later(hc, c, 0);
}

/* ---- queueing ------------------------------------------------------------------------- */

/* Stores a call of ROLE's FN with RAW; the item id, or -ENOBUFS (FROM_FRONT: limits.queued)
 * or -EIO. */
static int64_t add_hub_item(struct relay *r, struct conversation *c, enum relay_role role, const char *fn,
			    const char *raw, size_t len, bool from_front)
{
	int64_t id;

	if (from_front && c->pending[QUEUE_TO_HUB] >= (unsigned)r->rt->config->limits.queued)
		return -ENOBUFS;	/* relay_enqueue_from's rule: the front retries later */
	id = store_outbox_add_call(r->store, c->key, relay_queue_name(QUEUE_TO_HUB), role_names[role], fn, raw, len);
	if (id < 0)
		return -EIO;
	c->pending[QUEUE_TO_HUB]++;
	return id;
}

int relay_hub_enqueue(struct relay *r, struct conversation *c, enum relay_role role, const char *fn,
		      const char *raw, size_t len, bool from_front)
{
	int64_t id = add_hub_item(r, c, role, fn, raw, len, from_front);

	if (id < 0)
		return (int)id;
	relay_kick(r, c, QUEUE_TO_HUB);
	return 0;
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
	struct hd_handoff *kept;
	int64_t item;

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
	item = add_hub_item(r, c, RELAY_DESK, "escalate", a->raw.ptr, a->raw.len, false);
	/* The dispatch's parse is kept for the escalation (without it, out of memory, the
	 * escalation parses the stored event). */
	kept = item > 0 && a->handoff ? handoff_keep(a->handoff) : NULL;
	if (kept) {
		free(c->handoff);
		c->handoff = kept;
		c->handoff_item = item;
	}
	relay_kick(r, c, QUEUE_TO_HUB);
}

static void typing_done(const struct relay_outcome *o, void *arg)
{
	(void)o;
	hub_call_free(arg);
}

/* Typing is best effort: straight to the front, never stored or retried. */
void relay_hub_typing(struct relay *r, struct conversation *c, const struct hd_activity *a)
{
	struct hub_call *hc;
	struct relay_hub_call call;

	if (!relay_cluster_may_act(r))
		return;	/* a cluster member without its lease calls no hub */
	if (!(hc = calloc(1, sizeof(*hc))))
		return;
	hc->r = r;
	hc->key = strdup(c->key);
	hc->item.payload = malloc(a->raw.len + 1);
	if (!hc->key || !hc->item.payload) {
		hub_call_free(hc);
		return;
	}
	memcpy(hc->item.payload, a->raw.ptr, a->raw.len);
	hc->item.payload[a->raw.len] = '\0';
	hc->item.payload_len = a->raw.len;
	call = (struct relay_hub_call){ .relay = r, .key = hc->key, .id = call_id(hc, c), .role = RELAY_FRONT,
					.fn = "to_user", .arg = hc->item.payload, .arg_len = a->raw.len };
	if (r->desk.call(r->desk.ctx, &call, typing_done, hc) < 0)
		hub_call_free(hc);
}
