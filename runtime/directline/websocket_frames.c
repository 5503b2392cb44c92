/* websocket_frames.c - the open socket's framing, through libwslay: messages out into the
 * bufferevent's output, bounded by max_output (the pongs wslay makes for the peer's pings
 * count too, so a ping flood stops our reading, not our memory), frames in from its input,
 * the peer's close, the wslay context freed between messages, and the ping/dead tick.
 * Why a socket ends, and when it is freed, is websocket.c's. */
#include "directline/websocket.h"

#include "base/clock.h"
#include "net/loop.h"
#include "directline/websocket_internal.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdint.h>
#include <wslay/wslay.h>

/* What one queued wslay message costs besides its payload (its struct and the heap's
 * overhead): an empty pong has no payload, yet 200,000 of them are 39 MB. */
#define WS_QUEUED_MSG_COST 160

/* {===== Sending: wslay writes into the bufferevent's output, bounded by max_output */

/* Ends the socket for a wslay error, labelled by its cause. */
static void fail_wslay(struct websocket *ws, int rc, const char *what)
{
	if (rc == WSLAY_ERR_NOMEM)
		ws_fail(ws, WEBSOCKET_END_INTERNAL, -ENOMEM, "%s: out of memory", what);
	else if (rc == WSLAY_ERR_CALLBACK_FAILURE)
		ws_fail(ws, WEBSOCKET_END_INTERNAL, -EIO, "%s: i/o callback failed", what);
	else
		ws_fail(ws, WEBSOCKET_END_PROTOCOL, -EPROTO, "%s: wslay error %d", what, rc);
}

void ws_pump_send(struct websocket *ws)
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

bool ws_output_full(struct websocket *ws)
{
	return output_held(ws) >= ws->wc->o.max_output;
}

int websocket_send_text(struct websocket *ws, const char *data, size_t len)
{
	struct wslay_event_msg msg = { WSLAY_TEXT_FRAME, (const uint8_t *)data, len };
	int rc;

	if (!ws_live(ws) || ws->state != ST_OPEN)
		return -ENOTCONN;
	if (len > ws->wc->o.max_output || output_held(ws) > ws->wc->o.max_output - len)
		return -ENOBUFS;
	if (ws_need_wslay(ws) < 0)
		return -ENOMEM;
	rc = wslay_event_queue_msg(ws->wslay, &msg);
	if (rc == WSLAY_ERR_NOMEM)
		return -ENOMEM;
	if (rc != 0)
		return -ENOTCONN;
	ws_pump_send(ws);
	if (ws_live(ws))
		ws_idle_framing(ws);
	return 0;
}

/* }===== */

/* {===== Receiving: frames, close, liveness */

void ws_start_closing(struct websocket *ws)
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
		e = ws_note(ws, WEBSOCKET_END_CLOSED, 0, "%s", "");
		ws_start_closing(ws);	/* wslay queued the answer; wait for the TCP close */
	} else {
		e = ws->end;	/* our close was answered */
	}
	if (!e || (e->kind != WEBSOCKET_END_CLOSED && e->kind != WEBSOCKET_END_LOCAL))
		return;
	e->code = code;
	if (rlen)
		ws_copy_printable(e->reason, sizeof(e->reason), m->msg + 2, rlen);
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
	if (!ws_live(ws))
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
	n = ws_output_full(ws) ? 0 : evbuffer_remove(bufferevent_get_input(ws->bev), buf, len);
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
int ws_need_wslay(struct websocket *ws)
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
void ws_idle_framing(struct websocket *ws)
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
		e = ws_note(ws, WEBSOCKET_END_TOO_LARGE, -EMSGSIZE, "message too large (over %zu bytes)",
			    ws->wc->o.max_message);
	else
		e = ws_note(ws, WEBSOCKET_END_PROTOCOL, -EPROTO, "protocol error");
	if (e)
		e->code = code;
	ws_start_closing(ws);
}

void ws_feed_frames(struct websocket *ws)
{
	struct evbuffer *in = bufferevent_get_input(ws->bev);
	int rc;

	if (!ws->wslay && evbuffer_get_length(in) == 0)
		return;	/* nothing to read: no context needed */
	if (ws_need_wslay(ws) < 0) {
		ws_fail(ws, WEBSOCKET_END_INTERNAL, -ENOMEM, "out of memory");
		return;
	}
	ws->reading = true;
	rc = wslay_event_recv(ws->wslay);
	ws->reading = false;
	if (!ws_live(ws))
		return;
	if (rc < 0) {
		fail_wslay(ws, rc, "receive failed");
		return;
	}
	ws_pump_send(ws);	/* pongs, close answers, what callbacks queued */
	if (!ws_live(ws) || wslay_event_get_read_enabled(ws->wslay))
		return;
	evbuffer_drain(in, evbuffer_get_length(in));	/* nothing more will be read */
	if (ws->state == ST_OPEN)
		refused_by_wslay(ws);
}

void ws_arm_tick(struct websocket *ws, uint64_t now)
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
	if (!ws_output_full(ws) && ws_need_wslay(ws) == 0 && wslay_event_queue_msg(ws->wslay, &ping) == 0)
		ws_pump_send(ws);
}

void ws_tick(struct websocket *ws)
{
	const struct websocket_opts *o = &ws->wc->o;
	uint64_t now = clock_mono_ms();

	if (o->dead_after_ms && now - ws->last_rx_ms >= o->dead_after_ms) {
		ws_fail(ws, WEBSOCKET_END_DEAD, -ETIMEDOUT, "nothing received for %u ms", o->dead_after_ms);
		return;
	}
	if (o->ping_interval_ms && now - ws->last_ping_ms >= o->ping_interval_ms) {
		ws->last_ping_ms = now;
		send_ping(ws);
		if (!ws_live(ws))
			return;
	}
	ws_idle_framing(ws);	/* the ping went out */
	ws_release_tls_buffers(ws);	/* a burst that ended without a read callback */
	ws_arm_tick(ws, now);
}

/* }===== */
