/* bench_relay_load.c - the relay load of bench_listener.py in one C process: the Direct
 * Line bot, the webhook hub and the customers. In Python the three took more than a core
 * at 500 messages/s on a 2-core machine, so the round trips measured the harness's
 * queueing rather than handoffd; this one costs a small fraction of what handoffd does.
 *
 * - the bot: the Direct Line REST calls handoffd makes (tokens/generate, tokens/refresh,
 *   POST /conversations, GET /conversations/{id} to resume, GET and POST .../activities)
 *   on one evhttp server, and the WebSocket stream (wslay, server side) on a listener of
 *   its own, the streamUrl pointing there. Every posted activity is filed with an id
 *   "<conversation>|<seq>" and echoed on the stream as Direct Line does (handoffd settles
 *   its POST on the echo's channelData.clientActivityID); a message is answered with a
 *   typing activity and "You said: <text>", each set carrying the watermark. The last
 *   LOG_KEPT activities of a conversation are kept for GET and for the replay of a new
 *   socket (Direct Line's retention, in miniature).
 * - the hub: the generic webhook hub's outbound side (scripts/hubs/webhook.lua): signed
 *   POSTs to /messages, /typing, /handoffs, /end, checked and answered 200; the arrival of
 *   each "You said: " reply ends its round trip.
 * - the load: on command, COUNT signed message events ("<tag><k>" in conversation
 *   "b-<k mod CONVERSATIONS>") POSTed to handoffd's /hubs/webhook/events at RATE a second
 *   over a pool of keep-alive connections; prints one JSON line once every reply is in, or
 *   DRAIN_S seconds after the last send.
 *
 *   bench_relay_load [POOL]
 * prints {"directline": base, "dl_secret", "hub": url, "hub_secret", "hub_token"} for the
 * daemon's config, then reads commands on stdin, one a line:
 *   run TAG RATE COUNT CONVERSATIONS PORT
 * and prints {"tag", "sent", "accepted", "errors", "received", "rate", "send_rate", "p50",
 * "p90", "p99", "max", ..., "rtt", "slowest"} (times in ms) when it is done. Exits at end of
 * input. */
#define _GNU_SOURCE
#include "base/json_text.h"
#include "parse/json_simd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>

#define DL_PREFIX "/v3/directline"
#define DL_SECRET "bench-dl-secret-0123456789abcdef"
#define HUB_SECRET "bench-hub-secret-0123456789abcdef"
#define HUB_TOKEN "bench-hub-token-0123456789"
#define BOT_FROM "{\"id\":\"bench-bot\",\"name\":\"Bench Bot\",\"role\":\"bot\"}"
#define REPLY_PREFIX "You said: "

#define CONVS_MAX 100000u	/* Direct Line conversations the bot will open */
#define LOG_KEPT 32u		/* activities kept per conversation for GET and replays */
#define BODY_MAX (256u * 1024u)	/* Direct Line's activity limit; hub deliveries are smaller */
#define TEXT_MAX 4096u		/* message texts answered; longer ones are cut */
#define HANDSHAKE_MAX 8192u	/* bytes of a WebSocket upgrade request */
#define WS_QUEUE_MAX (4u << 20)	/* a stream further behind than this is dropped */
#define WS_MSG_MAX (64u * 1024u)	/* clients only send keep-alives up the stream */
#define POOL_DEFAULT 32
#define POOL_MAX 1024
#define DRAIN_S 60.0		/* after the last send, how long replies may take */
#define TICK_US 1000		/* the pacing timer */
#define CMD_MAX 512

struct ws_conn;

struct dl_conv {
	char id[32];
	unsigned seq;		/* activities filed: the watermark */
	unsigned tokens;	/* tokens minted: each one differs */
	bool started;
	char *log[LOG_KEPT];	/* activity JSON by seq % LOG_KEPT; NULL when none */
	bool typing[LOG_KEPT];	/* typing is never replayed nor returned by GET */
	struct ws_conn *ws;	/* the one stream socket, or NULL */
};

struct run {
	unsigned id;
	char tag[32];
	double rate;
	unsigned count, conversations;
	double t0, last_send, last_arrival;
	unsigned sent, accepted, errors, received, stray, misrouted, status_other;
	double *sent_at;	/* by k */
	double *rtt;		/* by k: arrival - sent, < 0 while none */
	struct event *tick;
	struct event *drain;
};

struct bench {
	struct event_base *base;
	struct evhttp *dl_http, *hub_http;
	struct evconnlistener *ws_listener;
	int dl_port, ws_port, hub_port;
	struct dl_conv *convs;
	unsigned nconvs;
	struct json_simd *js;
	char *scratch;		/* BODY_MAX + padding: bodies to parse */
	char *hmac_in;		/* BODY_MAX: what a signature covers */
	struct evhttp_connection *pool[POOL_MAX];
	int pool_size, pool_port;
	unsigned next_conn;
	struct run *run;
	struct event *input;
	char cmd[CMD_MAX];
	size_t cmd_len;
	unsigned runs;		/* runs started: the id of the latest */
	unsigned hub_rejected, hub_typing, hub_other, ws_dropped;
};

struct pending {
	struct bench *b;
	unsigned run_id;	/* an answer that comes after its run ended counts for none */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* {===== Signatures: v1=<hex HMAC-SHA256(secret, timestamp "." body)> */

static int sign(struct bench *b, const char *ts, const char *body, size_t len, char out[3 + 65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	size_t tl = strlen(ts);

	if (tl + 1 + len > BODY_MAX)
		return -1;
	memcpy(b->hmac_in, ts, tl);
	b->hmac_in[tl] = '.';
	memcpy(b->hmac_in + tl + 1, body, len);
	if (!HMAC(EVP_sha256(), HUB_SECRET, (int)strlen(HUB_SECRET), (unsigned char *)b->hmac_in, tl + 1 + len,
		  md, &mdlen) || mdlen != 32)
		return -1;
	memcpy(out, "v1=", 3);
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(out + 3 + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* }===== */

/* {===== Small HTTP helpers */

static void reply_json(struct evhttp_request *req, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void reply_json(struct evhttp_request *req, int status, const char *fmt, ...)
{
	struct evbuffer *out = evbuffer_new();
	va_list ap;

	if (!out) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evhttp_send_reply(req, status, status < 300 ? "OK" : "Refused", out);
	evbuffer_free(out);
}

static void refuse(struct evhttp_request *req, int status, const char *code, const char *message)
{
	reply_json(req, status, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, message);
}

/* The request body, contiguous and followed by HD_PARSE_PADDING readable bytes (in
 * SCRATCH) so that simdjson reads it in place; NULL when too long. */
static const char *body_of(struct bench *b, struct evhttp_request *req, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);

	*len = evbuffer_get_length(in);
	if (*len > BODY_MAX)
		return NULL;
	evbuffer_copyout(in, b->scratch, *len);
	memset(b->scratch + *len, 0, HD_PARSE_PADDING);
	return b->scratch;
}

static int bind_http(struct bench *b, struct evhttp *http, int *port)
{
	struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);

	(void)b;
	if (!s || getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&sa, &sl) < 0)
		return -1;
	*port = ntohs(sa.sin_port);
	evhttp_set_timeout(http, 600);
	evhttp_set_max_body_size(http, BODY_MAX);
	evhttp_set_max_headers_size(http, 16384);
	return 0;
}

/* }===== */

/* {===== The bot's conversations: the log, the stream */

static int ws_push(struct dl_conv *c, const char *json, size_t len);

static void stamp(char *out, size_t cap)
{
	struct timespec ts;
	struct tm tm;

	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, cap - n, ".%06uZ", (unsigned)(ts.tv_nsec / 1000) % 1000000u);
}

static struct dl_conv *conv_new(struct bench *b)
{
	struct dl_conv *c;

	if (b->nconvs >= CONVS_MAX)
		return NULL;
	c = &b->convs[b->nconvs];
	snprintf(c->id, sizeof(c->id), "Bench%07u-us", b->nconvs);
	b->nconvs++;
	return c;
}

static struct dl_conv *conv_by_id(struct bench *b, const char *id, size_t len)
{
	unsigned i;

	if (len != 15 || strncmp(id, "Bench", 5) != 0 || strncmp(id + 12, "-us", 3) != 0 ||
	    sscanf(id + 5, "%7u", &i) != 1 || i >= b->nconvs)
		return NULL;
	return &b->convs[i];
}

/* Files an activity: HEAD is its members up to and including "{...", the rest after the
 * service's fields. Pushes it on the stream as a set of its own. Returns its seq. */
static int file_activity(struct dl_conv *c, bool typing, const char *rest, size_t rest_len, char *id_out,
			 size_t id_cap)
{
	char ts[40], head[256], set_tail[48];
	unsigned seq = c->seq;
	int hl;
	char *json;

	stamp(ts, sizeof(ts));
	hl = snprintf(head, sizeof(head),
		      "{\"id\":\"%s|%07u\",\"timestamp\":\"%s\",\"channelId\":\"directline\",\"conversation\":{\"id\":\"%s\"}%s",
		      c->id, seq, ts, c->id, rest_len ? "," : "}");
	if (hl < 0 || (size_t)hl >= sizeof(head) || !(json = malloc((size_t)hl + rest_len + 1)))
		return -1;
	memcpy(json, head, (size_t)hl);
	memcpy(json + hl, rest, rest_len);
	json[(size_t)hl + rest_len] = '\0';
	free(c->log[seq % LOG_KEPT]);
	c->log[seq % LOG_KEPT] = json;
	c->typing[seq % LOG_KEPT] = typing;
	c->seq++;
	if (id_out)
		snprintf(id_out, id_cap, "%s|%07u", c->id, seq);
	if (c->ws) {
		char *set;
		size_t n = (size_t)hl + rest_len;
		int tl = snprintf(set_tail, sizeof(set_tail), "],\"watermark\":\"%u\"}", c->seq);

		if ((set = malloc(n + (size_t)tl + 32))) {
			int sl = snprintf(set, 32, "{\"activities\":[");

			memcpy(set + sl, json, n);
			memcpy(set + sl + n, set_tail, (size_t)tl);
			ws_push(c, set, (size_t)sl + n + (size_t)tl);
			free(set);
		}
	}
	return (int)seq;
}

/* The activities kept from WATERMARK on, typing left out, as "a,b,c" into OUT. */
static void kept_since(struct dl_conv *c, unsigned watermark, struct evbuffer *out)
{
	unsigned from = c->seq > LOG_KEPT ? c->seq - LOG_KEPT : 0;
	bool first = true;

	for (unsigned s = watermark > from ? watermark : from; s < c->seq; s++) {
		if (c->typing[s % LOG_KEPT] || !c->log[s % LOG_KEPT])
			continue;
		evbuffer_add_printf(out, "%s%s", first ? "" : ",", c->log[s % LOG_KEPT]);
		first = false;
	}
}

/* }===== */

/* {===== The stream: RFC 6455 upgrade by hand, framing by wslay */

struct ws_conn {
	struct bench *b;
	struct bufferevent *bev;
	wslay_event_context_ptr ctx;
	struct dl_conv *conv;
	unsigned replay_from;
};

static void ws_free(struct ws_conn *w)
{
	if (w->conv && w->conv->ws == w)
		w->conv->ws = NULL;
	if (w->ctx)
		wslay_event_context_free(w->ctx);
	bufferevent_free(w->bev);
	free(w);
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *arg)
{
	struct ws_conn *w = arg;
	int n = evbuffer_remove(bufferevent_get_input(w->bev), buf, len);

	(void)flags;
	if (n <= 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	return n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *arg)
{
	struct ws_conn *w = arg;
	struct evbuffer *out = bufferevent_get_output(w->bev);

	(void)flags;
	if (evbuffer_get_length(out) >= WS_QUEUE_MAX || evbuffer_add(out, data, len) < 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	return (ssize_t)len;
}

/* Direct Line ignores what a client sends up the stream; pings and closes are wslay's. */
static void ws_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m, void *arg)
{
	(void)ctx;
	(void)m;
	(void)arg;
}

static const struct wslay_event_callbacks ws_callbacks = {
	.recv_callback = ws_recv, .send_callback = ws_send, .on_msg_recv_callback = ws_msg,
};

/* Sends what wslay has queued; frees W and returns -1 when the socket is done. */
static int ws_flush(struct ws_conn *w)
{
	if (wslay_event_send(w->ctx) != 0 || (!wslay_event_want_read(w->ctx) && !wslay_event_want_write(w->ctx) &&
					      evbuffer_get_length(bufferevent_get_output(w->bev)) == 0)) {
		ws_free(w);
		return -1;
	}
	return 0;
}

/* One text message to C's socket; -1 when the socket was freed on the way. */
static int ws_push(struct dl_conv *c, const char *json, size_t len)
{
	struct ws_conn *w = c->ws;
	struct wslay_event_msg m = { WSLAY_TEXT_FRAME, (const uint8_t *)json, len };

	if (wslay_event_get_queued_msg_length(w->ctx) > WS_QUEUE_MAX) {
		w->b->ws_dropped++;	/* a stalled reader: the service drops it too */
		ws_free(w);
		return -1;
	}
	return wslay_event_queue_msg(w->ctx, &m) == 0 ? ws_flush(w) : 0;
}

/* What a new socket gets first: the kept activities from its replay position on. */
static int ws_replay(struct ws_conn *w)
{
	struct evbuffer *acts = evbuffer_new();
	struct dl_conv *c = w->conv;
	char tail[48];
	size_t n;
	int rc = 0;

	if (!acts)
		return 0;
	evbuffer_add_printf(acts, "{\"activities\":[");
	kept_since(c, w->replay_from, acts);
	n = evbuffer_get_length(acts);
	if (n > strlen("{\"activities\":[")) {
		snprintf(tail, sizeof(tail), "],\"watermark\":\"%u\"}", c->seq);
		evbuffer_add(acts, tail, strlen(tail));
		n = evbuffer_get_length(acts);
		rc = ws_push(c, (const char *)evbuffer_pullup(acts, -1), n);
	}
	evbuffer_free(acts);
	return rc;
}

static void ws_on_read(struct bufferevent *bev, void *arg);

static const char *header_value(const char *head, const char *name, size_t *len)
{
	size_t nl = strlen(name);

	for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
		if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':') {
			const char *v = p + 3 + nl;

			while (*v == ' ')
				v++;
			*len = strcspn(v, "\r");
			return v;
		}
	}
	return NULL;
}

/* GET /v3/directline/conversations/{id}/stream?watermark=W&t=st.<i>.<from> with a key.
 * Returns 0 once upgraded, 1 when the socket was freed on the way, -1 when refused. */
static int ws_handshake(struct ws_conn *w, const char *head)
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	const char *target = head + 4, *key, *q, *t, *wm;
	char cid[16], keybuf[128], accept[64];
	unsigned char sha[SHA_DIGEST_LENGTH];
	size_t klen;
	unsigned from;
	struct dl_conv *c;

	if (strncmp(head, "GET ", 4) != 0 || strncmp(target, DL_PREFIX "/conversations/", 29) != 0)
		return -1;
	target += 29;
	if (strlen(target) < 23 || strncmp(target + 15, "/stream?", 8) != 0 || !(c = conv_by_id(w->b, target, 15)))
		return -1;
	memcpy(cid, target, 15);
	cid[15] = '\0';
	q = target + 23;
	if (!(t = strstr(q, "t=st.")) || sscanf(t + 5, "%*u.%u", &from) != 1)
		return -1;
	wm = strstr(q, "watermark=");
	if (wm && wm < t && wm[10] == '-')
		from = 0;	/* "-": the whole history, as the service replays it */
	else if (wm && wm < t && wm[10] >= '0' && wm[10] <= '9')
		from = (unsigned)strtoul(wm + 10, NULL, 10);
	key = header_value(head, "Sec-WebSocket-Key", &klen);
	if (!key || klen + sizeof(guid) > sizeof(keybuf))
		return -1;
	memcpy(keybuf, key, klen);
	memcpy(keybuf + klen, guid, sizeof(guid) - 1);
	SHA1((unsigned char *)keybuf, klen + sizeof(guid) - 1, sha);
	EVP_EncodeBlock((unsigned char *)accept, sha, sizeof(sha));
	if (wslay_event_context_server_init(&w->ctx, &ws_callbacks, w) != 0)
		return -1;
	wslay_event_config_set_max_recv_msg_length(w->ctx, WS_MSG_MAX);
	evbuffer_add_printf(bufferevent_get_output(w->bev),
			    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			    "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
	if (c->ws) {	/* one socket per conversation: the old one goes, as on a collision */
		struct ws_conn *old = c->ws;

		c->ws = NULL;
		old->conv = NULL;
		wslay_event_queue_close(old->ctx, 1000, (const uint8_t *)"collision", 9);
		ws_flush(old);
	}
	c->ws = w;
	w->conv = c;
	w->replay_from = from;
	return ws_replay(w) < 0 ? 1 : 0;
}

static void ws_on_read(struct bufferevent *bev, void *arg)
{
	struct ws_conn *w = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	if (!w->ctx) {
		struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		char head[HANDSHAKE_MAX + 1];

		if (end.pos < 0) {
			if (evbuffer_get_length(in) > HANDSHAKE_MAX)
				ws_free(w);
			return;
		}
		if ((size_t)end.pos + 4 > HANDSHAKE_MAX) {
			ws_free(w);
			return;
		}
		evbuffer_remove(in, head, (size_t)end.pos + 4);
		head[end.pos + 4] = '\0';
		int rc = ws_handshake(w, head);

		if (rc > 0)
			return;
		if (rc < 0) {
			evbuffer_add_printf(bufferevent_get_output(bev), "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
					    "Connection: close\r\n\r\n");
			bufferevent_flush(bev, EV_WRITE, BEV_FINISHED);
			ws_free(w);
			return;
		}
	}
	if (wslay_event_recv(w->ctx) != 0) {
		ws_free(w);
		return;
	}
	ws_flush(w);
}

static void ws_on_write(struct bufferevent *bev, void *arg)
{
	struct ws_conn *w = arg;

	(void)bev;
	if (w->ctx)
		ws_flush(w);	/* what waited for room in the output goes now */
}

static void ws_on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		ws_free(arg);
}

static void ws_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int slen, void *arg)
{
	struct bench *b = arg;
	struct ws_conn *w = calloc(1, sizeof(*w));

	(void)l;
	(void)sa;
	(void)slen;
	if (!w || !(w->bev = bufferevent_socket_new(b->base, fd, BEV_OPT_CLOSE_ON_FREE))) {
		free(w);
		close(fd);
		return;
	}
	w->b = b;
	bufferevent_setcb(w->bev, ws_on_read, ws_on_write, ws_on_event, w);
	bufferevent_enable(w->bev, EV_READ | EV_WRITE);
}

/* }===== */

/* {===== The bot's REST side */

enum { AUTH_BAD = -2, AUTH_SECRET = -1 };

/* AUTH_SECRET, the conversation index of a token "tok.<i>.<n>", or AUTH_BAD. */
static long auth_of(struct bench *b, struct evhttp_request *req)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	unsigned i;

	if (!h || strncmp(h, "Bearer ", 7) != 0)
		return AUTH_BAD;
	if (strcmp(h + 7, DL_SECRET) == 0)
		return AUTH_SECRET;
	if (sscanf(h + 7, "tok.%u.", &i) == 1 && i < b->nconvs)
		return i;
	return AUTH_BAD;
}

/* {conversationId, token, expires_in} and, with STREAM, a streamUrl: its watermark
 * parameter is WATERMARK when not NULL; the stream token carries the position a socket
 * without one replays from (now), as the service's does. */
static void token_answer(struct bench *b, struct evhttp_request *req, int status, struct dl_conv *c, bool stream_url,
			 const char *watermark)
{
	char stream[256] = "";

	if (stream_url)
		snprintf(stream, sizeof(stream),
			 ",\"streamUrl\":\"ws://127.0.0.1:%d" DL_PREFIX "/conversations/%s/stream?%s%s%st=st.%u.%u\"",
			 b->ws_port, c->id, watermark ? "watermark=" : "", watermark ? watermark : "",
			 watermark ? "&" : "", (unsigned)(c - b->convs), c->seq);
	reply_json(req, status, "{\"conversationId\":\"%s\",\"token\":\"tok.%u.%u\",\"expires_in\":3600%s}", c->id,
		   (unsigned)(c - b->convs), ++c->tokens, stream);
}

static unsigned query_watermark(struct evhttp_request *req, unsigned dflt, bool *given)
{
	const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	struct evkeyvalq kv;
	const char *w;
	unsigned v = dflt;

	*given = false;
	if (!q || evhttp_parse_query_str(q, &kv) < 0)
		return v;
	if ((w = evhttp_find_header(&kv, "watermark")) && *w && strcmp(w, "-") != 0) {
		v = (unsigned)strtoul(w, NULL, 10);
		*given = true;
	}
	evhttp_clear_headers(&kv);
	return v;
}

enum { POST_TYPE, POST_TEXT, POST_NSLOTS };

struct posted {
	struct hd_str type, text;
};

static int posted_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	struct posted *p = ctx;

	(void)self;
	p->type = s[POST_TYPE].kind == HD_STRING ? s[POST_TYPE].str : (struct hd_str){ 0 };
	p->text = s[POST_TEXT].kind == HD_STRING ? s[POST_TEXT].str : (struct hd_str){ 0 };
	return 0;
}

static const struct json_member posted_members[] = {
	{ JSON_KEY("type"), .slot = POST_TYPE },
	{ JSON_KEY("text"), .slot = POST_TEXT },
};
static const struct json_schema posted_schema = {
	JSON_MEMBERS(posted_members), .nslots = POST_NSLOTS, .done = posted_done,
};

/* POST .../activities: filed, echoed, answered {id}; a message gets typing and a reply. */
static void post_activity(struct bench *b, struct evhttp_request *req, struct dl_conv *c)
{
	struct posted p = { 0 };
	struct json_walk walk = { .root = &posted_schema, .ctx = &p, .max_depth = 64 };
	struct hd_parse_error err = { 0 };
	char id[64], text[TEXT_MAX * 6 + 1], reply_to[64];
	const char *body, *rest;
	size_t len;
	char *reply;
	int n;

	if (!(body = body_of(b, req, &len)) || json_simd_walk(b->js, body, len, len + HD_PARSE_PADDING, &walk, &err) < 0 ||
	    !p.type.ptr) {
		refuse(req, 400, "MissingProperty", "An activity needs a type");
		return;
	}
	if (p.text.ptr) {	/* copied before the body is overwritten below */
		char raw[TEXT_MAX + 1];
		size_t tl = p.text.len < TEXT_MAX ? p.text.len : TEXT_MAX;

		memcpy(raw, p.text.ptr, tl);
		raw[tl] = '\0';
		if (json_text_escape_whole(text, sizeof(text), raw) < 0)
			text[0] = '\0';
	}
	bool message = hd_str_eq(p.type, "message") && p.text.ptr;

	rest = memchr(body, '{', len);
	if (!rest) {
		refuse(req, 400, "BadArgument", "Body is not an object");
		return;
	}
	rest++;
	while (rest < body + len && (*rest == ' ' || *rest == '\n' || *rest == '\r' || *rest == '\t'))
		rest++;
	if (file_activity(c, false, rest, *rest == '}' ? 0 : (size_t)(body + len - rest), id, sizeof(id)) < 0) {
		refuse(req, 500, "ServiceError", "out of memory");
		return;
	}
	c->started = true;
	reply_json(req, 200, "{\"id\":\"%s\"}", id);
	if (!message)
		return;
	snprintf(reply_to, sizeof(reply_to), "%s", id);
	static const char typing[] = "\"type\":\"typing\",\"from\":" BOT_FROM "}";

	file_activity(c, true, typing, sizeof(typing) - 1, NULL, 0);
	n = asprintf(&reply,
		     "\"type\":\"message\",\"from\":" BOT_FROM ",\"text\":\"" REPLY_PREFIX "%s\",\"textFormat\":\"markdown\","
		     "\"locale\":\"en-US\",\"replyToId\":\"%s\"}", text, reply_to);
	if (n > 0) {
		file_activity(c, false, reply, (size_t)n, NULL, 0);
		free(reply);
	}
}

static void on_dl(struct evhttp_request *req, void *arg)
{
	struct bench *b = arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	long who = auth_of(b, req);
	struct dl_conv *c;
	bool given;

	if (!path || strncmp(path, DL_PREFIX "/", sizeof(DL_PREFIX)) != 0) {
		refuse(req, 404, "BadArgument", "no such path");
		return;
	}
	path += sizeof(DL_PREFIX) - 1;
	if (who == AUTH_BAD) {
		refuse(req, 403, "BadArgument", "invalid token or secret");
		return;
	}
	if (m == EVHTTP_REQ_POST && strcmp(path, "/tokens/generate") == 0 && who == AUTH_SECRET) {
		if (!(c = conv_new(b)))
			refuse(req, 429, "Throttled", "too many conversations");
		else
			token_answer(b, req, 200, c, false, NULL);
		return;
	}
	if (m == EVHTTP_REQ_POST && strcmp(path, "/tokens/refresh") == 0 && who >= 0) {
		token_answer(b, req, 200, &b->convs[who], false, NULL);
		return;
	}
	if (m == EVHTTP_REQ_POST && strcmp(path, "/conversations") == 0) {
		c = who >= 0 ? &b->convs[who] : conv_new(b);
		if (!c) {
			refuse(req, 429, "Throttled", "too many conversations");
			return;
		}
		token_answer(b, req, c->started ? 200 : 201, c, true, "-");
		c->started = true;
		return;
	}
	if (strncmp(path, "/conversations/", 15) != 0 || !(c = conv_by_id(b, path + 15, strcspn(path + 15, "/"))) ||
	    (who >= 0 && &b->convs[who] != c)) {
		refuse(req, 404, "BadArgument", "Unknown conversation");
		return;
	}
	path += 15 + 15;
	if (m == EVHTTP_REQ_GET && !*path) {	/* resume: a fresh token and streamUrl */
		unsigned w = query_watermark(req, c->seq, &given);
		char wm[16];

		snprintf(wm, sizeof(wm), "%u", w);
		token_answer(b, req, 200, c, true, given ? wm : NULL);
		return;
	}
	if (strcmp(path, "/activities") != 0) {
		refuse(req, 404, "BadArgument", "no such path");
	} else if (m == EVHTTP_REQ_POST) {
		post_activity(b, req, c);
	} else if (m == EVHTTP_REQ_GET) {
		struct evbuffer *out = evbuffer_new();

		if (!out) {
			evhttp_send_error(req, 500, NULL);
			return;
		}
		evbuffer_add_printf(out, "{\"activities\":[");
		kept_since(c, query_watermark(req, 0, &given), out);
		evbuffer_add_printf(out, "],\"watermark\":\"%u\"}", c->seq);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
		evhttp_send_reply(req, 200, "OK", out);
		evbuffer_free(out);
	} else {
		refuse(req, 405, "BadArgument", "method not allowed");
	}
}

/* }===== */

/* {===== The hub: handoffd's deliveries */

enum { HUB_CONV, HUB_TEXT, HUB_NSLOTS };

struct delivery {
	struct hd_str conversation, text;
};

static int delivery_done(void *ctx, const struct json_slot *self, const struct json_slot *s)
{
	struct delivery *d = ctx;

	(void)self;
	d->conversation = s[HUB_CONV].kind == HD_STRING ? s[HUB_CONV].str : (struct hd_str){ 0 };
	d->text = s[HUB_TEXT].kind == HD_STRING ? s[HUB_TEXT].str : (struct hd_str){ 0 };
	return 0;
}

static const struct json_member delivered_activity_members[] = {
	{ JSON_KEY("text"), .slot = HUB_TEXT },
};
static const struct json_schema delivered_activity_schema = {
	JSON_MEMBERS(delivered_activity_members), .nslots = HUB_NSLOTS,
};
static const struct json_member delivery_members[] = {
	{ JSON_KEY("conversation"), .slot = HUB_CONV },
	{ JSON_KEY("activity"), .slot = -1, .object = &delivered_activity_schema },
};
static const struct json_schema delivery_schema = {
	JSON_MEMBERS(delivery_members), .nslots = HUB_NSLOTS, .done = delivery_done,
};

static bool signed_ok(struct bench *b, struct evhttp_request *req, const char *body, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	const char *ts = evhttp_find_header(h, "X-Handoffd-Timestamp");
	const char *sig = evhttp_find_header(h, "X-Handoffd-Signature");
	const char *auth = evhttp_find_header(h, "Authorization");
	char want[3 + 65];

	if (!ts || !sig || strlen(sig) != 67 || !evhttp_find_header(h, "X-Handoffd-Delivery") ||
	    !auth || strcmp(auth, "Bearer " HUB_TOKEN) != 0 || llabs(strtoll(ts, NULL, 10) - (long long)time(NULL)) > 300)
		return false;
	if (sign(b, ts, body, len, want) < 0)
		return false;
	return CRYPTO_memcmp(want, sig, 67) == 0;
}

/* "You said: <tag><k>" in "b-<k mod conversations>": the end of message K's round trip. */
static void reply_arrived(struct bench *b, const struct delivery *d)
{
	struct run *r = b->run;
	size_t pl = strlen(REPLY_PREFIX), tl;
	char digits[16], conv[32];
	unsigned long k;
	char *end;

	if (!r || !d->text.ptr || d->text.len <= pl || memcmp(d->text.ptr, REPLY_PREFIX, pl) != 0)
		goto stray;
	tl = strlen(r->tag);
	if (d->text.len - pl <= tl || d->text.len - pl - tl >= sizeof(digits) ||
	    memcmp(d->text.ptr + pl, r->tag, tl) != 0)
		goto stray;
	memcpy(digits, d->text.ptr + pl + tl, d->text.len - pl - tl);
	digits[d->text.len - pl - tl] = '\0';
	k = strtoul(digits, &end, 10);
	if (*end || k >= r->sent || r->rtt[k] >= 0)
		goto stray;
	snprintf(conv, sizeof(conv), "b-%lu", k % r->conversations);
	if (!hd_str_eq(d->conversation, conv))
		r->misrouted++;
	r->last_arrival = now_s();
	r->rtt[k] = r->last_arrival - r->sent_at[k];
	r->received++;
	return;
stray:
	if (r)
		r->stray++;
}

static void run_finish(struct bench *b);

static void on_hub(struct evhttp_request *req, void *arg)
{
	struct bench *b = arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	struct delivery d = { 0 };
	struct json_walk walk = { .root = &delivery_schema, .ctx = &d, .max_depth = 64 };
	struct hd_parse_error err = { 0 };
	const char *body;
	size_t len;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST || !path) {
		refuse(req, 405, "method", "POST only");
		return;
	}
	if (!(body = body_of(b, req, &len)) || !signed_ok(b, req, body, len)) {
		b->hub_rejected++;
		reply_json(req, 401, "{\"error\":\"bad signature\"}");
		return;
	}
	if (strcmp(path, "/messages") == 0) {
		if (json_simd_walk(b->js, body, len, len + HD_PARSE_PADDING, &walk, &err) < 0) {
			b->hub_rejected++;
			reply_json(req, 400, "{\"error\":\"malformed\"}");
			return;
		}
		reply_arrived(b, &d);
	} else if (strcmp(path, "/typing") == 0) {
		b->hub_typing++;
	} else {
		b->hub_other++;
	}
	reply_json(req, 200, "{\"ok\":true}");
	if (b->run && b->run->sent == b->run->count && b->run->received == b->run->count)
		run_finish(b);
}

/* }===== */

/* {===== The load: signed message events at a fixed rate over a connection pool */

static void on_answer(struct evhttp_request *req, void *arg)
{
	struct pending *p = arg;
	struct run *r = p->b->run;

	if (r && r->id == p->run_id) {
		int status = req ? evhttp_request_get_response_code(req) : 0;

		if (status == 202)
			r->accepted++;
		else
			r->errors++;
		if (status && status != 202 && status != 200)
			r->status_other = (unsigned)status;
	}
	free(p);
}

static int send_one(struct bench *b, struct run *r, unsigned k)
{
	struct evhttp_connection *conn = b->pool[b->next_conn++ % (unsigned)b->pool_size];
	struct pending *p = malloc(sizeof(*p));
	struct evhttp_request *req;
	struct evkeyvalq *h;
	char body[512], ts[24], sig[3 + 65], delivery[64];
	unsigned conv = k % r->conversations;
	int n;

	if (!p)
		return -1;
	*p = (struct pending){ b, r->id };
	if (!(req = evhttp_request_new(on_answer, p))) {
		free(p);
		return -1;
	}
	n = snprintf(body, sizeof(body),
		     "{\"id\":\"ev-%s-%u\",\"type\":\"message\",\"conversation\":\"b-%u\",\"user\":{\"id\":\"u-b-%u\"},"
		     "\"text\":\"%s%u\"}", r->tag, k, conv, conv, r->tag, k);
	snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
	snprintf(delivery, sizeof(delivery), "dl-%s-%u", r->tag, k);
	if (n < 0 || (size_t)n >= sizeof(body) || sign(b, ts, body, (size_t)n, sig) < 0) {
		evhttp_request_free(req);
		free(p);
		return -1;
	}
	h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", "127.0.0.1");
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "X-Handoffd-Timestamp", ts);
	evhttp_add_header(h, "X-Handoffd-Delivery", delivery);
	evhttp_add_header(h, "X-Handoffd-Signature", sig);
	evbuffer_add(evhttp_request_get_output_buffer(req), body, (size_t)n);
	r->sent_at[k] = now_s();
	if (evhttp_make_request(conn, req, EVHTTP_REQ_POST, "/hubs/webhook/events") < 0) {
		free(p);	/* evhttp freed the request */
		return -1;
	}
	return 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	struct run *r = b->run;
	double now = now_s();

	(void)fd;
	(void)what;
	while (r->sent < r->count && r->t0 + r->sent / r->rate <= now) {
		if (send_one(b, r, r->sent) < 0)
			r->errors++;
		r->sent++;
	}
	if (r->sent == r->count) {
		struct timeval drain = { (time_t)DRAIN_S, 0 };

		r->last_send = now;
		event_del(r->tick);
		evtimer_add(r->drain, &drain);
		if (r->received == r->count)
			run_finish(b);
	}
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	run_finish(arg);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The Qth quantile of the N sorted values as bench_listener.py took it: V[int(N*Q) - 1]. */
static double quantile(const double *v, size_t n, double q)
{
	size_t i = (size_t)((double)n * q);

	return n ? v[i ? i - 1 : 0] * 1e3 : 0;
}

static void run_free(struct run *r)
{
	if (r->tick)
		event_free(r->tick);
	if (r->drain)
		event_free(r->drain);
	free(r->sent_at);
	free(r->rtt);
	free(r);
}

/* "slowest": [[seconds after the run's start it was sent, round trip ms], ...] for the
 * replies at or above THRESHOLD (the slowest 1 %), so that a reader can tell a steady
 * spread from a stall at one moment (a burst of reconnects, a checkpoint). */
static void print_slowest(const struct run *r, double threshold)
{
	bool first = true;

	printf("\"slowest\":[");
	for (unsigned k = 0; threshold > 0 && k < r->sent; k++) {
		if (r->rtt[k] < threshold)
			continue;
		printf("%s[%.3f,%.3f]", first ? "" : ",", r->sent_at[k] - r->t0, r->rtt[k] * 1e3);
		first = false;
	}
	printf("]}\n");
}

/* "rtt": every round trip of the run in ms, sorted, so that runs can be pooled: the p99 of
 * several runs together is steadier than any one run's. */
static void print_all(const double *v, size_t n)
{
	printf("\"rtt\":[");
	for (size_t k = 0; v && k < n; k++)
		printf("%s%.3f", k ? "," : "", v[k] * 1e3);
	printf("],");
}

static void run_finish(struct bench *b)
{
	struct run *r = b->run;
	double *v = malloc(sizeof(double) * (r->received + 1));
	size_t n = 0;
	double span = r->last_arrival - r->t0, send_span = r->last_send - r->t0;

	for (unsigned k = 0; v && k < r->sent; k++)
		if (r->rtt[k] >= 0)
			v[n++] = r->rtt[k];
	if (v)
		qsort(v, n, sizeof(*v), cmp_double);
	printf("{\"tag\":\"%s\",\"sent\":%u,\"accepted\":%u,\"errors\":%u,\"last_bad_status\":%u,\"received\":%u,"
	       "\"lost\":%u,\"stray\":%u,\"misrouted\":%u,\"rate\":%.1f,\"send_rate\":%.1f,\"p50\":%.3f,\"p90\":%.3f,"
	       "\"p99\":%.3f,\"max\":%.3f,\"hub_rejected\":%u,\"hub_typing\":%u,\"streams_dropped\":%u,",
	       r->tag, r->sent, r->accepted, r->errors, r->status_other, r->received, r->sent - r->received, r->stray,
	       r->misrouted, span > 0 ? r->received / span : 0, send_span > 0 ? r->sent / send_span : 0,
	       v ? quantile(v, n, 0.50) : 0, v ? quantile(v, n, 0.90) : 0, v ? quantile(v, n, 0.99) : 0,
	       v && n ? v[n - 1] * 1e3 : 0, b->hub_rejected, b->hub_typing, b->ws_dropped);
	print_all(v, n);
	print_slowest(r, v && n ? v[n - 1 - n / 100] : 0);
	fflush(stdout);
	free(v);
	b->run = NULL;	/* answers still in flight see another run, or none */
	run_free(r);
}

static int pool_open(struct bench *b, int port)
{
	for (int i = 0; i < b->pool_size; i++) {
		if (b->pool[i])
			evhttp_connection_free(b->pool[i]);
		if (!(b->pool[i] = evhttp_connection_base_new(b->base, NULL, "127.0.0.1", (uint16_t)port)))
			return -1;
		evhttp_connection_set_timeout(b->pool[i], 60);
	}
	b->pool_port = port;
	return 0;
}

static void run_start(struct bench *b, const char *line)
{
	struct run *r = calloc(1, sizeof(*r));
	struct timeval tick = { 0, TICK_US };
	int port = 0;

	if (!r)
		goto fail;
	if (b->run || sscanf(line, "run %31s %lf %u %u %d", r->tag, &r->rate, &r->count, &r->conversations, &port) != 5 ||
	    r->rate <= 0 || !r->count || !r->conversations || port <= 0 || port > 65535) {
		fprintf(stderr, "bench_relay_load: want \"run TAG RATE COUNT CONVERSATIONS PORT\", one run at a time\n");
		goto fail;
	}
	if (port != b->pool_port && pool_open(b, port) < 0)
		goto fail;
	r->sent_at = calloc(r->count, sizeof(double));
	r->rtt = malloc(r->count * sizeof(double));
	r->tick = event_new(b->base, -1, EV_PERSIST, on_tick, b);
	r->drain = evtimer_new(b->base, on_drain, b);
	if (!r->sent_at || !r->rtt || !r->tick || !r->drain)
		goto fail;
	for (unsigned k = 0; k < r->count; k++)
		r->rtt[k] = -1;
	r->t0 = now_s();
	r->id = ++b->runs;
	b->run = r;
	event_add(r->tick, &tick);
	on_tick(-1, 0, b);
	return;
fail:
	if (r)
		run_free(r);
	printf("{\"error\":\"bad command\"}\n");
	fflush(stdout);
}

/* }===== */

static void on_input(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	ssize_t n = read(fd, b->cmd + b->cmd_len, sizeof(b->cmd) - 1 - b->cmd_len);
	char *nl;

	(void)what;
	if (n <= 0) {
		event_base_loopbreak(b->base);
		return;
	}
	b->cmd_len += (size_t)n;
	b->cmd[b->cmd_len] = '\0';
	while ((nl = strchr(b->cmd, '\n'))) {
		*nl = '\0';
		if (strcmp(b->cmd, "quit") == 0)
			event_base_loopbreak(b->base);
		else if (b->cmd[0])
			run_start(b, b->cmd);
		b->cmd_len -= (size_t)(nl + 1 - b->cmd);
		memmove(b->cmd, nl + 1, b->cmd_len + 1);
	}
	if (b->cmd_len == sizeof(b->cmd) - 1)
		b->cmd_len = 0;	/* a line too long for any command */
}

static int setup(struct bench *b)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (!(b->base = event_base_new()) || !(b->js = json_simd_new()) ||
	    !(b->scratch = malloc(BODY_MAX + HD_PARSE_PADDING + 64)) || !(b->hmac_in = malloc(BODY_MAX)) ||
	    !(b->convs = calloc(CONVS_MAX, sizeof(*b->convs))) || !(b->dl_http = evhttp_new(b->base)) ||
	    !(b->hub_http = evhttp_new(b->base)) || bind_http(b, b->dl_http, &b->dl_port) < 0 ||
	    bind_http(b, b->hub_http, &b->hub_port) < 0)
		return -1;
	evhttp_set_gencb(b->dl_http, on_dl, b);
	evhttp_set_gencb(b->hub_http, on_hub, b);
	b->ws_listener = evconnlistener_new_bind(b->base, ws_accept, b, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
						 -1, (struct sockaddr *)&sa, sizeof(sa));
	if (!b->ws_listener ||
	    getsockname(evconnlistener_get_fd(b->ws_listener), (struct sockaddr *)&sa, &sl) < 0)
		return -1;
	b->ws_port = ntohs(sa.sin_port);
	b->input = event_new(b->base, 0, EV_READ | EV_PERSIST, on_input, b);
	return b->input && event_add(b->input, NULL) == 0 ? 0 : -1;
}

static void teardown(struct bench *b)
{
	if (b->run)
		run_free(b->run);
	for (int i = 0; i < b->pool_size; i++)
		if (b->pool[i])
			evhttp_connection_free(b->pool[i]);
	for (unsigned i = 0; b->convs && i < b->nconvs; i++) {
		if (b->convs[i].ws)
			ws_free(b->convs[i].ws);
		for (unsigned j = 0; j < LOG_KEPT; j++)
			free(b->convs[i].log[j]);
	}
	if (b->ws_listener)
		evconnlistener_free(b->ws_listener);
	if (b->dl_http)
		evhttp_free(b->dl_http);
	if (b->hub_http)
		evhttp_free(b->hub_http);
	if (b->input)
		event_free(b->input);
	free(b->convs);
	free(b->scratch);
	free(b->hmac_in);
	json_simd_free(b->js);
	if (b->base)
		event_base_free(b->base);
}

int main(int argc, char **argv)
{
	struct bench b = { .pool_size = argc > 1 ? atoi(argv[1]) : POOL_DEFAULT };
	int rc = 1;

	if (b.pool_size < 1 || b.pool_size > POOL_MAX) {
		fprintf(stderr, "usage: %s [POOL (1..%d)]\n", argv[0], POOL_MAX);
		return 2;
	}
	if (setup(&b) == 0) {
		printf("{\"directline\":\"http://127.0.0.1:%d" DL_PREFIX "\",\"dl_secret\":\"" DL_SECRET "\","
		       "\"hub\":\"http://127.0.0.1:%d\",\"hub_secret\":\"" HUB_SECRET "\",\"hub_token\":\"" HUB_TOKEN "\"}\n",
		       b.dl_port, b.hub_port);
		fflush(stdout);
		event_base_dispatch(b.base);
		rc = 0;
	} else {
		fprintf(stderr, "bench_relay_load: cannot set up the servers\n");
	}
	teardown(&b);
	return rc;
}
