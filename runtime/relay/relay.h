/* relay.h - the job itself: customer <-> bot relay, the handoff, the way back.
 *
 * The relay connects the front hub (where the customer chats), the Direct Line client
 * (the bot) and the desk hub (where agents work; the same module for hubs that are
 * both). The conversation's state alone decides where a message goes:
 *   bot      customer -> bot, bot -> customer
 *   routing  the bot asked for a human: rules chose a destination, the desk is asked
 *   agent    customer -> desk (desk-only hubs; a front+desk hub carries the chat itself),
 *            agent -> customer; nothing from the bot reaches the customer
 *   ending   the conversation is over: what is queued drains, then it leaves memory
 *            (relay_end.c); a message for it afterwards starts a new conversation
 * Everything that must reach the bot or a hub goes through the durable outbox first and
 * is delivered in order per conversation, with retries; a restart resumes every open
 * conversation from its stored watermark and outbox. */
#ifndef HANDOFFD_RELAY_H
#define HANDOFFD_RELAY_H

#include <stdbool.h>
#include <stddef.h>

struct cluster_stats;
struct hd_runtime;
struct relay;
struct relay_conv_view;
struct relay_desk_ops;

/* Opens the state, the Direct Line client, and resumes the stored conversations. DESK
 * (copied) is how the relay calls the hub scripts (relay_desk.h). NULL with ERR when the
 * state cannot be opened or the Direct Line settings are refused. */
struct relay *relay_new(struct hd_runtime *rt, const struct relay_desk_ops *desk, char *err, size_t errlen);
void relay_free(struct relay *r);

/* ---- called by scripts (bindings/handoff.c); ID is the front's conversation id ---- */

/* A customer message (an activity JSON object) arrived at the front. USER_JSON
 * ({"id","name"}) may be NULL. 0, or -ENOSPC (conversation limit), -ENOBUFS (too many
 * queued messages), -EAGAIN (the conversation of ID is ending: retry in a moment),
 * -EINVAL (not an activity), -EIO (state not writable). */
int relay_customer(struct relay *r, const char *id, const char *user_json, const char *activity,
		   size_t len);
/* Sends an activity to the bot whatever the conversation's state. Same errors. */
int relay_to_bot(struct relay *r, const char *id, const char *activity, size_t len);
/* An agent message arrived at the desk: to the customer through the front. 0, or
 * -ENOENT (unknown or ending conversation), -EPERM (the desk does not have it: routing
 * or agent are the states an agent speaks in), -EINVAL (not an activity), -ENOBUFS. */
int relay_agent(struct relay *r, const char *id, const char *activity, size_t len);
/* The desk reports the handoff: "accepted", "failed" or "completed". A completed handoff
 * gives the conversation back to the bot when TO_BOT, else ends it. The state machine
 * is here, not in hub scripts: "accepted" counts in bot (an agent takes over) and
 * routing, "failed" and "completed" only while a handoff is under way (routing, agent);
 * elsewhere they have no effect (a late or repeated word of the hub) and return 0.
 * -ENOENT unknown conversation, -EINVAL unknown STATE. */
int relay_handoff_event(struct relay *r, const char *id, const char *state, bool to_bot);
/* The front ends the conversation: it drains, endOfConversation goes to the bot, and it
 * leaves. 0, or 1 when there was nothing open to end (ended already, or never seen). */
int relay_end(struct relay *r, const char *id);
/* Replaces the conversation's hub data (DATA_JSON, a JSON object), the table hub calls
 * see as conv.data: for what a webhook learns that later calls need. -ENOENT unknown
 * conversation, -EINVAL not an object. */
int relay_set_data(struct relay *r, const char *id, const char *data_json);
/* The hub event the next call above comes from, as a text unique to that call (its event
 * id and the call's rank in its handler), or NULL: a cluster member stores the call under
 * it, so a delivery retried elsewhere adds nothing twice. Borrowed until set again. */
void relay_set_origin(struct relay *r, const char *origin);
/* Remembers a hub event id: 1 new, 0 duplicate, negative errno. */
int relay_event_seen(struct relay *r, const char *event_id);
/* The same, answered by the database: 1 or 0 at once, -EINPROGRESS and FN(ARG, answer)
 * later from the loop (a PostgreSQL state), or a negative errno. */
int relay_event_seen_async(struct relay *r, const char *event_id, void (*fn)(void *arg, int rc), void *arg);
/* Forgets it again (the event's effect failed before anything was committed). */
int relay_event_forget(struct relay *r, const char *event_id);

/* The conversation of ID as scripts see it: 0 and *OUT (its strings borrowed until the
 * next relay call), or -ENOENT. */
int relay_conversation_of(struct relay *r, const char *id, struct relay_conv_view *out);
/* A cluster member's answer for a conversation it does not hold: the database's row, a
 * read-only snapshot. -EINPROGRESS and FN(ARG, 0, view) later (the view borrowed for the
 * call), or FN(ARG, -ENOENT, NULL); or -EOPNOTSUPP (not a cluster member: FN never runs). */
int relay_conversation_fetch(struct relay *r, const char *id,
			     void (*fn)(void *arg, int err, const struct relay_conv_view *v), void *arg);
/* Open conversations (bot, routing, agent): what limits.conversations counts. */
size_t relay_conversation_count(const struct relay *r);
/* Conversations in memory by state, for /healthz and /metrics. */
struct relay_counts {
	size_t bot, routing, agent;	/* open */
	size_t ending;			/* over, draining their queues */
};
void relay_conversation_counts(const struct relay *r, struct relay_counts *out);
/* Open Direct Line conversations by stream: STREAMING (socket open or opening, or polling)
 * and PARKED (directline.park_after, or an agent has the conversation). */
void relay_stream_counts(const struct relay *r, size_t *streaming, size_t *parked);

/* Whether writes wait for the end-of-turn commit. */
bool relay_write_pending(const struct relay *r);
/* Runs FN(ARG) once everything written so far is durable. */
int relay_after_commit(struct relay *r, void (*fn)(void *arg), void *arg);
/* Inside FN: 0 when the writes are committed; else a negative errno: they stay queued and
 * are written once the database is back (PostgreSQL), so the caller must not undo them. */
int relay_commit_error(const struct relay *r);

/* ---- several instances on one PostgreSQL (relay_cluster.c) ---- */

/* False when the state is not PostgreSQL; else true and *OUT filled. */
bool relay_cluster_stats(const struct relay *r, struct cluster_stats *out);
/* A graceful leave (SIGTERM): nothing new starts, what is under way finishes (at most
 * TIMEOUT_MS), the writes commit, the conversations are released to the other instances;
 * then DONE(ARG). Returns 0, or -EOPNOTSUPP without a cluster (DONE is not called). */
int relay_cluster_leave(struct relay *r, uint64_t timeout_ms, void (*done)(void *arg), void *arg);

#endif
