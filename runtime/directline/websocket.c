/* websocket.c - WebSocket client: name resolution (evdns), TCP or TLS (bufferevent,
 * bufferevent_openssl), the RFC 6455 upgrade handshake, framing (libwslay), ping/pong
 * liveness and the close handshake, with every byte from the network bounded.
 * It knows nothing about Direct Line: what the messages mean, and when to reconnect,
 * is for the caller (directline.c). The URL and the handshake's text (key, expected
 * Accept, the verdict on the answer) are websocket_handshake.c's; this file sends and reads it.
 *
 * One socket walks RESOLVING -> CONNECTING -> HANDSHAKE -> OPEN [-> CLOSING] -> ENDED
 * -> DONE. Whatever ends it first writes a note (struct ending) and moves it to ENDED,
 * which only silences its I/O and arms a zero timer; the timer frees the connection and
 * calls on_close from a clean stack. So no wslay or libevent frame is ever under on_close,
 * and no call into this file re-enters the caller. Entry points from the loop hold a busy
 * count, so websocket_free inside a callback only marks the socket and the outermost
 * entry point frees it on the way out. */
#include "directline/websocket.h"

#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "directline/tls_sessions.h"
#include "directline/websocket_internal.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#define WS_CLOSE_REASON_MAX 123	/* RFC 6455 5.5: 125-byte control payload less the code */
#define WS_NOTE_MAX 160		/* close reason or error detail kept for on_close */
#define WS_RETRY_AFTER_MAX 40	/* an HTTP-date is 29 bytes */
#define WS_READ_CHUNK 16384	/* read high-water mark once the handshake is done */
/* What one queued wslay message costs besides its payload (its struct and the heap's
 * overhead): an empty pong has no payload, yet 200,000 of them are 39 MB. */
#define WS_QUEUED_MSG_COST 160

/* Where the peer's byte stream stands, counted over the bytes handed to wslay (wslay_recv):
 * wslay keeps no state between whole messages, so its context (two 4 KiB buffers, about
 * 8.6 KiB, a third of an idle wss socket) is freed while the socket sits between messages
 * and made again for the next bytes (see idle_framing). It only tells where frames end; the
 * framing itself, and every check on it, stays wslay's. */
struct frame_cursor {
	uint64_t left;		/* payload bytes of the current frame still to come */
	uint8_t head[14];	/* the header so far: 2 bytes, 2 or 8 of length, 4 of mask */
	uint8_t have;		/* header bytes in head; 0 between frames */
	bool in_message;	/* a fragmented text or binary message is not finished */
};

enum state { ST_RESOLVING, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSING, ST_ENDED, ST_DONE };

struct websocket_client {
	struct loop *lp;
	struct log *lg;
	struct evdns_base *dns;
	bool own_dns;
	SSL_CTX *ssl_ctx;
	struct tls_sessions *sessions;	/* resumption, per server */
	struct websocket_opts o;
	size_t live;		/* sockets not yet freed */
};

/* Why the socket ended; allocated only once it starts ending, so idle sockets stay small. */
struct ending {
	enum websocket_end kind;
	unsigned code;
	int http_status;
	int err;
	bool has_retry_after;
	char reason[WS_NOTE_MAX];
	char retry_after[WS_RETRY_AFTER_MAX];
};

struct websocket {
	struct websocket_client *wc;
	const struct websocket_callbacks *cb;
	void *arg;
	struct bufferevent *bev;
	struct evdns_getaddrinfo_request *dns;
	wslay_event_context_ptr wslay;	/* once open, and only while a message is under way */
	struct frame_cursor cursor;	/* where the bytes given to wslay stand */
	struct loop_timer *timer;	/* connect deadline, ping/dead tick, close wait, report */
	struct evbuffer *request;	/* the upgrade request, until the connection is up */
	struct ending *end;
	char *where;		/* host:port/path for logs; never the query (it holds t=) */
	uint64_t last_rx_ms;
	uint64_t last_ping_ms;
	unsigned busy;
	uint8_t state;
	bool freed;
	bool tls;
	bool reading;		/* inside wslay_event_recv: sending waits until it returns */
	char accept[WS_ACCEPT_SIZE];	/* the Sec-WebSocket-Accept we expect (base64 of SHA-1) */
};

static void conclude(struct websocket *ws);
static int need_wslay(struct websocket *ws);
static void idle_framing(struct websocket *ws);

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

static struct ending *note(struct websocket *ws, enum websocket_end kind, int err,
			   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static struct ending *note(struct websocket *ws, enum websocket_end kind, int err,
			   const char *fmt, ...)
{
	va_list ap;
	struct ending *e;

	va_start(ap, fmt);
	e = vnote(ws, kind, err, fmt, ap);
	va_end(ap);
	return e;
}

static void fail(struct websocket *ws, enum websocket_end kind, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void fail(struct websocket *ws, enum websocket_end kind, int err, const char *fmt, ...)
{
	va_list ap;

	if (ws->state >= ST_ENDED)
		return;
	va_start(ap, fmt);
	vnote(ws, kind, err, fmt, ap);
	va_end(ap);
	conclude(ws);
}

/* Copies bytes from the peer into a note field: printable ASCII kept, the rest '?', so
 * the text is safe to log between quotes. */
static void copy_printable(char *dst, size_t cap, const void *src, size_t len)
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

/* {===== Lifetime: busy count, teardown, report */

static void enter(struct websocket *ws)
{
	ws->busy++;
}

static void destroy(struct websocket *ws);

static void leave(struct websocket *ws)
{
	if (--ws->busy == 0 && ws->freed)
		destroy(ws);
}

static bool live(const struct websocket *ws)
{
	return !ws->freed && ws->state < ST_ENDED;
}

/* Silences the connection and schedules report(); see the file comment. */
static void conclude(struct websocket *ws)
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

/* }===== */

/* An idle TLS socket gives OpenSSL's record buffers back (about 17 KiB, half of what it
 * holds): SSL_MODE_RELEASE_BUFFERS frees them once a record is consumed, but libevent ends
 * each burst with an SSL_read that finds nothing and leaves a fresh read buffer behind.
 * SSL_free_buffers refuses while a record is partly read or written, so it is always safe. */
static void release_tls_buffers(struct websocket *ws)
{
	SSL *ssl = ws->tls && ws->bev ? bufferevent_openssl_get_ssl(ws->bev) : NULL;

	if (ssl && ws->state == ST_OPEN && evbuffer_get_length(bufferevent_get_output(ws->bev)) == 0)
		(void)!SSL_free_buffers(ssl);
}

/* {===== Sending: wslay writes into the bufferevent's output, bounded by max_output */

/* Ends the socket for a wslay error, labelled by its cause. */
static void fail_wslay(struct websocket *ws, int rc, const char *what)
{
	if (rc == WSLAY_ERR_NOMEM)
		fail(ws, WEBSOCKET_END_INTERNAL, -ENOMEM, "%s: out of memory", what);
	else if (rc == WSLAY_ERR_CALLBACK_FAILURE)
		fail(ws, WEBSOCKET_END_INTERNAL, -EIO, "%s: i/o callback failed", what);
	else
		fail(ws, WEBSOCKET_END_PROTOCOL, -EPROTO, "%s: wslay error %d", what, rc);
}

static void pump_send(struct websocket *ws)
{
	int rc;

	if (ws->reading || !ws->wslay || ws->state >= ST_ENDED || !wslay_event_want_write(ws->wslay))
		return;
	rc = wslay_event_send(ws->wslay);
	if (rc < 0)
		fail_wslay(ws, rc, "send failed");
}

static ssize_t wslay_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
			  int flags, void *user)
{
	struct websocket *ws = user;
	struct evbuffer *out = bufferevent_get_output(ws->bev);
	size_t have = evbuffer_get_length(out);
	size_t max = ws->wc->o.max_output;

	(void)flags;
	if (have >= max) {
		/* Resumes from on_write once the kernel took the bytes. */
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (len > max - have)
		len = max - have;
	if (evbuffer_add(out, data, len) < 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return (ssize_t)len;
}

static int wslay_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
	(void)user;
	if (RAND_bytes(buf, (int)len) != 1) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return 0;
}

/* Bytes waiting to go out: queued messages (pongs wslay made for the peer's pings too)
 * and the bufferevent's output. Reading stops while this is over max_output. */
static size_t output_held(struct websocket *ws)
{
	size_t queued = ws->wslay ? wslay_event_get_queued_msg_length(ws->wslay) +
					    wslay_event_get_queued_msg_count(ws->wslay) * WS_QUEUED_MSG_COST : 0;

	return queued + evbuffer_get_length(bufferevent_get_output(ws->bev));
}

static bool output_full(struct websocket *ws)
{
	return output_held(ws) >= ws->wc->o.max_output;
}

int websocket_send_text(struct websocket *ws, const char *data, size_t len)
{
	struct wslay_event_msg msg = { WSLAY_TEXT_FRAME, (const uint8_t *)data, len };
	int rc;

	if (!live(ws) || ws->state != ST_OPEN)
		return -ENOTCONN;
	if (len > ws->wc->o.max_output || output_held(ws) > ws->wc->o.max_output - len)
		return -ENOBUFS;
	if (need_wslay(ws) < 0)
		return -ENOMEM;
	rc = wslay_event_queue_msg(ws->wslay, &msg);
	if (rc == WSLAY_ERR_NOMEM)
		return -ENOMEM;
	if (rc != 0)
		return -ENOTCONN;
	pump_send(ws);
	if (live(ws))
		idle_framing(ws);
	return 0;
}

/* }===== */

/* {===== Receiving: frames, close, liveness */

static void start_closing(struct websocket *ws)
{
	ws->state = ST_CLOSING;
	loop_timer_start(ws->timer, ws->wc->o.close_timeout_ms, 0);
}

static void peer_closed(struct websocket *ws, const struct wslay_event_on_msg_recv_arg *m)
{
	unsigned code = m->status_code ? m->status_code : 1005;
	size_t rlen = m->msg_length > 2 ? m->msg_length - 2 : 0;
	struct ending *e;

	if (ws->state == ST_OPEN) {
		e = note(ws, WEBSOCKET_END_CLOSED, 0, "%s", "");
		start_closing(ws);	/* wslay queued the answer; wait for the TCP close */
	} else {
		e = ws->end;	/* our close was answered */
	}
	if (!e || (e->kind != WEBSOCKET_END_CLOSED && e->kind != WEBSOCKET_END_LOCAL))
		return;
	e->code = code;
	if (rlen)
		copy_printable(e->reason, sizeof(e->reason), m->msg + 2, rlen);
}

static void wslay_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m,
			 void *user)
{
	struct websocket *ws = user;

	if (ws->freed)
		return;
	if (m->opcode == WSLAY_TEXT_FRAME && ws->state == ST_OPEN && ws->cb->on_message)
		ws->cb->on_message(ws, m->msg ? (const char *)m->msg : "", m->msg_length, ws->arg);
	else if (m->opcode == WSLAY_CONNECTION_CLOSE)
		peer_closed(ws, m);
	/* Binary messages are not ours to read; pings are answered by wslay; pongs only
	 * count as traffic (last_rx_ms). */
	if (!live(ws))
		wslay_event_shutdown_read(ctx);
}

/* The header's full size once its first two bytes are in (RFC 6455 5.2). */
static size_t frame_header_size(const struct frame_cursor *fc)
{
	uint8_t len7 = fc->head[1] & 0x7f;

	if (fc->have < 2)
		return 2;
	return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((fc->head[1] & 0x80) ? 4 : 0);
}

/* Moves the cursor over N bytes of the stream. */
static void track_frames(struct frame_cursor *fc, const uint8_t *p, size_t n)
{
	while (n > 0) {
		if (fc->left > 0) {
			size_t skip = fc->left < n ? (size_t)fc->left : n;

			fc->left -= skip;
			p += skip;
			n -= skip;
			continue;
		}
		fc->head[fc->have++] = *p++;
		n--;
		if (fc->have < frame_header_size(fc))
			continue;
		if ((fc->head[0] & 0x0f) < 8)	/* data frames; control frames interleave */
			fc->in_message = !(fc->head[0] & 0x80);
		fc->left = fc->head[1] & 0x7f;
		if (fc->left >= 126) {
			size_t bytes = fc->left == 126 ? 2 : 8;

			fc->left = 0;
			for (size_t i = 0; i < bytes; i++)
				fc->left = (fc->left << 8) | fc->head[2 + i];
		}
		fc->have = 0;
	}
}

static ssize_t wslay_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
			  void *user)
{
	struct websocket *ws = user;
	int n;

	(void)flags;
	/* A peer that sends pings faster than it reads our pongs: stop reading until they
	 * drain (on_write resumes), rather than queue pongs without end. */
	n = output_full(ws) ? 0 : evbuffer_remove(bufferevent_get_input(ws->bev), buf, len);
	if (n <= 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	track_frames(&ws->cursor, buf, (size_t)n);
	return n;
}

static const struct wslay_event_callbacks wslay_callbacks = {
	.recv_callback = wslay_recv,
	.send_callback = wslay_send,
	.genmask_callback = wslay_genmask,
	.on_msg_recv_callback = wslay_on_msg,
};

/* Makes the wslay context if the socket has none (see struct frame_cursor). */
static int need_wslay(struct websocket *ws)
{
	if (ws->wslay)
		return 0;
	if (wslay_event_context_client_init(&ws->wslay, &wslay_callbacks, ws) != 0) {
		ws->wslay = NULL;
		return -ENOMEM;
	}
	wslay_event_config_set_max_recv_msg_length(ws->wslay, ws->wc->o.max_message);
	return 0;
}

/* Frees the wslay context of an open socket that sits between messages: every byte
 * handed to wslay belongs to whole frames (so its read buffer is empty and no message is
 * half read) and nothing waits to be sent. wslay reads until it needs bytes it has not
 * got, so whole frames handed to it have all been consumed when wslay_event_recv returns.
 * A fresh context is then the same as the old one: both read and write enabled, no close
 * sent or received (those leave ST_OPEN), and the same options. */
static void idle_framing(struct websocket *ws)
{
	const struct frame_cursor *fc = &ws->cursor;

	if (!ws->wslay || ws->reading || ws->state != ST_OPEN || fc->left || fc->have ||
	    fc->in_message || wslay_event_want_write(ws->wslay) ||
	    !wslay_event_get_read_enabled(ws->wslay))
		return;
	wslay_event_context_free(ws->wslay);
	ws->wslay = NULL;
}

/* wslay stopped reading on its own: it queued a close for an oversized message (1009),
 * a framing violation (1002) or bad UTF-8 (1007). The code tells which, once sent. */
static void refused_by_wslay(struct websocket *ws)
{
	unsigned code = wslay_event_get_close_sent(ws->wslay) ?
			wslay_event_get_status_code_sent(ws->wslay) : 0;
	struct ending *e;

	if (code == WSLAY_CODE_MESSAGE_TOO_BIG)
		e = note(ws, WEBSOCKET_END_TOO_LARGE, -EMSGSIZE, "message too large (over %zu bytes)",
			 ws->wc->o.max_message);
	else
		e = note(ws, WEBSOCKET_END_PROTOCOL, -EPROTO, "protocol error");
	if (e)
		e->code = code;
	start_closing(ws);
}

static void feed_frames(struct websocket *ws)
{
	struct evbuffer *in = bufferevent_get_input(ws->bev);
	int rc;

	if (!ws->wslay && evbuffer_get_length(in) == 0)
		return;	/* nothing to read: no context needed */
	if (need_wslay(ws) < 0) {
		fail(ws, WEBSOCKET_END_INTERNAL, -ENOMEM, "out of memory");
		return;
	}
	ws->reading = true;
	rc = wslay_event_recv(ws->wslay);
	ws->reading = false;
	if (!live(ws))
		return;
	if (rc < 0) {
		fail_wslay(ws, rc, "receive failed");
		return;
	}
	pump_send(ws);	/* pongs, close answers, what callbacks queued */
	if (!live(ws) || wslay_event_get_read_enabled(ws->wslay))
		return;
	evbuffer_drain(in, evbuffer_get_length(in));	/* nothing more will be read */
	if (ws->state == ST_OPEN)
		refused_by_wslay(ws);
}

static void arm_tick(struct websocket *ws, uint64_t now)
{
	const struct websocket_opts *o = &ws->wc->o;
	uint64_t next = UINT64_MAX;

	if (o->ping_interval_ms)
		next = ws->last_ping_ms + o->ping_interval_ms;
	if (o->dead_after_ms && ws->last_rx_ms + o->dead_after_ms < next)
		next = ws->last_rx_ms + o->dead_after_ms;
	if (next == UINT64_MAX) {
		loop_timer_stop(ws->timer);
		return;
	}
	loop_timer_start(ws->timer, next > now ? next - now : 1, 0);
}

static void send_ping(struct websocket *ws)
{
	struct wslay_event_msg ping = { WSLAY_PING, NULL, 0 };

	/* A peer that stopped reading gets no more pings; dead_after_ms will tell. */
	if (!output_full(ws) && need_wslay(ws) == 0 && wslay_event_queue_msg(ws->wslay, &ping) == 0)
		pump_send(ws);
}

static void tick(struct websocket *ws)
{
	const struct websocket_opts *o = &ws->wc->o;
	uint64_t now = clock_mono_ms();

	if (o->dead_after_ms && now - ws->last_rx_ms >= o->dead_after_ms) {
		fail(ws, WEBSOCKET_END_DEAD, -ETIMEDOUT, "nothing received for %u ms", o->dead_after_ms);
		return;
	}
	if (o->ping_interval_ms && now - ws->last_ping_ms >= o->ping_interval_ms) {
		ws->last_ping_ms = now;
		send_ping(ws);
		if (!live(ws))
			return;
	}
	idle_framing(ws);	/* the ping went out */
	release_tls_buffers(ws);	/* a burst that ended without a read callback */
	arm_tick(ws, now);
}

/* }===== */

/* {===== Handshake: request, answer, open */

static int build_request(struct websocket *ws, const struct target *t, const char *const *headers)
{
	char key[WS_KEY_SIZE];
	int rc = ws_make_key(key, ws->accept);

	if (rc < 0)
		return rc;
	ws->request = evbuffer_new();
	if (!ws->request)
		return -ENOMEM;
	rc = evbuffer_add_printf(ws->request,
				 "GET %s%.*s HTTP/1.1\r\nHost: %.*s\r\nUpgrade: websocket\r\n"
				 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
				 "Sec-WebSocket-Version: 13\r\n",
				 t->slash, (int)t->target_len, t->path, (int)t->authority_len,
				 t->authority, key);
	for (size_t i = 0; rc >= 0 && headers && headers[i]; i++)
		rc = evbuffer_add_printf(ws->request, "%s\r\n", headers[i]);
	if (rc >= 0)
		rc = evbuffer_add(ws->request, "\r\n", 2);
	return rc < 0 ? -ENOMEM : 0;
}

static void refused_by_server(struct websocket *ws, const struct answer *a)
{
	struct ending *e = note(ws, WEBSOCKET_END_HTTP, 0, "upgrade refused with HTTP %d", a->status);

	if (e) {
		e->http_status = a->status;
		if (a->retry_after) {
			e->has_retry_after = true;
			copy_printable(e->retry_after, sizeof(e->retry_after), a->retry_after,
				       strlen(a->retry_after));
		}
	}
	conclude(ws);
}

/* 1 when the TLS session was resumed (tls_sessions.c), so tests and logs can tell. */
static int tls_resumed(struct websocket *ws)
{
	SSL *ssl = ws->tls ? bufferevent_openssl_get_ssl(ws->bev) : NULL;

	return ssl && SSL_session_reused(ssl) ? 1 : 0;
}

static void open_socket(struct websocket *ws)
{
	uint64_t now = clock_mono_ms();

	/* No wslay context yet: feed_frames makes one when frames come, send when it sends. */
	bufferevent_setwatermark(ws->bev, EV_READ, 0, WS_READ_CHUNK);
	ws->state = ST_OPEN;
	ws->last_rx_ms = ws->last_ping_ms = now;
	loop_timer_stop(ws->timer);
	arm_tick(ws, now);
	log_debug(ws->wc->lg, "websocket.open", "where=%s resumed=%d", ws->where, tls_resumed(ws));
	if (ws->cb->on_open)
		ws->cb->on_open(ws, ws->arg);
}

static void check_answer(struct websocket *ws, char *head)
{
	struct answer a;
	const char *why;

	switch (ws_judge_answer(head, ws->accept, &a, &why)) {
	case WS_ANSWER_OPEN:
		open_socket(ws);
		break;
	case WS_ANSWER_REFUSED:
		refused_by_server(ws, &a);
		break;
	case WS_ANSWER_BAD:
		fail(ws, WEBSOCKET_END_HANDSHAKE, -EPROTO, "%s", why);
		break;
	}
}

/* Waits for the whole header block of the answer, at most max_handshake bytes. Bytes
 * after it are frames and stay in the input for wslay. */
static void read_answer(struct websocket *ws)
{
	struct evbuffer *in = bufferevent_get_input(ws->bev);
	size_t max = ws->wc->o.max_handshake;
	struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	size_t len;
	char *head;

	if (end.pos < 0 ? evbuffer_get_length(in) > max : (size_t)end.pos + 4 > max) {
		fail(ws, WEBSOCKET_END_HANDSHAKE, -EMSGSIZE, "answer header over %zu bytes", max);
		return;
	}
	if (end.pos < 0)
		return;
	len = (size_t)end.pos + 4;
	head = malloc(len + 1);
	if (!head) {
		fail(ws, WEBSOCKET_END_INTERNAL, -ENOMEM, "out of memory");
		return;
	}
	evbuffer_remove(in, head, len);
	head[len] = '\0';
	check_answer(ws, head);
	free(head);
}

/* }===== */

/* {===== Connection: resolve, connect, bufferevent callbacks */

static void on_read(struct bufferevent *bev, void *arg)
{
	struct websocket *ws = arg;

	(void)bev;
	enter(ws);
	ws->last_rx_ms = clock_mono_ms();
	if (ws->state == ST_HANDSHAKE)
		read_answer(ws);
	if (live(ws) && ws->state >= ST_OPEN)
		feed_frames(ws);
	if (live(ws)) {
		idle_framing(ws);
		release_tls_buffers(ws);
	}
	leave(ws);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct websocket *ws = arg;

	(void)bev;
	enter(ws);
	pump_send(ws);
	/* Frames left unread while the output was full (see wslay_recv). */
	if (live(ws) && ws->state >= ST_OPEN && !output_full(ws) &&
	    evbuffer_get_length(bufferevent_get_input(ws->bev)) > 0)
		feed_frames(ws);
	if (live(ws)) {
		idle_framing(ws);
		release_tls_buffers(ws);
	}
	leave(ws);
}

static void on_connected(struct websocket *ws)
{
	struct evbuffer *out = bufferevent_get_output(ws->bev);

	ws->state = ST_HANDSHAKE;
	if (evbuffer_add_buffer(out, ws->request) < 0) {
		fail(ws, WEBSOCKET_END_INTERNAL, -ENOMEM, "out of memory");
		return;
	}
	evbuffer_free(ws->request);
	ws->request = NULL;
	log_debug(ws->wc->lg, "websocket.connected", "where=%s", ws->where);
}

/* libevent's error list mixes SSL_get_error() codes (library 0) with real OpenSSL errors;
 * returns the most recent real one, or 0, and empties the list. */
static unsigned long openssl_error(struct bufferevent *bev)
{
	unsigned long e, real = 0;

	while ((e = bufferevent_get_openssl_error(bev)))
		if (!real && ERR_GET_LIB(e) != 0)
			real = e;
	return real;
}

static bool tcp_was_up(struct bufferevent *bev)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);

	return getpeername(bufferevent_getfd(bev), (struct sockaddr *)&sa, &len) == 0;
}

/* The TLS handshake did not finish: a certificate we refuse, a TLS error, or the TCP
 * connection itself failed (libevent reports that through the TLS layer too). */
static void tls_failed(struct websocket *ws, int e)
{
	SSL *ssl = bufferevent_openssl_get_ssl(ws->bev);
	long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	unsigned long ssl_err = openssl_error(ws->bev);
	char buf[120];

	if (verify != X509_V_OK) {
		fail(ws, WEBSOCKET_END_TLS, -EPROTO, "certificate verify failed: %s",
		     X509_verify_cert_error_string(verify));
	} else if (ssl_err) {
		ERR_error_string_n(ssl_err, buf, sizeof(buf));
		fail(ws, WEBSOCKET_END_TLS, -EPROTO, "%s", buf);
	} else if (tcp_was_up(ws->bev)) {
		fail(ws, WEBSOCKET_END_TLS, -EPROTO, "connection closed during the TLS handshake");
	} else {
		fail(ws, WEBSOCKET_END_CONNECT, e ? -e : -ECONNREFUSED, "connect: %s",
		     e ? strerror(e) : "connection failed");
	}
}

/* The connection failed or closed before a close frame ended it. */
static void lost(struct websocket *ws, bool eof, int e)
{
	const char *why = eof ? "closed by peer" : e ? strerror(e) : "connection error";
	int err = eof ? 0 : -e;

	switch (ws->state) {
	case ST_CONNECTING:
		if (ws->tls)
			tls_failed(ws, e);
		else
			fail(ws, WEBSOCKET_END_CONNECT, err, "connect: %s", why);
		break;
	case ST_HANDSHAKE:
		fail(ws, WEBSOCKET_END_HANDSHAKE, err ? err : -EPROTO, "upgrade: %s", why);
		break;
	case ST_OPEN:
		fail(ws, WEBSOCKET_END_EOF, err, "no close frame: %s", why);
		break;
	case ST_CLOSING:	/* the close handshake is over; the note says how it went */
		conclude(ws);
		break;
	default:
		fail(ws, WEBSOCKET_END_INTERNAL, err, "connection event in state %d", ws->state);
		break;
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct websocket *ws = arg;
	int e = EVUTIL_SOCKET_ERROR();

	(void)bev;
	enter(ws);
	if (what & BEV_EVENT_CONNECTED) {
		on_connected(ws);
	} else {
		/* Deferred callbacks keep the order read-then-event, yet a last chunk may
		 * still sit in the input: read it before judging the loss. */
		if (ws->state == ST_HANDSHAKE)
			read_answer(ws);
		if (live(ws) && ws->state >= ST_OPEN)
			feed_frames(ws);
		if (live(ws))
			lost(ws, (what & BEV_EVENT_EOF) != 0, e);
	}
	leave(ws);
}

/* Prefers IPv4: it is the first answer evdns gives, and the one service hosts surely
 * have. Only one address is tried; a failure goes back to the caller's backoff. */
static const struct evutil_addrinfo *pick_address(const struct evutil_addrinfo *res)
{
	for (const struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next)
		if (ai->ai_family == AF_INET)
			return ai;
	return res;
}

static void start_tcp(struct websocket *ws, const struct evutil_addrinfo *ai)
{
	ws->state = ST_CONNECTING;
	if (bufferevent_socket_connect(ws->bev, ai->ai_addr, (int)ai->ai_addrlen) < 0) {
		fail(ws, WEBSOCKET_END_CONNECT, -errno, "connect: %s", strerror(errno));
		return;
	}
	bufferevent_enable(ws->bev, EV_READ | EV_WRITE);
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
	struct websocket *ws = arg;

	if (result == EVUTIL_EAI_CANCEL) {
		if (res)
			evutil_freeaddrinfo(res);
		return;
	}
	enter(ws);
	ws->dns = NULL;
	if (result != 0 || !res)
		fail(ws, WEBSOCKET_END_CONNECT, -EHOSTUNREACH, "resolve: %s",
		     result ? evutil_gai_strerror(result) : "no address");
	else
		start_tcp(ws, pick_address(res));
	if (res)
		evutil_freeaddrinfo(res);
	leave(ws);
}

static void resolve(struct websocket *ws, const struct target *t)
{
	struct evutil_addrinfo hints = {
		.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP,
	};
	struct evdns_getaddrinfo_request *req;

	ws->state = ST_RESOLVING;
	/* Numeric hosts and /etc/hosts answer at once: on_resolved runs inside this call. */
	req = evdns_getaddrinfo(ws->wc->dns, t->host, t->port, &hints, on_resolved, ws);
	if (ws->state != ST_RESOLVING)
		return;
	ws->dns = req;
	if (!req)
		fail(ws, WEBSOCKET_END_CONNECT, -EIO, "resolve: resolver refused the request");
}

static void on_timer(void *arg)
{
	struct websocket *ws = arg;

	enter(ws);
	switch (ws->state) {
	case ST_RESOLVING:
	case ST_CONNECTING:
	case ST_HANDSHAKE:
		fail(ws, WEBSOCKET_END_TIMEOUT, -ETIMEDOUT, "not open after %u ms",
		     ws->wc->o.connect_timeout_ms);
		break;
	case ST_OPEN:
		tick(ws);
		break;
	case ST_CLOSING:
		conclude(ws);	/* the peer did not finish the close handshake in time */
		break;
	case ST_ENDED:
		report(ws);
		break;
	default:
		break;
	}
	leave(ws);
}

/* }===== */

/* {===== TLS */

static SSL *new_ssl(struct websocket *ws, const struct target *t)
{
	SSL *ssl = SSL_new(ws->wc->ssl_ctx);
	bool ok;

	if (!ssl)
		return NULL;
	if (t->ip)	/* no SNI for addresses (RFC 6066 3); check the IP SAN */
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->host) == 1;
	else
		ok = SSL_set_tlsext_host_name(ssl, t->host) == 1 && SSL_set1_host(ssl, t->host) == 1;
	/* The server is the host:port that starts ws->where. */
	ok = ok && tls_sessions_attach(ws->wc->sessions, ssl, ws->where, strcspn(ws->where, "/")) == 0;
	if (!ok) {
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

static int make_bufferevent(struct websocket *ws, const struct target *t)
{
	struct event_base *base = loop_base(ws->wc->lp);
	/* Deferred callbacks: a write into the output never calls us back synchronously,
	 * so wslay_event_send is never re-entered. */
	int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
	SSL *ssl;

	if (!t->tls) {
		ws->bev = bufferevent_socket_new(base, -1, opts);
	} else {
		ssl = new_ssl(ws, t);
		if (!ssl)
			return -ENOMEM;
		ws->bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, opts);
		if (!ws->bev) {
			SSL_free(ssl);
			return -ENOMEM;
		}
		/* Servers often drop TCP without close_notify; that is an EOF, not an attack
		 * on the framing (which carries its own close). */
		bufferevent_openssl_set_allow_dirty_shutdown(ws->bev, 1);
	}
	if (!ws->bev)
		return -ENOMEM;
	bufferevent_setcb(ws->bev, on_read, on_write, on_event, ws);
	/* Above max_handshake, so an oversized answer is seen and refused, not stalled. */
	bufferevent_setwatermark(ws->bev, EV_READ, 0, ws->wc->o.max_handshake + 1);
	return 0;
}

static SSL_CTX *new_ssl_ctx(struct log *lg, const char *ca_file)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int ok;

	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* Idle sockets give their 16 KiB+ record buffers back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) :
		       SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		log_error(lg, "websocket.ca_failed", "ca_file=\"%s\"", ca_file ? ca_file : "(system)");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
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
	wc->dns = opts->dns;
	if (!wc->dns) {
		/* DISABLE_WHEN_INACTIVE: an idle resolver does not keep the loop running. */
		wc->dns = evdns_base_new(loop_base(lp), EVDNS_BASE_INITIALIZE_NAMESERVERS |
						       EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		wc->own_dns = true;
	}
	wc->ssl_ctx = new_ssl_ctx(lg, opts->ca_file);
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
	if (wc->own_dns && wc->dns)
		evdns_base_free(wc->dns, 1);
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
	rc = build_request(ws, t, headers);
	if (rc < 0)
		return rc;
	return make_bufferevent(ws, t);
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
	resolve(ws, &t);
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
	if (!live(ws) || ws->state == ST_CLOSING)
		return 0;
	if (ws->state != ST_OPEN) {
		fail(ws, WEBSOCKET_END_LOCAL, 0, "closed before open");
		return 0;
	}
	if (rlen > WS_CLOSE_REASON_MAX) {
		rlen = WS_CLOSE_REASON_MAX;
		while (rlen > 0 && ((unsigned char)reason[rlen] & 0xc0) == 0x80)
			rlen--;	/* never cut a UTF-8 sequence: the peer would fail us (1007) */
	}
	e = note(ws, WEBSOCKET_END_LOCAL, 0, "%.*s", (int)rlen, reason ? reason : "");
	if (e)
		e->code = code;
	if (need_wslay(ws) < 0 ||
	    wslay_event_queue_close(ws->wslay, (uint16_t)code, (const uint8_t *)reason, rlen) != 0) {
		conclude(ws);
		return 0;
	}
	start_closing(ws);
	pump_send(ws);
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
