/* websocket_internal.h - what the websocket_*.c files share and nothing else includes
 * (tests/unit aside): the parsed URL, the upgrade answer, and the pure-text handshake
 * helpers of websocket_handshake.c. The public API stays in websocket.h. */
#ifndef HANDOFFD_WEBSOCKET_INTERNAL_H
#define HANDOFFD_WEBSOCKET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
