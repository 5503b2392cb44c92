/* dl_token.c - the credentials of a Direct Line conversation.
 * Owns getting a first token (a secret exchanged with tokens/generate, a Copilot Studio /
 * PVA token endpoint, or a fixed token), starting the conversation (POST /conversations),
 * refreshing each token at a jittered fraction of its lifetime, re-acquiring an expired
 * or refused token and resuming the conversation by id, and discovering a Copilot
 * Studio bot's regional base. Tokens go into Authorization headers and on_persist only:
 * they are never formatted into a log line. What the stream does with a new streamUrl is
 * dl_stream.c's. */
#include "directline/dl_internal.h"

#include "net/http_client.h"
#include "parse/json_simd.h"
#include "base/clock.h"
#include "base/json_text.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOKEN_MARGIN_MS 1000	/* a token this close to expiry counts as expired */
#define TOKEN_MIN_LIFETIME_MS 2000
#define JWT_PAYLOAD_MAX 4096
#define DEFAULT_API_VERSION "2022-03-01-preview"
#define STR_(x) #x
#define STR(x) STR_(x)
/* What a 2xx answer lacked, for the log line: the limits are ours (dl_internal.h), so a
 * service that sends a longer token than we take says so instead of failing silently. */
#define UNUSABLE_TOKEN "no usable token in the answer (none, or over " STR(DL_TOKEN_MAX) " bytes)"
#define UNUSABLE_START "no usable conversationId in the answer (none, or over " STR(DL_ID_MAX) " bytes)"

static void start_conversation(struct dl_conv *c);

/* {===== Answers: {conversationId, token, expires_in, streamUrl} */

enum { ANS_CONV, ANS_TOKEN, ANS_EXPIRES, ANS_STREAM, ANS_NSLOTS };

static double number(const struct json_slot *s)
{
	char buf[32];

	if (s->kind != HD_NUMBER || s->raw.len >= sizeof(buf))
		return -1;
	memcpy(buf, s->raw.ptr, s->raw.len);
	buf[s->raw.len] = '\0';
	return strtod(buf, NULL);
}

static struct hd_str string(const struct json_slot *s, size_t max)
{
	return s->kind == HD_STRING && s->str.len > 0 && s->str.len <= max ? s->str : (struct hd_str){ 0 };
}

static int answer_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	struct dl_token_answer *a = ctx;

	(void)self;
	a->conversation_id = string(&s[ANS_CONV], DL_ID_MAX);
	a->token = string(&s[ANS_TOKEN], DL_TOKEN_MAX);
	a->stream_url = string(&s[ANS_STREAM], DL_URL_MAX);
	a->expires_in = number(&s[ANS_EXPIRES]);
	return 0;
}

static const struct json_member answer_members[] = {
	{ JSON_KEY("conversationId"), .slot = ANS_CONV },
	{ JSON_KEY("token"), .slot = ANS_TOKEN },
	{ JSON_KEY("expires_in"), .slot = ANS_EXPIRES },
	{ JSON_KEY("streamUrl"), .slot = ANS_STREAM },
};
static const struct json_schema answer_schema = {
	JSON_MEMBERS(answer_members), .nslots = ANS_NSLOTS, .done = answer_done,
};

int dl_token_parse(struct directline *dl, const struct http_response *res, struct dl_token_answer *out)
{
	struct json_walk w = { .root = &answer_schema, .ctx = out, .max_depth = 16 };

	memset(out, 0, sizeof(*out));
	if (res->body_len == 0 || res->body_len > DL_BODY_MAX)
		return -EPROTO;
	return dl_json_walk(dl, res->body, res->body_len, &w) < 0 ? -EPROTO : 0;
}

/* }===== */

/* {===== Lifetime: expires_in, else the JWT's exp, else 30 minutes */

static int exp_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	(void)self;
	*(double *)ctx = number(&s[0]);
	return 0;
}

static const struct json_member exp_members[] = { { JSON_KEY("exp"), .slot = 0 } };
static const struct json_schema exp_schema = { JSON_MEMBERS(exp_members), .nslots = 1, .done = exp_done };

/* Seconds until the JWT's exp, or -1 when TOKEN is not a JWT with one. */
static double jwt_seconds_left(struct directline *dl, const char *token)
{
	const char *a = strchr(token, '.'), *b = a ? strchr(a + 1, '.') : NULL;
	unsigned char in[JWT_PAYLOAD_MAX + 4], out[JWT_PAYLOAD_MAX];
	size_t n = a && b ? (size_t)(b - a - 1) : 0;
	double exp = -1;
	int len;

	if (n == 0 || n > JWT_PAYLOAD_MAX)
		return -1;
	for (size_t i = 0; i < n; i++)	/* base64url to base64, then pad */
		in[i] = a[1 + i] == '-' ? '+' : a[1 + i] == '_' ? '/' : (unsigned char)a[1 + i];
	while (n % 4)
		in[n++] = '=';
	len = EVP_DecodeBlock(out, in, (int)n);
	if (len <= 0)
		return -1;
	while (n > 0 && in[n - 1] == '=') {	/* EVP_DecodeBlock counts the padding */
		n--;
		len--;
	}
	struct json_walk w = { .root = &exp_schema, .ctx = &exp, .max_depth = 8 };
	if (dl_json_walk(dl, (const char *)out, (size_t)len, &w) < 0 || exp <= 0)
		return -1;
	return exp - (double)time(NULL);
}

static void on_tok_timer(void *arg);

static void schedule_refresh(struct dl_conv *c, uint64_t lifetime_ms)
{
	struct directline *dl = c->dl;
	/* At about token_refresh of the lifetime, spread +-10% so conversations opened
	 * together do not refresh together. */
	double at = (double)lifetime_ms * dl->s.token_refresh *
		    (0.9 + 0.2 * (double)(rng_next(&dl->rng) % 1000) / 1000.0);

	if (dl_timer(c, &c->tok_timer, on_tok_timer))
		loop_timer_start(c->tok_timer, (uint64_t)at, 0);
}

int dl_token_adopt(struct dl_conv *c, const char *token, size_t len, double expires_in)
{
	double left;
	uint64_t lifetime_ms;

	if (len == 0 || len > DL_TOKEN_MAX || memchr(token, '\0', len))
		return -EPROTO;
	if (dl_strset(&c->token, token, len) < 0)
		return -ENOMEM;
	left = expires_in > 0 ? expires_in : jwt_seconds_left(c->dl, c->token);
	if (left <= 0)
		left = DL_DEFAULT_TOKEN_LIFETIME_S;
	lifetime_ms = (uint64_t)(left * 1000.0);
	if (lifetime_ms < TOKEN_MIN_LIFETIME_MS)
		lifetime_ms = TOKEN_MIN_LIFETIME_MS;
	c->token_expires_ms = clock_mono_ms() + lifetime_ms;
	c->token_expires_wall = (int64_t)time(NULL) + (int64_t)(lifetime_ms / 1000);
	c->token_bad = false;
	c->tok_attempt = 0;
	schedule_refresh(c, lifetime_ms);
	return 0;
}

int dl_token_resume(struct dl_conv *c, const char *token, uint64_t left_ms)
{
	if (dl_strset(&c->token, token, strlen(token)) < 0)
		return -ENOMEM;
	c->token_expires_ms = clock_mono_ms() + left_ms;
	c->token_expires_wall = (int64_t)time(NULL) + (int64_t)(left_ms / 1000);
	/* Its whole lifetime is not known any more: refresh at the same fraction of what is left. */
	schedule_refresh(c, left_ms);
	return 0;
}

bool dl_token_valid(const struct dl_conv *c)
{
	return c->token && !c->token_bad && clock_mono_ms() + TOKEN_MARGIN_MS < c->token_expires_ms;
}

void dl_token_wake(struct dl_conv *c)
{
	uint64_t now = clock_mono_ms();

	/* The refresh skipped while parked: due again if the token still lives. */
	if (dl_token_valid(c) && !c->tok.t && !(c->tok_timer && loop_timer_pending(c->tok_timer)))
		schedule_refresh(c, c->token_expires_ms - now);
}

void dl_token_stop(struct dl_conv *c)
{
	dl_http_cancel(&c->tok);
	if (c->tok_timer)
		loop_timer_stop(c->tok_timer);
}

/* }===== */

/* {===== A new conversation: first token, then POST /conversations */

/* {"user":{"id":...},"locale":...}: what DirectLineJS sends with generate and start. */
static int user_body(const struct dl_conv *c, char *out, size_t cap)
{
	char uid[128], uid_json[256], locale[128] = "";

	dl_user_id(c, uid, sizeof(uid));
	if (json_text_escape_whole(uid_json, sizeof(uid_json), uid) < 0 ||
	    (c->dl->s.locale && json_text_escape_whole(locale, sizeof(locale), c->dl->s.locale) < 0))
		return -ENOSPC;
	return snprintf(out, cap, "{\"user\":{\"id\":\"%s\"}%s%s%s}", uid_json,
			locale[0] ? ",\"locale\":\"" : "", locale, locale[0] ? "\"" : "");
}

/* The err= of a failed token call's log line: the request's failure, or UNUSABLE when the
 * service answered 2xx with nothing we could take. */
static const char *failure_text(const struct http_response *res, int err, const char *unusable)
{
	return err ? http_client_strerror(err) : dl_http_ok(res, 0) ? unusable : "";
}

/* A failed step of the start: credentials refused end it, anything else is retried.
 * UNUSABLE says, for the log, what was wrong with the answer if it was a 2xx. */
static void start_failed(struct dl_conv *c, const struct http_response *res, int err, const char *step,
			 const char *unusable)
{
	struct directline *dl = c->dl;
	int status = err ? 0 : res->status;

	log_warn(dl->lg, "directline.start_failed", "key=\"%s\" step=%s status=%d err=\"%s\"", c->key,
		 step, status, failure_text(res, err, unusable));
	if (status == 401 || status == 403) {
		dl_terminate(c, DL_STATE_FAILED, "credentials refused");
		return;
	}
	if (status == 400 || status == 404) {
		dl_terminate(c, DL_STATE_FAILED, status == 404 ? "not found" : "bad request");
		return;
	}
	int64_t wait = status ? dl_http_retry_after_ms(dl, res) : -1;

	free(c->token);	/* a fresh token on the next try */
	c->token = NULL;
	if (status == 429)
		dl_slot_throttle(dl, wait >= 0 ? (uint64_t)wait : 1000);
	dl_stream_retry(c, wait, "start failed");
}

static void on_started(struct dl_conv *c, const struct http_response *res, int err)
{
	struct dl_token_answer a;

	if (dl_done(c))
		return;
	if (!dl_http_ok(res, err) || dl_token_parse(c->dl, res, &a) < 0 || !a.conversation_id.ptr) {
		start_failed(c, res, err, "start", UNUSABLE_START);
		return;
	}
	if (dl_strset(&c->id, a.conversation_id.ptr, a.conversation_id.len) < 0 ||
	    (a.stream_url.ptr && dl_strset(&c->stream_url, a.stream_url.ptr, a.stream_url.len) < 0) ||
	    (a.token.ptr && dl_token_adopt(c, a.token.ptr, a.token.len, a.expires_in) < 0)) {
		dl_stream_retry(c, -1, "out of memory");
		return;
	}
	c->stream_url_ms = a.stream_url.ptr ? clock_mono_ms() : 0;
	c->started = true;
	log_info(c->dl->lg, "directline.started", "key=\"%s\" conv=%s status=%d", c->key, c->id, res->status);
	dl_persist(c);
	if (dl_done(c))
		return;
	if (c->dl->s.greeting)
		dl_send_greeting(c);
	dl_stream_started(c);
	dl_send_kick(c);
}

static void start_conversation(struct dl_conv *c)
{
	char body[512];
	int n = user_body(c, body, sizeof(body)), rc;

	c->phase = DL_PH_START;
	rc = n < 0 ? n : dl_http(c, &c->rx, "POST", "/conversations", DL_CRED_TOKEN, body, (size_t)n,
				 DL_REST_TIMEOUT_MS, on_started);
	if (rc < 0)
		dl_stream_retry(c, -1, "start failed");
}

static void on_acquired(struct dl_conv *c, const struct http_response *res, int err)
{
	struct dl_token_answer a;

	if (dl_done(c))
		return;
	if (!dl_http_ok(res, err) || dl_token_parse(c->dl, res, &a) < 0 || !a.token.ptr) {
		start_failed(c, res, err, c->dl->s.secret ? "generate" : "token_url", UNUSABLE_TOKEN);
		return;
	}
	if ((a.conversation_id.ptr && dl_strset(&c->id, a.conversation_id.ptr, a.conversation_id.len) < 0) ||
	    dl_token_adopt(c, a.token.ptr, a.token.len, a.expires_in) < 0) {
		dl_stream_retry(c, -1, "out of memory");
		return;
	}
	start_conversation(c);
}

void dl_token_start(struct dl_conv *c)
{
	struct directline *dl = c->dl;
	char body[512];
	int rc;

	c->phase = DL_PH_ACQUIRE;
	if (dl->base_state != DL_BASE_READY)
		return;		/* dl_token_discover's completion comes back here */
	if (dl_token_valid(c)) {
		start_conversation(c);
		return;
	}
	if (dl->s.secret) {
		rc = user_body(c, body, sizeof(body));
		if (rc >= 0)
			rc = dl_http(c, &c->rx, "POST", "/tokens/generate", DL_CRED_SECRET, body, (size_t)rc,
				     DL_REST_TIMEOUT_MS, on_acquired);
	} else if (dl->s.token_url) {
		rc = dl_http(c, &c->rx, "GET", dl->s.token_url, DL_CRED_NONE, NULL, 0, DL_REST_TIMEOUT_MS,
			     on_acquired);
	} else {
		rc = dl_token_adopt(c, dl->s.token, strlen(dl->s.token), -1);
		if (rc == 0)
			start_conversation(c);
		return;
	}
	if (rc < 0)
		dl_stream_retry(c, -1, "start failed");
}

/* }===== */

/* {===== Refresh and re-acquisition */

static void retry_token_later(struct dl_conv *c, int64_t retry_after_ms)
{
	uint64_t delay = retry_after_ms >= 0 ? (uint64_t)retry_after_ms
					     : dl_backoff_ms(c->dl, c->tok_attempt);

	if (c->tok_attempt < 16)
		c->tok_attempt++;
	if (dl_timer(c, &c->tok_timer, on_tok_timer))
		loop_timer_start(c->tok_timer, delay, 0);
}

static void token_lost(struct dl_conv *c, const char *why)
{
	log_warn(c->dl->lg, "directline.token_lost", "key=\"%s\" conv=%s reason=\"%s\"", c->key,
		 c->id ? c->id : "-", why);
	dl_terminate(c, DL_STATE_FAILED, "token expired");
}

static void on_reacquired(struct dl_conv *c, const struct http_response *res, int err)
{
	struct dl_token_answer a;
	int status = err ? 0 : res->status;

	if (dl_done(c))
		return;
	if (status == 404) {
		dl_terminate(c, DL_STATE_ENDED, "not found");
		return;
	}
	if (status == 401 || status == 403 || status == 400) {
		token_lost(c, "secret refused");
		return;
	}
	if (!dl_http_ok(res, err) || dl_token_parse(c->dl, res, &a) < 0 || !a.token.ptr ||
	    dl_token_adopt(c, a.token.ptr, a.token.len, a.expires_in) < 0) {
		retry_token_later(c, status ? dl_http_retry_after_ms(c->dl, res) : -1);
		return;
	}
	metrics_inc(c->dl->c.reacquired);
	log_info(c->dl->lg, "directline.token_reacquired", "key=\"%s\" conv=%s", c->key, c->id);
	dl_persist(c);
	if (dl_done(c))
		return;
	dl_stream_token_ready(c);
	dl_send_kick(c);
}

static void reacquire_now(struct dl_conv *c)
{
	char path[DL_ID_MAX * 3 + DL_WATERMARK_MAX * 3 + 64], id[DL_ID_MAX * 3 + 1];
	char wm[DL_WATERMARK_MAX * 3 + 1] = "";

	if (!c->dl->s.secret || !c->id) {
		token_lost(c, "no secret to get another");
		return;
	}
	if (dl_url_escape(id, sizeof(id), c->id) < 0 ||
	    (c->watermark && dl_url_escape(wm, sizeof(wm), c->watermark) < 0)) {
		token_lost(c, "conversation id too long");
		return;
	}
	/* Asking with the secret gives a token for the same conversation; the watermark
	 * keeps the service from treating this as a request for the whole history. */
	snprintf(path, sizeof(path), "/conversations/%s%s%s", id, wm[0] ? "?watermark=" : "", wm);
	if (dl_http(c, &c->tok, "GET", path, DL_CRED_SECRET, NULL, 0, DL_REST_TIMEOUT_MS, on_reacquired) < 0)
		retry_token_later(c, -1);
}

void dl_token_reacquire(struct dl_conv *c)
{
	c->token_bad = true;
	if (c->tok.t && c->tok.fn == on_reacquired)
		return;		/* already under way */
	dl_http_cancel(&c->tok);
	if (c->tok_timer)
		loop_timer_stop(c->tok_timer);
	reacquire_now(c);
}

static void on_refreshed(struct dl_conv *c, const struct http_response *res, int err)
{
	struct dl_token_answer a;
	int status = err ? 0 : res->status;

	if (dl_done(c))
		return;
	if (dl_http_ok(res, err) && dl_token_parse(c->dl, res, &a) == 0 && a.token.ptr &&
	    dl_token_adopt(c, a.token.ptr, a.token.len, a.expires_in) == 0) {
		metrics_inc(c->dl->c.refresh_ok);
		c->dl->n_refreshes++;
		log_info(c->dl->lg, "directline.token_refreshed", "key=\"%s\" conv=%s", c->key, c->id);
		dl_persist(c);
		return;
	}
	metrics_inc(c->dl->c.refresh_failed);
	log_warn(c->dl->lg, "directline.refresh_failed", "key=\"%s\" conv=%s status=%d err=\"%s\"", c->key,
		 c->id ? c->id : "-", status, failure_text(res, err, UNUSABLE_TOKEN));
	if (status == 404)
		dl_terminate(c, DL_STATE_ENDED, "not found");
	else if (status == 401 || status == 403)
		dl_token_reacquire(c);
	else if (!dl_token_valid(c))
		dl_token_reacquire(c);	/* transient failures ran the clock out */
	else
		retry_token_later(c, status ? dl_http_retry_after_ms(c->dl, res) : -1);
}

static void on_tok_timer(void *arg)
{
	struct dl_conv *c = arg;

	dl_hold(c);
	if (dl_done(c) || c->tok.t || (c->parked && c->dl->s.secret && !c->token_bad)) {
		/* Parked with a secret: no refreshes; a token is re-acquired when it wakes (or
		 * sends). Other credentials cannot do that, so their tokens are refreshed. */
		dl_release(c);
		return;
	}
	if (c->token_bad || !dl_token_valid(c)) {
		c->token_bad = true;
		reacquire_now(c);
	} else if (dl_http(c, &c->tok, "POST", "/tokens/refresh", DL_CRED_TOKEN, NULL, 0,
			   DL_REST_TIMEOUT_MS, on_refreshed) < 0) {
		retry_token_later(c, -1);
	}
	dl_release(c);
}

/* }===== */

/* {===== Regional discovery (Copilot Studio) */

static void on_discover_timer(void *arg);

static void discovered(struct directline *dl)
{
	dl->base_state = DL_BASE_READY;
	log_info(dl->lg, "directline.base", "bot=\"%s\" base=%s", dl->s.bot_name, dl->base);
	for (struct dl_conv *c = dl->all, *next; c; c = next) {
		next = c->next;
		if (c->phase == DL_PH_ACQUIRE && !c->rx.t && !dl_done(c)) {
			dl_hold(c);
			dl_token_start(c);
			dl_release(c);
		}
	}
}

static void retry_discovery(struct directline *dl, const char *why)
{
	log_warn(dl->lg, "directline.discovery_failed", "bot=\"%s\" reason=\"%s\"", dl->s.bot_name, why);
	dl->base_state = DL_BASE_WAITING;
	if (!dl->discover_timer)
		dl->discover_timer = loop_timer_new(dl->lp, on_discover_timer, dl);
	if (dl->discover_timer)
		loop_timer_start(dl->discover_timer, dl_backoff_ms(dl, dl->discover_attempt++ + 1), 0);
}

static int regional_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	(void)self;
	*(struct hd_str *)ctx = string(&s[0], DL_URL_MAX - 32);
	return 0;
}

static const struct json_member regional_urls_members[] = { { JSON_KEY("directline"), .slot = 0 } };
static const struct json_schema regional_urls_schema = { JSON_MEMBERS(regional_urls_members) };
static const struct json_member regional_members[] = {
	{ JSON_KEY("channelUrlsById"), .slot = -1, .object = &regional_urls_schema },
};
static const struct json_schema regional_schema = {
	JSON_MEMBERS(regional_members), .nslots = 1, .done = regional_done,
};

static void on_discovered(const struct http_response *res, int err, void *arg)
{
	struct directline *dl = arg;
	struct hd_str url = { 0 };
	struct json_walk w = { .root = &regional_schema, .ctx = &url, .max_depth = 16 };
	char base[DL_URL_MAX];

	dl->discover_req = NULL;
	if (!dl_http_ok(res, err) || res->body_len > DL_BODY_MAX ||
	    dl_json_walk(dl, res->body, res->body_len, &w) < 0 || !url.ptr ||
	    (strncmp(url.ptr, "https://", 8) != 0 && strncmp(url.ptr, "http://", 7) != 0)) {
		retry_discovery(dl, err ? http_client_strerror(err) : "no directline url");
		return;
	}
	if (!dl_http_url_allowed(dl, url.ptr, url.len)) {
		retry_discovery(dl, "plaintext base refused: the configured base is https");
		return;
	}
	while (url.len > 0 && url.ptr[url.len - 1] == '/')
		url.len--;
	snprintf(base, sizeof(base), "%.*s/v3/directline", (int)url.len, url.ptr);
	if (dl_strset(&dl->base, base, strlen(base)) < 0) {
		retry_discovery(dl, "out of memory");
		return;
	}
	discovered(dl);
}

/* <origin of token_url>/powervirtualagents/regionalchannelsettings?api-version=<same>. */
static int discovery_url(const char *token_url, char *out, size_t cap)
{
	const char *host = strstr(token_url, "://"), *path, *v = strstr(token_url, "api-version=");
	size_t vlen = v ? strcspn(v + 12, "&#") : 0;

	if (!host)
		return -EINVAL;
	path = strchr(host + 3, '/');
	if (snprintf(out, cap, "%.*s/powervirtualagents/regionalchannelsettings?api-version=%.*s",
		     (int)(path ? (size_t)(path - token_url) : strlen(token_url)), token_url,
		     (int)(v ? vlen : strlen(DEFAULT_API_VERSION)), v ? v + 12 : DEFAULT_API_VERSION) >=
	    (int)cap)
		return -ENAMETOOLONG;
	return 0;
}

static void on_discover_timer(void *arg)
{
	dl_token_discover(arg);
}

void dl_token_discover(struct directline *dl)
{
	char url[DL_URL_MAX];
	struct http_header h[] = { { "Accept", "application/json" } };
	struct http_request req = { .method = "GET", .url = url, .headers = h, .nheaders = 1,
				    .timeout_ms = DL_REST_TIMEOUT_MS, .max_body = DL_BODY_MAX };

	dl->base_state = DL_BASE_DISCOVERING;
	if (discovery_url(dl->s.token_url, url, sizeof(url)) < 0 ||
	    http_client_request(dl->hc, &req, on_discovered, dl, &dl->discover_req) < 0)
		retry_discovery(dl, "cannot ask");
}

/* }===== */
