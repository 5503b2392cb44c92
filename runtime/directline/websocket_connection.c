/* websocket_connection.c - getting a socket open: the name resolved (evdns, IPv4 first),
 * the TCP or TLS bufferevent connected, the upgrade request sent and its answer read
 * (at most max_handshake bytes), then ST_OPEN; and the bufferevent's callbacks, which hand
 * what arrives once open to websocket_frames.c and turn a lost connection into the note
 * for its state. The handshake's text is websocket_handshake.c's; OpenSSL is
 * websocket_tls.c's. */
#include "directline/websocket.h"

#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "directline/websocket_internal.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define WS_READ_CHUNK 16384	/* read high-water mark once the handshake is done */

/* {===== Handshake: request, answer, open */

int ws_build_request(struct websocket *ws, const struct target *t, const char *const *headers)
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
	struct ending *e = ws_note(ws, WEBSOCKET_END_HTTP, 0, "upgrade refused with HTTP %d", a->status);

	if (e) {
		e->http_status = a->status;
		if (a->retry_after) {
			e->has_retry_after = true;
			ws_copy_printable(e->retry_after, sizeof(e->retry_after), a->retry_after,
					  strlen(a->retry_after));
		}
	}
	ws_conclude(ws);
}


static void open_socket(struct websocket *ws)
{
	uint64_t now = clock_mono_ms();

	/* No wslay context yet: ws_feed_frames makes one when frames come, send when it sends. */
	bufferevent_setwatermark(ws->bev, EV_READ, 0, WS_READ_CHUNK);
	ws->state = ST_OPEN;
	ws->last_rx_ms = ws->last_ping_ms = now;
	loop_timer_stop(ws->timer);
	ws_arm_tick(ws, now);
	log_debug(ws->wc->lg, "websocket.open", "where=%s resumed=%d", ws->where, ws_tls_resumed(ws));
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
		ws_fail(ws, WEBSOCKET_END_HANDSHAKE, -EPROTO, "%s", why);
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
		ws_fail(ws, WEBSOCKET_END_HANDSHAKE, -EMSGSIZE, "answer header over %zu bytes", max);
		return;
	}
	if (end.pos < 0)
		return;
	len = (size_t)end.pos + 4;
	head = malloc(len + 1);
	if (!head) {
		ws_fail(ws, WEBSOCKET_END_INTERNAL, -ENOMEM, "out of memory");
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
	ws_enter(ws);
	ws->last_rx_ms = clock_mono_ms();
	if (ws->state == ST_HANDSHAKE)
		read_answer(ws);
	if (ws_live(ws) && ws->state >= ST_OPEN)
		ws_feed_frames(ws);
	if (ws_live(ws)) {
		ws_idle_framing(ws);
		ws_release_tls_buffers(ws);
	}
	ws_leave(ws);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct websocket *ws = arg;

	(void)bev;
	ws_enter(ws);
	ws_pump_send(ws);
	/* Frames left unread while the output was full (see wslay_recv). */
	if (ws_live(ws) && ws->state >= ST_OPEN && !ws_output_full(ws) &&
	    evbuffer_get_length(bufferevent_get_input(ws->bev)) > 0)
		ws_feed_frames(ws);
	if (ws_live(ws)) {
		ws_idle_framing(ws);
		ws_release_tls_buffers(ws);
	}
	ws_leave(ws);
}

static void on_connected(struct websocket *ws)
{
	struct evbuffer *out = bufferevent_get_output(ws->bev);

	ws->state = ST_HANDSHAKE;
	if (evbuffer_add_buffer(out, ws->request) < 0) {
		ws_fail(ws, WEBSOCKET_END_INTERNAL, -ENOMEM, "out of memory");
		return;
	}
	evbuffer_free(ws->request);
	ws->request = NULL;
	log_debug(ws->wc->lg, "websocket.connected", "where=%s", ws->where);
}


/* The connection failed or closed before a close frame ended it. */
static void lost(struct websocket *ws, bool eof, int e)
{
	const char *why = eof ? "closed by peer" : e ? strerror(e) : "connection error";
	int err = eof ? 0 : -e;

	switch (ws->state) {
	case ST_CONNECTING:
		if (ws->tls)
			ws_tls_failed(ws, e);
		else
			ws_fail(ws, WEBSOCKET_END_CONNECT, err, "connect: %s", why);
		break;
	case ST_HANDSHAKE:
		ws_fail(ws, WEBSOCKET_END_HANDSHAKE, err ? err : -EPROTO, "upgrade: %s", why);
		break;
	case ST_OPEN:
		ws_fail(ws, WEBSOCKET_END_EOF, err, "no close frame: %s", why);
		break;
	case ST_CLOSING:	/* the close handshake is over; the note says how it went */
		ws_conclude(ws);
		break;
	default:
		ws_fail(ws, WEBSOCKET_END_INTERNAL, err, "connection event in state %d", ws->state);
		break;
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct websocket *ws = arg;
	int e = EVUTIL_SOCKET_ERROR();

	(void)bev;
	ws_enter(ws);
	if (what & BEV_EVENT_CONNECTED) {
		on_connected(ws);
	} else {
		/* Deferred callbacks keep the order read-then-event, yet a last chunk may
		 * still sit in the input: read it before judging the loss. */
		if (ws->state == ST_HANDSHAKE)
			read_answer(ws);
		if (ws_live(ws) && ws->state >= ST_OPEN)
			ws_feed_frames(ws);
		if (ws_live(ws))
			lost(ws, (what & BEV_EVENT_EOF) != 0, e);
	}
	ws_leave(ws);
}

int ws_make_bufferevent(struct websocket *ws, const struct target *t)
{
	struct event_base *base = loop_base(ws->wc->lp);
	/* Deferred callbacks: a write into the output never calls us back synchronously,
	 * so wslay_event_send is never re-entered. */
	int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
	SSL *ssl;

	if (!t->tls) {
		ws->bev = bufferevent_socket_new(base, -1, opts);
	} else {
		ssl = ws_new_ssl(ws, t);
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
		ws_fail(ws, WEBSOCKET_END_CONNECT, -errno, "connect: %s", strerror(errno));
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
	ws_enter(ws);
	ws->dns = NULL;
	if (result != 0 || !res)
		ws_fail(ws, WEBSOCKET_END_CONNECT, -EHOSTUNREACH, "resolve: %s",
			result ? evutil_gai_strerror(result) : "no address");
	else
		start_tcp(ws, pick_address(res));
	if (res)
		evutil_freeaddrinfo(res);
	ws_leave(ws);
}

void ws_resolve(struct websocket *ws, const struct target *t)
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
		ws_fail(ws, WEBSOCKET_END_CONNECT, -EIO, "resolve: resolver refused the request");
}

/* }===== */
