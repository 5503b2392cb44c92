/* convstore.h - the conversations handoffd holds, in memory, by key.
 * A conversation is keyed by its front hub and the hub's conversation id ("webhook:c-42")
 * and carries the state that decides where each message goes (bot, routing, agent,
 * ending) plus what resuming it needs. An ended conversation leaves the table (its row
 * stays on disk as "closed" until state_retention). convstore.c owns the table, its limit and the
 * state names; relay.c owns the transitions; store.c makes them durable. */
#ifndef HANDOFFD_CONVSTORE_H
#define HANDOFFD_CONVSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dl_conv;
struct hd_handoff;
struct loop_timer;
struct route_decision;

/* ENDING: the conversation is over and its queued work drains (relay_end.c); CLOSED is
 * only ever on disk, the state of an ended conversation's row. */
enum conv_state { CONV_BOT, CONV_ROUTING, CONV_AGENT, CONV_ENDING, CONV_CLOSED, CONV_STATE_COUNT };

/* The outbox queues of a conversation, each delivered in order. */
enum conv_queue { QUEUE_TO_BOT, QUEUE_TO_HUB, QUEUE_COUNT };

struct conv_queue_state {
	bool busy;			/* an item is being delivered */
	bool scheduled;			/* a retry timer is armed */
	bool held;			/* the head item's write is not committed yet (relay.h) */
	struct loop_timer *retry;	/* created on first use */
	void *retry_arg;		/* the timer's argument, freed with it */
};

struct conversation {
	char *key;			/* "<front>:<id>" */
	const char *id;			/* the front's conversation id, inside KEY */
	enum conv_state state;
	int64_t active_ms;		/* wall clock of the last activity either way (idle_timeout) */
	char *user_json;		/* {"id":..,"name":..} as the hub named the customer */
	char *hub_data;			/* JSON the hub scripts keep here */
	char *handoff_id;
	struct dl_conv *dl;		/* NULL until the first message to the bot */
	bool dl_gone;			/* the bot's conversation ended under us (not yet reopened) */
	/* Messages go to the bot only through a Direct Line conversation whose id is
	 * committed (else a restart or the next owner would start another and send again
	 * there). */
	bool dl_id_durable;
	bool dl_id_waiting;		/* for that commit */
	/* Direct Line's position moved while a send to the bot was under way: written when the
	 * send is done, after its outbox item's removal, never before it (a watermark past the
	 * send's echo, committed while the item is still stored, would hide the echo from the
	 * look-up that decides, after a crash, whether to send it again). */
	bool position_pending;
	char *dl_conversation_id;
	char *dl_token;			/* never logged */
	int64_t dl_token_expiry;
	char *watermark;
	uint64_t *seen;
	size_t nseen;
	struct conv_queue_state queues[QUEUE_COUNT];
	unsigned pending[QUEUE_COUNT];	/* undelivered items (limits.queued) */
	/* The routing decision of the escalation being delivered (kept across retries), and
	 * its JSON form for inspection. */
	int64_t route_item;
	struct route_decision *route;	/* one block */
	char *route_json;
	bool route_fallback;		/* it is the fallback destination already */
	/* The handoff of escalation item HANDOFF_ITEM as parsed once (at dispatch, or from
	 * the stored event after a restart): one block (hd_handoff_copy_to). */
	int64_t handoff_item;
	struct hd_handoff *handoff;
	struct conv_events *events;	/* recent lifecycle events, for inspection (conv_events.h) */
	/* Changed this loop turn, its row not yet written: on the relay's dirty list
	 * (DIRTY_PPREV non-NULL), written once just before the turn's commit (relay_save). */
	struct conversation *dirty_next, **dirty_pprev;
	struct conversation *next;	/* hash chain */
};

struct convstore;

struct convstore *convstore_new(size_t max);
/* Frees every conversation (their queue timers included); their dl handles must be
 * closed by the caller first. */
void convstore_free(struct convstore *cs);

struct conversation *convstore_get(struct convstore *cs, const char *key);
/* Adds an empty conversation in state bot. -EEXIST, -ENOSPC (the limit), -ENOMEM. */
int convstore_add(struct convstore *cs, const char *key, struct conversation **out);
void convstore_remove(struct convstore *cs, struct conversation *c);
size_t convstore_count(const struct convstore *cs);
/* How many conversations are in each state: OUT[state]. */
void convstore_count_states(const struct convstore *cs, size_t out[CONV_STATE_COUNT]);
/* Calls FN for each conversation; FN must not add or remove. */
void convstore_each(struct convstore *cs, void (*fn)(struct conversation *c, void *arg), void *arg);

const char *conv_state_name(enum conv_state s);
/* -EINVAL for an unknown name. */
int conv_state_parse(const char *name, enum conv_state *out);
/* Takes C off the dirty list it is on, if any (relay_save). */
void conv_dirty_unlink(struct conversation *c);
/* Replaces *SLOT with a copy of V (NULL allowed). -ENOMEM leaves *SLOT as it was. */
int conv_set_string(char **slot, const char *v);

#endif
