/* websocket_internal.h - what the websocket_*.c files share and nothing else includes
 * (tests/unit aside): the parsed URL, the upgrade answer, the pure-text handshake helpers
 * of websocket_handshake.c, the socket's private struct, and the helpers one websocket_*.c
 * file calls in another. The public API stays in websocket.h. */
#ifndef HANDOFFD_WEBSOCKET_INTERNAL_H
#define HANDOFFD_WEBSOCKET_INTERNAL_H

#include "directline/websocket.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <wslay/wslay.h>

#define WS_HOST_MAX 255		/* RFC 1035 name length */
#define WS_KEY_SIZE 25		/* Sec-WebSocket-Key: base64 of 16 bytes, and its NUL */
#define WS_ACCEPT_SIZE 29	/* Sec-WebSocket-Accept: base64 of SHA-1, and its NUL */

/* The URL split into what the connection needs; pointers into the caller's string. */
struct target {
	bool tls;
	bool ip;
	char host[WS_HOST_MAX + 1];	/* without IPv6 brackets */
	char port[6];
	const char *authority;	/* for the Host header, as written */
	size_t authority_len;
	const char *path;	/* path and query, up to any fragment; may start at '?' */
	const char *slash;	/* "/" when the path is empty, else "" */
	size_t path_len;	/* of the path alone: what we log */
	size_t target_len;	/* of path and query: what we send */
};

/* The parts of the answer we look at; pointers into the NUL-split header block. */
struct answer {
	int status;
	const char *upgrade;
	const char *connection;
	const char *accept;
	const char *extensions;
	const char *protocol;
	const char *retry_after;
};

enum ws_verdict {
	WS_ANSWER_OPEN,		/* 101 with everything RFC 6455 4.1 asks: the socket is open */
	WS_ANSWER_REFUSED,	/* another status: the server's refusal (status, Retry-After) */
	WS_ANSWER_BAD,		/* not an answer we can accept; *why says what is wrong */
};

/* Splits URL (ws:// or wss://) into T, which points into URL. 0 or -EINVAL. */
int ws_parse_url(const char *url, struct target *t);
/* true when H is one "Name: value" line we may add to the request. */
bool ws_header_ok(const char *h);
int ws_accept_for(const char key[WS_KEY_SIZE], char accept[WS_ACCEPT_SIZE]);
int ws_make_key(char key[WS_KEY_SIZE], char accept[WS_ACCEPT_SIZE]);
enum ws_verdict ws_judge_answer(char *head, const char *accept, struct answer *a, const char **why);

/* {===== The socket, which every websocket_*.c file but websocket_handshake.c works on */

#define WS_NOTE_MAX 160		/* close reason or error detail kept for on_close */
#define WS_RETRY_AFTER_MAX 40	/* an HTTP-date is 29 bytes */

/* Where the peer's byte stream stands, counted over the bytes handed to wslay (wslay_recv):
 * wslay keeps no state between whole messages, so its context (two 4 KiB buffers, about
 * 8.6 KiB, a third of an idle wss socket) is freed while the socket sits between messages
 * and made again for the next bytes (see ws_idle_framing). It only tells where frames end; the
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
	struct evdns_base *dns;	/* the loop's (loop_dns), borrowed */
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

/* }===== */

/* {===== websocket.c: why it ends, and its lifetime */

/* Records why the socket ends; the first note wins. NULL without memory. */
struct ending *ws_note(struct websocket *ws, enum websocket_end kind, int err,
		       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Notes why (unless a note is there) and ends the socket; nothing once it has ended. */
void ws_fail(struct websocket *ws, enum websocket_end kind, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Copies peer bytes into a note field, printable ASCII only, so it logs safely. */
void ws_copy_printable(char *dst, size_t cap, const void *src, size_t len);
/* Entry points from the loop hold the socket busy, so websocket_free only marks it. */
void ws_enter(struct websocket *ws);
/* Drops the busy count; the outermost entry point frees a socket freed under it. */
void ws_leave(struct websocket *ws);
/* Neither freed by the caller nor ending. */
bool ws_live(const struct websocket *ws);
/* Silences the connection and schedules on_close from a clean stack (see websocket.c). */
void ws_conclude(struct websocket *ws);

/* }===== */

/* {===== websocket_frames.c: framing through wslay, output bound, liveness */

/* Lets wslay write what it has queued into the output, up to max_output. */
void ws_pump_send(struct websocket *ws);
/* Queued messages and output together reach max_output: reading waits. */
bool ws_output_full(struct websocket *ws);
/* Waits close_timeout_ms for the peer to end the close handshake. */
void ws_start_closing(struct websocket *ws);
/* Makes the wslay context if the socket has none. 0 or -ENOMEM. */
int ws_need_wslay(struct websocket *ws);
/* Frees the wslay context of an open socket that sits between messages. */
void ws_idle_framing(struct websocket *ws);
/* Hands the input to wslay: messages, pings, close; ends the socket on what it refuses. */
void ws_feed_frames(struct websocket *ws);
/* Arms the timer for the next ping or the dead_after_ms deadline, whichever comes first. */
void ws_arm_tick(struct websocket *ws, uint64_t now);
/* The open socket's timer: ends it when dead, else pings when due. */
void ws_tick(struct websocket *ws);

/* }===== */

/* {===== websocket_connection.c: resolve, connect, upgrade */

/* Writes the upgrade request into ws->request and the Accept we expect into ws->accept. */
int ws_build_request(struct websocket *ws, const struct target *t, const char *const *headers);
/* Makes the TCP or TLS bufferevent, its callbacks set. 0 or -ENOMEM. */
int ws_make_bufferevent(struct websocket *ws, const struct target *t);
/* Resolves the host, then connects; may end the socket before it returns. */
void ws_resolve(struct websocket *ws, const struct target *t);

/* }===== */

/* {===== websocket_tls.c: OpenSSL */

/* The client context: TLS 1.2 at least, peers verified against CA_FILE or the system's. */
SSL_CTX *ws_new_ssl_ctx(struct log *lg, const char *ca_file);
/* One connection's SSL: SNI and name or IP check for T, session reuse attached. */
SSL *ws_new_ssl(struct websocket *ws, const struct target *t);
/* Ends the socket for a TLS handshake that did not finish, labelled by its cause. */
void ws_tls_failed(struct websocket *ws, int e);
/* 1 when the TLS session was resumed, else 0. */
int ws_tls_resumed(struct websocket *ws);
/* Gives OpenSSL's record buffers back while the socket is idle. */
void ws_release_tls_buffers(struct websocket *ws);

/* }===== */

#endif
