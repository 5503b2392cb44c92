/* relay_end.c - how a conversation ends and leaves: the ending (who is told), the drain
 * (what was queued is delivered or given up first), the departure from memory, the idle
 * expiry (limits.idle_timeout) and the removal of ended rows from disk (state_retention).
 *
 * An ending conversation is in state "ending" (durable): nothing new is relayed for it,
 * its goodbyes are the last items of its queues (endOfConversation for the bot, the
 * hub's conversation_end for the front, and the desk of a desk-only setup), and once
 * both queues are empty it is written as "closed" and removed from memory. A restart
 * finds "ending" rows and finishes the drain from the outbox, so an ending step is never
 * lost nor done twice. */
#include "relay/relay_internal.h"

#include "base/clock.h"
#include "base/config.h"
#include "directline/directline.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"
#include "base/hd_runtime.h"
#include "relay/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Sweep periods: a fraction of the timeout they serve, within these bounds. */
#define SWEEP_MIN_MS 50
#define IDLE_SWEEP_MAX_MS 60000
#define PURGE_SWEEP_MAX_MS 3600000
/* Hub event ids are remembered at least this long whatever state_retention says: hubs
 * retry an event for minutes (hubs.md: up to 10). */
#define EVENT_TTL_MIN_S 600

static const char *const cause_names[END_CAUSE_COUNT] = { "hub", "bot", "handoff", "directline", "idle" };
static const char *const cause_texts[END_CAUSE_COUNT] = {
	"the front ended the conversation", "the bot ended the conversation",
	"the handoff completed without return to the bot", "the bot's conversation is gone",
	"idle timeout",
};

struct relay_end {
	struct loop_timer *finish;	/* departs the drained conversations, next loop turn */
	struct loop_timer *idle;	/* idle sweep; NULL when idle_timeout is 0 */
	struct loop_timer *purge;	/* retention sweep */
	char **drained;			/* keys of ending conversations whose queues ran empty */
	size_t ndrained, capdrained;
	size_t ending;			/* conversations in state ending */
	size_t purged;			/* rows removed, not yet logged (after their commit) */
	uint64_t *m_ended[END_CAUSE_COUNT];
	uint64_t *m_departed;
};

void relay_end_touch(struct conversation *c)
{
	c->active_ms = (int64_t)clock_wall_ms();
}

/* ---- the ending ---------------------------------------------------------------------- */

static bool tells_bot(enum relay_end_cause cause)
{
	return cause == END_BY_FRONT || cause == END_BY_HANDOFF || cause == END_IDLE;
}

/* The front is told unless it said so itself (a desk-only hub's desk closing a handoff
 * is news to the front). */
static bool tells_front(const struct relay *r, enum relay_end_cause cause)
{
	return cause == END_BY_BOT || cause == END_DL_GONE || cause == END_IDLE ||
	       (cause == END_BY_HANDOFF && r->desk_only);
}

/* A desk-only setup's desk hears of an end it did not decide while it has (or is being
 * asked to take) the conversation, so its agent is not left talking to no one. */
static bool tells_desk(const struct relay *r, enum relay_end_cause cause, enum conv_state was)
{
	return r->desk_only && cause != END_BY_HANDOFF && (was == CONV_ROUTING || was == CONV_AGENT);
}

/* Whether the bot has, or is about to get, a conversation to say goodbye in. */
static bool bot_involved(const struct conversation *c)
{
	return c->dl || c->dl_conversation_id || c->pending[QUEUE_TO_BOT] > 0;
}

/* Queues the hub's conversation_end for ROLE. */
static void queue_hub_end(struct relay *r, struct conversation *c, enum relay_role role, enum relay_end_cause cause)
{
	char ev[128];
	/* The id lets the hub drop a retry it already has (the contract's rule). */
	int n = snprintf(ev, sizeof(ev), "{\"id\":\"end-%016llx\",\"reason\":\"%s\"}",
			 (unsigned long long)rng_next(&r->rng), cause_names[cause]);

	relay_hub_enqueue(r, c, role, "conversation_end", ev, (size_t)n, false);
}

static void queue_goodbyes(struct relay *r, struct conversation *c, enum relay_end_cause cause,
			   enum conv_state was)
{
	static const char eoc[] = "{\"type\":\"endOfConversation\"}";

	if (tells_bot(cause) && bot_involved(c))
		relay_enqueue_from(r, c, QUEUE_TO_BOT, eoc, sizeof(eoc) - 1, false);
	if (tells_desk(r, cause, was))
		queue_hub_end(r, c, RELAY_DESK, cause);
	if (tells_front(r, cause))
		queue_hub_end(r, c, RELAY_FRONT, cause);
}

void relay_end_begin(struct relay *r, struct conversation *c, enum relay_end_cause cause)
{
	enum conv_state was = c->state;

	if (was == CONV_ENDING)
		return;
	relay_set_state(r, c, CONV_ENDING, cause_texts[cause]);
	r->end->ending++;
	metrics_inc(r->end->m_ended[cause]);
	queue_goodbyes(r, c, cause, was);
	for (int q = 0; q < QUEUE_COUNT; q++)
		relay_kick(r, c, (enum conv_queue)q);	/* an empty queue reports its drain */
}

static void resume_ending(struct conversation *c, void *arg)
{
	struct relay *r = arg;

	if (c->state != CONV_ENDING)
		return;
	r->end->ending++;
	for (int q = 0; q < QUEUE_COUNT; q++)
		relay_kick(r, c, (enum conv_queue)q);	/* an empty queue reports its drain */
}

void relay_end_resume(struct relay *r)
{
	convstore_each(r->convs, resume_ending, r);
}

void relay_end_adopt(struct relay *r, struct conversation *c)
{
	if (c->state == CONV_ENDING)
		r->end->ending++;
}

void relay_end_forget_all(struct relay *r)
{
	struct relay_end *e = r->end;

	for (size_t i = 0; i < e->ndrained; i++)
		free(e->drained[i]);
	e->ndrained = 0;
	e->ending = 0;
}

/* ---- the drain and the departure ---------------------------------------------------- */

static bool drained(const struct relay *r, const struct conversation *c)
{
	for (int q = 0; q < QUEUE_COUNT; q++) {
		struct store_item it;

		if (c->queues[q].busy || c->queues[q].scheduled)
			return false;
		if (store_outbox_head(r->store, c->key, relay_queue_name((enum conv_queue)q), &it) != -ENOENT) {
			store_item_clear(&it);
			return false;
		}
	}
	return true;
}

/* The conversation leaves: its row says closed (kept until state_retention), its Direct
 * Line handle is given back, its slot is free. */
static void depart(struct relay *r, struct conversation *c)
{
	log_info(r->rt->log, "conv.ended", "conv=%s dl=%s", c->key, c->dl_conversation_id ? c->dl_conversation_id : "-");
	directline_close(c->dl, false);	/* the goodbye, if any, went through the queue */
	c->dl = NULL;
	conv_set_string(&c->dl_token, NULL);	/* nothing may use it any more */
	c->state = CONV_CLOSED;
	relay_save_now(r, c);	/* C leaves memory: not left on the dirty list */
	r->end->ending--;
	metrics_inc(r->end->m_departed);
	convstore_remove(r->convs, c);
}

static void on_finish(void *arg)
{
	struct relay *r = arg;
	struct relay_end *e = r->end;
	size_t n = e->ndrained;

	/* Keys added while departing (none today) wait for the next turn. */
	for (size_t i = 0; i < n; i++) {
		struct conversation *c = convstore_get(r->convs, e->drained[i]);

		if (c && c->state == CONV_ENDING && drained(r, c))
			depart(r, c);
		free(e->drained[i]);
	}
	memmove(e->drained, e->drained + n, (e->ndrained - n) * sizeof(*e->drained));
	e->ndrained -= n;
}

/* Called by the queue runner when a queue of C is found empty. The departure waits for
 * the next loop turn: the caller may still be using C. */
void relay_end_queue_empty(struct relay *r, struct conversation *c)
{
	struct relay_end *e = r->end;
	char *key;

	if (c->state != CONV_ENDING || !e)
		return;
	if (e->ndrained == e->capdrained) {
		size_t cap = e->capdrained ? e->capdrained * 2 : 16;
		char **d = realloc(e->drained, cap * sizeof(*d));

		if (!d)
			return;	/* the next kick or the idle sweep tries again */
		e->drained = d;
		e->capdrained = cap;
	}
	if (!(key = strdup(c->key)))
		return;
	e->drained[e->ndrained++] = key;
	loop_timer_start(e->finish, 0, 0);
}

/* ---- idle expiry --------------------------------------------------------------------- */

static uint64_t sweep_period(double timeout_s, uint64_t max_ms)
{
	double ms = timeout_s * 1000.0 / 4.0;

	return ms < SWEEP_MIN_MS ? SWEEP_MIN_MS : ms > (double)max_ms ? max_ms : (uint64_t)ms;
}

struct idle_sweep {
	struct relay *r;
	int64_t before_ms;
};

static void end_if_idle(struct conversation *c, void *arg)
{
	struct idle_sweep *s = arg;

	/* Ending adds nothing to the table and removes nothing from it (departures wait for
	 * the next turn), so it is safe inside convstore_each. */
	if (c->state != CONV_ENDING && c->active_ms < s->before_ms) {
		log_info(s->r->rt->log, "conv.idle", "conv=%s idle_s=%lld", c->key,
			 (long long)(((int64_t)clock_wall_ms() - c->active_ms) / 1000));
		relay_end_begin(s->r, c, END_IDLE);
	} else if (c->state == CONV_ENDING && drained(s->r, c)) {
		relay_end_queue_empty(s->r, c);	/* a departure that could not be noted earlier */
	}
}

static void on_idle_sweep(void *arg)
{
	struct relay *r = arg;
	int64_t idle_ms = (int64_t)(r->rt->config->limits.idle_timeout * 1000.0);
	struct idle_sweep s = { r, (int64_t)clock_wall_ms() - idle_ms };

	convstore_each(r->convs, end_if_idle, &s);
}

/* ---- retention ------------------------------------------------------------------------ */

static int64_t event_ttl_s(const struct config *cfg)
{
	return cfg->state_retention > EVENT_TTL_MIN_S ? (int64_t)cfg->state_retention : EVENT_TTL_MIN_S;
}

static void log_purged(void *arg)
{
	struct relay *r = arg;

	if (!r->end->purged)
		return;	/* a later commit of the same sweep logged them already */
	log_info(r->rt->log, "conv.purged", "count=%zu retention_s=%.0f", r->end->purged, r->rt->config->state_retention);
	r->end->purged = 0;
}

static void on_purge(void *arg)
{
	struct relay *r = arg;
	double keep = r->rt->config->state_retention;
	int64_t now = (int64_t)time(NULL);
	int n = store_purge_ended(r->store, now - (int64_t)keep, now - event_ttl_s(r->rt->config));

	if (n > 0) {
		r->end->purged += (size_t)n;
		store_after_commit(r->store, log_purged, r);	/* logged once they are gone for good */
	}
	/* A backlog goes in batches, one per loop turn. */
	loop_timer_start(r->end->purge, n == STORE_PURGE_BATCH ? 0 : sweep_period(keep, PURGE_SWEEP_MAX_MS), 0);
}

/* ---- counts, start, stop -------------------------------------------------------------- */

size_t relay_end_ending(const struct relay *r)
{
	return r->end ? r->end->ending : 0;
}

static void add_counters(struct relay *r)
{
	struct metrics *m = r->rt->metrics;
	char labels[32];

	for (int i = 0; i < END_CAUSE_COUNT; i++) {
		snprintf(labels, sizeof(labels), "cause=\"%s\"", cause_names[i]);
		r->end->m_ended[i] = metrics_counter(m, "handoffd_conversations_ended_total", labels,
						     "Conversations that ended, by what ended them");
	}
	r->end->m_departed = metrics_counter(m, "handoffd_conversations_departed_total", NULL,
					     "Ended conversations drained and removed from memory");
}

int relay_end_start(struct relay *r)
{
	const struct config *cfg = r->rt->config;
	struct relay_end *e = calloc(1, sizeof(*e));

	if (!e)
		return -ENOMEM;
	r->end = e;
	add_counters(r);
	store_set_event_ttl(r->store, event_ttl_s(cfg));
	e->finish = loop_timer_new(r->rt->loop, on_finish, r);
	e->purge = loop_timer_new(r->rt->loop, on_purge, r);
	if (cfg->limits.idle_timeout > 0)
		e->idle = loop_timer_new(r->rt->loop, on_idle_sweep, r);
	if (!e->finish || !e->purge || (cfg->limits.idle_timeout > 0 && !e->idle))
		return -ENOMEM;
	if (e->idle)
		loop_timer_start(e->idle, sweep_period(cfg->limits.idle_timeout, IDLE_SWEEP_MAX_MS), 1);
	loop_timer_start(e->purge, 0, 0);
	return 0;
}

void relay_end_stop(struct relay *r)
{
	struct relay_end *e = r->end;

	if (!e)
		return;
	loop_timer_free(e->finish);
	loop_timer_free(e->idle);
	loop_timer_free(e->purge);
	for (size_t i = 0; i < e->ndrained; i++)
		free(e->drained[i]);
	free(e->drained);
	free(e);
	r->end = NULL;
}
