/* dl_http.c - the Direct Line client's REST plumbing: building and starting requests with
 * the right credential and headers, reading statuses, error bodies and Retry-After, and the
 * jittered backoff every retry uses. Which request to make and what an answer means for a
 * conversation is decided by dl_token.c, dl_stream.c and dl_send.c. Credentials go into
 * the Authorization header only and are never formatted into a log line. */
#include "directline/dl_internal.h"

#include "net/http_client.h"
#include "parse/json_simd.h"
#include "base/backoff.h"
#include "base/log.h"
#include "base/metrics.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DL_AGENT "DirectLine/3.0 (handoffd " HANDOFFD_VERSION ")"

/* {===== Requests */

static void on_done(const struct http_response *res, int err, void *arg)
{
	struct dl_req *r = arg;
	struct dl_conv *c = r->c;

	r->t = NULL;
	if (res->status >= 400)
		dl_http_count(c->dl, res->status);
	dl_hold(c);
	r->fn(c, res, err);
	dl_release(c);
}

static const char *credential(const struct dl_conv *c, enum dl_cred cred)
{
	if (cred == DL_CRED_SECRET)
		return c->dl->s.secret;
	if (cred == DL_CRED_TOKEN)
		return c->token;
	return NULL;
}

int dl_http(struct dl_conv *c, struct dl_req *r, const char *method, const char *path,
	    enum dl_cred cred, const char *body, size_t len, uint32_t timeout_ms, dl_http_fn fn)
{
	const char *secret = credential(c, cred);
	struct http_header h[5];
	/* POSTs of activities are not idempotent: never let libcurl send one twice. */
	struct http_request req = { .method = method, .headers = h, .body = body, .body_len = len,
				    .timeout_ms = timeout_ms, .max_body = c->dl->s.max_message,
				    .no_resend = body != NULL, .may_send = body ? c->dl->cb.may_send : NULL,
				    .may_send_arg = c->dl->arg };
	char url[DL_URL_MAX], auth[DL_TOKEN_MAX + 16];
	size_t n = 0;

	if (r->t)
		return -EBUSY;
	if (cred != DL_CRED_NONE && !secret)
		return -EACCES;
	if (snprintf(url, sizeof(url), "%s%s", strncmp(path, "http", 4) == 0 ? "" : c->dl->base, path) >=
	    (int)sizeof(url))
		return -ENAMETOOLONG;
	if (secret) {
		snprintf(auth, sizeof(auth), "Bearer %s", secret);
		h[n++] = (struct http_header){ "Authorization", auth };
	}
	h[n++] = (struct http_header){ "Accept", "application/json" };
	h[n++] = (struct http_header){ "x-ms-bot-agent", DL_AGENT };
	if (body)
		h[n++] = (struct http_header){ "Content-Type", "application/json" };
	req.url = url;
	req.nheaders = n;
	r->c = c;
	r->fn = fn;
	return http_client_request(c->dl->hc, &req, on_done, r, &r->t);
}

void dl_http_cancel(struct dl_req *r)
{
	if (r->t) {
		http_client_cancel(r->t);
		r->t = NULL;
	}
}

static bool has_scheme(const char *url, size_t len, const char *scheme)
{
	size_t n = strlen(scheme);

	return len >= n && strncasecmp(url, scheme, n) == 0;
}

bool dl_http_url_allowed(const struct directline *dl, const char *url, size_t len)
{
	if (has_scheme(url, len, "https://") || has_scheme(url, len, "wss://"))
		return true;
	if (has_scheme(url, len, "http://") || has_scheme(url, len, "ws://"))
		return has_scheme(dl->s.base, strlen(dl->s.base), "http://");
	return false;
}

bool dl_http_ok(const struct http_response *res, int err)
{
	return err == 0 && res->status >= 200 && res->status < 300;
}

void dl_http_count(struct directline *dl, int status)
{
	char label[24];

	snprintf(label, sizeof(label), "code=\"%d\"", status);
	metrics_inc(metrics_counter(dl->m, "handoffd_directline_http_errors_total", label,
				    "Direct Line answers 4xx and 5xx, by status"));
	if (status == 429)
		metrics_inc(dl->c.throttled);
}

/* }===== */

/* {===== Reading answers */

int dl_json_walk(struct directline *dl, const char *body, size_t len, const struct json_walk *w)
{
	struct hd_parse_error err = { 0 };	/* json_simd keeps the first error it is given */
	size_t need = len + HD_PARSE_PADDING;

	if (need > dl->scratch_cap) {
		char *p = realloc(dl->scratch, need);

		if (!p)
			return -ENOMEM;
		dl->scratch = p;
		dl->scratch_cap = need;
	}
	memcpy(dl->scratch, body, len);
	memset(dl->scratch + len, 0, HD_PARSE_PADDING);
	return json_simd_walk(dl->js, dl->scratch, len, need, w, &err);
}

struct error_ctx {
	char *out;
	size_t cap;
};

static int error_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	struct error_ctx *e = ctx;

	(void)self;
	if (s[0].kind == HD_STRING)
		snprintf(e->out, e->cap, "%.*s", (int)(s[0].str.len < 64 ? s[0].str.len : 64), s[0].str.ptr);
	return 0;
}

static const struct json_member error_members[] = { { JSON_KEY("code"), .slot = 0 } };
static const struct json_schema error_schema = { JSON_MEMBERS(error_members) };
static const struct json_member error_body_members[] = {
	{ JSON_KEY("error"), .slot = -1, .object = &error_schema },
};
static const struct json_schema error_body_schema = {
	JSON_MEMBERS(error_body_members), .nslots = 1, .done = error_done,
};

void dl_http_error_code(struct directline *dl, const struct http_response *res, char *out, size_t cap)
{
	struct error_ctx e = { out, cap };
	struct json_walk w = { .root = &error_body_schema, .ctx = &e, .max_depth = 16 };

	out[0] = '\0';
	if (res->body_len > 0 && res->body_len <= DL_BODY_MAX)
		dl_json_walk(dl, res->body, res->body_len, &w);
	/* Codes are printable words; anything else is not worth keeping. */
	for (char *p = out; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
			*p = '_';
}

int64_t dl_http_retry_after_ms(struct directline *dl, const struct http_response *res)
{
	const char *v = http_client_response_header(res, "Retry-After");
	char *end;
	long long secs;

	if (!v)
		return -1;
	secs = strtoll(v, &end, 10);
	if (end == v || *end != '\0') {	/* an HTTP-date */
		time_t when = curl_getdate(v, NULL);

		if (when < 0)
			return -1;
		secs = (long long)(when - time(NULL));
	}
	if (secs < 0)
		secs = 0;
	if (secs > DL_RETRY_AFTER_MAX_S)
		secs = DL_RETRY_AFTER_MAX_S;
	/* Never earlier than asked; a little later, spread, so a crowd does not return at once. */
	return secs * 1000 + (int64_t)(rng_next(&dl->rng) % (uint64_t)(secs * 100 + 251));
}

/* }===== */

/* {===== Backoff and escaping */

uint64_t dl_backoff_ms(struct directline *dl, unsigned attempt)
{
	struct backoff b = { dl->s.reconnect_base_ms, dl->s.reconnect_cap_ms };

	return backoff_delay_ms(&b, &dl->rng, attempt);
}

int dl_url_escape(char *out, size_t cap, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			     (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '~';

		if (n + (plain ? 1 : 3) >= cap)
			return -ENOSPC;
		if (plain) {
			out[n++] = (char)ch;
		} else {
			out[n++] = '%';
			out[n++] = hex[ch >> 4];
			out[n++] = hex[ch & 15];
		}
	}
	out[n] = '\0';
	return (int)n;
}

/* }===== */
