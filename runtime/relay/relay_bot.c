/* relay_bot.c - the relay's bot side: each conversation's Direct Line stream (opened,
 * parked while an agent has the conversation, forgotten when the bot's conversation is
 * gone), the sends to the bot with their attempt committed before the POST, and Direct
 * Line's callbacks (the bot's activities, stream states, the stored position). How the
 * queues run and retry is relay.c's; what goes to the hub scripts is relay_hub.c's. */
#include "relay/relay_internal.h"

#include "base/config.h"
#include "base/hd_runtime.h"
#include "base/log.h"
#include "base/metrics.h"
#include "directline/directline.h"
#include "relay/conv_events.h"
#include "relay/convstore.h"
#include "relay/store.h"

#include <errno.h>
#include <handoffd/activity.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void forget_dl(struct conversation *c)
{
	directline_close(c->dl, false);
	c->dl = NULL;
	c->dl_gone = true;
	c->dl_id_durable = false;
	conv_set_string(&c->dl_conversation_id, NULL);
	conv_set_string(&c->dl_token, NULL);
	conv_set_string(&c->watermark, NULL);
	free(c->seen);
	c->seen = NULL;
	c->nseen = 0;
	c->dl_token_expiry = 0;
}

/* Parking: while an agent has the conversation the bot is silent by design, so its stream
 * is parked (what the bot says on its own still comes, by GET); it reopens when the bot
 * has the conversation again. Idle conversations park themselves (directline.park_after). */
void relay_bot_park_for_state(struct conversation *c, enum conv_state from)
{
	if (c->dl && c->state == CONV_AGENT)
		directline_park(c->dl);
	else if (c->dl && from == CONV_AGENT && c->state == CONV_BOT)
		directline_wake(c->dl);
}

/* Whether the next message for the bot may have left before (a POST was started). */
static bool to_bot_unsettled(struct relay *r, struct conversation *c)
{
	struct store_item it;
	bool maybe_sent;

	if (store_outbox_head(r->store, c->key, relay_queue_name(QUEUE_TO_BOT), &it) < 0)
		return false;
	maybe_sent = it.attempts > 0;
	store_item_clear(&it);
	return maybe_sent;
}

struct dl_conv *relay_bot_open(struct relay *r, struct conversation *c)
{
	struct dl_persist resume = {
		.conversation_id = c->dl_conversation_id, .token = c->dl_token,
		.token_expires = c->dl_token_expiry, .watermark = c->watermark, .seen = c->seen,
		.nseen = c->nseen,
	};

	if (!c->dl && !relay_cluster_may_act(r)) {
		relay_cluster_held_back(r);	/* no stream without the lease: opened once it is back */
		return NULL;
	}
	if (!c->dl && c->dl_conversation_id)
		resume.unsettled = to_bot_unsettled(r, c);
	if (!c->dl && (c->dl = directline_open(r->dl, c->key, c->dl_conversation_id ? &resume : NULL))) {
		c->dl_gone = false;
		relay_bot_park_for_state(c, c->state);
	}
	return c->dl;
}

/* The stored Direct Line position (Direct Line holds it before unsettled sends). */
static void set_position(struct conversation *c, const struct dl_persist *p)
{
	uint64_t *copy = NULL;

	if (p->nseen && (copy = malloc(p->nseen * sizeof(*copy))))
		memcpy(copy, p->seen, p->nseen * sizeof(*copy));
	free(c->seen);
	c->seen = copy;
	c->nseen = copy ? p->nseen : 0;
	conv_set_string(&c->watermark, p->watermark);
}

struct sent {
	struct relay *r;
	char *key;
	int64_t item;
	int64_t created_ms;	/* when the item was queued */
};

static void on_bot_sent(struct dl_conv *dc, int err, const char *reason, const char *activity_id, void *arg)
{
	struct sent *s = arg;
	struct relay *r = s->r;
	struct conversation *c = convstore_get(r->convs, s->key);

	(void)dc;
	(void)activity_id;
	if (c && c->position_pending) {
		c->position_pending = false;
		relay_save(r, c);	/* after this send's outcome is written below (the row goes last) */
	}
	if (c && err == 0) {
		metrics_inc(r->m_to_bot);
		relay_observe_delivered(r, c, QUEUE_TO_BOT, s->created_ms);
		relay_item_finished(r, c, QUEUE_TO_BOT, s->item);
	} else if (c && err == -ECANCELED) {
		c->queues[QUEUE_TO_BOT].busy = false;	/* the handle went away; kept for later */
	} else if (c && (strcmp(reason, "ended") == 0 || strcmp(reason, "not found") == 0)) {
		/* The bot's conversation is gone: the message starts a new one. */
		log_info(r->rt->log, "dl.restart", "conv=%s reason=\"%s\"", c->key, reason);
		forget_dl(c);
		relay_save(r, c);
		c->queues[QUEUE_TO_BOT].busy = false;
		relay_kick(r, c, QUEUE_TO_BOT);
	} else if (c) {
		log_error(r->rt->log, "relay.to_bot_failed", "conv=%s reason=\"%s\"", c->key, reason);
		conv_events_add(&c->events, CONV_EV_ERROR, "to_bot given up: %s", reason);
		metrics_inc(r->m_dropped);
		relay_item_finished(r, c, QUEUE_TO_BOT, s->item);
	}
	free(s->key);
	free(s);
}

/* Each message goes with its outbox identity: after a restart, one that may have left
 * (attempts > 0) is looked for in the bot's conversation by Direct Line before it is
 * posted again (directline_send_item). */
static void send_to_bot(struct relay *r, struct conversation *c, struct store_item *it);

/* A send waits for the commit of its attempt: the POST must not leave before the mark
 * that makes a restart (or the next owner) look for it is durable. The turn's
 * transaction alone is not enough: libcurl may write a request on a kept-alive
 * connection inside the very call that finished the one before, before the turn ends. */
struct marked {
	struct relay *r;
	char *key;
	uint64_t generation;
	struct store_item sending;	/* on_marked's: the item, its attempt counted */
};

static void marked_free(struct marked *m)
{
	store_item_clear(&m->sending);
	free(m->key);
	free(m);
}

/* The conversation M was made for, while it is held as it was then: not after a cluster
 * member dropped its conversations, nor once relay_free has begun. */
static struct conversation *marked_conv(const struct marked *m)
{
	struct relay *r = m->r;

	if (r->stopping || m->generation != relay_cluster_generation(r))
		return NULL;
	return convstore_get(r->convs, m->key);
}

/* The item is the one relay_bot_deliver read: while the queue is busy nothing else takes
 * or removes its head, so it is not read again. */
static void on_marked(void *arg)
{
	struct marked *m = arg;
	struct relay *r = m->r;
	struct conversation *c = marked_conv(m);

	if (c && (store_commit_error(r->store) < 0 || !relay_cluster_may_act(r))) {
		c->queues[QUEUE_TO_BOT].busy = false;
		if (relay_arm_retry(r, c, QUEUE_TO_BOT, relay_backoff_ms(r, m->sending.attempts)) < 0)
			log_error(r->rt->log, "relay.retry_lost", "conv=%s queue=to_bot", c->key);
	} else if (c) {
		send_to_bot(r, c, &m->sending);
	}
	marked_free(m);
}

static void on_dl_durable(void *arg)
{
	struct marked *m = arg;
	struct relay *r = m->r;
	struct conversation *c = marked_conv(m);

	if (c) {
		c->dl_id_waiting = false;
		if (store_commit_error(r->store) == 0 && c->dl_conversation_id) {
			c->dl_id_durable = true;
			relay_kick(r, c, QUEUE_TO_BOT);
		} else if (relay_arm_retry(r, c, QUEUE_TO_BOT, relay_backoff_ms(r, 1)) < 0) {
			log_error(r->rt->log, "relay.retry_lost", "conv=%s queue=to_bot", c->key);
		}
	}
	marked_free(m);
}

/* The to_bot queue goes on once C's Direct Line conversation id is committed. */
static void wait_dl_durable(struct relay *r, struct conversation *c)
{
	struct marked *m;

	if (c->dl_id_waiting || !(m = calloc(1, sizeof(*m))))
		return;
	m->r = r;
	m->generation = relay_cluster_generation(r);
	c->dl_id_waiting = true;	/* before: with nothing to commit, the callback runs at once */
	if (!(m->key = strdup(c->key)) || store_after_commit(r->store, on_dl_durable, m) < 0) {
		c->dl_id_waiting = false;
		marked_free(m);
	}
}

void relay_bot_deliver(struct relay *r, struct conversation *c, struct store_item *it)
{
	struct marked *m;

	if (!c->dl_id_durable) {
		c->queues[QUEUE_TO_BOT].busy = false;
		if (!relay_bot_open(r, c))
			relay_retry_later(r, c, QUEUE_TO_BOT, it->id, it->attempts, 0);
		else if (c->dl_conversation_id)
			wait_dl_durable(r, c);
		return;	/* else on_persist waits once the conversation has its id */
	}
	if (!(m = calloc(1, sizeof(*m))) || !(m->key = strdup(c->key))) {
		free(m);
		relay_retry_later(r, c, QUEUE_TO_BOT, it->id, it->attempts, 0);
		return;
	}
	*m = (struct marked){ r, m->key, relay_cluster_generation(r), *it };
	memset(it, 0, sizeof(*it));	/* the item is M's now */
	m->sending.attempts++;
	store_outbox_retry(r->store, m->sending.id, m->sending.attempts, 0);
	if (store_after_commit(r->store, on_marked, m) < 0) {
		relay_retry_later(r, c, QUEUE_TO_BOT, m->sending.id, m->sending.attempts, 0);
		marked_free(m);
	}
}

/* IT's attempt is counted and committed already (deliver_to_bot). */
static void send_to_bot(struct relay *r, struct conversation *c, struct store_item *it)
{
	int attempts = it->attempts;
	struct dl_send_item item = { .id = it->id, .created_ms = it->created_ms, .maybe_sent = attempts > 1 };
	struct sent *s;
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s || !(s->key = strdup(c->key)) || !relay_bot_open(r, c)) {
		free(s);
		relay_retry_later(r, c, QUEUE_TO_BOT, it->id, attempts, 0);
		return;
	}
	s->r = r;
	s->item = it->id;
	s->created_ms = it->created_ms;
	rc = directline_send_item(c->dl, it->payload, it->payload_len, &item, on_bot_sent, s);
	if (rc == 0)
		return;
	free(s->key);
	free(s);
	if (rc == -ESHUTDOWN) {	/* ended or failed: start over with a new conversation */
		forget_dl(c);
		relay_retry_later(r, c, QUEUE_TO_BOT, it->id, attempts, 0);
	} else if (rc == -ENOBUFS || rc == -ENOMEM) {
		relay_retry_later(r, c, QUEUE_TO_BOT, it->id, attempts, 0);
	} else {
		log_error(r->rt->log, "relay.to_bot_refused", "conv=%s error=\"%s\"", c->key, strerror(-rc));
		metrics_inc(r->m_dropped);
		relay_item_finished(r, c, QUEUE_TO_BOT, it->id);
	}
}

/* Posts handoff.status to the bot when the bot wants it (directline.status_events). */
void relay_report_status(struct relay *r, struct conversation *c, const char *state, const char *message)
{
	char buf[1024];
	int n;

	if (!r->rt->config->directline.status_events)
		return;
	if (message)
		n = snprintf(buf, sizeof(buf),
			     "{\"type\":\"event\",\"name\":\"handoff.status\",\"value\":{\"state\":\"%s\",\"message\":%s}}",
			     state, message);
	else
		n = snprintf(buf, sizeof(buf), "{\"type\":\"event\",\"name\":\"handoff.status\",\"value\":{\"state\":\"%s\"}}",
			     state);
	if (n > 0 && (size_t)n < sizeof(buf))
		relay_enqueue_from(r, c, QUEUE_TO_BOT, buf, (size_t)n, false);
}

/* ---- from Direct Line ------------------------------------------------------------- */

static void on_activity(struct dl_conv *dc, const char *key, const struct hd_activity *a, void *arg)
{
	struct relay *r = arg;
	struct conversation *c = convstore_get(r->convs, key);

	(void)dc;
	if (!c)
		return;
	if (hd_str_eq(a->from_role, "user"))
		return;	/* another client of the conversation (our own echoes stay in directline) */
	relay_end_touch(c);
	if (hd_str_eq(a->type, "event") && hd_str_eq(a->name, "handoff.initiate")) {
		if (c->state == CONV_BOT)
			relay_hub_start_handoff(r, c, a);
		else
			log_info(r->rt->log, "handoff.ignored", "conv=%s state=%s", key, conv_state_name(c->state));
		return;
	}
	if (hd_str_eq(a->type, "endOfConversation")) {
		/* With an agent the customer is not the bot's any more: only the bot's side ends
		 * (its Direct Line conversation is gone; a return to the bot opens a new one). */
		if (c->state == CONV_BOT)
			relay_end_begin(r, c, END_BY_BOT);
		return;
	}
	if (c->state != CONV_BOT || directline_held(dc)) {
		/* An agent has (or had, while the stream was parked) the customer: what the
		 * bot still says stays with the bot. */
		metrics_inc(r->m_suppressed);
		return;
	}
	if (hd_str_eq(a->type, "message"))
		relay_hub_enqueue(r, c, RELAY_FRONT, "to_user", a->raw.ptr, a->raw.len, false);
	else if (hd_str_eq(a->type, "typing"))
		relay_hub_typing(r, c, a);
}

static void on_dl_state(struct dl_conv *dc, const char *key, enum dl_state st, const char *reason, void *arg)
{
	struct relay *r = arg;
	struct conversation *c = convstore_get(r->convs, key);

	if (!c || c->dl != dc || (st != DL_STATE_ENDED && st != DL_STATE_FAILED))
		return;
	log_info(r->rt->log, "dl.gone", "conv=%s state=%s reason=\"%s\"", key, directline_state_name(st), reason);
	forget_dl(c);
	relay_save(r, c);
	if (c->state == CONV_BOT)
		relay_end_begin(r, c, END_DL_GONE);	/* what it still queued for the bot is given up */
	else
		relay_kick(r, c, QUEUE_TO_BOT);	/* with an agent: a return to the bot opens a new one */
}

static void on_persist(struct dl_conv *dc, const char *key, const struct dl_persist *p, void *arg)
{
	struct relay *r = arg;
	struct conversation *c = convstore_get(r->convs, key);
	bool new_id;

	if (!c || c->dl != dc)
		return;
	new_id = !c->dl_conversation_id || !p->conversation_id || strcmp(c->dl_conversation_id, p->conversation_id) != 0;
	conv_set_string(&c->dl_conversation_id, p->conversation_id);
	conv_set_string(&c->dl_token, p->token);
	c->dl_token_expiry = p->token_expires;
	set_position(c, p);
	if (c->queues[QUEUE_TO_BOT].busy && !new_id)
		c->position_pending = true;	/* written once the send is done (on_bot_sent) */
	else
		relay_save(r, c);
	if (!c->dl_id_durable && c->dl_conversation_id)
		wait_dl_durable(r, c);
}

/* Whether an activity's POST may leave now: a cluster member's lease is checked again at
 * the last moment, since the process may have stalled after relay_kick let the send go. */
static bool may_send(void *arg)
{
	return relay_cluster_lease_valid(arg);
}

struct directline_callbacks relay_bot_callbacks(void)
{
	return (struct directline_callbacks){ on_activity, on_dl_state, on_persist, may_send };
}
