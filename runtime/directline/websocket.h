/* websocket.h - WebSocket client (RFC 6455) over libevent bufferevents, framing by libwslay.
 * Built for the Direct Line stream: many long-lived, mostly idle, receive-only sockets.
 *
 * A websocket_client holds what all sockets share: the loop, the log, the loop's resolver
 * (evdns) and one TLS context, plus the limits and timeouts below. websocket_connect
 * opens one socket for one ws:// or wss:// URL and reports through callbacks.
 *
 * Lifecycle of one socket, and who frees it:
 *   websocket_connect -> [on_open] -> on_message* -> on_close (exactly once)
 * The caller owns the handle from websocket_connect until it calls websocket_free, which
 * it must do exactly once: from inside any callback (on_close included) or later. After
 * on_close the socket has released its connection and calls nothing more; it only waits
 * to be freed. websocket_free never calls on_close; websocket_close and every other call
 * here never call any callback synchronously, so the caller is never re-entered. */
#ifndef HANDOFFD_WEBSOCKET_H
#define HANDOFFD_WEBSOCKET_H

#include <stddef.h>
#include <stdint.h>

struct log;
struct loop;
struct websocket;
struct websocket_client;

/* The bounds and timeouts of a socket, with their defaults. */
#define WEBSOCKET_MAX_MESSAGE_DEFAULT (1024u * 1024u) /* one reassembled message */
#define WEBSOCKET_MAX_HANDSHAKE_DEFAULT 8192u	/* the 101 answer's header block */
#define WEBSOCKET_MAX_OUTPUT_DEFAULT (64u * 1024u) /* queued + unsent bytes we hold */
#define WEBSOCKET_CONNECT_TIMEOUT_MS_DEFAULT 15000u /* DNS + TCP + TLS + upgrade */
#define WEBSOCKET_PING_INTERVAL_MS_DEFAULT 20000u
#define WEBSOCKET_DEAD_AFTER_MS_DEFAULT 60000u	/* silence that declares the peer dead */
#define WEBSOCKET_CLOSE_TIMEOUT_MS_DEFAULT 3000u	/* wait for the close handshake */

struct websocket_opts {
	const char *ca_file;	/* PEM file of trusted CAs; NULL = the system store */
	size_t max_message;	/* larger message: close 1009, WEBSOCKET_END_TOO_LARGE */
	size_t max_handshake;
	size_t max_output;
	uint32_t connect_timeout_ms;
	uint32_t ping_interval_ms;	/* 0 = never ping */
	uint32_t dead_after_ms;	/* no byte received for this long = dead; 0 = never */
	uint32_t close_timeout_ms;
};

#define WEBSOCKET_OPTS_DEFAULT { \
	.ca_file = NULL, \
	.max_message = WEBSOCKET_MAX_MESSAGE_DEFAULT, \
	.max_handshake = WEBSOCKET_MAX_HANDSHAKE_DEFAULT, \
	.max_output = WEBSOCKET_MAX_OUTPUT_DEFAULT, \
	.connect_timeout_ms = WEBSOCKET_CONNECT_TIMEOUT_MS_DEFAULT, \
	.ping_interval_ms = WEBSOCKET_PING_INTERVAL_MS_DEFAULT, \
	.dead_after_ms = WEBSOCKET_DEAD_AFTER_MS_DEFAULT, \
	.close_timeout_ms = WEBSOCKET_CLOSE_TIMEOUT_MS_DEFAULT }

/* Why a socket ended. The names (websocket_end_name) are stable, for logs and tests. */
enum websocket_end {
	WEBSOCKET_END_CLOSED,	/* "closed": the server sent a close frame (code, reason) */
	WEBSOCKET_END_LOCAL,	/* "local": websocket_close finished (or its wait ran out) */
	WEBSOCKET_END_CONNECT,	/* "connect": name resolution or TCP connect failed (err) */
	WEBSOCKET_END_TLS,	/* "tls": TLS handshake or certificate check failed */
	WEBSOCKET_END_HTTP,	/* "http": upgrade refused (http_status, retry_after) */
	WEBSOCKET_END_HANDSHAKE,	/* "handshake": malformed or invalid upgrade answer */
	WEBSOCKET_END_TIMEOUT,	/* "timeout": not open within connect_timeout_ms */
	WEBSOCKET_END_DEAD,	/* "dead": nothing received within dead_after_ms */
	WEBSOCKET_END_PROTOCOL,	/* "protocol": framing violation; we closed (code) */
	WEBSOCKET_END_TOO_LARGE,	/* "too_large": message over max_message; closed 1009 */
	WEBSOCKET_END_EOF,	/* "eof": connection lost without a close frame */
	WEBSOCKET_END_INTERNAL,	/* "internal": out of memory or our output bound hit */
};

/* What on_close receives. Strings live only during the callback. */
struct websocket_end_info {
	enum websocket_end kind;
	unsigned code;		/* close code received (CLOSED, LOCAL) or sent (PROTOCOL,
				 * TOO_LARGE); 1005 when a close frame had none; else 0 */
	const char *reason;	/* close reason, or a short error detail; never NULL.
				 * Bytes from the peer outside printable ASCII, '"' and
				 * '\\' read '?', so it can be logged as it is */
	int http_status;	/* WEBSOCKET_END_HTTP: the refused upgrade's status */
	const char *retry_after;	/* its Retry-After value (as reason), NULL if absent */
	int err;		/* a negative errno when one applies, else 0 */
};

/* Every callback gets the socket and the connect call's ARG. Any may call websocket_free
 * or websocket_close on this or another socket, and websocket_connect. */
struct websocket_callbacks {
	void (*on_open)(struct websocket *ws, void *arg);
	/* A complete text message (fragments reassembled), DATA not NUL-terminated and
	 * valid only during the call. Empty and whitespace-only messages are delivered
	 * too (Direct Line keep-alives): the caller decides what to ignore. Binary
	 * messages, pings and pongs are not delivered; pings are answered. */
	void (*on_message)(struct websocket *ws, const char *data, size_t len, void *arg);
	void (*on_close)(struct websocket *ws, const struct websocket_end_info *end, void *arg);
};

/* Shared state for many sockets. Copies OPTS (ca_file is read here, not kept).
 * LP and LG are borrowed and must outlive the client. NULL on failure (bad options,
 * unreadable CA file, out of memory), logged on LG. */
struct websocket_client *websocket_client_new(struct loop *lp, struct log *lg,
					      const struct websocket_opts *opts);
/* Every socket of the client must have been freed before. */
void websocket_client_free(struct websocket_client *wc);

/* Starts connecting to URL (ws://host[:port][/path][?query], wss://...). HEADERS is NULL
 * or a NULL-terminated array of "Name: value" strings added to the upgrade request.
 * CB is borrowed (usually a static const table) and must outlive the socket; URL and
 * HEADERS are copied as needed. The query is sent but never logged.
 * Returns 0 and the socket in *OUT, or -EINVAL (bad URL or header) or -ENOMEM. */
int websocket_connect(struct websocket_client *wc, const char *url, const char *const *headers,
		      const struct websocket_callbacks *cb, void *arg, struct websocket **out);

/* Queues a text message. Returns 0, -ENOTCONN when not open (or closing), -ENOBUFS when
 * it would exceed max_output, -ENOMEM. Never calls a callback. */
int websocket_send_text(struct websocket *ws, const char *data, size_t len);

/* Starts the close handshake with CODE (1000-1003, 1007-1011, 3000-4999) and REASON
 * (NULL or up to 123 bytes; longer is cut). on_close follows, later, with
 * WEBSOCKET_END_LOCAL, once the server answers or close_timeout_ms passed; messages
 * arriving meanwhile are dropped. Before the socket is open this aborts the attempt.
 * Returns 0, also when already closing or ended, or -EINVAL for a bad code. */
int websocket_close(struct websocket *ws, unsigned code, const char *reason);

/* Releases everything at once (no close handshake, no callback). NULL is a no-op.
 * Safe inside any callback of any socket. */
void websocket_free(struct websocket *ws);

/* "closed", "local", "connect", ... (see enum websocket_end). */
const char *websocket_end_name(enum websocket_end kind);

#endif
