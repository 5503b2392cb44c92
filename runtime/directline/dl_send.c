/* dl_send.c - the outbound side of a Direct Line conversation.
 * Owns the per-conversation queue: composing each activity (our `from`, a
 * channelData.clientActivityID: fresh, or derived from the caller's item so that it is
 * the same after a restart), one POST in flight at a time and in order, retrying what
 * provably did not arrive (pre-send failures, 500, 429 after Retry-After), reconciling
 * what may have (502, 504, timeouts: echo seen means done, else one resend after a catch-up
 * GET), reconciling across restarts (an item that may have left before is looked for in
 * the history from the stored watermark, which stays before every unsettled send), and
 * reporting every final outcome once. Recognising our echoes on the way in is
 * dl_dispatch.c's; the catch-up GET is dl_stream.c's. */
#include "directline/dl_internal.h"

#include "net/http_client.h"
#include "parse/json_simd.h"
#include "base/clock.h"
#include "base/json_text.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"

#include <handoffd/activity.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENT_ID_PREFIX "hd1."	/* every clientActivityID we generate starts so */
#define ITEM_ID_PREFIX CLIENT_ID_PREFIX "o"	/* ... and those of a caller's item so ("o" is no hex) */
#define CLIENT_ID_MAX 48
#define THROTTLED_MAX 10	/* 429s one activity may get before it fails */
#define SYNC_TRIES_MAX 3	/* catch-up GETs before an unconfirmed POST is resent anyway */

enum tx_state {
	TX_QUEUED,		/* waiting for its turn, a token, or the conversation to start */
	TX_POSTING,
	TX_RETRY,		/* waiting before the next POST */
	TX_WAIT_ECHO,		/* outcome unknown: waiting for the echo */
	TX_SYNCING,		/* outcome unknown: catch-up GET under way */
	TX_CHECKING,		/* maybe sent before: catch-up GET under way to look for it */
};

struct dl_send {
	struct dl_send *next;
	uint64_t queued_ms;	/* monotonic: for the send duration histogram */
	char *body;
	size_t len;
	dl_send_done_fn done;
	void *arg;
	uint8_t state;
	uint8_t attempts;	/* POSTs that failed retryably */
	uint8_t throttled;
	uint8_t syncs;
	bool echo_seen;
	bool resent;
	bool maybe_sent;	/* an earlier process may have posted it */
	bool checked;		/* ... and the history said it did not arrive */
	bool posted;		/* a POST of it was started */
	uint64_t legacy_hash;	/* dedupe_hash of an older version's channelData.handoffd, or 0 */
	char client_id[CLIENT_ID_MAX];
};

static void on_tx_timer(void *arg);
static void post_head(struct dl_conv *c);

/* {===== Composing: our `from` and clientActivityID into the caller's object */

enum { OUT_TYPE, OUT_FROM, OUT_CHANNEL, OUT_CLIENT_ID, OUT_LEGACY, OUT_NSLOTS };

struct compose {
	bool object;
	struct json_slot root;
	struct json_slot s[OUT_NSLOTS];
};

static int compose_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	struct compose *k = ctx;

	k->object = self->kind == HD_OBJECT;
	k->root = *self;
	memcpy(k->s, s, sizeof(k->s));
	return 0;
}

static const struct json_member channel_members[] = {
	{ JSON_KEY("clientActivityID"), .slot = OUT_CLIENT_ID },
	{ JSON_KEY("handoffd"), .slot = OUT_LEGACY },	/* marker of versions before 2026-12 */
};
static const struct json_schema channel_schema = { JSON_MEMBERS(channel_members) };
static const struct json_member out_members[] = {
	{ JSON_KEY("type"), .slot = OUT_TYPE },
	{ JSON_KEY("from"), .slot = OUT_FROM },
	{ JSON_KEY("channelData"), .slot = OUT_CHANNEL, .object = &channel_schema },
};
static const struct json_schema out_schema = {
	JSON_MEMBERS(out_members), .nslots = OUT_NSLOTS, .done = compose_done,
};

/* One replacement of the caller's text: [start, end) becomes TEXT. */
struct edit {
	size_t start, end;
	char text[CLIENT_ID_MAX + 320];
};

static size_t at(const struct directline *dl, const struct json_slot *s)
{
	return (size_t)(s->raw.ptr - dl->scratch);
}

static void set_edit(struct edit *e, size_t start, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void set_edit(struct edit *e, size_t start, size_t len, const char *fmt, ...)
{
	va_list ap;

	e->start = start;
	e->end = start + len;
	va_start(ap, fmt);
	vsnprintf(e->text, sizeof(e->text), fmt, ap);
	va_end(ap);
}

static bool empty_object(const struct json_slot *s)
{
	const char *p = s->raw.ptr + 1;

	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return *p == '}';
}

/* The caller's channelData keeps its members and gets our clientActivityID. */
static void channel_edit(struct directline *dl, const struct compose *k, const char *cid, struct edit *e)
{
	const struct json_slot *ch = &k->s[OUT_CHANNEL], *id = &k->s[OUT_CLIENT_ID];

	if (ch->kind == HD_OBJECT && id->kind != HD_ABSENT)	/* theirs is replaced */
		set_edit(e, at(dl, id), id->raw.len, "\"%s\"", cid);
	else if (ch->kind == HD_OBJECT)				/* ours goes first */
		set_edit(e, at(dl, ch) + 1, 0, "\"clientActivityID\":\"%s\"%s", cid, empty_object(ch) ? "" : ",");
	else							/* not an object: ours instead */
		set_edit(e, at(dl, ch), ch->raw.len, "{\"clientActivityID\":\"%s\"}", cid);
}

/* The edits in text order: what the caller left out goes right after the root's '{',
 * then `from` is replaced and channelData completed where they are. */
static size_t plan(struct directline *dl, const struct compose *k, const char *from, const char *cid,
		   struct edit e[3])
{
	bool has_from = k->s[OUT_FROM].kind != HD_ABSENT, has_channel = k->s[OUT_CHANNEL].kind != HD_ABSENT;
	char head[sizeof(e[0].text)] = "";
	size_t n = 1;

	if (!has_from)
		snprintf(head, sizeof(head), "\"from\":%s,", from);
	if (!has_channel)
		snprintf(head + strlen(head), sizeof(head) - strlen(head),
			 "\"channelData\":{\"clientActivityID\":\"%s\"},", cid);
	set_edit(&e[0], at(dl, &k->root) + 1, 0, "%s", head);
	if (has_from)
		set_edit(&e[n++], at(dl, &k->s[OUT_FROM]), k->s[OUT_FROM].raw.len, "%s", from);
	if (has_channel)
		channel_edit(dl, k, cid, &e[n++]);
	if (n == 3 && e[2].start < e[1].start) {	/* channelData came before from */
		struct edit t = e[1];

		e[1] = e[2];
		e[2] = t;
	}
	return n;
}

static char *apply(const char *src, size_t len, const struct edit *e, size_t n, size_t *out_len)
{
	size_t total = len, pos = 0, w = 0;
	char *out;

	for (size_t i = 0; i < n; i++)
		total += strlen(e[i].text) - (e[i].end - e[i].start);
	out = malloc(total + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		memcpy(out + w, src + pos, e[i].start - pos);
		w += e[i].start - pos;
		memcpy(out + w, e[i].text, strlen(e[i].text));
		w += strlen(e[i].text);
		pos = e[i].end;
	}
	memcpy(out + w, src + pos, len - pos);
	w += len - pos;
	out[w] = '\0';
	*out_len = w;
	return out;
}

/* An item's id is the same in every process (the caller's id and creation time: unique
 * even should the caller reuse ids); any other is unique to this process. */
static void new_client_id(struct directline *dl, const struct dl_send_item *item, char *out)
{
	if (item)
		snprintf(out, CLIENT_ID_MAX, ITEM_ID_PREFIX "%llx.%llx", (unsigned long long)item->id,
			 (unsigned long long)item->created_ms);
	else
		snprintf(out, CLIENT_ID_MAX, CLIENT_ID_PREFIX "%s.%llu", dl->instance,
			 (unsigned long long)++dl->next_client_seq);
}

static int compose(struct dl_conv *c, const char *json, size_t len, const struct dl_send_item *item,
		   struct dl_send *s)
{
	struct directline *dl = c->dl;
	struct compose k = { 0 };
	struct json_walk w = { .root = &out_schema, .ctx = &k, .max_depth = 64 };
	struct edit e[3];
	char uid[128], escaped[200], from[240];

	dl_user_id(c, uid, sizeof(uid));
	if (json_text_escape_whole(escaped, sizeof(escaped), uid) < 0)
		return -EINVAL;
	snprintf(from, sizeof(from), "{\"id\":\"%s\",\"role\":\"user\"}", escaped);
	new_client_id(dl, item, s->client_id);
	if (dl_json_walk(dl, json, len, &w) < 0 || !k.object || k.s[OUT_TYPE].kind != HD_STRING ||
	    k.s[OUT_TYPE].str.len == 0)
		return -EINVAL;
	if (s->maybe_sent && k.s[OUT_LEGACY].kind == HD_STRING && k.s[OUT_LEGACY].str.len)
		s->legacy_hash = dedupe_hash(k.s[OUT_LEGACY].str.ptr, k.s[OUT_LEGACY].str.len);
	s->body = apply(dl->scratch, len, e, plan(dl, &k, from, s->client_id, e), &s->len);
	if (!s->body)
		return -ENOMEM;
	return s->len > DL_ACTIVITY_MAX ? -EFBIG : 0;
}

/* }===== */

/* {===== The queue */

static struct dl_send *new_send(struct dl_conv *c, const char *json, size_t len,
				const struct dl_send_item *item, dl_send_done_fn done, void *arg, int *rc)
{
	struct dl_send *s = calloc(1, sizeof(*s));

	*rc = -ENOMEM;
	if (!s)
		return NULL;
	s->done = done;
	s->arg = arg;
	s->queued_ms = clock_mono_ms();
	/* Only a conversation resumed from a stored position can hold what an earlier
	 * process posted: in one this process started, a maybe-sent item simply goes. */
	s->maybe_sent = item && item->maybe_sent && c->resumed;
	*rc = compose(c, json, len, item, s);
	if (*rc < 0) {
		free(s->body);
		free(s);
		return NULL;
	}
	return s;
}

static void hold_begin(struct dl_conv *c);
static void hold_settle(struct dl_conv *c);
static void forget_echoes(struct dl_conv *c);

int directline_send_item(struct dl_conv *c, const char *activity_json, size_t len,
			 const struct dl_send_item *item, dl_send_done_fn done, void *arg)
{
	struct dl_send *s;
	int rc;

	if (dl_done(c))
		return -ESHUTDOWN;
	if (len > DL_ACTIVITY_MAX)
		return -EFBIG;
	if (c->tx_count >= DL_SEND_QUEUE_MAX)
		return -ENOBUFS;
	if (item && item->id <= 0)
		return -EINVAL;
	s = new_send(c, activity_json, len, item, done, arg, &rc);
	if (!s)
		return rc;
	if (s->maybe_sent) {
		hold_begin(c);
	} else if (c->resume_unsettled && !c->tx_head) {
		c->resume_unsettled = false;	/* what was unsettled at the restart is gone */
		hold_settle(c);
	}
	if (c->tx_tail)
		c->tx_tail->next = s;
	else
		c->tx_head = s;
	c->tx_tail = s;
	c->tx_count++;
	c->active_ms = clock_mono_ms();
	if (c->parked && !c->held)
		dl_stream_wake(c, "send");	/* the bot's answer comes on the stream at once */
	else if (c->waking && !c->wake_boundary)
		c->wake_boundary = strdup(s->client_id);	/* out of memory: held a little longer */
	/* From the loop: a kick may find the token gone for good and end the conversation,
	 * and its callbacks must not run inside this call. */
	if (!c->tx.t && dl_timer(c, &c->tx_timer, on_tx_timer) && !loop_timer_pending(c->tx_timer))
		loop_timer_start(c->tx_timer, 0, 0);
	return 0;
}

int directline_send(struct dl_conv *c, const char *activity_json, size_t len, dl_send_done_fn done,
		    void *arg)
{
	return directline_send_item(c, activity_json, len, NULL, done, arg);
}

/* Takes the head off the queue and reports it; then the next one may go. */
static void finish(struct dl_conv *c, int err, const char *reason, const char *id)
{
	struct dl_send *s = c->tx_head;

	c->tx_head = s->next;
	if (!c->tx_head)
		c->tx_tail = NULL;
	c->tx_count--;
	if (c->tx_timer)
		loop_timer_stop(c->tx_timer);
	metrics_inc(err ? c->dl->c.sends_failed : c->dl->c.sends_ok);
	if (!err)
		metrics_observe(c->dl->c.send_seconds, (double)(clock_mono_ms() - s->queued_ms) / 1000.0);
	if (err)
		log_warn(c->dl->lg, "directline.send_failed", "key=\"%s\" conv=%s reason=\"%s\"", c->key,
			 c->id ? c->id : "-", reason);
	if (s->done)
		s->done(c, err, reason, id, s->arg);
	free(s->body);
	free(s);
	/* Settled, and reported first: the caller forgets it before the position moves on. */
	c->resume_unsettled = false;
	hold_settle(c);
	forget_echoes(c);	/* what the restart left unsure was queued first, and is settled */
	if (!dl_done(c))
		dl_send_kick(c);
}

void dl_send_fail_all(struct dl_conv *c, int err, const char *reason)
{
	dl_http_cancel(&c->tx);
	if (c->tx_timer)
		loop_timer_stop(c->tx_timer);
	while (c->tx_head) {
		struct dl_send *s = c->tx_head;

		c->tx_head = s->next;
		c->tx_count--;
		metrics_inc(c->dl->c.sends_failed);
		if (s->done)
			s->done(c, err, reason, NULL, s->arg);
		free(s->body);
		free(s);
	}
	c->tx_tail = NULL;
}

static void check_head(struct dl_conv *c);

void dl_send_kick(struct dl_conv *c)
{
	struct dl_send *s = c->tx_head;

	if (!s || s->state != TX_QUEUED || c->tx.t || dl_done(c) || !c->started || !c->id)
		return;
	if (!dl_token_valid(c)) {
		dl_token_reacquire(c);	/* dl_send_kick runs again once it is back */
		return;
	}
	if (s->maybe_sent && !s->checked)
		check_head(c);
	else
		post_head(c);
}

static void later(struct dl_conv *c, enum tx_state state, uint64_t delay_ms)
{
	c->tx_head->state = (uint8_t)state;
	if (dl_timer(c, &c->tx_timer, on_tx_timer))
		loop_timer_start(c->tx_timer, delay_ms, 0);
}

/* }===== */

/* {===== Posting and what the answer means */

static void retry(struct dl_conv *c, int64_t delay_ms)
{
	struct dl_send *s = c->tx_head;

	if (++s->attempts >= DL_SEND_ATTEMPTS_MAX) {
		finish(c, -EIO, "retries exhausted", NULL);
		return;
	}
	later(c, TX_RETRY, delay_ms >= 0 ? (uint64_t)delay_ms : dl_backoff_ms(c->dl, s->attempts - 1u));
}

/* The POST may have reached the bot: done if its echo came, else wait for it. */
static void unknown_outcome(struct dl_conv *c, const char *why)
{
	struct dl_send *s = c->tx_head;

	if (s->echo_seen) {
		finish(c, 0, "ok", NULL);
		return;
	}
	log_info(c->dl->lg, "directline.send_unconfirmed", "key=\"%s\" conv=%s reason=\"%s\"", c->key, c->id, why);
	later(c, TX_WAIT_ECHO, c->dl->s.echo_grace_ms);
}

static int id_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	char *out = ctx;

	(void)self;
	if (s[0].kind == HD_STRING && s[0].str.len < DL_ID_MAX)
		snprintf(out, DL_ID_MAX, "%.*s", (int)s[0].str.len, s[0].str.ptr);
	return 0;
}

static const struct json_member id_members[] = { { JSON_KEY("id"), .slot = 0 } };
static const struct json_schema id_schema = { JSON_MEMBERS(id_members), .nslots = 1, .done = id_done };

static void posted_ok(struct dl_conv *c, const struct http_response *res)
{
	char id[DL_ID_MAX] = "";
	struct json_walk w = { .root = &id_schema, .ctx = id, .max_depth = 16 };

	if (res->body_len > 0 && res->body_len <= DL_BODY_MAX)
		dl_json_walk(c->dl, res->body, res->body_len, &w);
	dl_stream_poll_soon(c);
	finish(c, 0, "ok", id[0] ? id : NULL);
}

static void refused(struct dl_conv *c, const struct http_response *res)
{
	char code[72];

	switch (res->status) {
	case 400: finish(c, -EINVAL, "bad request", NULL); break;
	case 401: finish(c, -EACCES, "unauthorized", NULL); break;
	case 413: finish(c, -EFBIG, "too large", NULL); break;
	case 404:
		finish(c, -ENOENT, "not found", NULL);
		if (!dl_done(c))
			dl_terminate(c, DL_STATE_ENDED, "not found");
		break;
	case 403:
		dl_http_error_code(c->dl, res, code, sizeof(code));
		if (strcmp(code, "TokenExpired") == 0) {	/* not the activity's fault */
			c->tx_head->state = TX_QUEUED;
			dl_token_reacquire(c);
		} else {
			finish(c, -EPERM, "forbidden", NULL);
		}
		break;
	default: finish(c, -EPROTO, "rejected", NULL); break;
	}
}

static void throttled(struct dl_conv *c, const struct http_response *res)
{
	int64_t wait = dl_http_retry_after_ms(c->dl, res);

	later(c, TX_RETRY, wait >= 0 ? (uint64_t)wait : dl_backoff_ms(c->dl, c->tx_head->throttled));
}

static void on_posted(struct dl_conv *c, const struct http_response *res, int err)
{
	struct dl_send *s = c->tx_head;

	if (dl_done(c) || !s || s->state != TX_POSTING)
		return;
	if (dl_http_ok(res, err))
		posted_ok(c, res);
	else if (err == -EPERM)	/* held back (the lease): not a failed attempt */
		later(c, TX_RETRY, dl_backoff_ms(c->dl, 0));
	else if (err && !res->sent)
		retry(c, -1);	/* it never left: sending again cannot duplicate it */
	else if (err)
		unknown_outcome(c, http_client_strerror(err));
	else if (res->status == 429 && ++s->throttled <= THROTTLED_MAX)
		throttled(c, res);
	else if (res->status == 429)
		finish(c, -EAGAIN, "retries exhausted", NULL);
	else if (res->status == 502 || res->status == 504)
		unknown_outcome(c, res->status == 502 ? "502" : "504");
	else if (res->status >= 500)
		retry(c, dl_http_retry_after_ms(c->dl, res));
	else
		refused(c, res);
}

static void post_head(struct dl_conv *c)
{
	struct dl_send *s = c->tx_head;
	char id[DL_ID_MAX * 3 + 1], path[DL_ID_MAX * 3 + 64];

	s->state = TX_POSTING;
	s->posted = true;
	hold_begin(c);	/* from here its echo may come: a restart must replay it */
	if (dl_url_escape(id, sizeof(id), c->id) < 0) {
		finish(c, -EINVAL, "bad request", NULL);
		return;
	}
	snprintf(path, sizeof(path), "/conversations/%s/activities", id);
	if (dl_http(c, &c->tx, "POST", path, DL_CRED_TOKEN, s->body, s->len, c->dl->s.post_timeout_ms,
		    on_posted) < 0)
		retry(c, -1);
}

/* }===== */

/* {===== Reconciliation: the echo decides */

/* Ours means sent by a handoffd: this process, or an earlier one whose echo comes again
 * after a restart (the history from the stored position replays it). */
bool dl_send_is_ours(const char *client_id, size_t len)
{
	size_t plen = sizeof(CLIENT_ID_PREFIX) - 1;

	return len > plen && memcmp(client_id, CLIENT_ID_PREFIX, plen) == 0;
}

/* The one the history settles: done without a POST, with the id Direct Line gave it.
 * HOW: "history" when the look by GET found it, "replay" when it came back on its own
 * (the stream's replay, or a catch-up GET of the resume). */
static void reconciled(struct dl_conv *c, const char *activity_id, const char *how)
{
	log_info(c->dl->lg, "directline.send_reconciled", "key=\"%s\" conv=%s client_id=%s found=%s", c->key,
		 c->id ? c->id : "-", c->tx_head->client_id, how);
	finish(c, 0, "ok", activity_id);
}

/* The older versions' marker of an echo whose id is not of this process (cheap enough:
 * only replays after a restart get here). 0 when it has none. */
enum { LEGACY_CHANNEL, LEGACY_MARKER, LEGACY_NSLOTS };

static int legacy_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	uint64_t *out = ctx;

	(void)self;
	if (s[LEGACY_MARKER].kind == HD_STRING && s[LEGACY_MARKER].str.len)
		*out = dedupe_hash(s[LEGACY_MARKER].str.ptr, s[LEGACY_MARKER].str.len);
	return 0;
}

static const struct json_member legacy_channel[] = { { JSON_KEY("handoffd"), .slot = LEGACY_MARKER } };
static const struct json_schema legacy_channel_schema = { JSON_MEMBERS(legacy_channel) };
static const struct json_member legacy_members[] = {
	{ JSON_KEY("channelData"), .slot = LEGACY_CHANNEL, .object = &legacy_channel_schema },
};
static const struct json_schema legacy_schema = {
	JSON_MEMBERS(legacy_members), .nslots = LEGACY_NSLOTS, .done = legacy_done,
};

static uint64_t legacy_marker(struct dl_conv *c, const struct hd_activity *a)
{
	size_t plen = sizeof(CLIENT_ID_PREFIX) - 1, ilen = strlen(c->dl->instance);
	struct hd_str id = a->client_activity_id;
	uint64_t h = 0;
	struct json_walk w = { .root = &legacy_schema, .ctx = &h, .max_depth = 64 };

	if (!c->resumed || (id.len > plen + ilen && memcmp(id.ptr + plen, c->dl->instance, ilen) == 0) ||
	    (id.len > plen && id.ptr[plen] == 'o'))
		return 0;
	dl_json_walk(c->dl, a->raw.ptr, a->raw.len, &w);
	return h;
}

static bool is_head(const struct dl_send *s, struct hd_str id, uint64_t legacy)
{
	return (strlen(s->client_id) == id.len && memcmp(s->client_id, id.ptr, id.len) == 0) ||
	       (legacy && legacy == s->legacy_hash);
}

/* An echo that settled nothing now: a send queued later may be it (after a restart, the
 * replay can come before the caller queues what it was unsure of). Bounded, oldest out. */
static void remember(struct dl_conv *c, uint64_t h, struct hd_str activity_id)
{
	struct dl_echo *e;

	for (size_t i = 0; c->echoes && i < DL_ECHOES_KEPT; i++)
		if (c->echoes[i].hash == h)
			return;
	if (!c->echoes && !(c->echoes = calloc(DL_ECHOES_KEPT, sizeof(*c->echoes))))
		return;	/* out of memory: the check by GET still finds it, unless passed */
	e = &c->echoes[c->echo_next];
	c->echo_next = (uint8_t)((c->echo_next + 1) % DL_ECHOES_KEPT);
	free(e->activity_id);
	e->hash = h;
	e->activity_id = activity_id.len && activity_id.len < DL_ID_MAX ? strndup(activity_id.ptr, activity_id.len)
									: NULL;
}

static const struct dl_echo *remembered(const struct dl_conv *c, const struct dl_send *s)
{
	uint64_t h = dedupe_hash(s->client_id, strlen(s->client_id));

	for (size_t i = 0; c->echoes && i < DL_ECHOES_KEPT; i++)
		if (c->echoes[i].hash && (c->echoes[i].hash == h || c->echoes[i].hash == s->legacy_hash))
			return &c->echoes[i];
	return NULL;
}

void dl_send_echo(struct dl_conv *c, const struct hd_activity *a)
{
	struct dl_send *s = c->tx_head;
	struct hd_str id = a->client_activity_id;
	uint64_t legacy = legacy_marker(c, a);
	char aid[DL_ID_MAX];

	if (s && is_head(s, id, legacy)) {
		snprintf(aid, sizeof(aid), "%.*s", (int)(a->id.len < DL_ID_MAX ? a->id.len : 0), a->id.ptr ? a->id.ptr : "");
		s->echo_seen = true;
		if (s->state == TX_WAIT_ECHO)
			finish(c, 0, "ok", NULL);
		else if (s->state != TX_POSTING && s->state != TX_SYNCING)	/* not posted by us (yet) */
			reconciled(c, aid[0] ? aid : NULL, s->state == TX_CHECKING ? "history" : "replay");
		return;
	}
	if (c->remembering) {
		remember(c, dedupe_hash(id.ptr, id.len), a->id);
		if (legacy)
			remember(c, legacy, a->id);
	}
}

/* A send that may have left before a restart: the history from the stored position says.
 * Direct Line may still be taking in a POST the crash cut, so the look waits echo_grace
 * from the open: a wait for the service, not a guess (the history decides). */
static void check_head(struct dl_conv *c)
{
	struct dl_send *s = c->tx_head;
	const struct dl_echo *e = remembered(c, s);
	uint64_t ready = c->opened_ms + c->dl->s.echo_grace_ms, now = clock_mono_ms();

	if (e) {
		reconciled(c, e->activity_id, "replay");
	} else if (now < ready) {
		later(c, TX_QUEUED, ready - now);
	} else {
		s->state = TX_CHECKING;
		dl_stream_sync(c);
	}
}

static void checked(struct dl_conv *c, bool ok)
{
	struct dl_send *s = c->tx_head;
	const struct dl_echo *e = remembered(c, s);

	if (e) {
		reconciled(c, e->activity_id, "history");
	} else if (ok) {	/* read to the end, not there: it never arrived */
		log_info(c->dl->lg, "directline.send_resent", "key=\"%s\" conv=%s client_id=%s", c->key, c->id,
			 s->client_id);
		s->checked = true;
		s->state = TX_QUEUED;
		dl_send_kick(c);
	} else {		/* the GET failed: look again, never guess */
		later(c, TX_QUEUED, dl_backoff_ms(c->dl, s->syncs < 16 ? s->syncs++ : s->syncs));
	}
}

/* No echo after the grace period and a catch-up GET: post once more, or give up. */
static void echo_missing(struct dl_conv *c)
{
	struct dl_send *s = c->tx_head;

	metrics_inc(c->dl->c.echo_timeouts);
	if (s->resent) {
		finish(c, -ETIMEDOUT, "unconfirmed", NULL);
		return;
	}
	s->resent = true;
	s->syncs = 0;
	metrics_inc(c->dl->c.resends);
	log_info(c->dl->lg, "directline.resend", "key=\"%s\" conv=%s", c->key, c->id);
	s->state = TX_QUEUED;
	dl_send_kick(c);
}

void dl_send_synced(struct dl_conv *c, bool ok)
{
	struct dl_send *s = c->tx_head;

	if (s && s->state == TX_CHECKING) {
		checked(c, ok);
		return;
	}
	if (!s || s->state != TX_SYNCING)
		return;
	if (s->echo_seen)
		finish(c, 0, "ok", NULL);
	else if (ok || ++s->syncs >= SYNC_TRIES_MAX)
		echo_missing(c);
	else
		later(c, TX_WAIT_ECHO, c->dl->s.echo_grace_ms);
}

static void on_tx_timer(void *arg)
{
	struct dl_conv *c = arg;
	struct dl_send *s = c->tx_head;

	dl_hold(c);
	if (!dl_done(c) && s) {
		if (s->state == TX_RETRY || s->state == TX_QUEUED) {
			s->state = TX_QUEUED;
			dl_send_kick(c);
		} else if (s->state == TX_WAIT_ECHO) {
			s->state = TX_SYNCING;
			dl_stream_sync(c);
		}
	}
	dl_release(c);
}

/* }===== */

/* {===== The stored position: held before every unsettled send */

static bool unsettled(const struct dl_conv *c)
{
	const struct dl_send *s = c->tx_head;

	return c->resume_unsettled || (s && (s->posted || (s->maybe_sent && !s->checked)));
}

static void hold_begin(struct dl_conv *c)
{
	if (c->holding)
		return;
	c->holding = true;
	c->held_wm = c->watermark ? strdup(c->watermark) : NULL;	/* out of memory: from the start */
}

static void hold_settle(struct dl_conv *c)
{
	bool moved;

	if (!c->holding || unsettled(c))
		return;
	moved = c->held_wm && c->watermark ? strcmp(c->held_wm, c->watermark) != 0 : c->held_wm != c->watermark;
	c->holding = false;
	free(c->held_wm);
	c->held_wm = NULL;
	if (moved && !dl_done(c))
		dl_persist(c);	/* the stored position catches up */
}

const char *dl_send_watermark(const struct dl_conv *c)
{
	return c->holding ? c->held_wm : c->watermark;
}

static void forget_echoes(struct dl_conv *c)
{
	for (size_t i = 0; c->echoes && i < DL_ECHOES_KEPT; i++)
		free(c->echoes[i].activity_id);
	free(c->echoes);
	c->echoes = NULL;
	c->remembering = false;
}

void dl_send_forget(struct dl_conv *c)
{
	forget_echoes(c);
	free(c->held_wm);
	c->held_wm = NULL;
}

/* }===== */

/* {===== Greeting and goodbye */

void dl_send_greeting(struct dl_conv *c)
{
	char json[256], locale[128] = "";
	struct dl_send *s;
	int rc;

	if (c->dl->s.locale && json_text_escape_whole(locale, sizeof(locale), c->dl->s.locale) < 0)
		locale[0] = '\0';
	snprintf(json, sizeof(json), "{\"type\":\"event\",\"name\":\"startConversation\"%s%s%s}",
		 locale[0] ? ",\"locale\":\"" : "", locale, locale[0] ? "\"" : "");
	s = new_send(c, json, strlen(json), NULL, NULL, NULL, &rc);
	if (!s)
		return;
	s->next = c->tx_head;	/* before anything the caller queued meanwhile */
	c->tx_head = s;
	if (!c->tx_tail)
		c->tx_tail = s;
	c->tx_count++;
}

static void on_goodbye(struct dl_conv *c, const struct http_response *res, int err)
{
	log_info(c->dl->lg, "directline.goodbye", "key=\"%s\" conv=%s status=%d", c->key, c->id,
		 err ? 0 : res->status);
	c->detached = false;	/* dl_release frees it now */
}

void dl_send_goodbye(struct dl_conv *c)
{
	char json[] = "{\"type\":\"endOfConversation\"}";
	char id[DL_ID_MAX * 3 + 1], path[DL_ID_MAX * 3 + 64];
	struct dl_send s = { 0 };

	if (compose(c, json, strlen(json), NULL, &s) < 0 || dl_url_escape(id, sizeof(id), c->id) < 0) {
		free(s.body);
		c->detached = false;
		return;
	}
	snprintf(path, sizeof(path), "/conversations/%s/activities", id);
	if (dl_http(c, &c->tx, "POST", path, DL_CRED_TOKEN, s.body, s.len, c->dl->s.post_timeout_ms,
		    on_goodbye) < 0)
		c->detached = false;
	free(s.body);
}

/* }===== */
