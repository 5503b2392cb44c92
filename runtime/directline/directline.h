/* directline.h - Direct Line 3.0 client: one bot conversation per relay conversation.
 * A struct directline is one bot (its credentials, base URL and settings) and holds any
 * number of conversations on the loop. Each conversation gets its token, starts or
 * resumes, receives over a WebSocket stream (or by polling), reconnects without loss
 * from its watermark, refreshes its token, and sends activities in order. Parsed bot
 * activities come out of one dispatch point, the on_activity callback.
 *
 * Ownership and reentrancy, in one place:
 * - The caller owns each struct dl_conv from directline_open() until it calls
 *   directline_close(), exactly once. After a terminal state (DL_STATE_ENDED,
 *   DL_STATE_FAILED) the conversation holds no socket, timer or request any more, but
 *   the handle stays valid until directline_close(), which may be called from inside
 *   on_state itself.
 * - Callbacks run from the loop, never from inside the call that caused them (directline_
 *   open/send/close never call on_activity, on_state or on_persist synchronously), with
 *   one documented exception: directline_close() and directline_free() call the done
 *   callback of every unfinished send with -ECANCELED before they return.
 * - Inside any callback the caller may call directline_send(), directline_open() and
 *   directline_close() on any conversation, this one included. directline_free() must not
 *   be called from a callback.
 * - Everything a callback receives is borrowed and dies when the callback returns. */
#ifndef HANDOFFD_DIRECTLINE_H
#define HANDOFFD_DIRECTLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config_directline;
struct hd_activity;
struct http_client;
struct log;
struct loop;
struct metrics;

struct directline;
struct dl_conv;

enum dl_state {
	DL_STATE_CONNECTING,	/* getting a token, starting or resuming the conversation */
	DL_STATE_ONLINE,	/* receiving: stream open, or polling */
	DL_STATE_RECONNECTING,	/* receive path lost; waiting or reconnecting from the watermark */
	DL_STATE_ENDED,		/* terminal: endOfConversation, 404, or closed */
	DL_STATE_FAILED,	/* terminal: credentials refused or token lost for good */
};

/* What the store keeps to resume a conversation later (daemon restart, another instance). */
struct dl_persist {
	const char *conversation_id;
	const char *token;		/* never log it */
	int64_t token_expires;		/* wall clock, unix seconds */
	const char *watermark;		/* verbatim; NULL before the first one */
	const uint64_t *seen;		/* dedupe_hash() of recently seen activity ids, oldest first */
	size_t nseen;
	/* A send was unsettled (posted, or maybe posted by an earlier process, and not yet
	 * reported done): WATERMARK is from before it, so that after a restart its echo is
	 * still in what Direct Line gives from there. On resume: say whether a send of the
	 * conversation may have been under way when this was saved (the caller's outbox
	 * knows); the position is then kept where it is until the next send settles. */
	bool unsettled;
};

struct directline_callbacks {
	/* One bot activity (or a user activity from another client, with its role), exactly
	 * once and in arrival order. Echoes of what we sent (this process or an earlier one:
	 * a clientActivityID of ours) never come here. A is valid during the call only. */
	void (*on_activity)(struct dl_conv *c, const char *key, const struct hd_activity *a, void *arg);
	/* A state change with a short, stable reason ("started", "stream lost", "collision",
	 * "parked", "endOfConversation", "not found", "token expired", "closed", ...). */
	void (*on_state)(struct dl_conv *c, const char *key, enum dl_state state, const char *reason,
			 void *arg);
	/* The conversation id, the token or the watermark changed. The watermark changes only
	 * after on_activity returned for every activity of its set. May be NULL. */
	void (*on_persist)(struct dl_conv *c, const char *key, const struct dl_persist *p, void *arg);
	/* Asked right before an activity's POST leaves: false holds it back, and it is posted
	 * later, as one that never left (a cluster member's lease). May be NULL: always. */
	bool (*may_send)(void *arg);
};

/* A send finished: ERR 0 ("ok") and the id Direct Line gave the activity (NULL when the
 * answer had none, or when only the echo proved it arrived), or a negative errno and
 * REASON, one of: "bad request" (400), "unauthorized" (401), "forbidden" (403 other than
 * an expired token, which is re-acquired and retried), "not found" (404; the conversation
 * ends), "too large" (413), "rejected" (another 4xx), "unconfirmed" (502/504/timeout, no
 * echo, and the same after one resend), "retries exhausted" (500s, 429s or requests that
 * never left, too many times), "ended" (the conversation ended first), "closed"
 * (directline_close/free, -ECANCELED). */
typedef void (*dl_send_done_fn)(struct dl_conv *c, int err, const char *reason,
				const char *activity_id, void *arg);

/* Builds a client for one bot. CFG is copied (the secret is added to LG's redaction
 * list); LP, LG, HC and M are borrowed and must outlive it. CB is copied; ARG is passed to
 * every callback. NULL on failure (bad settings, out of memory), logged. */
struct directline *directline_new(struct loop *lp, struct log *lg, struct http_client *hc,
				  struct metrics *m, const struct config_directline *cfg,
				  const struct directline_callbacks *cb, void *arg);
/* Ends every conversation (no on_state; unfinished sends get -ECANCELED "closed") and
 * frees the client. NULL is a no-op. Not from inside a callback. */
void directline_free(struct directline *dl);

/* Opens a conversation for KEY (copied; the relay's conversation key, printable). RESUME
 * NULL starts a new Direct Line conversation; otherwise it is resumed from what an
 * on_persist gave (copied): its id, watermark and seen ids, and its token unless that
 * expired (or is NULL), when a new one is acquired if the credentials allow it (a
 * secret). Progress comes through on_state. NULL when out of memory or when RESUME
 * has no conversation id. */
struct dl_conv *directline_open(struct directline *dl, const char *key,
				const struct dl_persist *resume);

/* Queues one activity (a JSON object of LEN bytes, e.g. {"type":"message","text":"hi"})
 * for sending after every activity queued before it. `from` is set to our user and
 * `channelData.clientActivityID` to a fresh id (other channelData members are kept).
 * Returns 0 and later calls DONE exactly once (DONE may be NULL); or -EINVAL (not a JSON
 * object with a string "type"), -EFBIG (too large), -ENOBUFS (queue full), -ESHUTDOWN
 * (terminal state), -ENOMEM, and then DONE is never called. */
int directline_send(struct dl_conv *c, const char *activity_json, size_t len,
		    dl_send_done_fn done, void *arg);

/* Who an activity is across restarts: the caller's durable record of it. */
struct dl_send_item {
	int64_t id;		/* the caller's id of the record, > 0 */
	int64_t created_ms;	/* when the record was made: with ID, unique even if ids recur */
	/* An earlier attempt may have reached Direct Line (a POST was started before a crash
	 * or a close). Before posting, the conversation's history is read from the stored
	 * watermark: when the activity is there, the send succeeds without a POST. */
	bool maybe_sent;
};

/* directline_send with ITEM's identity: the clientActivityID is derived from ITEM (the
 * same after a restart), so whether a send that may have left arrived can be told from
 * the history. A "maybe sent" item waits at least directline.echo_grace seconds after the
 * conversation was opened (a POST cut by a crash may still be landing), then its echo
 * (seen on the stream, or found by GET /activities from the watermark) decides: found, it
 * is done; absent, it is posted. A GET that fails is retried with backoff. An item whose
 * payload carries an older version's channelData.handoffd marker also matches the echo
 * carrying that marker. */
int directline_send_item(struct dl_conv *c, const char *activity_json, size_t len,
			 const struct dl_send_item *item, dl_send_done_fn done, void *arg);

/* Gives the handle back. Unfinished sends get -ECANCELED "closed" before this returns.
 * END_CONVERSATION: tell the bot with an endOfConversation activity (best effort, in the
 * background). No callback mentions C afterwards. NULL is a no-op. */
void directline_close(struct dl_conv *c, bool end_conversation);

/* Parking (directline.park_after, parked_sync): the conversation's stream closes while it
 * keeps its id, watermark and token; a GET from the watermark every parked_sync seconds
 * reads what the bot says meanwhile (through on_activity as usual). An idle stream parks
 * itself after park_after seconds without a send or an activity and wakes on the next
 * directline_send. directline_park holds C parked until directline_wake (sends go out
 * without waking it: e.g. status events while an agent has the conversation);
 * directline_wake first reads by GET what came while held, then reopens the stream from
 * the watermark. Both are no-ops on a terminal or NULL handle and never call back
 * synchronously. */
void directline_park(struct dl_conv *c);
void directline_wake(struct dl_conv *c);
/* True from directline_park until the wake's GET has dispatched what came meanwhile: an
 * activity dispatched while C is held was said while it was held. */
bool directline_held(const struct dl_conv *c);
/* Whether C's stream is parked now (for inspection). */
bool directline_parked(const struct dl_conv *c);

const char *directline_key(const struct dl_conv *c);
/* The Direct Line conversation id, or NULL before it is known. */
const char *directline_conversation_id(const struct dl_conv *c);
enum dl_state directline_state(const struct dl_conv *c);
/* "connecting", "online", "reconnecting", "ended", "failed". */
const char *directline_state_name(enum dl_state s);

/* Figures for benchmarks and the admin API. */
struct directline_stats {
	size_t conversations;		/* open handles */
	size_t online, reconnecting;
	size_t parked;			/* open handles whose stream is parked (the rest stream) */
	unsigned connects_in_flight;	/* opens and reconnects holding a slot */
	unsigned connects_peak;		/* the most ever held at once */
	size_t connects_queued;		/* waiting for a slot */
	uint64_t dispatched, duplicates, echoes, reconnects, refreshes;
	/* Time spent handling a received payload (parse, dedupe, dispatch), per activity,
	 * in microseconds: a log2 histogram, bucket i counting values in [2^(i-1), 2^i). */
	uint64_t dispatch_us_hist[24];
};
void directline_get_stats(const struct directline *dl, struct directline_stats *out);

#endif
