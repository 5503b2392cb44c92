/* websocket_handshake.c - the pure-text parts of the WebSocket client: the ws:// or wss://
 * URL split into host, port and request target, the RFC 6455 upgrade request's key and the
 * Sec-WebSocket-Accept it calls for, header lines the caller adds, and the check of the
 * server's answer (status line, Upgrade, Connection, Accept, no extension we did not ask
 * for). No socket and no libevent state here, so all of it is testable alone
 * (tests/unit/test_websocket_handshake.c); websocket.c sends and reads the bytes. */
#include "directline/websocket_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* {===== Upgrade request: key, accept, extra headers */

static int base64(const unsigned char *in, size_t len, char *out, size_t cap)
{
	if (cap < 4 * ((len + 2) / 3) + 1)
		return -EINVAL;
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return 0;
}

/* The Sec-WebSocket-Accept a server must answer to KEY: base64(SHA-1(key + GUID)),
 * RFC 6455 4.1. */
int ws_accept_for(const char key[WS_KEY_SIZE], char accept[WS_ACCEPT_SIZE])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	char joined[WS_KEY_SIZE - 1 + sizeof(WS_GUID)];
	unsigned mdlen = 0;

	snprintf(joined, sizeof(joined), "%s%s", key, WS_GUID);
	if (EVP_Digest(joined, strlen(joined), md, &mdlen, EVP_sha1(), NULL) != 1)
		return -EIO;
	return base64(md, mdlen, accept, WS_ACCEPT_SIZE);
}

/* Makes the Sec-WebSocket-Key into KEY and the answer we expect into ACCEPT. */
int ws_make_key(char key[WS_KEY_SIZE], char accept[WS_ACCEPT_SIZE])
{
	unsigned char nonce[16];

	if (RAND_bytes(nonce, sizeof(nonce)) != 1 ||
	    base64(nonce, sizeof(nonce), key, WS_KEY_SIZE) < 0)
		return -EIO;
	return ws_accept_for(key, accept);
}

bool ws_header_ok(const char *h)
{
	const char *colon = strchr(h, ':');

	return colon && colon != h && !strpbrk(h, "\r\n") && strcspn(h, " \t") > (size_t)(colon - h);
}

/* }===== */

/* {===== Upgrade answer: status line, headers, verdict */

static char *trim(char *s)
{
	char *end;

	s += strspn(s, " \t");
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	return s;
}

static void answer_header(struct answer *a, char *line)
{
	static const struct { const char *name; size_t off; } wanted[] = {
		{ "upgrade", offsetof(struct answer, upgrade) },
		{ "connection", offsetof(struct answer, connection) },
		{ "sec-websocket-accept", offsetof(struct answer, accept) },
		{ "sec-websocket-extensions", offsetof(struct answer, extensions) },
		{ "sec-websocket-protocol", offsetof(struct answer, protocol) },
		{ "retry-after", offsetof(struct answer, retry_after) },
	};
	char *colon = strchr(line, ':');

	if (!colon)
		return;
	*colon = '\0';
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
		if (strcasecmp(line, wanted[i].name) == 0)
			*(const char **)((char *)a + wanted[i].off) = trim(colon + 1);
}

/* Splits HEAD (NUL-terminated, ends in CRLF CRLF) in place. Returns 0 or -EPROTO. */
static int parse_answer(char *head, struct answer *a)
{
	char *line = head, *eol;

	memset(a, 0, sizeof(*a));
	if (strncmp(head, "HTTP/1.", 7) != 0 || (head[7] != '0' && head[7] != '1') || head[8] != ' ')
		return -EPROTO;
	for (int i = 9; i < 12; i++) {
		if (head[i] < '0' || head[i] > '9')
			return -EPROTO;
		a->status = a->status * 10 + (head[i] - '0');
	}
	if (head[12] != ' ' && head[12] != '\r')
		return -EPROTO;
	while ((eol = strstr(line, "\r\n")) && eol != line) {
		*eol = '\0';
		if (line != head)
			answer_header(a, line);
		line = eol + 2;
	}
	return 0;
}

static bool has_token(const char *list, const char *token)
{
	size_t n = strlen(token);

	for (const char *p = list; *p; p += strcspn(p, ",")) {
		p += strspn(p, ", \t");
		if (strncasecmp(p, token, n) == 0 && strchr(", \t", p[n]))
			return true;
	}
	return false;
}

/* What the answer in HEAD (NUL-terminated, ends in CRLF CRLF; split in place into A) means
 * for a request that expects ACCEPT as its Sec-WebSocket-Accept. WS_ANSWER_BAD sets *WHY. */
enum ws_verdict ws_judge_answer(char *head, const char *accept, struct answer *a, const char **why)
{
	*why = NULL;
	if (parse_answer(head, a) < 0)
		*why = "malformed HTTP status line";
	else if (a->status != 101)
		return WS_ANSWER_REFUSED;
	else if (!a->upgrade || strcasecmp(a->upgrade, "websocket") != 0)
		*why = "101 without Upgrade: websocket";
	else if (!a->connection || !has_token(a->connection, "upgrade"))
		*why = "101 without Connection: upgrade";
	else if (!a->accept || strcmp(a->accept, accept) != 0)
		*why = "wrong Sec-WebSocket-Accept";
	else if (a->extensions || a->protocol)
		*why = "extension or subprotocol we did not ask for";
	return *why ? WS_ANSWER_BAD : WS_ANSWER_OPEN;
}

/* }===== */

/* {===== URL */

static bool host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_';
}

static int parse_port(const char *p, const char *end, struct target *t)
{
	long v = 0;

	if (p == end || end - p > 5)
		return -EINVAL;
	for (const char *c = p; c < end; c++) {
		if (*c < '0' || *c > '9')
			return -EINVAL;
		v = v * 10 + (*c - '0');
	}
	if (v < 1 || v > 65535)
		return -EINVAL;
	snprintf(t->port, sizeof(t->port), "%ld", v);
	return 0;
}

/* host, host:port, [v6], [v6]:port. No user info: a URL with credentials is refused. */
static int parse_authority(const char *p, const char *end, struct target *t)
{
	const char *host = p, *host_end;
	bool bracketed = *p == '[';
	struct in6_addr a6;
	struct in_addr a4;

	if (bracketed) {
		host = p + 1;
		host_end = memchr(host, ']', (size_t)(end - host));
		if (!host_end)
			return -EINVAL;
		p = host_end + 1;
	} else {
		for (host_end = p; host_end < end && host_char(*host_end); host_end++)
			;
		p = host_end;
	}
	if (host_end == host || host_end - host > WS_HOST_MAX)
		return -EINVAL;
	memcpy(t->host, host, (size_t)(host_end - host));
	t->host[host_end - host] = '\0';
	if (bracketed && inet_pton(AF_INET6, t->host, &a6) != 1)
		return -EINVAL;
	t->ip = bracketed || inet_pton(AF_INET, t->host, &a4) == 1;
	if (p == end)
		return 0;
	if (*p != ':')
		return -EINVAL;
	return parse_port(p + 1, end, t);
}

static bool target_chars_ok(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

int ws_parse_url(const char *url, struct target *t)
{
	const char *p, *end;

	memset(t, 0, sizeof(*t));
	if (strncasecmp(url, "ws://", 5) == 0) {
		p = url + 5;
		memcpy(t->port, "80", 3);
	} else if (strncasecmp(url, "wss://", 6) == 0) {
		p = url + 6;
		t->tls = true;
		memcpy(t->port, "443", 4);
	} else {
		return -EINVAL;
	}
	end = p + strcspn(p, "/?#");
	t->authority = p;
	t->authority_len = (size_t)(end - p);
	if (parse_authority(p, end, t) < 0)
		return -EINVAL;
	t->path = end;
	t->slash = *end == '/' ? "" : "/";	/* RFC 6455 3: an empty path is "/" */
	t->path_len = strcspn(t->path, "?#");
	t->target_len = strcspn(t->path, "#");
	return target_chars_ok(t->path, t->target_len) ? 0 : -EINVAL;
}

/* }===== */
