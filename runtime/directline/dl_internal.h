/* dl_internal.h - what the parts of the Direct Line client share; not a public interface.
 * directline.c   the public API, lifetimes, states, endings, the global connect slots
 * dl_http.c      REST requests, status and error-body reading, Retry-After, backoff
 * dl_token.c     credentials, starting conversations, token refresh and re-acquisition
 * dl_stream.c    the receive path: resume, WebSocket stream, polling, reconnect, catch-up
 * dl_dispatch.c  one received payload: parse, dedupe, drop our echoes, dispatch, watermark
 * dl_send.c      the outbound queue: compose, POST in order, retry, reconcile
 * All bounds on what comes from the network are named here. */
#ifndef HANDOFFD_DL_INTERNAL_H
#define HANDOFFD_DL_INTERNAL_H

#include "directline/dedupe.h"
#include "directline/directline.h"
#include "base/random.h"

#include <handoffd/parse.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hd_activity;
struct hd_activity_parser;
struct hd_activity_set;
struct http_response;
struct http_transfer;
struct json_simd;
struct json_walk;
struct loop_timer;
struct websocket;
struct websocket_client;

/* {===== Bounds */
#define DL_TOKEN_MAX 8192		/* bytes of a token we accept */
#define DL_ID_MAX 512			/* conversation or activity id */
#define DL_WATERMARK_MAX 256
#define DL_URL_MAX 16384		/* a streamUrl or a discovered base */
#define DL_BODY_MAX (64u * 1024u)	/* token, start and error bodies */
#define DL_ACTIVITY_MAX (256u * 1024u)	/* one outbound activity (the service's limit) */
#define DL_SEND_QUEUE_MAX 256		/* activities waiting per conversation */
#define DL_RETRY_AFTER_MAX_S 300	/* we wait at most this long for one Retry-After */
#define DL_SEND_ATTEMPTS_MAX 6		/* POSTs of one activity on retryable failures */
#define DL_ECHOES_KEPT 16		/* echoes remembered for sends that may come back */
/* }===== */

/* {===== Timings that are not settings */
#define DL_REST_TIMEOUT_MS 20000	/* every REST call but the activity POST */
#define DL_DEFAULT_TOKEN_LIFETIME_S 1800	/* no expires_in and no JWT exp */
#define DL_STREAM_URL_FRESH_MS 45000	/* a streamUrl lives 60 s: use it well before */
#define DL_EXTRA_POLL_MS 300		/* polling: one extra GET this soon after a send */
#define DL_WS_FAILS_BEFORE_POLLING 4	/* failed socket opens in a row before polling */
#define DL_POLL_BEFORE_WS_RETRY_MS (5u * 60u * 1000u)	/* then try the socket again */
#define DL_HEALTHY_STREAM_MS 10000	/* a socket this old resets the backoff */
/* }===== */

/* The settings in the units the code uses, copied from struct config_directline. */
struct dl_settings {
	char *base, *secret, *token_url, *token, *ca_file, *user_id, *bot_name, *locale;
	bool polling, regional_discovery, greeting, status_events;
	uint32_t poll_ms, liveness_ms, reconnect_base_ms, reconnect_cap_ms;
	uint32_t idle_sync_ms;			/* 0: no catch-up GET on an idle stream */
	uint32_t park_after_ms;			/* 0: never park an idle stream */
	uint32_t parked_sync_ms;		/* 0: no GET while parked */
	uint32_t post_timeout_ms, echo_grace_ms;
	unsigned max_concurrent;
	double token_refresh;
	size_t max_message;
};

/* Metric counters, asked for once (NULL when metrics are off or out of memory). */
struct dl_counters {
	uint64_t *dispatched, *duplicates, *echoes, *reconnects, *collisions, *throttled;
	uint64_t *refresh_ok, *refresh_failed, *reacquired, *echo_timeouts, *resends;
	uint64_t *sends_ok, *sends_failed, *bad_payloads, *polling_fallbacks;
	uint64_t *parks, *wakes;
	uint64_t *state[DL_STATE_FAILED + 1];
	struct metrics_histogram *send_seconds;	/* queued to posted, sends that succeeded */
};

enum dl_base_state { DL_BASE_READY, DL_BASE_DISCOVERING, DL_BASE_WAITING };

struct directline {
	struct loop *lp;
	struct log *lg;
	struct http_client *hc;
	struct metrics *m;
	struct websocket_client *wc;
	struct hd_activity_parser *parser;	/* inbound payloads */
	struct json_simd *js;			/* token, error and outbound bodies */
	char *scratch;				/* padded copy of a body for js */
	size_t scratch_cap;
	struct directline_callbacks cb;
	void *arg;
	struct dl_settings s;
	char *base;				/* REST base in use: configured or discovered */
	enum dl_base_state base_state;
	struct http_transfer *discover_req;
	struct loop_timer *discover_timer;
	unsigned discover_attempt;
	struct rng rng;				/* jitter and the instance id, seeded per client */
	char instance[17];			/* hex, makes clientActivityIDs unique across processes */
	uint64_t next_client_seq;
	unsigned connecting;			/* connect slots in use */
	unsigned connect_limit;			/* slots now: halved per 429, +1 per success */
	unsigned connects_peak;
	uint64_t paused_until_ms;		/* a 429 stops granting slots until then */
	struct loop_timer *pause_timer;
	struct dl_conv *queue_head, *queue_tail;	/* waiting for a slot, FIFO */
	size_t nqueued;
	struct dl_conv *all;			/* every conversation not yet freed */
	size_t nconvs;
	struct dl_counters c;
	uint64_t n_dispatched, n_duplicates, n_echoes, n_reconnects, n_refreshes;
	uint64_t dispatch_us_hist[24];
};

/* What the receive side is doing. */
enum dl_phase {
	DL_PH_IDLE,		/* nothing in flight (terminal, or a step is about to start) */
	DL_PH_QUEUED,		/* waiting for a connect slot */
	DL_PH_ACQUIRE,		/* getting a first token (generate or token_url) */
	DL_PH_START,		/* POST /conversations */
	DL_PH_RESUME,		/* GET /conversations/{id}?watermark= */
	DL_PH_HANDSHAKE,	/* socket opening */
	DL_PH_STREAM,		/* socket open */
	DL_PH_POLL,		/* polling: a GET in flight or the poll timer armed */
	DL_PH_BACKOFF,		/* waiting before the next attempt */
	DL_PH_WAIT_TOKEN,	/* receive paused until the token is re-acquired */
};

struct dl_send;
struct dl_conv;

typedef void (*dl_http_fn)(struct dl_conv *c, const struct http_response *res, int err);

/* One request slot of a conversation; the http_client callback's argument, so it lives
 * as long as the conversation. T is NULL when nothing is in flight. */
struct dl_req {
	struct http_transfer *t;
	struct dl_conv *c;
	dl_http_fn fn;
};

struct dl_conv {
	struct directline *dl;
	struct dl_conv *prev, *next;		/* dl->all */
	struct dl_conv *queue_next;		/* dl->queue_head list */
	char *key;
	char *id;				/* Direct Line conversation id */
	char *token;
	char *watermark;
	char *stream_url;
	uint64_t stream_url_ms;			/* monotonic time it was issued */
	uint64_t token_expires_ms;		/* monotonic */
	int64_t token_expires_wall;		/* unix seconds, for on_persist */
	struct dedupe seen;
	struct websocket *ws;
	uint64_t ws_opened_ms;
	uint64_t poll_until_ms;			/* websocket mode fell back to polling until then */
	uint64_t active_ms;			/* last send or dispatched activity: park_after counts from it */
	uint64_t stream_quiet_ms;		/* since then the stream delivered nothing: idle_sync counts from it */
	struct dl_req rx;			/* acquire, start, resume or poll */
	struct dl_req sync;			/* catch-up GET beside the stream */
	struct dl_req tok;			/* refresh or re-acquire */
	struct dl_req tx;			/* the one POST in flight */
	struct loop_timer *rx_timer, *tok_timer, *tx_timer;
	struct dl_send *tx_head, *tx_tail;
	unsigned tx_count;
	uint8_t state;				/* enum dl_state */
	uint8_t phase;				/* enum dl_phase */
	uint8_t rx_attempt;			/* failures in a row: the backoff exponent */
	uint8_t tok_attempt;
	uint8_t ws_fails;			/* socket opens failed in a row */
	uint8_t busy;				/* loop entries under way (see dl_hold) */
	bool closed;				/* directline_close was called */
	bool detached;				/* closed, still posting endOfConversation */
	bool has_slot;
	bool queued;
	bool token_bad;				/* refused as expired: re-acquire before use */
	bool sync_again;			/* another catch-up GET was asked for meanwhile */
	bool ws_received;			/* the current socket delivered something */
	bool started;				/* POST /conversations succeeded (or resumed) */
	bool ever_online;			/* a later ONLINE is a reconnect */
	bool poll_soon;				/* polling: GET again shortly after this one */
	bool catch_up;				/* the next socket needs a GET for what it misses */
	bool history_read;			/* no watermark: the history was read for this resume */
	bool parked;				/* no socket: a GET every parked_sync instead */
	bool held;				/* parked by directline_park: only directline_wake ends it */
	bool waking;				/* held, woken: a GET reads what came meanwhile first */
	char *wake_boundary;			/* clientActivityID of the first send after the wake:
						 * what follows its echo is not held any more */
	/* Reconciling sends across restarts (dl_send.c). While a send is unsettled the
	 * persisted watermark stays at HELD_WM, from before it, so that a restart finds its
	 * echo in what Direct Line gives from the stored position. */
	bool resumed;				/* opened from a stored position */
	bool resume_unsettled;			/* ... with a send that may have left before */
	bool holding;				/* on_persist gives HELD_WM */
	char *held_wm;				/* NULL: from the start */
	uint64_t opened_ms;			/* monotonic: a maybe-sent check waits echo_grace from it */
	bool remembering;			/* resumed, and no send settled since: keep ECHOES */
	struct dl_echo *echoes;			/* DL_ECHOES_KEPT, on first use */
	uint8_t echo_next;			/* slot the next one goes to */
};

/* An echo of ours that settled no send when it came: a send queued later may be it. */
struct dl_echo {
	uint64_t hash;				/* dedupe_hash of its clientActivityID or older marker */
	char *activity_id;			/* NULL when it had none */
};

/* {===== directline.c */
/* Every entry from the loop into a conversation holds it, so a directline_close() from a
 * callback only marks it; the last release frees it. */
void dl_hold(struct dl_conv *c);
void dl_release(struct dl_conv *c);
/* True once the caller closed C or C reached a terminal state: stop working on it. */
bool dl_done(const struct dl_conv *c);
void dl_set_state(struct dl_conv *c, enum dl_state state, const char *reason);
/* Terminal: releases every socket, timer and request, fails queued sends with REASON. */
void dl_terminate(struct dl_conv *c, enum dl_state state, const char *reason);
void dl_persist(struct dl_conv *c);
/* The global cap on opens and reconnects: dl_stream_slot_granted() runs when C may go. */
void dl_slot_request(struct dl_conv *c);
void dl_slot_release(struct dl_conv *c);
/* Leaves the queue for a slot too: C does not need one any more (parked). */
void dl_slot_drop(struct dl_conv *c);
/* A connect succeeded: releases the slot and lets the limit grow back by one. */
void dl_slot_done(struct dl_conv *c);
/* The service throttles connects (429): no slot is granted to anyone for MS and the limit
 * is halved, so a crowd of reconnects does not turn into a storm of 429s. */
void dl_slot_throttle(struct directline *dl, uint64_t ms);
/* Our user id for C: the configured prefix plus a hash of the key (stable across restarts). */
void dl_user_id(const struct dl_conv *c, char *out, size_t cap);
/* Replaces *SLOT with a copy of LEN bytes of S. Returns 0 or -ENOMEM (*SLOT unchanged). */
int dl_strset(char **slot, const char *s, size_t len);
/* The timer in *SLOT, created on first use with FN. Each slot always has the same FN:
 * rx_timer dl_stream_timer, tok_timer dl_token.c's, tx_timer dl_send.c's. NULL when
 * out of memory. */
struct loop_timer *dl_timer(struct dl_conv *c, struct loop_timer **slot, void (*fn)(void *));
/* }===== */

/* {===== dl_http.c */
enum dl_cred { DL_CRED_TOKEN, DL_CRED_SECRET, DL_CRED_NONE };
/* Starts a request in slot R of C (R must be idle); FN runs later with C held, after R
 * was cleared, unless dl_http_cancel(R) came first. PATH is appended to the base unless
 * it is a full URL. BODY (JSON) may be NULL. Returns 0 or a negative errno. */
int dl_http(struct dl_conv *c, struct dl_req *r, const char *method, const char *path,
	    enum dl_cred cred, const char *body, size_t len, uint32_t timeout_ms, dl_http_fn fn);
/* Cancels what R has in flight; FN is not called. Safe when idle. */
void dl_http_cancel(struct dl_req *r);
/* True for 200-299. */
bool dl_http_ok(const struct http_response *res, int err);
/* Whether a URL the server gave us (a discovered base, a streamUrl) may be used: https://
 * and wss:// always, http:// and ws:// only when the configured base is plain http too,
 * so a hostile or broken server cannot move the token to a clear-text connection. */
bool dl_http_url_allowed(const struct directline *dl, const char *url, size_t len);
/* Counts a non-2xx status by code, and 429s. */
void dl_http_count(struct directline *dl, int status);
/* The error code of a Direct Line error body ({"error":{"code":...}}) into OUT ("" if none). */
void dl_http_error_code(struct directline *dl, const struct http_response *res, char *out, size_t cap);
/* Milliseconds a 429/503 asks us to wait (Retry-After seconds or HTTP-date, capped, plus
 * jitter), or -1 when it gives none. */
int64_t dl_http_retry_after_ms(struct directline *dl, const struct http_response *res);
/* The reconnect backoff (base/backoff.h) with the client's reconnect_base and _cap. */
uint64_t dl_backoff_ms(struct directline *dl, unsigned attempt);
/* Walks a JSON body with the client's json_simd (copied to a padded buffer first). */
int dl_json_walk(struct directline *dl, const char *body, size_t len, const struct json_walk *w);
/* Writes S to OUT as a URL query/path component. Returns bytes written or -ENOSPC. */
int dl_url_escape(char *out, size_t cap, const char *s);
/* }===== */

/* {===== dl_token.c */
/* New conversation: token from the credentials, then POST /conversations. On success
 * C has id, token and stream_url and dl_stream_started() runs. */
void dl_token_start(struct dl_conv *c);
/* Adopts a token from a response (TOKEN of LEN bytes, EXPIRES_IN seconds or <= 0 when
 * absent): persisted by the caller, refresh rescheduled. Returns 0 or -ENOMEM/-EPROTO. */
int dl_token_adopt(struct dl_conv *c, const char *token, size_t len, double expires_in);
/* A persisted token with LEFT_MS to live: kept, and refreshed in time. 0 or -ENOMEM. */
int dl_token_resume(struct dl_conv *c, const char *token, uint64_t left_ms);
/* True when C's token can be used now. */
bool dl_token_valid(const struct dl_conv *c);
/* The token was refused as expired: get another (secret only) and resume what waited. */
void dl_token_reacquire(struct dl_conv *c);
/* Fields of a token, start or reconnect answer; strings point into the client's walk. */
struct dl_token_answer {
	struct hd_str conversation_id, token, stream_url;
	double expires_in;		/* <= 0: absent */
};
int dl_token_parse(struct directline *dl, const struct http_response *res, struct dl_token_answer *out);
/* Discovers the regional base when configured; conversations wait for it. */
void dl_token_discover(struct directline *dl);
void dl_token_stop(struct dl_conv *c);
/* A parked conversation woke: refresh its token again (skipped while parked with a secret). */
void dl_token_wake(struct dl_conv *c);
/* }===== */

/* {===== dl_stream.c */
/* Brings up the receive path: a slot, then a token or start or resume, then the stream
 * (or polling). Also used after any loss. */
void dl_stream_begin(struct dl_conv *c);
void dl_stream_slot_granted(struct dl_conv *c);
/* rx_timer: first step, a granted slot, the end of a backoff, the next poll. */
void dl_stream_timer(void *arg);
/* POST /conversations answered: connect to its streamUrl (or start polling). */
void dl_stream_started(struct dl_conv *c);
/* The token was re-acquired: continue whatever waited for it. */
void dl_stream_token_ready(struct dl_conv *c);
/* Drops the receive path and tries again after RETRY_AFTER_MS (>= 0) or the jittered
 * backoff (-1). Releases the connect slot meanwhile. */
void dl_stream_retry(struct dl_conv *c, int64_t retry_after_ms, const char *reason);
/* Catch-up GET from the watermark until an empty page, beside the stream; then
 * dl_send_synced(OK). Coalesces requests made while one runs. */
void dl_stream_sync(struct dl_conv *c);
/* Polling: a send just finished, poll again soon. */
void dl_stream_poll_soon(struct dl_conv *c);
void dl_stream_stop(struct dl_conv *c);
/* Parking: the socket (or the polling) stops, the conversation keeps its id, watermark and
 * token and is read by a GET every parked_sync. HOLD: only dl_stream_wake ends it (else a
 * send does). Waking reopens the stream from the watermark at once. */
void dl_stream_park(struct dl_conv *c, bool hold, const char *reason);
void dl_stream_wake(struct dl_conv *c, const char *reason);
/* }===== */

/* {===== dl_dispatch.c */
/* Handles one received payload (frame or GET body). Returns the number of activities in
 * it (0 for keep-alives and unknown kinds), or -EPROTO for a malformed payload (nothing
 * of it was dispatched). C may be done (closed or ended) when this returns. */
int dl_dispatch(struct dl_conv *c, const char *data, size_t len);
/* }===== */

/* {===== dl_send.c */
/* A (the echo of one of our activities, not yet deduplicated) reached the bot: settles
 * the send it belongs to, or is remembered for one queued later. */
void dl_send_echo(struct dl_conv *c, const struct hd_activity *a);
/* True when CLIENT_ID has the shape of the ids we generate (this process or another). */
bool dl_send_is_ours(const char *client_id, size_t len);
/* The position on_persist gives: the held one while a send is unsettled. */
const char *dl_send_watermark(const struct dl_conv *c);
/* Frees what reconciling kept (the conversation is freed). */
void dl_send_forget(struct dl_conv *c);
/* Something the queue waited for happened (started, token back, catch-up done). */
void dl_send_kick(struct dl_conv *c);
/* A catch-up GET finished; OK false when it failed (the echo question stays open). */
void dl_send_synced(struct dl_conv *c, bool ok);
/* Fails every queued send with ERR and REASON and stops the send timer and POST. */
void dl_send_fail_all(struct dl_conv *c, int err, const char *reason);
/* Queues the greeting event at the head of the queue (new conversations). */
void dl_send_greeting(struct dl_conv *c);
/* Posts endOfConversation for a closed conversation; C is freed when it finishes. */
void dl_send_goodbye(struct dl_conv *c);
/* }===== */

#endif
