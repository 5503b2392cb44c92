/* relay.c - conversations between the front hub, the bot and the desk hub.
 * Owns the state transitions (relay.h), each conversation's row and when it is written,
 * the per-conversation queue runner with its retries, and the relay's start and stop.
 * The bot side (Direct Line streams, sends, Direct Line's callbacks) is relay_bot.c's;
 * what hub scripts ask of it is relay_from_hub.c's, what goes to them relay_hub.c's; how a
 * conversation ends and leaves is relay_end.c's. It holds no protocol detail: Direct Line
 * is directline.c's, hub APIs are the scripts'. */
#include "relay/relay_internal.h"

#include "base/backoff.h"
#include "base/clock.h"
#include "base/config.h"
#include "relay/conv_events.h"
#include "relay/convstore.h"
#include "directline/directline.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"
#include "base/hd_runtime.h"
#include "relay/store.h"

#include <errno.h>
#include <handoffd/activity.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const queue_names[QUEUE_COUNT] = { "to_bot", "to_hub" };

/* ---- small helpers ---------------------------------------------------------------- */

const char *relay_queue_name(enum conv_queue q)
{
	return queue_names[q];
}

/* The backoff of retry.base and retry.max_delay (read each time: a reload may change
 * them), at least 1 ms. */
uint64_t relay_backoff_ms(struct relay *r, int attempts)
{
	const struct config_retry *rc = &r->rt->config->retry;
	struct backoff b = { (uint64_t)(rc->base * 1000.0), (uint64_t)(rc->max_delay * 1000.0) };

	return backoff_delay_ms(&b, &r->rng, attempts > 0 ? (unsigned)attempts : 0) + 1;
}

static void write_conv(struct relay *r, const struct conversation *c)
{
	struct store_conv sc = {
		.key = c->key, .state = (char *)conv_state_name(c->state), .user_json = c->user_json,
		.dl_conversation_id = c->dl_conversation_id, .dl_token = c->dl_token,
		.dl_token_expiry = c->dl_token_expiry, .watermark = c->watermark, .seen = c->seen,
		.nseen = c->nseen, .hub_data = c->hub_data, .handoff_id = c->handoff_id,
	};

	store_conv_put(r->store, &sc);
}

/* A message changes its conversation several times in a turn (state, watermark, dedupe
 * set, hub data), each an upsert of the whole row when written at once. The row is
 * written once, just before the commit (on_before_commit), so what a 202 waits for is
 * still in the committed transaction. */
void relay_save(struct relay *r, struct conversation *c)
{
	if (c->dirty_pprev)
		return;
	if (store_begin(r->store) < 0) {
		write_conv(r, c);	/* fails too, and says so */
		return;
	}
	c->dirty_next = r->dirty;
	if (r->dirty)
		r->dirty->dirty_pprev = &c->dirty_next;
	c->dirty_pprev = &r->dirty;
	r->dirty = c;
}

void relay_save_now(struct relay *r, struct conversation *c)
{
	conv_dirty_unlink(c);
	write_conv(r, c);
}

static void on_before_commit(void *arg)
{
	struct relay *r = arg;

	while (r->dirty) {
		struct conversation *c = r->dirty;

		conv_dirty_unlink(c);
		write_conv(r, c);
	}
}

void relay_set_state(struct relay *r, struct conversation *c, enum conv_state s, const char *why)
{
	enum conv_state from = c->state;

	if (c->state == s || c->state == CONV_ENDING)	/* an ending conversation only leaves */
		return;
	log_info(r->rt->log, "conv.state", "conv=%s from=%s to=%s reason=\"%s\"", c->key,
		 conv_state_name(c->state), conv_state_name(s), why);
	c->state = s;
	conv_events_add(&c->events, CONV_EV_STATE, "%s -> %s: %s", conv_state_name(from), conv_state_name(s), why);
	relay_save(r, c);
	relay_bot_park_for_state(c, from);
}

static void outbox_done(struct relay *r, struct conversation *c, enum conv_queue q, int64_t id)
{
	store_outbox_done(r->store, id);
	if (c->pending[q] > 0)
		c->pending[q]--;
}

int relay_enqueue_from(struct relay *r, struct conversation *c, enum conv_queue q, const char *payload,
			size_t len, bool from_front)
{
	int64_t rc;

	/* What a front sends must not pile up without bound when the bot stops taking it:
	 * the front gets "queue full" (503 to a webhook hub) and retries later. What the bot
	 * says is never refused, since Direct Line cannot be asked to send it again. */
	if (from_front && c->pending[q] >= (unsigned)r->rt->config->limits.queued)
		return -ENOBUFS;
	rc = store_outbox_add(r->store, c->key, queue_names[q], payload, len);
	if (rc < 0)
		return -EIO;
	c->pending[q]++;
	relay_kick(r, c, q);
	return 0;
}

void relay_item_finished(struct relay *r, struct conversation *c, enum conv_queue q, int64_t id)
{
	if (id > 0)
		outbox_done(r, c, q, id);
	c->queues[q].busy = false;
	relay_kick(r, c, q);
}

/* ---- the queue runner --------------------------------------------------------------- */

struct retry_timer_arg {
	struct relay *r;
	struct conversation *c;
	enum conv_queue q;
};

static void on_retry_timer(void *arg)
{
	struct retry_timer_arg *a = arg;
	struct conversation *c = a->c;

	c->queues[a->q].scheduled = false;
	relay_kick(a->r, c, a->q);
}

int relay_arm_retry(struct relay *r, struct conversation *c, enum conv_queue q, uint64_t delay_ms)
{
	struct conv_queue_state *qs = &c->queues[q];

	if (!qs->retry) {
		struct retry_timer_arg *a = calloc(1, sizeof(*a));

		if (!a)
			return -ENOMEM;
		*a = (struct retry_timer_arg){ r, c, q };
		qs->retry = loop_timer_new(r->rt->loop, on_retry_timer, a);
		qs->retry_arg = a;
		if (!qs->retry)
			return -ENOMEM;
	}
	qs->scheduled = true;
	return loop_timer_start(qs->retry, delay_ms, 0);
}

void relay_retry_later(struct relay *r, struct conversation *c, enum conv_queue q, int64_t id,
			int attempts, uint64_t at_least_ms)
{
	uint64_t delay = relay_backoff_ms(r, attempts);

	if (delay < at_least_ms)
		delay = at_least_ms + relay_backoff_ms(r, 0);	/* Retry-After, plus jitter */
	if (id > 0)
		store_outbox_retry(r->store, id, attempts, (int64_t)(clock_wall_ms() + delay));
	c->queues[q].busy = false;
	conv_events_add(&c->events, CONV_EV_RETRY, "%s attempt %d", queue_names[q], attempts);
	if (relay_arm_retry(r, c, q, delay) < 0)
		log_error(r->rt->log, "relay.retry_lost", "conv=%s queue=%s", c->key, queue_names[q]);
}

/* retry.give_up_after is counted from when the item was queued. */
static bool gave_up(struct relay *r, const struct store_item *it)
{
	return it->attempts > 0 && it->created_ms > 0 &&
	       (double)(clock_wall_ms() - (uint64_t)it->created_ms) > r->rt->config->retry.give_up_after * 1000.0;
}

/* Whether IT is the endOfConversation the relay queued as the bot's goodbye. */
static bool is_goodbye(struct relay *r, const struct store_item *it)
{
	struct hd_activity_set set;
	struct hd_parse_error perr;

	return hd_activity_parse(r->parser, it->payload, it->payload_len, it->payload_len, &set, &perr) == 0 &&
	       set.count == 1 && hd_str_eq(set.activities[0].type, "endOfConversation");
}

/* The conversation is over and the bot's side gone with it: what was still queued for
 * the bot has nowhere to go (a new Direct Line conversation would be opened only to be
 * ended). Logged and counted; the goodbye itself goes quietly. */
static void give_up_for_gone_bot(struct relay *r, struct conversation *c, struct store_item *it)
{
	if (!is_goodbye(r, it)) {
		log_warn(r->rt->log, "relay.gave_up", "conv=%s queue=to_bot item=%lld reason=\"the bot's conversation is gone\"",
			 c->key, (long long)it->id);
		metrics_inc(r->m_dropped);
	}
	outbox_done(r, c, QUEUE_TO_BOT, it->id);
	store_item_clear(it);
	relay_kick(r, c, QUEUE_TO_BOT);
}

/* C's queue Q waits for its head item's commit; on_durable kicks it then. False when it
 * cannot wait (no memory): it is delivered at once. */
static bool hold_until_durable(struct relay *r, struct conversation *c, enum conv_queue q)
{
	if (c->queues[QUEUE_TO_BOT].held || c->queues[QUEUE_TO_HUB].held) {	/* the key is listed */
		c->queues[q].held = true;
		return true;
	}
	if (r->nheld == r->capheld) {
		size_t cap = r->capheld ? 2 * r->capheld : 64;
		char **held = realloc(r->held, cap * sizeof(*held));

		if (!held)
			return false;
		r->held = held;
		r->capheld = cap;
	}
	if (!(r->held[r->nheld] = strdup(c->key)))
		return false;
	r->nheld++;
	c->queues[q].held = true;
	return true;
}

static void on_durable(void *arg)
{
	struct relay *r = arg;
	char **keys = r->held;
	size_t n = r->nheld;

	r->held = NULL;
	r->nheld = r->capheld = 0;
	for (size_t i = 0; i < n; i++) {
		struct conversation *c = convstore_get(r->convs, keys[i]);
		bool was_held[QUEUE_COUNT] = { false };

		/* Both flags first: a kick that holds again must list the key anew. */
		for (int q = 0; c && q < QUEUE_COUNT; q++) {
			was_held[q] = c->queues[q].held;
			c->queues[q].held = false;
		}
		for (int q = 0; c && q < QUEUE_COUNT; q++)
			if (was_held[q])
				relay_kick(r, c, (enum conv_queue)q);
		free(keys[i]);
	}
	free(keys);
}

void relay_kick(struct relay *r, struct conversation *c, enum conv_queue q)
{
	struct conv_queue_state *qs = &c->queues[q];
	struct store_item it;
	uint64_t now;

	if (qs->busy || qs->scheduled || qs->held)
		return;
	if (!relay_cluster_may_act(r)) {
		relay_cluster_held_back(r);	/* kicked again once the lease is back */
		return;
	}
	if (store_outbox_head(r->store, c->key, queue_names[q], &it) < 0) {
		relay_end_queue_empty(r, c);	/* an ending conversation may leave now */
		return;
	}
	if (q == QUEUE_TO_BOT && c->state == CONV_ENDING && c->dl_gone) {
		give_up_for_gone_bot(r, c, &it);
		return;
	}
	now = clock_wall_ms();
	if (it.next_at_ms > 0 && (uint64_t)it.next_at_ms > now) {
		relay_arm_retry(r, c, q, (uint64_t)it.next_at_ms - now);
		store_item_clear(&it);
		return;
	}
	if (q == QUEUE_TO_HUB && gave_up(r, &it)) {
		log_error(r->rt->log, "relay.gave_up", "conv=%s queue=%s attempts=%d", c->key, queue_names[q], it.attempts);
		metrics_inc(r->m_dropped);
		if (is_escalation(&it) && relay_hub_escalation_failed(r, c, it.id, "the hub could not be reached")) {
			/* one more try, to the fallback, before the item may give up again */
			store_outbox_retry(r->store, it.id, 0, 0);
			it.attempts = 0;
			qs->busy = true;
			relay_hub_deliver(r, c, &it);
			return;
		}
		outbox_done(r, c, q, it.id);
		store_item_clear(&it);
		relay_kick(r, c, q);
		return;
	}
	/* Nothing leaves before its write is committed (PostgreSQL commits a round trip later). */
	if (!store_outbox_durable(r->store, it.id) && hold_until_durable(r, c, q)) {
		store_item_clear(&it);
		return;
	}
	qs->busy = true;
	if (q == QUEUE_TO_BOT) {
		relay_bot_deliver(r, c, &it);
		store_item_clear(&it);
	} else {
		relay_hub_deliver(r, c, &it);
	}
}

/* ---- start and stop ------------------------------------------------------------------- */

static int resume_one(const struct store_conv *sc, void *arg)
{
	struct relay *r = arg;
	struct conversation *c;
	enum conv_state st = CONV_BOT;

	if (convstore_add(r->convs, sc->key, &c) < 0)
		return 0;
	conv_state_parse(sc->state, &st);
	c->state = st;
	conv_set_string(&c->user_json, sc->user_json);
	conv_set_string(&c->hub_data, sc->hub_data);
	conv_set_string(&c->handoff_id, sc->handoff_id);
	conv_set_string(&c->dl_conversation_id, sc->dl_conversation_id);
	c->dl_id_durable = sc->dl_conversation_id != NULL;	/* read from the store */
	conv_set_string(&c->dl_token, sc->dl_token);
	conv_set_string(&c->watermark, sc->watermark);
	c->dl_token_expiry = sc->dl_token_expiry;
	c->active_ms = sc->updated_at * 1000;	/* the last write is the last activity we know */
	if (sc->nseen && (c->seen = malloc(sc->nseen * sizeof(*c->seen)))) {
		memcpy(c->seen, sc->seen, sc->nseen * sizeof(*c->seen));
		c->nseen = sc->nseen;
	}
	/* Reopen the bot side so what the bot said while we were down reaches us (an ending
	 * conversation listens no more; its queue opens the bot side if it must). */
	if (c->dl_conversation_id && c->state != CONV_ENDING)
		relay_bot_open(r, c);
	return 0;
}

static int kick_queue(const char *key, const char *queue, void *arg)
{
	struct relay *r = arg;
	struct conversation *c = convstore_get(r->convs, key);

	for (int q = 0; c && q < QUEUE_COUNT; q++) {
		if (strcmp(queue, queue_names[q]) != 0)
			continue;
		c->pending[q] = (unsigned)store_outbox_count(r->store, key, queue);
		relay_kick(r, c, (enum conv_queue)q);
	}
	return 0;
}

/* Closes C's Direct Line stream without ending the bot's conversation: another process
 * (a restart, a peer) resumes it from the stored watermark. */
static void close_dl(struct conversation *c, void *arg)
{
	(void)arg;
	directline_close(c->dl, false);
	c->dl = NULL;
}

/* {===== a cluster member's conversations, one key at a time (relay_cluster.c) */

void relay_adopt(struct relay *r, const char *key)
{
	struct store_conv sc;
	struct conversation *c;

	if (convstore_get(r->convs, key) || store_conv_get(r->store, key, &sc) < 0)
		return;	/* held already, or nothing stored: its first inbound event opens it */
	if (strcmp(sc.state, "closed") != 0) {
		resume_one(&sc, r);
		if ((c = convstore_get(r->convs, key)) && c->state == CONV_ENDING)
			relay_end_adopt(r, c);	/* counted before its kicks may let it depart */
		kick_queue(key, queue_names[QUEUE_TO_BOT], r);
		kick_queue(key, queue_names[QUEUE_TO_HUB], r);
	}
	store_conv_clear(&sc);
}

void relay_close_streams(struct relay *r)
{
	convstore_each(r->convs, close_dl, NULL);
}

int relay_drop_all(struct relay *r)
{
	struct convstore *fresh = convstore_new(2 * (size_t)r->rt->config->limits.conversations);

	if (!fresh)
		return -ENOMEM;
	relay_close_streams(r);
	while (r->dirty)
		conv_dirty_unlink(r->dirty);
	convstore_free(r->convs);
	r->convs = fresh;
	relay_end_forget_all(r);
	return 0;
}

static void wake_one(struct conversation *c, void *arg)
{
	struct relay *r = arg;

	if (c->dl_conversation_id && !c->dl && c->state != CONV_ENDING)
		relay_bot_open(r, c);
	for (int q = 0; q < QUEUE_COUNT; q++)
		relay_kick(r, c, (enum conv_queue)q);
}

void relay_act_again(struct relay *r)
{
	convstore_each(r->convs, wake_one, r);
}

/* }===== */

static const char *module_short_name(const char *module)
{
	const char *dot = module ? strrchr(module, '.') : NULL;

	return dot ? dot + 1 : module ? module : "hub";
}

static int open_parts(struct relay *r, char *err, size_t errlen)
{
	const struct config *cfg = r->rt->config;
	const char *state = cfg->state;
	char *path;
	struct directline_callbacks cb = relay_bot_callbacks();

	if (strncmp(state, "sqlite:", 7) != 0 && !store_is_postgresql(state)) {
		snprintf(err, errlen, "state \"%s\": sqlite:PATH or postgresql://... expected", state);
		return -EINVAL;
	}
	/* A PostgreSQL URI goes to libpq as it is. */
	path = store_is_postgresql(state) ? strdup(state) : config_resolve_path(cfg, state + 7);
	/* On PostgreSQL the instance is a cluster member (relay_cluster.c): conversations are
	 * loaded when it comes to own them. */
	r->store = path ? store_open_flags(r->rt->loop, r->rt->log, path,
					   store_is_postgresql(state) ? STORE_PER_KEY : 0, err, errlen)
			: NULL;
	free(path);
	if (!r->store)
		return -EIO;
	store_before_commit(r->store, on_before_commit, r);
	store_on_durable(r->store, on_durable, r);
	/* The relay counts open conversations against the limit; the table's own cap also
	 * bounds the ending ones, should their drain stall. */
	r->convs = convstore_new(2 * (size_t)cfg->limits.conversations);
	r->parser = hd_activity_parser_new(NULL);
	r->dl = directline_new(r->rt->loop, r->rt->log, r->rt->http_client, r->rt->metrics, &cfg->directline, &cb, r);
	if (!r->convs || !r->parser || !r->dl) {
		snprintf(err, errlen, "%s", !r->dl ? "the directline settings were refused (see the log)"
						   : "out of memory starting the relay");
		return -EINVAL;
	}
	return 0;
}

static void add_counters(struct relay *r)
{
	struct metrics *m = r->rt->metrics;

	r->m_to_bot = metrics_counter(m, "handoffd_relay_delivered_total", "to=\"bot\"", "Messages delivered");
	r->m_to_hub = metrics_counter(m, "handoffd_relay_delivered_total", "to=\"hub\"", "Messages delivered");
	r->m_suppressed = metrics_counter(m, "handoffd_relay_bot_suppressed_total", NULL,
					  "Bot activities held back because an agent has the conversation");
	r->m_retries = metrics_counter(m, "handoffd_relay_retries_total", NULL, "Deliveries retried");
	r->m_dropped = metrics_counter(m, "handoffd_relay_dropped_total", NULL, "Deliveries given up");
	r->m_handoffs_started = metrics_counter(m, "handoffd_handoffs_total", "result=\"initiated\"", "Handoffs");
	r->m_handoffs_accepted = metrics_counter(m, "handoffd_handoffs_total", "result=\"accepted\"", "Handoffs");
	r->m_handoffs_failed = metrics_counter(m, "handoffd_handoffs_total", "result=\"failed\"", "Handoffs");
	r->m_handoffs_completed = metrics_counter(m, "handoffd_handoffs_total", "result=\"completed\"", "Handoffs");
	relay_observe_init(r);
}

struct relay *relay_new(struct hd_runtime *rt, const struct relay_desk_ops *desk, char *err, size_t errlen)
{
	const struct config *cfg = rt->config;
	struct relay *r = calloc(1, sizeof(*r));

	if (!r) {
		snprintf(err, errlen, "out of memory starting the relay");
		return NULL;
	}
	r->rt = rt;
	rng_seed(&r->rng);
	r->desk = *desk;
	r->desk_only = cfg->front_module != NULL;
	snprintf(r->front, sizeof(r->front), "%s", module_short_name(r->desk_only ? cfg->front_module : cfg->hub_module));
	add_counters(r);
	if (open_parts(r, err, errlen) < 0) {
		relay_free(r);
		return NULL;
	}
	if (relay_end_start(r) < 0) {
		snprintf(err, errlen, "out of memory starting the relay");
		relay_free(r);
		return NULL;
	}
	if (store_pg_conn(r->store) && relay_cluster_start(r, err, errlen) < 0) {
		relay_free(r);
		return NULL;
	}
	store_conv_each_open(r->store, resume_one, r);
	store_outbox_each_queue(r->store, kick_queue, r);
	relay_end_resume(r);
	log_info(rt->log, "relay.ready", "front=%s desk_only=%s resumed=%zu", r->front, r->desk_only ? "yes" : "no",
		 convstore_count(r->convs));
	return r;
}

void relay_free(struct relay *r)
{
	if (!r)
		return;
	r->stopping = true;
	relay_end_stop(r);
	if (r->convs)
		relay_close_streams(r);
	directline_free(r->dl);
	if (r->store) {	/* the dirty rows, before their conversations go */
		store_on_durable(r->store, NULL, NULL);
		store_flush(r->store);
		store_before_commit(r->store, NULL, NULL);
	}
	relay_cluster_stop(r);	/* before the store: the cluster borrows its connection */
	for (size_t i = 0; i < r->nheld; i++)
		free(r->held[i]);
	free(r->held);
	convstore_free(r->convs);
	hd_activity_parser_free(r->parser);
	store_close(r->store);
	free(r);
}
