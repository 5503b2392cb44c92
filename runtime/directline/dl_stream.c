/* dl_stream.c - the receive path of a Direct Line conversation.
 * Owns bringing it up and keeping it up: a connect slot, then (through dl_token.c) a
 * token and the start, or a resume by GET /conversations/{id}?watermark= that yields a
 * fresh streamUrl; one WebSocket per conversation (websocket.c does the socket and the
 * liveness checks); polling GET /activities as the configured transport or as a fallback
 * when sockets cannot be opened; reconnecting after any loss with full-jitter backoff and
 * Retry-After; catch-up GETs beside the stream; and parking: an idle stream (or one the
 * caller holds parked) is closed and replaced by a GET every parked_sync, and reopened from
 * the watermark on wake. Every payload received goes to dl_dispatch(); what is in it is
 * not this file's business. */
#include "directline/dl_internal.h"

#include "net/http_client.h"
#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"
#include "directline/websocket.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void resume(struct dl_conv *c);
static void connect_stream(struct dl_conv *c);
static void poll_now(struct dl_conv *c);
static void start_polling(struct dl_conv *c, const char *reason);
static void unpark(struct dl_conv *c);

static bool polling_mode(const struct dl_conv *c)
{
	return c->dl->s.polling || c->poll_until_ms;
}

/* {===== Retry, stop, timer */

static void arm(struct dl_conv *c, uint64_t delay_ms)
{
	if (dl_timer(c, &c->rx_timer, dl_stream_timer))
		loop_timer_start(c->rx_timer, delay_ms, 0);
}

/* park_after ran out: nothing sent (or waiting to be sent) and nothing received. */
static bool park_due(const struct dl_conv *c)
{
	uint32_t after = c->dl->s.park_after_ms;

	return after && !c->tx_head && clock_mono_ms() - c->active_ms >= after;
}

/* An open stream's one timer serves two deadlines: the catch-up GET after idle_sync
 * without activities, and parking after park_after without a send or an activity. Both
 * move on with traffic, which does not re-arm the timer: it looks again when it fires. */
static void arm_stream(struct dl_conv *c)
{
	const struct dl_settings *s = &c->dl->s;
	uint64_t now = clock_mono_ms(), at = UINT64_MAX;

	if (s->idle_sync_ms)
		at = c->stream_quiet_ms + s->idle_sync_ms;
	if (s->park_after_ms && c->active_ms + s->park_after_ms < at)
		at = c->active_ms + s->park_after_ms;
	if (at == UINT64_MAX) {
		if (c->rx_timer)
			loop_timer_stop(c->rx_timer);
		return;
	}
	arm(c, at > now ? at - now : 0);
}

/* Polling (or parked): the next GET after the usual wait; parked with parked_sync 0, none. */
static void arm_next_poll(struct dl_conv *c)
{
	uint32_t wait = c->parked ? c->dl->s.parked_sync_ms : c->dl->s.poll_ms;

	if (wait)
		arm(c, wait);
	else if (c->rx_timer)
		loop_timer_stop(c->rx_timer);
}

static void drop_socket(struct dl_conv *c)
{
	if (c->ws) {
		websocket_free(c->ws);
		c->ws = NULL;
	}
}

void dl_stream_stop(struct dl_conv *c)
{
	drop_socket(c);
	dl_http_cancel(&c->rx);
	dl_http_cancel(&c->sync);
	if (c->rx_timer)
		loop_timer_stop(c->rx_timer);
	c->phase = DL_PH_IDLE;
}

void dl_stream_retry(struct dl_conv *c, int64_t retry_after_ms, const char *reason)
{
	struct directline *dl = c->dl;
	uint64_t delay = retry_after_ms >= 0 ? (uint64_t)retry_after_ms : dl_backoff_ms(dl, c->rx_attempt);

	if (dl_done(c))
		return;
	dl_slot_release(c);
	drop_socket(c);
	dl_http_cancel(&c->rx);
	if (c->rx_attempt < 30)
		c->rx_attempt++;
	c->phase = DL_PH_BACKOFF;
	arm(c, delay);
	log_info(dl->lg, "directline.retry", "key=\"%s\" conv=%s reason=\"%s\" attempt=%u delay_ms=%llu",
		 c->key, c->id ? c->id : "-", reason, c->rx_attempt, (unsigned long long)delay);
	if (c->state == DL_STATE_ONLINE)
		dl_set_state(c, DL_STATE_RECONNECTING, reason);
}

void dl_stream_timer(void *arg)
{
	struct dl_conv *c = arg;

	dl_hold(c);
	if (dl_done(c)) {
		dl_release(c);
		return;
	}
	switch (c->phase) {
	case DL_PH_QUEUED:
		if (c->has_slot)
			dl_stream_slot_granted(c);
		break;
	case DL_PH_POLL:
		if (c->poll_until_ms && clock_mono_ms() >= c->poll_until_ms && !c->dl->s.polling) {
			c->poll_until_ms = 0;	/* fallback over: try the socket again */
			c->ws_fails = 0;
			dl_stream_begin(c);
		} else {
			poll_now(c);
		}
		break;
	case DL_PH_IDLE:
	case DL_PH_BACKOFF:
		dl_stream_begin(c);
		break;
	case DL_PH_STREAM:
		if (park_due(c)) {
			dl_stream_park(c, false, "idle");
			break;
		}
		/* Sockets have stayed open while delivering nothing: after a quiet spell, ask
		 * by GET what came after our watermark (dedupe drops what the socket gave). */
		if (c->dl->s.idle_sync_ms && clock_mono_ms() - c->stream_quiet_ms >= c->dl->s.idle_sync_ms) {
			c->stream_quiet_ms = clock_mono_ms();
			dl_stream_sync(c);
		}
		if (!dl_done(c) && c->phase == DL_PH_STREAM)
			arm_stream(c);
		break;
	default:
		break;
	}
	dl_release(c);
}

void dl_stream_begin(struct dl_conv *c)
{
	if (dl_done(c))
		return;
	if (c->parked) {	/* parked: a GET instead of a socket */
		poll_now(c);
		return;
	}
	c->phase = DL_PH_QUEUED;
	dl_slot_request(c);
}

void dl_stream_slot_granted(struct dl_conv *c)
{
	if (c->parked) {
		dl_slot_release(c);
		poll_now(c);
	} else if (!c->started) {
		dl_token_start(c);
	} else if (!dl_token_valid(c)) {
		dl_slot_release(c);	/* a slow re-acquisition must not hold a slot */
		c->phase = DL_PH_WAIT_TOKEN;
		dl_token_reacquire(c);
	} else if (polling_mode(c)) {
		dl_slot_release(c);
		start_polling(c, c->dl->s.polling ? "polling" : "polling fallback");
	} else {
		connect_stream(c);	/* a fresh streamUrl left from a throttled handshake, or a resume */
	}
}

void dl_stream_token_ready(struct dl_conv *c)
{
	if (c->phase == DL_PH_WAIT_TOKEN)
		dl_stream_begin(c);
}

/* }===== */

/* {===== The WebSocket stream */

static void went_online(struct dl_conv *c, const char *reason)
{
	if (c->ever_online && c->state != DL_STATE_ONLINE) {
		c->dl->n_reconnects++;
		metrics_inc(c->dl->c.reconnects);
	}
	c->ever_online = true;
	dl_set_state(c, DL_STATE_ONLINE, reason);
}

static void ws_open(struct websocket *ws, void *arg)
{
	struct dl_conv *c = arg;

	(void)ws;
	dl_hold(c);
	c->phase = DL_PH_STREAM;
	c->ws_opened_ms = clock_mono_ms();
	c->ws_fails = 0;
	c->ws_received = false;
	free(c->stream_url);	/* used: the next connect needs a fresh one */
	c->stream_url = NULL;
	dl_slot_done(c);
	went_online(c, "stream open");
	if (dl_done(c)) {
		dl_release(c);
		return;
	}
	if (c->held) {		/* parked before it could be: now it can */
		dl_stream_park(c, false, "held");
		dl_release(c);
		return;
	}
	c->stream_quiet_ms = clock_mono_ms();
	arm_stream(c);
	/* A resume without a watermark could not say where to replay from: catch up by GET
	 * from the start (dedupe drops what was already delivered). */
	if (!dl_done(c) && c->catch_up) {
		c->catch_up = false;
		dl_stream_sync(c);
	}
	dl_release(c);
}

static void ws_message(struct websocket *ws, const char *data, size_t len, void *arg)
{
	struct dl_conv *c = arg;
	int n;

	(void)ws;
	dl_hold(c);
	c->ws_received = true;
	n = dl_dispatch(c, data, len);
	if (n == -EPROTO && !dl_done(c))
		dl_stream_sync(c);	/* a payload we could not read: reconcile by GET */
	else if (n > 0)
		c->stream_quiet_ms = clock_mono_ms();	/* not idle: the catch-up moves back */
	dl_release(c);
}

/* The socket never opened. Proxies that refuse upgrades make this repeat: then poll. */
static void ws_failed(struct dl_conv *c, const struct websocket_end_info *end)
{
	struct directline *dl = c->dl;
	char why[96];

	if (end->kind == WEBSOCKET_END_HTTP)
		snprintf(why, sizeof(why), "stream refused: http %d", end->http_status);
	else
		snprintf(why, sizeof(why), "stream refused: %s (%.40s)", websocket_end_name(end->kind), end->reason);
	if (end->kind == WEBSOCKET_END_HTTP && end->http_status == 429) {
		int64_t wait = end->retry_after ? strtoll(end->retry_after, NULL, 10) : 1;

		wait = (wait < 1 ? 1 : wait > DL_RETRY_AFTER_MAX_S ? DL_RETRY_AFTER_MAX_S : wait) * 1000;
		dl_slot_throttle(dl, (uint64_t)wait);
		dl_stream_retry(c, wait + (int64_t)(rng_next(&dl->rng) % 500), why);
		return;		/* the streamUrl stays: still fresh after the wait, it saves a GET */
	}
	free(c->stream_url);
	c->stream_url = NULL;
	/* 403: the streamUrl expired; the retry fetches a fresh one. */
	if (!(end->kind == WEBSOCKET_END_HTTP && end->http_status == 403) &&
	    ++c->ws_fails >= DL_WS_FAILS_BEFORE_POLLING && !dl->s.polling) {
		log_warn(dl->lg, "directline.polling_fallback", "key=\"%s\" conv=%s reason=\"%s\" for_s=%u",
			 c->key, c->id, why, DL_POLL_BEFORE_WS_RETRY_MS / 1000);
		metrics_inc(dl->c.polling_fallbacks);
		c->poll_until_ms = clock_mono_ms() + DL_POLL_BEFORE_WS_RETRY_MS;
		dl_slot_release(c);
		start_polling(c, "polling fallback");
		return;
	}
	dl_stream_retry(c, -1, why);
}

static void ws_lost(struct dl_conv *c, const struct websocket_end_info *end)
{
	struct directline *dl = c->dl;
	bool healthy = c->ws_received || clock_mono_ms() - c->ws_opened_ms >= DL_HEALTHY_STREAM_MS;

	if (end->reason && strcmp(end->reason, "collision") == 0) {
		/* Someone else holds this conversation's stream: do not fight over it. */
		metrics_inc(dl->c.collisions);
		log_warn(dl->lg, "directline.collision", "key=\"%s\" conv=%s", c->key, c->id);
		dl_stream_retry(c, (int64_t)(dl->s.reconnect_cap_ms / 2 +
					     rng_next(&dl->rng) % (dl->s.reconnect_cap_ms / 2 + 1)), "collision");
		return;
	}
	if (healthy)
		c->rx_attempt = 0;
	log_info(dl->lg, "directline.stream_lost", "key=\"%s\" conv=%s end=%s code=%u", c->key, c->id,
		 websocket_end_name(end->kind), end->code);
	dl_stream_retry(c, -1, "stream lost");
}

static void ws_close(struct websocket *ws, const struct websocket_end_info *end, void *arg)
{
	struct dl_conv *c = arg;

	dl_hold(c);
	websocket_free(ws);
	if (c->ws == ws)
		c->ws = NULL;
	if (!dl_done(c)) {
		if (c->phase == DL_PH_STREAM)
			ws_lost(c, end);
		else
			ws_failed(c, end);
	}
	dl_release(c);
}

static const struct websocket_callbacks ws_callbacks = {
	.on_open = ws_open, .on_message = ws_message, .on_close = ws_close,
};

/* A streamUrl in clear text while the configured base is https would carry the token
 * unencrypted: counted as a failed stream, so repeats end in polling over https. */
static void refuse_stream_url(struct dl_conv *c)
{
	struct websocket_end_info end = {
		.kind = WEBSOCKET_END_CONNECT, .err = -EPERM, .reason = "plaintext stream url refused",
	};

	log_warn(c->dl->lg, "directline.downgrade_refused", "key=\"%s\" conv=%s what=stream_url",
		 c->key, c->id ? c->id : "-");
	drop_socket(c);
	c->phase = DL_PH_HANDSHAKE;
	ws_failed(c, &end);
}

/* A streamUrl opens one socket, and only while fresh; docs sometimes print it as https. */
static void connect_stream(struct dl_conv *c)
{
	char url[DL_URL_MAX];
	const char *u = c->stream_url;
	int rc;

	if (!u || clock_mono_ms() - c->stream_url_ms > DL_STREAM_URL_FRESH_MS) {
		resume(c);
		return;
	}
	if (!dl_http_url_allowed(c->dl, u, strlen(u))) {
		refuse_stream_url(c);
		return;
	}
	if (strncmp(u, "https://", 8) == 0)
		snprintf(url, sizeof(url), "wss://%s", u + 8);
	else if (strncmp(u, "http://", 7) == 0)
		snprintf(url, sizeof(url), "ws://%s", u + 7);
	else
		snprintf(url, sizeof(url), "%s", u);
	drop_socket(c);
	c->phase = DL_PH_HANDSHAKE;
	rc = websocket_connect(c->dl->wc, url, NULL, &ws_callbacks, c, &c->ws);
	if (rc < 0)
		dl_stream_retry(c, -1, rc == -EINVAL ? "bad stream url" : "cannot connect");
}

void dl_stream_started(struct dl_conv *c)
{
	if (c->held) {		/* parked before it started: no socket at all */
		dl_slot_release(c);
		dl_stream_park(c, false, "held");
	} else if (polling_mode(c)) {
		dl_slot_release(c);
		start_polling(c, c->dl->s.polling ? "polling" : "polling fallback");
	} else {
		connect_stream(c);
	}
}

/* }===== */

/* {===== Resume: GET /conversations/{id}?watermark= */

/* The conversation's path plus SUFFIX and the watermark query, escaped. */
static int conv_path(const struct dl_conv *c, const char *suffix, char *out, size_t cap)
{
	char id[DL_ID_MAX * 3 + 1], wm[DL_WATERMARK_MAX * 3 + 1] = "";

	if (dl_url_escape(id, sizeof(id), c->id) < 0 ||
	    (c->watermark && dl_url_escape(wm, sizeof(wm), c->watermark) < 0))
		return -ENAMETOOLONG;
	if (snprintf(out, cap, "/conversations/%s%s%s%s", id, suffix, wm[0] ? "?watermark=" : "", wm) >=
	    (int)cap)
		return -ENAMETOOLONG;
	return 0;
}

/* What any REST answer on the receive path means when it is not a success. */
static void rest_failed(struct dl_conv *c, const struct http_response *res, int err, const char *what)
{
	int status = err ? 0 : res->status;
	int64_t wait;
	char why[64];

	if (status == 404) {
		dl_terminate(c, DL_STATE_ENDED, "not found");
		return;
	}
	if (status == 401 || status == 403) {
		dl_slot_release(c);
		c->phase = DL_PH_WAIT_TOKEN;
		dl_token_reacquire(c);
		return;
	}
	snprintf(why, sizeof(why), "%s failed: %s", what, err ? http_client_strerror(err) : "");
	if (status)
		snprintf(why, sizeof(why), "%s failed: %d", what, status);
	wait = status ? dl_http_retry_after_ms(c->dl, res) : -1;
	if (status == 429)
		dl_slot_throttle(c->dl, wait >= 0 ? (uint64_t)wait : 1000);
	dl_stream_retry(c, wait, why);
}

static void on_resumed(struct dl_conv *c, const struct http_response *res, int err)
{
	struct dl_token_answer a;

	if (dl_done(c))
		return;
	if (!dl_http_ok(res, err)) {
		rest_failed(c, res, err, "resume");
		return;
	}
	if (dl_token_parse(c->dl, res, &a) < 0 || !a.stream_url.ptr) {
		dl_stream_retry(c, -1, "resume answer unreadable");
		return;
	}
	if (dl_strset(&c->stream_url, a.stream_url.ptr, a.stream_url.len) < 0) {
		dl_stream_retry(c, -1, "out of memory");
		return;
	}
	c->stream_url_ms = clock_mono_ms();
	c->catch_up = !c->watermark;
	/* DirectLineJS adopts the token a reconnect returns; so do we. */
	if (a.token.ptr && (!c->token || a.token.len != strlen(c->token) ||
			    memcmp(a.token.ptr, c->token, a.token.len) != 0)) {
		if (dl_token_adopt(c, a.token.ptr, a.token.len, a.expires_in) == 0)
			dl_persist(c);
		if (dl_done(c))
			return;
	}
	connect_stream(c);
}

static void read_history(struct dl_conv *c);

/* Without a watermark a new socket gives only what comes after the reconnect call: what
 * came before it (an earlier owner's last replies it never committed) is read by GET
 * first. A history still empty leaves the GET after the socket opens (catch_up). */
static void resume(struct dl_conv *c)
{
	char path[DL_ID_MAX * 3 + DL_WATERMARK_MAX * 3 + 64];

	c->phase = DL_PH_RESUME;
	if (!c->watermark && !c->history_read) {
		read_history(c);
		return;
	}
	c->history_read = false;
	if (conv_path(c, "", path, sizeof(path)) < 0) {
		dl_terminate(c, DL_STATE_FAILED, "conversation id too long");
		return;
	}
	if (dl_http(c, &c->rx, "GET", path, DL_CRED_TOKEN, NULL, 0, DL_REST_TIMEOUT_MS, on_resumed) < 0)
		dl_stream_retry(c, -1, "cannot resume");
}

/* }===== */

/* {===== Polling, and catch-up GETs beside the stream */

/* Dispatches one page of GET /activities (*N: what dl_dispatch said); true when another
 * may follow: the page held activities and moved the watermark (one that does not move it
 * cannot be followed without looping). */
static bool read_page(struct dl_conv *c, const struct http_response *res, int *n)
{
	char *before = c->watermark ? strdup(c->watermark) : NULL;
	bool more;

	*n = dl_dispatch(c, res->body, res->body_len);
	more = !dl_done(c) && *n > 0 && c->watermark && (!before || strcmp(before, c->watermark) != 0);
	free(before);
	return more;
}

/* A page of the history before a resume without a watermark: all of it is read, in
 * order, before the socket, so that nothing the socket gives can overtake it. */
static void on_history(struct dl_conv *c, const struct http_response *res, int err)
{
	int n;

	if (dl_done(c))
		return;
	if (!dl_http_ok(res, err)) {
		rest_failed(c, res, err, "history");
		return;
	}
	if (read_page(c, res, &n)) {
		read_history(c);
		return;
	}
	if (dl_done(c))
		return;
	if (n < 0) {
		dl_stream_retry(c, -1, "history unreadable");
		return;
	}
	c->history_read = true;
	resume(c);
}

static void read_history(struct dl_conv *c)
{
	char path[DL_ID_MAX * 3 + DL_WATERMARK_MAX * 3 + 64];

	if (conv_path(c, "/activities", path, sizeof(path)) < 0 ||
	    dl_http(c, &c->rx, "GET", path, DL_CRED_TOKEN, NULL, 0, DL_REST_TIMEOUT_MS, on_history) < 0)
		dl_stream_retry(c, -1, "cannot read the history");
}

static void on_polled(struct dl_conv *c, const struct http_response *res, int err)
{
	bool more;
	int n;

	if (dl_done(c))
		return;
	if (!dl_http_ok(res, err)) {
		rest_failed(c, res, err, "poll");
		if (!dl_done(c) && c->phase == DL_PH_BACKOFF)
			c->phase = DL_PH_POLL;	/* keep polling after the backoff */
		return;
	}
	more = read_page(c, res, &n);
	if (!dl_done(c)) {
		c->rx_attempt = 0;
		went_online(c, c->parked ? "parked" : c->poll_until_ms ? "polling fallback" : "polling");
	}
	if (!dl_done(c)) {
		c->phase = DL_PH_POLL;
		if (more || (c->poll_soon && n >= 0))
			arm(c, c->poll_soon && !more ? DL_EXTRA_POLL_MS : 0);
		else if (n < 0)
			arm(c, dl_backoff_ms(c->dl, 1));
		else if (c->waking)
			unpark(c);
		else if (!c->parked && (c->held || park_due(c)))
			dl_stream_park(c, false, c->held ? "held" : "idle");
		else
			arm_next_poll(c);
		c->poll_soon = false;
	}
}

static void poll_now(struct dl_conv *c)
{
	char path[DL_ID_MAX * 3 + DL_WATERMARK_MAX * 3 + 64];
	enum dl_cred cred = DL_CRED_TOKEN;

	c->phase = DL_PH_POLL;
	if (c->rx.t)
		return;
	if (!dl_token_valid(c) && c->parked && c->dl->s.secret) {
		cred = DL_CRED_SECRET;	/* a parked look needs no token; waking gets one */
	} else if (!dl_token_valid(c)) {
		c->phase = DL_PH_WAIT_TOKEN;
		dl_token_reacquire(c);
		return;
	}
	if (conv_path(c, "/activities", path, sizeof(path)) < 0 ||
	    dl_http(c, &c->rx, "GET", path, cred, NULL, 0, DL_REST_TIMEOUT_MS, on_polled) < 0) {
		arm(c, dl_backoff_ms(c->dl, c->rx_attempt++ + 1));
	}
}

static void start_polling(struct dl_conv *c, const char *reason)
{
	(void)reason;
	drop_socket(c);
	poll_now(c);
}

void dl_stream_poll_soon(struct dl_conv *c)
{
	if (c->phase != DL_PH_POLL)
		return;
	if (c->rx.t)
		c->poll_soon = true;
	else
		arm(c, DL_EXTRA_POLL_MS);
}

static void sync_page(struct dl_conv *c);

static void on_synced(struct dl_conv *c, const struct http_response *res, int err)
{
	int n;

	if (dl_done(c))
		return;
	if (!dl_http_ok(res, err)) {
		if (!err && (res->status == 404 || res->status == 401 || res->status == 403)) {
			rest_failed(c, res, err, "catch-up");
			if (dl_done(c))
				return;
		}
		dl_send_synced(c, false);
		return;
	}
	if (read_page(c, res, &n)) {
		sync_page(c);
		return;
	}
	if (dl_done(c))
		return;
	if (c->sync_again) {
		c->sync_again = false;
		sync_page(c);
		return;
	}
	dl_send_synced(c, n >= 0);
}

static void sync_page(struct dl_conv *c)
{
	char path[DL_ID_MAX * 3 + DL_WATERMARK_MAX * 3 + 64];

	if (!dl_token_valid(c) || conv_path(c, "/activities", path, sizeof(path)) < 0 ||
	    dl_http(c, &c->sync, "GET", path, DL_CRED_TOKEN, NULL, 0, DL_REST_TIMEOUT_MS, on_synced) < 0)
		dl_send_synced(c, false);
}

void dl_stream_sync(struct dl_conv *c)
{
	if (c->sync.t) {
		c->sync_again = true;
		return;
	}
	if (!c->id) {
		dl_send_synced(c, false);
		return;
	}
	sync_page(c);
}

/* }===== */

/* {===== Parking */

void dl_stream_park(struct dl_conv *c, bool hold, const char *reason)
{
	struct directline *dl = c->dl;
	/* From an open stream (or a poll just done) nothing was missed: the first GET waits
	 * parked_sync. From anywhere else (resuming, reconnecting) it goes at once. */
	bool caught_up = c->phase == DL_PH_STREAM || c->phase == DL_PH_POLL;

	if (hold)
		c->held = true;
	if (hold && c->waking) {	/* held again before the wake finished: stay parked */
		c->waking = false;
		free(c->wake_boundary);
		c->wake_boundary = NULL;
	}
	if (c->parked || dl_done(c) || !c->started || !c->id)
		return;		/* not started yet: ws_open or on_polled parks it (held) */
	c->parked = true;
	metrics_inc(dl->c.parks);
	log_info(dl->lg, "directline.park", "key=\"%s\" conv=%s reason=\"%s\"", c->key, c->id, reason);
	dl_slot_drop(c);
	drop_socket(c);
	dl_http_cancel(&c->rx);
	free(c->stream_url);	/* stale by the time it wakes: a resume gets a fresh one */
	c->stream_url = NULL;
	c->poll_soon = false;
	c->phase = DL_PH_POLL;
	if (caught_up)
		arm_next_poll(c);
	else
		arm(c, 0);
}

/* The stream reopens from the watermark; dl_stream_timer begins it from the loop. */
static void unpark(struct dl_conv *c)
{
	c->parked = false;
	c->held = false;
	c->waking = false;
	free(c->wake_boundary);
	c->wake_boundary = NULL;
	/* A parked GET under way would only bring what the stream replays from the watermark. */
	dl_http_cancel(&c->rx);
	c->poll_soon = false;
	c->rx_attempt = 0;
	dl_token_wake(c);
	c->phase = DL_PH_IDLE;
	arm(c, 0);
}

void dl_stream_wake(struct dl_conv *c, const char *reason)
{
	struct directline *dl = c->dl;

	if (!c->parked || c->waking || dl_done(c))
		return;
	metrics_inc(dl->c.wakes);
	log_info(dl->lg, "directline.wake", "key=\"%s\" conv=%s reason=\"%s\"", c->key, c->id, reason);
	if (!c->held) {
		unpark(c);
		return;
	}
	/* Held: what the bot said meanwhile is read by GET first and dispatched while still
	 * held (directline_held), so the caller can tell it from what comes after the wake;
	 * on_polled reopens the stream once the GET reached the end. */
	c->waking = true;
	dl_http_cancel(&c->rx);
	c->phase = DL_PH_POLL;
	arm(c, 0);
}

/* }===== */
