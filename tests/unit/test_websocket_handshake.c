/* test_websocket_handshake.c - the pure-text half of the WebSocket client
 * (websocket_handshake.c) without a socket: the Sec-WebSocket-Accept of RFC 6455's own
 * example, the verdict on the server's upgrade answer (a good 101 opens, a wrong Accept or a
 * missing Upgrade is refused, another status is the server's refusal), and URL splitting.
 * The same paths over real sockets are in tests/integration/test_websocket.py. */
#include "directline/websocket_internal.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* RFC 6455 1.3: the key "dGhlIHNhbXBsZSBub25jZQ==" calls for this Accept. */
#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* Judges an answer made of STATUS_LINE and HEADERS (each header line ends in CRLF), expecting
 * RFC_ACCEPT; A and WHY receive what ws_judge_answer says. HEAD must outlive A. */
static enum ws_verdict judge(char *head, size_t cap, const char *status_line,
			     const char *headers, struct answer *a, const char **why)
{
	int n = snprintf(head, cap, "%s\r\n%s\r\n", status_line, headers);

	assert_true(n > 0 && (size_t)n < cap);
	return ws_judge_answer(head, RFC_ACCEPT, a, why);
}

static void test_accept_of_rfc_example(void **state)
{
	char accept[WS_ACCEPT_SIZE];

	(void)state;
	assert_int_equal(ws_accept_for(RFC_KEY, accept), 0);
	assert_string_equal(accept, RFC_ACCEPT);
}

static void test_made_key_matches_its_accept(void **state)
{
	char key[WS_KEY_SIZE], accept[WS_ACCEPT_SIZE], again[WS_ACCEPT_SIZE];

	(void)state;
	assert_int_equal(ws_make_key(key, accept), 0);
	assert_int_equal(strlen(key), WS_KEY_SIZE - 1);
	assert_int_equal(ws_accept_for(key, again), 0);
	assert_string_equal(accept, again);
}

static void test_good_answer_opens(void **state)
{
	char head[512];
	struct answer a;
	const char *why;

	(void)state;
	assert_int_equal(judge(head, sizeof(head), "HTTP/1.1 101 Switching Protocols",
			       "upgrade:  WebSocket \r\nConnection: keep-alive, Upgrade\r\n"
			       "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n", &a, &why),
			 WS_ANSWER_OPEN);
	assert_null(why);
	assert_int_equal(a.status, 101);
	assert_string_equal(a.upgrade, "WebSocket");
}

/* An answer with STATUS_LINE and HEADERS must be refused with WANT_WHY. */
static void assert_bad(const char *status_line, const char *headers, const char *want_why)
{
	char head[512];
	struct answer a;
	const char *why;

	assert_int_equal(judge(head, sizeof(head), status_line, headers, &a, &why), WS_ANSWER_BAD);
	assert_string_equal(why, want_why);
}

static void test_wrong_accept_refused(void **state)
{
	(void)state;
	assert_bad("HTTP/1.1 101 Switching Protocols",
		   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
		   "Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n",
		   "wrong Sec-WebSocket-Accept");
}

static void test_missing_upgrade_refused(void **state)
{
	(void)state;
	assert_bad("HTTP/1.1 101 Switching Protocols",
		   "Connection: Upgrade\r\nSec-WebSocket-Accept: " RFC_ACCEPT "\r\n",
		   "101 without Upgrade: websocket");
}

static void test_unasked_extension_refused(void **state)
{
	(void)state;
	assert_bad("HTTP/1.1 101 Switching Protocols",
		   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
		   "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
		   "Sec-WebSocket-Extensions: permessage-deflate\r\n",
		   "extension or subprotocol we did not ask for");
}

static void test_malformed_status_line_refused(void **state)
{
	(void)state;
	assert_bad("HTTP/2 101 Switching Protocols", "", "malformed HTTP status line");
}

static void test_other_status_is_servers_refusal(void **state)
{
	char head[512];
	struct answer a;
	const char *why;

	(void)state;
	assert_int_equal(judge(head, sizeof(head), "HTTP/1.1 429 Too Many Requests",
			       "Retry-After: 7\r\n", &a, &why),
			 WS_ANSWER_REFUSED);
	assert_int_equal(a.status, 429);
	assert_string_equal(a.retry_after, "7");
}

static void test_url_split(void **state)
{
	struct target t;

	(void)state;
	assert_int_equal(ws_parse_url("wss://example.com/v3/stream?t=x#frag", &t), 0);
	assert_true(t.tls);
	assert_false(t.ip);
	assert_string_equal(t.host, "example.com");
	assert_string_equal(t.port, "443");
	assert_int_equal(t.path_len, strlen("/v3/stream"));
	assert_int_equal(t.target_len, strlen("/v3/stream?t=x"));

	assert_int_equal(ws_parse_url("ws://[::1]:8080", &t), 0);
	assert_true(t.ip);
	assert_string_equal(t.host, "::1");
	assert_string_equal(t.port, "8080");
	assert_string_equal(t.slash, "/");

	assert_int_equal(ws_parse_url("wss://user:pw@example.com/", &t), -EINVAL);
	assert_int_equal(ws_parse_url("http://example.com/", &t), -EINVAL);
	assert_int_equal(ws_parse_url("ws://example.com:0/", &t), -EINVAL);
	assert_int_equal(ws_parse_url("ws://example.com/a b", &t), -EINVAL);
}

static void test_header_lines(void **state)
{
	(void)state;
	assert_true(ws_header_ok("Authorization: Bearer x"));
	assert_false(ws_header_ok(": no name"));
	assert_false(ws_header_ok("Bad Name: x"));
	assert_false(ws_header_ok("X-A: 1\r\nX-B: 2"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_of_rfc_example),
		cmocka_unit_test(test_made_key_matches_its_accept),
		cmocka_unit_test(test_good_answer_opens),
		cmocka_unit_test(test_wrong_accept_refused),
		cmocka_unit_test(test_missing_upgrade_refused),
		cmocka_unit_test(test_unasked_extension_refused),
		cmocka_unit_test(test_other_status_is_servers_refusal),
		cmocka_unit_test(test_malformed_status_line_refused),
		cmocka_unit_test(test_url_split),
		cmocka_unit_test(test_header_lines),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
