/* relay_internal.h - what relay.c (states, queue runner), relay_bot.c (Direct Line
 * streams and sends), relay_hub.c (deliveries to hub scripts, the handoff's escalation)
 * and relay_end.c (ending, drain, idle expiry, retention) share. Nothing else includes it. */
#ifndef HANDOFFD_RELAY_INTERNAL_H
#define HANDOFFD_RELAY_INTERNAL_H

#include "base/random.h"
#include "relay/convstore.h"
#include "relay/relay.h"
#include "relay/relay_desk.h"
#include "relay/store.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

struct directline_callbacks;
struct dl_conv;
struct hd_activity;
struct relay_cluster;
struct relay_end;

/* What ended a conversation; decides who is told (relay_end.c). */
enum relay_end_cause {
	END_BY_FRONT,		/* the front hub: conversation.end or its own closing signal */
	END_BY_BOT,		/* the bot sent endOfConversation */
	END_BY_HANDOFF,		/* the handoff completed without return to the bot */
	END_DL_GONE,		/* Direct Line: the conversation is gone (404, token lost) */
	END_IDLE,		/* limits.idle_timeout without activity either way */
	END_CAUSE_COUNT
};

/* An outbox item of the hub queue that hands a conversation to the desk. */
static inline bool is_escalation(const struct store_item *it)
{
	return it->fn && strcmp(it->fn, "escalate") == 0;
}

struct relay {
	struct hd_runtime *rt;
	struct store *store;
	struct convstore *convs;
	struct directline *dl;
	struct hd_activity_parser *parser;	/* for activities read back from the outbox */
	struct relay_desk_ops desk;	/* the hub scripts (relay_desk.h) */
	char front[64];			/* key prefix: the front module's last name */
	bool desk_only;			/* front and desk are different modules */
	struct rng rng;				/* retry jitter, handoff ids */
	struct relay_end *end;		/* relay_end.c's timers and counts */
	struct relay_cluster *cluster;	/* relay_cluster.c's; NULL unless the state is PostgreSQL */
	const char *origin;		/* relay_set_origin's, borrowed */
	/* relay_free has begun: the store's last after-commit callbacks, run by its final
	 * flush and its close, find the conversations and Direct Line gone, and act on nothing. */
	bool stopping;
	struct conversation *dirty;	/* rows to write before the commit (relay_save) */
	char **held;			/* keys of conversations whose next item waits for its commit */
	size_t nheld, capheld;
	uint64_t *m_to_bot, *m_to_hub, *m_suppressed, *m_retries, *m_dropped;
	uint64_t *m_handoffs_started, *m_handoffs_accepted, *m_handoffs_failed, *m_handoffs_completed;
	struct metrics_histogram *h_to_bot, *h_to_hub, *h_handoff_answer, *h_handoff_accepted;
};

/* relay.c */
/* "to_bot", "to_hub": the outbox queue names. */
const char *relay_queue_name(enum conv_queue q);
/* C's row is written once, just before the turn's commit, however often it changes. */
void relay_save(struct relay *r, struct conversation *c);
/* C's row written now and C off the dirty list: before C leaves memory. */
void relay_save_now(struct relay *r, struct conversation *c);
void relay_set_state(struct relay *r, struct conversation *c, enum conv_state s, const char *why);
/* Queues PAYLOAD on Q of C; FROM_FRONT applies limits.queued. 0, -ENOBUFS or -EIO. */
int relay_enqueue_from(struct relay *r, struct conversation *c, enum conv_queue q, const char *payload,
		       size_t len, bool from_front);
/* Delivers the next item of Q when none is under way. */
void relay_kick(struct relay *r, struct conversation *c, enum conv_queue q);
/* Item ID of Q was delivered (or dropped): off the outbox, on to the next. */
void relay_item_finished(struct relay *r, struct conversation *c, enum conv_queue q, int64_t id);
/* Item ID failed for now: retried after a backoff, at least AT_LEAST_MS. */
void relay_retry_later(struct relay *r, struct conversation *c, enum conv_queue q, int64_t id,
		       int attempts, uint64_t at_least_ms);
/* The backoff after ATTEMPTS tries (retry.base, retry.max_delay), at least 1 ms. */
uint64_t relay_backoff_ms(struct relay *r, int attempts);
/* Runs Q of C again in DELAY_MS (its retry timer); -ENOMEM when no timer could be made. */
int relay_arm_retry(struct relay *r, struct conversation *c, enum conv_queue q, uint64_t delay_ms);

/* relay_bot.c */
/* Direct Line's callbacks for the relay's client (directline_new). */
struct directline_callbacks relay_bot_callbacks(void);
/* C's Direct Line stream, opened (resumed from C's stored position) when it is not: NULL
 * when it cannot be, or not yet (a cluster member without its lease). */
struct dl_conv *relay_bot_open(struct relay *r, struct conversation *c);
/* C's state changed from FROM: its stream is parked while an agent has C, woken after. */
void relay_bot_park_for_state(struct conversation *c, enum conv_state from);
/* Counts an attempt on IT, the head of C's to_bot queue, and sends it once that count is
 * committed (and C's Direct Line conversation id with it). IT's contents may be taken for
 * the send, leaving IT empty; the caller clears IT either way. */
void relay_bot_deliver(struct relay *r, struct conversation *c, struct store_item *it);
/* Posts handoff.status STATE (MESSAGE: a JSON string or NULL) to the bot when configured. */
void relay_report_status(struct relay *r, struct conversation *c, const char *state, const char *message);

/* relay_hub.c */
/* C as hub calls see it (borrowed from C). */
void relay_view(const struct conversation *c, struct relay_conv_view *v);
/* Delivers outbox item IT (ownership of its strings taken) to the hub scripts. */
void relay_hub_deliver(struct relay *r, struct conversation *c, struct store_item *it);
/* Queues a call of ROLE's FN with RAW (an activity or event, JSON) for the hub. */
int relay_hub_enqueue(struct relay *r, struct conversation *c, enum relay_role role, const char *fn,
		      const char *raw, size_t len, bool from_front);
void relay_hub_start_handoff(struct relay *r, struct conversation *c, const struct hd_activity *a);
void relay_hub_typing(struct relay *r, struct conversation *c, const struct hd_activity *a);
void relay_hub_accepted(struct relay *r, struct conversation *c, const char *why);
void relay_hub_failed(struct relay *r, struct conversation *c, const char *reason);
/* The escalation (item ITEM) failed for good: true when the fallback is tried instead. */
bool relay_hub_escalation_failed(struct relay *r, struct conversation *c, int64_t item, const char *err);

/* A cluster member's conversations, one key at a time: */
/* KEY's stored conversation (store_load'ed) is now held here: resumed, its queues run. */
void relay_adopt(struct relay *r, const char *key);
/* Every conversation leaves memory without a write; Direct Line handles are closed. */
int relay_drop_all(struct relay *r);
/* Every Direct Line handle is closed, the conversations stay: a leaving member takes in
 * nothing more from the bot once it is about to commit for the last time. */
void relay_close_streams(struct relay *r);
/* What the lease gate held back goes now: streams open, queues run. */
void relay_act_again(struct relay *r);

/* relay_cluster.c: membership (cluster.h) wired to the relay */
int relay_cluster_start(struct relay *r, char *err, size_t errlen);
void relay_cluster_stop(struct relay *r);
/* Whether the hub scripts' calls go to the inbound table (a cluster member, outside the
 * replay of that table). */
bool relay_cluster_forwards(const struct relay *r);
/* Stores the call OP (relay.h's entry point of that name) for its conversation's owner:
 * 0 (the caller waits for the commit), or -EINVAL, -EIO. */
int relay_cluster_forward(struct relay *r, const char *op, const char *id, const char *arg, bool flag,
			  const char *payload, size_t len);
/* Whether sends, hub calls and streams may start: no cluster, or its lease is valid and
 * it is not draining. */
bool relay_cluster_may_act(const struct relay *r);
/* Whether a send already started may still leave: no cluster, or its lease is valid (a
 * draining member lets what is under way finish). */
bool relay_cluster_lease_valid(const struct relay *r);
/* Something was held back by that gate: relay_act_again once it opens. */
void relay_cluster_held_back(struct relay *r);
/* Changes each time every conversation was dropped (lost): callbacks that outlived it
 * find nothing. */
uint64_t relay_cluster_generation(const struct relay *r);

/* relay_end.c */
/* An adopted conversation that is ending counts as such. */
void relay_end_adopt(struct relay *r, struct conversation *c);
/* Every conversation was dropped: nothing is ending any more. */
void relay_end_forget_all(struct relay *r);
/* Creates the lifecycle timers and counters; before conversations are resumed. */
int relay_end_start(struct relay *r);
void relay_end_stop(struct relay *r);
/* After the resume: ending conversations finish their drain. */
void relay_end_resume(struct relay *r);
/* Ends C: state ending, the goodbyes queued after what is queued already; C leaves
 * memory once both its queues are empty. No-op when it is ending already. */
void relay_end_begin(struct relay *r, struct conversation *c, enum relay_end_cause cause);
/* The queue runner found a queue of C empty (C stays valid: departures wait a turn). */
void relay_end_queue_empty(struct relay *r, struct conversation *c);
/* Activity either way: resets C's idle clock. */
void relay_end_touch(struct conversation *c);
/* Conversations in state ending. */
size_t relay_end_ending(const struct relay *r);
/* relay_observe.c: latency histograms and the conversation's recent events */
void relay_observe_init(struct relay *r);
/* An item of Q queued at CREATED_MS (wall clock) was delivered. */
void relay_observe_delivered(struct relay *r, struct conversation *c, enum conv_queue q, int64_t created_ms);
void relay_observe_handoff(struct relay *r, struct conversation *c);
/* The desk took the escalation; ANSWER is what it said ("accepted", "queued"). */
void relay_observe_answer(struct relay *r, struct conversation *c, const char *answer);
void relay_observe_accepted(struct relay *r, struct conversation *c, const char *why);
/* A hub call (DESK: to the desk module) of FN started at STARTED_MS (wall clock) ended;
 * STARTED_MS 0 only creates its series. */
void relay_observe_hub_call(struct relay *r, bool desk, const char *fn, uint64_t started_ms);

#endif
