/* websocket.c - WebSocket client: name resolution (evdns), TCP or TLS (bufferevent,
 * bufferevent_openssl), the RFC 6455 upgrade handshake, framing (libwslay), ping/pong
 * liveness and the close handshake, with every byte from the network bounded.
 * It knows nothing about Direct Line: what the messages mean, and when to reconnect,
 * is for the caller (directline.c). This file owns the socket's lifetime, the note on why
 * it ended, and the public calls. The framing, the output bound and the pings are
 * websocket_frames.c's; resolving, connecting and the upgrade on the wire are
 * websocket_connection.c's; OpenSSL is websocket_tls.c's. The URL and the handshake's text
 * (key, expected Accept, the verdict on the answer) are websocket_handshake.c's.
 *
 * One socket walks RESOLVING -> CONNECTING -> HANDSHAKE -> OPEN [-> CLOSING] -> ENDED
 * -> DONE. Whatever ends it first writes a note (struct ending) and moves it to ENDED,
 * which only silences its I/O and arms a zero timer; the timer frees the connection and
 * calls on_close from a clean stack. So no wslay or libevent frame is ever under on_close,
 * and no call into these files re-enters the caller. Entry points from the loop hold a busy
 * count, so websocket_free inside a callback only marks the socket and the outermost
 * entry point frees it on the way out. */
#include "directline/websocket.h"

#include "base/log.h"
#include "net/loop.h"
#include "directline/tls_sessions.h"
#include "directline/websocket_internal.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#define WS_CLOSE_REASON_MAX 123	/* RFC 6455 5.5: 125-byte control payload less the code */

/* {===== Ending: the note on_close receives */

static const char *const end_names[] = {
	[WEBSOCKET_END_CLOSED] = "closed", [WEBSOCKET_END_LOCAL] = "local",
	[WEBSOCKET_END_CONNECT] = "connect", [WEBSOCKET_END_TLS] = "tls",
	[WEBSOCKET_END_HTTP] = "http", [WEBSOCKET_END_HANDSHAKE] = "handshake",
	[WEBSOCKET_END_TIMEOUT] = "timeout", [WEBSOCKET_END_DEAD] = "dead",
	[WEBSOCKET_END_PROTOCOL] = "protocol", [WEBSOCKET_END_TOO_LARGE] = "too_large",
	[WEBSOCKET_END_EOF] = "eof", [WEBSOCKET_END_INTERNAL] = "internal",
};

const char *websocket_end_name(enum websocket_end kind)
{
	if ((size_t)kind >= sizeof(end_names) / sizeof(end_names[0]))
		return "unknown";
	return end_names[kind];
}

/* Records why the socket ends; the first note wins. Returns it, or NULL without memory
 * (report() then says "out of memory"). */
static struct ending *vnote(struct websocket *ws, enum websocket_end kind, int err,
			    const char *fmt, va_list ap)
{
	if (ws->end)
		return ws->end;
	ws->end = calloc(1, sizeof(*ws->end));
	if (!ws->end)
		return NULL;
	ws->end->kind = kind;
	ws->end->err = err;
	vsnprintf(ws->end->reason, sizeof(ws->end->reason), fmt, ap);
	return ws->end;
}

struct ending *ws_note(struct websocket *ws, enum websocket_end kind, int err,
		       const char *fmt, ...)
{
	va_list ap;
	struct ending *e;

	va_start(ap, fmt);
	e = vnote(ws, kind, err, fmt, ap);
	va_end(ap);
	return e;
}

void ws_fail(struct websocket *ws, enum websocket_end kind, int err, const char *fmt, ...)
	     {
	     va_list ap;

	if (ws->state >= ST_ENDED)
		return;
	va_start(ap, fmt);
	vnote(ws, kind, err, fmt, ap);
	va_end(ap);
	ws_conclude(ws);
}

/* Copies bytes from the peer into a note field: printable ASCII kept, the rest '?', so
 * the text is safe to log between quotes. */
void ws_copy_printable(char *dst, size_t cap, const void *src, size_t len)
		       {
		       const unsigned char *s = src;
	size_t i;

	if (len >= cap)
		len = cap - 1;
	for (i = 0; i < len; i++)
		dst[i] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\') ? (char)s[i] : '?';
	dst[len] = '\0';
}

/* }===== */

/* {===== Lifetime: busy count, teardown, report, the timer */

void ws_enter(struct websocket *ws)
{
	ws->busy++;
}

static void destroy(struct websocket *ws);

void ws_leave(struct websocket *ws)
{
	if (--ws->busy == 0 && ws->freed)
		destroy(ws);
}

bool ws_live(const struct websocket *ws)
{
	return !ws->freed && ws->state < ST_ENDED;
}

/* Silences the connection and schedules report(); see the file comment. */
void ws_conclude(struct websocket *ws)
{
	if (ws->state >= ST_ENDED)
		return;
	ws->state = ST_ENDED;
	if (ws->bev) {
		bufferevent_setcb(ws->bev, NULL, NULL, NULL, NULL);
		bufferevent_disable(ws->bev, EV_READ | EV_WRITE);
	}
	if (ws->wslay) {
		wslay_event_shutdown_read(ws->wslay);
		wslay_event_shutdown_write(ws->wslay);
	}
	loop_timer_start(ws->timer, 0, 0);
}

/* Frees the connection. Never called under a wslay or bufferevent callback of this socket. */
static void release_io(struct websocket *ws)
{
	if (ws->dns) {
		/* The cancel calls on_resolved with EVUTIL_EAI_CANCEL, which touches nothing. */
		evdns_getaddrinfo_cancel(ws->dns);
		ws->dns = NULL;
	}
	if (ws->bev) {
		bufferevent_free(ws->bev);	/* closes the socket, frees the SSL */
		ws->bev = NULL;
	}
	wslay_event_context_free(ws->wslay);
	ws->wslay = NULL;
	if (ws->request) {
		evbuffer_free(ws->request);
		ws->request = NULL;
	}
}

static void destroy(struct websocket *ws)
{
	release_io(ws);
	loop_timer_free(ws->timer);
	ws->wc->live--;
	free(ws->end);
	free(ws->where);
	free(ws);
}

static void log_end(struct websocket *ws, const struct websocket_end_info *info)
{
	log_info(ws->wc->lg, "websocket.close",
		 "where=%s end=%s code=%u status=%d err=%d reason=\"%s\" retry_after=\"%s\"",
		 ws->where, websocket_end_name(info->kind), info->code, info->http_status, info->err,
		 info->reason, info->retry_after ? info->retry_after : "");
}

static void report(struct websocket *ws)
{
	struct websocket_end_info info = {
		.kind = WEBSOCKET_END_INTERNAL, .reason = "out of memory", .err = -ENOMEM,
	};

	release_io(ws);
	ws->state = ST_DONE;
	if (ws->end) {
		info.kind = ws->end->kind;
		info.code = ws->end->code;
		info.reason = ws->end->reason;
		info.http_status = ws->end->http_status;
		info.retry_after = ws->end->has_retry_after ? ws->end->retry_after : NULL;
		info.err = ws->end->err;
	}
	log_end(ws, &info);
	if (ws->cb->on_close)
		ws->cb->on_close(ws, &info, ws->arg);
	if (!ws->freed) {
		free(ws->end);
		ws->end = NULL;
	}
}

/* The socket's one timer: connect deadline, ping/dead tick, close wait, report. */
static void on_timer(void *arg)
{
	struct websocket *ws = arg;

	ws_enter(ws);
	switch (ws->state) {
	case ST_RESOLVING:
	case ST_CONNECTING:
	case ST_HANDSHAKE:
		ws_fail(ws, WEBSOCKET_END_TIMEOUT, -ETIMEDOUT, "not open after %u ms",
			ws->wc->o.connect_timeout_ms);
		break;
	case ST_OPEN:
		ws_tick(ws);
		break;
	case ST_CLOSING:
		ws_conclude(ws);	/* the peer did not finish the close handshake in time */
		break;
	case ST_ENDED:
		report(ws);
		break;
	default:
		break;
	}
	ws_leave(ws);
}

/* }===== */

/* {===== Public: client, connect, close, free */

static bool opts_ok(const struct websocket_opts *o)
{
	return o->max_message > 0 && o->max_handshake >= 128 && o->max_output >= 256 &&
	       o->connect_timeout_ms > 0 && o->close_timeout_ms > 0 &&
	       !(o->ping_interval_ms && o->dead_after_ms && o->dead_after_ms <= o->ping_interval_ms);
}

struct websocket_client *websocket_client_new(struct loop *lp, struct log *lg,
					      const struct websocket_opts *opts)
{
	struct websocket_client *wc;

	if (!opts_ok(opts)) {
		log_error(lg, "websocket.bad_options", "hint=%s",
			  "sizes and timeouts must be positive; dead_after_ms > ping_interval_ms");
		return NULL;
	}
	wc = calloc(1, sizeof(*wc));
	if (!wc)
		return NULL;
	wc->lp = lp;
	wc->lg = lg;
	wc->o = *opts;
	wc->o.ca_file = NULL;
	wc->dns = loop_dns(lp);
	wc->ssl_ctx = ws_new_ssl_ctx(lg, opts->ca_file);
	wc->sessions = wc->ssl_ctx ? tls_sessions_new(wc->ssl_ctx) : NULL;
	if (!wc->dns || !wc->sessions) {
		websocket_client_free(wc);
		return NULL;
	}
	return wc;
}

void websocket_client_free(struct websocket_client *wc)
{
	if (!wc)
		return;
	if (wc->live)
		log_error(wc->lg, "websocket.client_busy", "live=%zu", wc->live);
	SSL_CTX_free(wc->ssl_ctx);
	tls_sessions_free(wc->sessions);
	free(wc);
}

static char *make_where(const struct target *t)
{
	const char *fmt = strchr(t->host, ':') ? "[%s]:%s%s%.*s" : "%s:%s%s%.*s";
	int n = snprintf(NULL, 0, fmt, t->host, t->port, t->slash, (int)t->path_len, t->path);
	char *s = n < 0 ? NULL : malloc((size_t)n + 1);

	if (s)
		snprintf(s, (size_t)n + 1, fmt, t->host, t->port, t->slash, (int)t->path_len, t->path);
	return s;
}

static int prepare(struct websocket *ws, const struct target *t, const char *const *headers)
{
	int rc;

	ws->where = make_where(t);
	ws->timer = loop_timer_new(ws->wc->lp, on_timer, ws);
	if (!ws->where || !ws->timer)
		return -ENOMEM;
	rc = ws_build_request(ws, t, headers);
	if (rc < 0)
		return rc;
	return ws_make_bufferevent(ws, t);
}

int websocket_connect(struct websocket_client *wc, const char *url, const char *const *headers,
		      const struct websocket_callbacks *cb, void *arg, struct websocket **out)
{
	struct target t;
	struct websocket *ws;
	int rc;

	*out = NULL;
	if (!cb || ws_parse_url(url, &t) < 0)
		return -EINVAL;
	for (size_t i = 0; headers && headers[i]; i++)
		if (!ws_header_ok(headers[i]))
			return -EINVAL;
	ws = calloc(1, sizeof(*ws));
	if (!ws)
		return -ENOMEM;
	ws->wc = wc;
	ws->cb = cb;
	ws->arg = arg;
	ws->tls = t.tls;
	wc->live++;
	rc = prepare(ws, &t, headers);
	if (rc < 0) {
		destroy(ws);
		return rc;
	}
	log_debug(wc->lg, "websocket.connect", "where=%s tls=%d", ws->where, ws->tls);
	loop_timer_start(ws->timer, wc->o.connect_timeout_ms, 0);
	*out = ws;
	ws_resolve(ws, &t);
	return 0;
}

static bool close_code_ok(unsigned code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
	       (code >= 3000 && code <= 4999);
}

int websocket_close(struct websocket *ws, unsigned code, const char *reason)
{
	size_t rlen = reason ? strnlen(reason, WS_CLOSE_REASON_MAX + 1) : 0;
	struct ending *e;

	if (!close_code_ok(code))
		return -EINVAL;
	if (!ws_live(ws) || ws->state == ST_CLOSING)
		return 0;
	if (ws->state != ST_OPEN) {
		ws_fail(ws, WEBSOCKET_END_LOCAL, 0, "closed before open");
		return 0;
	}
	if (rlen > WS_CLOSE_REASON_MAX) {
		rlen = WS_CLOSE_REASON_MAX;
		while (rlen > 0 && ((unsigned char)reason[rlen] & 0xc0) == 0x80)
			rlen--;	/* never cut a UTF-8 sequence: the peer would fail us (1007) */
	}
	e = ws_note(ws, WEBSOCKET_END_LOCAL, 0, "%.*s", (int)rlen, reason ? reason : "");
	if (e)
		e->code = code;
	if (ws_need_wslay(ws) < 0 ||
	    wslay_event_queue_close(ws->wslay, (uint16_t)code, (const uint8_t *)reason, rlen) != 0) {
		ws_conclude(ws);
		return 0;
	}
	ws_start_closing(ws);
	ws_pump_send(ws);
	return 0;
}

void websocket_free(struct websocket *ws)
{
	if (!ws || ws->freed)
		return;
	ws->freed = true;
	if (ws->wslay)
		wslay_event_shutdown_read(ws->wslay);	/* ends a wslay_event_recv loop above us */
	if (ws->busy == 0)
		destroy(ws);
}

/* }===== */
