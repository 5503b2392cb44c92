/* test_http_client.c - http_client.c against a real evhttp server on 127.0.0.1 in the same
 * loop: round trips, statuses, timeouts, refusals, caps, cancellation, TLS trust. Every wait
 * is for a callback, under a watchdog deadline. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "net/http_client.h"
#include "base/log.h"
#include "net/loop.h"
#include "http_test_server.h"

#include <errno.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WATCHDOG_MS 10000

/* {===== fixture */

#define RESULTS_MAX 512

/* What a callback saw; the response itself dies with the callback. */
struct result {
	struct fx *f;
	int calls;
	int err;
	int status;
	bool sent;
	bool terminated;	/* body[body_len] == '\0' */
	size_t body_len;
	char body[256];
	char x_method[16], x_echo[64], x_expect[32], retry_after[16];
	const char *expect_body;	/* if set, the body must equal it */
	bool body_ok;
};

/* Results live here, not on a test's stack: after a failed assertion, teardown frees the
 * client and its "cancelled" callbacks must still land in live memory. */
struct fx {
	struct loop *lp;
	struct log *lg;
	struct http_client *hc;
	struct server srv;
	struct loop_timer *watchdog;
	bool expired;
	int completions;	/* callbacks run, all results together */
	int nresults;
	struct result results[RESULTS_MAX];
};

static struct result *result(struct fx *f)
{
	struct result *r;

	assert_true(f->nresults < RESULTS_MAX);
	r = &f->results[f->nresults++];
	r->f = f;
	return r;
}

static void on_watchdog(void *arg)
{
	struct fx *f = arg;

	f->expired = true;
	loop_stop(f->lp);
}

static void copy_header(const struct http_response *res, const char *name, char *out, size_t cap)
{
	const char *v = http_client_response_header(res, name);

	snprintf(out, cap, "%s", v ? v : "(none)");
}

static void on_done(const struct http_response *res, int err, void *arg)
{
	struct result *r = arg;

	r->calls++;
	r->err = err;
	r->status = res->status;
	r->sent = res->sent;
	r->body_len = res->body_len;
	r->terminated = res->body[res->body_len] == '\0';
	snprintf(r->body, sizeof(r->body), "%s", res->body);
	copy_header(res, "x-method", r->x_method, sizeof(r->x_method));
	copy_header(res, "X-ECHO", r->x_echo, sizeof(r->x_echo));
	copy_header(res, "X-Expect", r->x_expect, sizeof(r->x_expect));
	copy_header(res, "Retry-After", r->retry_after, sizeof(r->retry_after));
	if (r->expect_body)
		r->body_ok = res->body_len == strlen(r->expect_body) &&
			     memcmp(res->body, r->expect_body, res->body_len) == 0;
	r->f->completions++;
	loop_stop(r->f->lp);
}

/* Runs the loop until TARGET callbacks have run in total, or fails at the watchdog. */
static void run_until(struct fx *f, int target)
{
	loop_timer_start(f->watchdog, WATCHDOG_MS, 0);
	while (f->completions < target && !f->expired)
		loop_run(f->lp);
	loop_timer_stop(f->watchdog);
	assert_false(f->expired);
}

static void new_client(struct fx *f, struct http_client_opts *opts)
{
	struct http_client_opts defaults = { 0 };

	if (!opts)
		opts = &defaults;
	opts->proxy = "";	/* whatever the environment says, talk to 127.0.0.1 directly */
	http_client_free(f->hc);
	f->hc = http_client_new(f->lp, f->lg, opts);
	assert_non_null(f->hc);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->lp = loop_new();
	f->lg = log_new();
	assert_non_null(f->lp);
	assert_non_null(f->lg);
	f->watchdog = loop_timer_new(f->lp, on_watchdog, f);
	server_start(&f->srv, f->lp, NULL);
	new_client(f, NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	http_client_free(f->hc);
	server_stop(&f->srv);
	loop_timer_free(f->watchdog);
	log_free(f->lg);
	loop_free(f->lp);
	free(f);
	return 0;
}

static int group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);	/* as the daemon does: a peer's close is an error, not a death */
	return http_client_global_init();
}

static int group_teardown(void **state)
{
	(void)state;
	http_client_global_cleanup();
	return 0;
}

static void url_for(const struct fx *f, char *out, size_t cap, const char *path)
{
	snprintf(out, cap, "http://127.0.0.1:%u%s", f->srv.port, path);
}

/* Starts REQ for PATH on the fixture's server; asserts it was accepted. */
static struct http_transfer *start(struct fx *f, struct http_request *req, const char *path,
				   struct result *r)
{
	char url[256];
	struct http_transfer *t = NULL;

	url_for(f, url, sizeof(url), path);
	req->url = url;
	assert_int_equal(http_client_request(f->hc, req, on_done, r, &t), 0);
	req->url = NULL;	/* url dies here; the client has its copy */
	assert_non_null(t);
	return t;
}

/* Runs REQ for URL to completion. */
static struct result *fetch_url(struct fx *f, struct http_request *req, const char *url)
{
	struct result *r = result(f);
	int target = f->completions + 1;

	req->url = url;
	assert_int_equal(http_client_request(f->hc, req, on_done, r, NULL), 0);
	run_until(f, target);
	assert_int_equal(r->calls, 1);
	return r;
}

/* Runs REQ for PATH on the fixture's server to completion. */
static struct result *fetch(struct fx *f, struct http_request *req, const char *path)
{
	char url[256];
	struct result *r;

	url_for(f, url, sizeof(url), path);
	r = fetch_url(f, req, url);
	req->url = NULL;	/* url dies here */
	return r;
}

/* }===== */

static void test_get_round_trip(void **state)
{
	struct fx *f = *state;
	struct http_header h[] = { { "X-Test", "hello there" } };
	struct http_request req = { .headers = h, .nheaders = 1 };
	struct result *r = fetch(f, &req, "/echo");

	assert_int_equal(r->err, 0);
	assert_int_equal(r->status, 200);
	assert_string_equal(r->x_method, "GET");
	assert_string_equal(r->x_echo, "hello there");
	assert_int_equal(r->body_len, 0);
	assert_true(r->terminated);
	assert_true(r->sent);
	assert_int_equal(http_client_in_flight(f->hc), 0);
}

static void test_post_body_round_trip(void **state)
{
	struct fx *f = *state;
	static const char body[] = "{\"a\":1}\0tail";	/* a NUL inside must survive */
	struct http_header h[] = { { "Content-Type", "application/json" }, { "X-Test", "" } };
	struct http_request req = { .method = "POST", .headers = h, .nheaders = 2,
				    .body = body, .body_len = sizeof(body) - 1 };
	struct result *r = fetch(f, &req, "/echo");

	assert_int_equal(r->status, 200);
	assert_string_equal(r->x_method, "POST");
	assert_string_equal(r->x_echo, "");	/* an empty header is sent, and read back empty */
	assert_int_equal(r->body_len, sizeof(body) - 1);
	assert_string_equal(r->body, "{\"a\":1}");
}

/* Over 1 MiB, where libcurl would send "Expect: 100-continue" and wait for servers that
 * ignore it. */
static void test_large_put_round_trip(void **state)
{
	struct fx *f = *state;
	size_t n = 1536 * 1024;
	char *body = malloc(n + 1);
	struct http_request req = { .method = "PUT", .body_len = n };
	struct result *r = result(f);

	for (size_t i = 0; i < n; i++)
		body[i] = (char)('a' + i % 26);
	body[n] = '\0';
	req.body = body;
	r->expect_body = body;
	start(f, &req, "/echo", r);
	run_until(f, 1);
	assert_int_equal(r->status, 200);
	assert_string_equal(r->x_method, "PUT");
	assert_string_equal(r->x_expect, "(none)");
	assert_true(r->body_ok);
	free(body);
}

static void test_other_methods(void **state)
{
	struct fx *f = *state;
	struct http_request head = { .method = "HEAD" }, del = { .method = "DELETE" };
	struct http_request patch = { .method = "PATCH", .body = "p", .body_len = 1 };
	struct result *rh = fetch(f, &head, "/echo");
	struct result *rd = fetch(f, &del, "/echo");
	struct result *rp = fetch(f, &patch, "/echo");

	assert_int_equal(rh->status, 200);
	assert_string_equal(rh->x_method, "HEAD");
	assert_int_equal(rh->body_len, 0);
	assert_string_equal(rd->x_method, "DELETE");
	assert_string_equal(rp->x_method, "PATCH");
	assert_string_equal(rp->body, "p");
}

static void test_error_statuses_are_responses(void **state)
{
	struct fx *f = *state;
	struct http_request req = { 0 };
	struct result *r404 = fetch(f, &req, "/status?code=404");
	struct result *r503 = fetch(f, &req, "/status?code=503");

	assert_int_equal(r404->err, 0);
	assert_int_equal(r404->status, 404);
	assert_string_equal(r404->body, "status 404");
	assert_int_equal(r503->err, 0);
	assert_int_equal(r503->status, 503);
}

static void test_retry_after_lookup(void **state)
{
	struct fx *f = *state;
	struct http_request req = { .method = "POST" };
	struct result *r = fetch(f, &req, "/status?code=429&retry_after=7");

	assert_int_equal(r->status, 429);
	assert_string_equal(r->retry_after, "7");	/* looked up as "Retry-After" */
	assert_string_equal(r->x_method, "(none)");	/* absent header: NULL */
}

static void test_redirects_off_by_default(void **state)
{
	struct fx *f = *state;
	struct http_request req = { 0 };
	struct result *plain = fetch(f, &req, "/status?code=302&location=/echo");
	struct result *followed;

	req.follow_redirects = true;
	followed = fetch(f, &req, "/status?code=302&location=/echo");
	assert_int_equal(plain->status, 302);
	assert_int_equal(followed->status, 200);
	assert_string_equal(followed->x_method, "GET");
}

static void test_timeout_after_send(void **state)
{
	struct fx *f = *state;
	struct http_request req = { .method = "POST", .body = "x", .body_len = 1,
				    .timeout_ms = 200 };
	struct result *r = fetch(f, &req, "/hang");

	assert_int_equal(r->err, -ETIMEDOUT);
	assert_string_equal(http_client_strerror(r->err), "timeout");
	assert_int_equal(r->status, 0);
	assert_true(r->sent);	/* the server has the request: a resend may duplicate it */
}

/* With the one connection allowed to the host taken, a second request waits in libcurl's
 * queue; its deadline still holds, and it provably never left. */
static void test_timeout_while_queued_is_not_sent(void **state)
{
	struct fx *f = *state;
	struct http_client_opts opts = { .max_host_connections = 1 };
	struct http_request hang = { .timeout_ms = 5000 }, queued = { .timeout_ms = 200 };
	struct result *rh = result(f), *rq = result(f);
	struct http_transfer *th;

	new_client(f, &opts);
	th = start(f, &hang, "/hang", rh);
	start(f, &queued, "/echo", rq);
	run_until(f, 1);
	assert_int_equal(rq->err, -ETIMEDOUT);
	assert_false(rq->sent);
	assert_int_equal(rh->calls, 0);
	http_client_cancel(th);
	assert_int_equal(http_client_in_flight(f->hc), 0);
}

static void test_connection_refused_is_not_sent(void **state)
{
	struct fx *f = *state;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct http_request req = { .method = "POST", .body = "x", .body_len = 1 };
	struct result *r;
	char url[64];

	/* A port that was just free and has no listener: bind, read it back, close. */
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/echo", fd_port(fd));
	close(fd);
	r = fetch_url(f, &req, url);
	assert_int_equal(r->err, -ECONNREFUSED);
	assert_string_equal(http_client_strerror(r->err), "connection refused");
	assert_false(r->sent);
}

static void test_resolve_failure_is_not_sent(void **state)
{
	struct fx *f = *state;
	struct http_request req = { .timeout_ms = 5000 };
	/* .invalid never resolves (RFC 6761). */
	struct result *r = fetch_url(f, &req, "http://no-such-host.invalid/");

	assert_int_equal(r->err, -ENXIO);
	assert_string_equal(http_client_strerror(r->err), "resolve failed");
	assert_false(r->sent);
}

static void test_body_cap(void **state)
{
	struct fx *f = *state;
	struct http_request req = { .max_body = 1000 };
	struct result *exact = fetch(f, &req, "/big?n=1000");
	struct result *sized = fetch(f, &req, "/big?n=5000");
	struct result *chunked = fetch(f, &req, "/big?n=5000&chunked=1");

	assert_int_equal(exact->err, 0);
	assert_int_equal(exact->body_len, 1000);
	assert_int_equal(sized->err, -EFBIG);
	assert_int_equal(chunked->err, -EFBIG);
	assert_string_equal(http_client_strerror(chunked->err), "body too large");
}

/* 500 requests at once through at most 8 connections: all complete, each with its own body. */
static void test_many_concurrent(void **state)
{
	enum { N = 500 };
	struct fx *f = *state;
	struct http_client_opts opts = { .max_total_connections = 8 };
	char (*bodies)[16] = calloc(N, sizeof(*bodies));
	struct result *r[N];

	new_client(f, &opts);
	for (int i = 0; i < N; i++) {
		struct http_request req = { .method = "POST", .body = bodies[i] };

		req.body_len = (size_t)snprintf(bodies[i], sizeof(bodies[i]), "req-%d", i);
		r[i] = result(f);
		r[i]->expect_body = bodies[i];
		start(f, &req, "/echo", r[i]);
	}
	assert_int_equal(http_client_in_flight(f->hc), N);
	run_until(f, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(r[i]->calls, 1);
		assert_int_equal(r[i]->status, 200);
		assert_true(r[i]->body_ok);
	}
	assert_true(f->srv.connections <= 8);
	free(bodies);
}

static void test_keepalive_reuses_connection(void **state)
{
	struct fx *f = *state;
	struct http_request req = { 0 };

	for (int i = 0; i < 5; i++)
		assert_int_equal(fetch(f, &req, "/echo")->status, 200);
	assert_int_equal(f->srv.connections, 1);
}

/* Requests one after another reuse finished easy handles: nothing of the first request
 * (method, header, body, response headers) may reach the second. */
static void test_reused_handle_starts_clean(void **state)
{
	struct fx *f = *state;
	struct http_header h[] = { { "X-Test", "first" } };
	struct http_request first = { .method = "POST", .headers = h, .nheaders = 1, .body = "b",
				       .body_len = 1 };
	struct http_request second = { 0 };
	struct result *r1 = fetch(f, &first, "/status?code=429&retry_after=7");
	struct result *r2 = fetch(f, &second, "/echo");

	assert_string_equal(r1->retry_after, "7");
	assert_int_equal(r2->status, 200);
	assert_string_equal(r2->x_method, "GET");
	assert_string_equal(r2->x_echo, "");
	assert_string_equal(r2->retry_after, "(none)");
	assert_int_equal(r2->body_len, 0);
}

/* A pooled handle keeps its configuration and gets only a request's own options again:
 * each kind of request after each other kind still goes out as asked (method, body,
 * redirect policy, connection failures reported as not sent). */
static void test_reused_handle_across_request_kinds(void **state)
{
	struct fx *f = *state;
	struct http_request once = { .method = "POST", .body = "one", .body_len = 3,
				     .no_resend = true };
	struct http_request get = { 0 }, follow = { .follow_redirects = true };
	struct http_request copy = { .method = "POST", .body = "three", .body_len = 5 };
	struct http_request empty = { .method = "POST" };
	struct result *r[7];

	r[0] = fetch(f, &once, "/echo");
	r[1] = fetch(f, &get, "/echo");
	r[2] = fetch(f, &copy, "/echo");
	r[3] = fetch(f, &once, "/echo");
	r[4] = fetch(f, &follow, "/status?code=302&location=/echo");
	r[5] = fetch(f, &empty, "/status?code=302&location=/echo");
	r[6] = fetch(f, &get, "/echo");
	assert_string_equal(r[0]->x_method, "POST");
	assert_string_equal(r[0]->body, "one");
	assert_string_equal(r[1]->x_method, "GET");
	assert_int_equal(r[1]->body_len, 0);
	assert_string_equal(r[2]->x_method, "POST");
	assert_string_equal(r[2]->body, "three");
	assert_string_equal(r[3]->body, "one");
	assert_int_equal(r[4]->status, 200);
	assert_int_equal(r[5]->status, 302);	/* the last request's redirect policy is not kept */
	assert_string_equal(r[6]->x_method, "GET");
	assert_int_equal(r[6]->body_len, 0);
	assert_int_equal(f->srv.connections, 1);
}

static bool answer_is(void *arg)
{
	return *(bool *)arg;
}

/* A no_resend POST of "x", asking MAY_SEND(ARG). */
static struct http_request gated_post(bool (*may_send)(void *arg), void *arg)
{
	return (struct http_request){ .method = "POST", .body = "x", .body_len = 1, .no_resend = true,
				      .may_send = may_send, .may_send_arg = arg };
}

#define LONG_BODY_LEN (64 * 1024)	/* libcurl sends it after the head, not with it */

/* The same with a body of LONG_BODY_LEN bytes ("y"), which goes through the read callback. */
static struct http_request gated_long_post(bool (*may_send)(void *arg), void *arg)
{
	static char body[LONG_BODY_LEN];

	memset(body, 'y', sizeof(body));
	return (struct http_request){ .method = "POST", .body = body, .body_len = sizeof(body),
				      .no_resend = true, .may_send = may_send, .may_send_arg = arg };
}

/* may_send is asked once the connection is up, right before the request leaves: "no"
 * fails it as never sent (a reused connection, so the only thing left to do was to write
 * the request), and the next request on the same handles goes out as usual. */
static void test_may_send_holds_a_request_back(void **state)
{
	struct fx *f = *state;
	bool allowed = false;
	struct http_request plain = { 0 };
	struct http_request gated = gated_post(answer_is, &allowed);
	struct result *r;

	assert_int_equal(fetch(f, &plain, "/echo")->status, 200);
	r = fetch(f, &gated, "/echo");
	assert_int_equal(r->err, -EPERM);
	assert_string_equal(http_client_strerror(r->err), "held back");
	assert_false(r->sent);
	assert_int_equal(f->srv.requests, 1);
	allowed = true;
	r = fetch(f, &gated, "/echo");
	assert_int_equal(r->status, 200);
	assert_string_equal(r->body, "x");
	assert_int_equal(f->srv.requests, 2);
	assert_int_equal(fetch(f, &plain, "/echo")->status, 200);	/* no gate left on the handle */
	assert_int_equal(f->srv.requests, 3);
}

static bool yes_once(void *arg)
{
	return (*(int *)arg)++ == 0;
}

/* A long no_resend body leaves after the request's head, a loop turn or more later:
 * may_send is asked again before it, and a "no" then cuts the request short, which the
 * server never acts on. */
static void test_may_send_is_asked_again_before_a_long_body(void **state)
{
	struct fx *f = *state;
	int asked = 0;
	struct http_request plain = { 0 };
	struct http_request gated = gated_long_post(yes_once, &asked);
	struct result *r;

	assert_int_equal(fetch(f, &plain, "/echo")->status, 200);
	r = fetch(f, &gated, "/echo");
	assert_int_equal(asked, 2);
	assert_int_equal(r->err, -EPERM);
	assert_false(r->sent);
	assert_int_equal(fetch(f, &plain, "/echo")->status, 200);
	assert_int_equal(f->srv.requests, 2);	/* the two GETs only */
}

/* A short no_resend body leaves in the same write as the head: one question covers both. */
static void test_may_send_is_asked_once_for_a_short_body(void **state)
{
	struct fx *f = *state;
	int asked = 0;
	struct http_request gated = gated_post(yes_once, &asked);
	struct result *r;

	r = fetch(f, &gated, "/echo");
	assert_int_equal(asked, 1);
	assert_int_equal(r->err, 0);
	assert_int_equal(r->status, 200);
	assert_string_equal(r->body, "x");
}

/* The client keeps the last few URLs parsed: more URLs than it keeps, then old ones
 * again, must each reach their own. */
static void test_many_urls_each_reach_their_own(void **state)
{
	struct fx *f = *state;
	struct http_request req = { 0 };
	static const int order[] = { 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210,
				     200, 209, 201, 210, 200 };
	char path[64];

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		snprintf(path, sizeof(path), "/status?code=%d", order[i]);
		assert_int_equal(fetch(f, &req, path)->status, order[i]);
	}
}

/* {===== a server that drops a connection's second request unanswered */

/* Answers "HTTP/1.1 200" with the request target as the body, keeping the connection;
 * but the second request on the first connection gets the connection closed, as a server
 * whose keep-alive timeout hits just then: libcurl sends such a request again itself. */
#define DROPPER_CONNECTIONS 4

struct dropper {
	struct evconnlistener *lis;
	uint16_t port;
	int connections;		/* accepted so far */
	struct bufferevent *open[DROPPER_CONNECTIONS];	/* by order of arrival; NULL: closed */
	int requests;			/* on the first connection */
	int others;			/* on the later ones */
};

static void dropper_close(struct dropper *d, struct bufferevent *bev)
{
	for (int i = 0; i < d->connections; i++)
		if (d->open[i] == bev)
			d->open[i] = NULL;
	bufferevent_free(bev);
}

static void dropper_read(struct bufferevent *bev, void *arg)
{
	struct dropper *d = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	char line[256] = { 0 }, target[200] = { 0 };

	if (end.pos < 0)
		return;
	evbuffer_copyout(in, line, end.pos < (ssize_t)sizeof(line) - 1 ? (size_t)end.pos
								     : sizeof(line) - 1);
	evbuffer_drain(in, (size_t)end.pos + 4);
	if (bev == d->open[0] && ++d->requests == 2) {
		dropper_close(d, bev);
		return;
	}
	if (bev != d->open[0])
		d->others++;
	assert_int_equal(sscanf(line, "%*s %199s", target), 1);
	evbuffer_add_printf(bufferevent_get_output(bev),
			    "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(target),
			    target);
}

static void dropper_event(struct bufferevent *bev, short what, void *arg)
{
	struct dropper *d = arg;

	(void)what;
	dropper_close(d, bev);
}

static void dropper_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
			   int len, void *arg)
{
	struct dropper *d = arg;
	struct bufferevent *bev = bufferevent_socket_new(evconnlistener_get_base(lis), fd,
							 BEV_OPT_CLOSE_ON_FREE);

	(void)sa;
	(void)len;
	assert_non_null(bev);
	assert_true(d->connections < DROPPER_CONNECTIONS);
	d->open[d->connections++] = bev;
	bufferevent_setcb(bev, dropper_read, NULL, dropper_event, d);
	bufferevent_enable(bev, EV_READ);
}

static void dropper_start(struct dropper *d, struct loop *lp)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	d->lis = evconnlistener_new_bind(loop_base(lp), dropper_accept, d,
					 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
					 (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(d->lis);
	d->port = fd_port(evconnlistener_get_fd(d->lis));
}

static void dropper_stop(struct dropper *d)
{
	for (int i = 0; i < d->connections; i++)
		if (d->open[i])
			bufferevent_free(d->open[i]);
	evconnlistener_free(d->lis);
}

/* }===== */

/* libcurl sends a request again by itself when a reused connection dies before any
 * answer: on a pooled handle, that must be this request's URL, not the last one's. */
static void test_resend_on_reused_handle_goes_to_its_url(void **state)
{
	struct fx *f = *state;
	struct dropper d = { 0 };
	struct http_request req = { 0 };
	struct result *first, *second;
	char url[64];

	dropper_start(&d, f->lp);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/first", d.port);
	first = fetch_url(f, &req, url);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/second", d.port);
	second = fetch_url(f, &req, url);
	dropper_stop(&d);
	assert_string_equal(first->body, "/first");
	assert_int_equal(second->err, 0);
	assert_string_equal(second->body, "/second");
	assert_int_equal(d.connections, 2);
	assert_int_equal(d.others, 1);
}

/* {===== kept-alive connections' watches */

/* Sockets of this process connected to PORT, as a client. */
static bool is_client_of(evutil_socket_t fd, uint16_t port)
{
	struct sockaddr_in peer, self;
	socklen_t plen = sizeof(peer), slen = sizeof(self);

	return getpeername(fd, (struct sockaddr *)&peer, &plen) == 0 && peer.sin_family == AF_INET &&
	       ntohs(peer.sin_port) == port && getsockname(fd, (struct sockaddr *)&self, &slen) == 0 &&
	       ntohs(self.sin_port) != port;
}

struct watches {
	uint16_t port;
	int of_client;		/* events on a client socket of port */
	int on_closed;		/* events on a socket that is closed */
};

static int count_watch(const struct event_base *base, const struct event *ev, void *arg)
{
	struct watches *w = arg;
	evutil_socket_t fd = event_get_fd(ev);

	(void)base;
	if (fd < 0 || (event_get_events(ev) & EV_SIGNAL))
		return 0;
	if (fcntl(fd, F_GETFD) == -1)
		w->on_closed++;
	else if (is_client_of(fd, w->port))
		w->of_client++;
	return 0;
}

/* What the loop watches: the client's sockets to PORT, and sockets that are closed. An event
 * left on a closed socket makes libevent skip registering the next socket given that
 * number, which would then never be heard. */
static struct watches watches(struct fx *f, uint16_t port)
{
	struct watches w = { .port = port };

	event_base_foreach_event(loop_base(f->lp), count_watch, &w);
	return w;
}

struct unwatch_poll {
	struct fx *f;
	uint16_t port;
};

static void on_poll_unwatched(void *arg)
{
	struct unwatch_poll *p = arg;

	if (watches(p->f, p->port).of_client == 0)
		loop_stop(p->f->lp);
}

/* Runs the loop until no client socket to PORT is watched, or fails at the watchdog. */
static void run_until_unwatched(struct fx *f, uint16_t port)
{
	struct unwatch_poll p = { f, port };
	struct loop_timer *poll = loop_timer_new(f->lp, on_poll_unwatched, &p);

	assert_non_null(poll);
	loop_timer_start(poll, 5, 1);
	loop_timer_start(f->watchdog, WATCHDOG_MS, 0);
	while (watches(f, port).of_client > 0 && !f->expired)
		loop_run(f->lp);
	loop_timer_stop(f->watchdog);
	loop_timer_free(poll);
	assert_false(f->expired);
}

/* Between requests the idle connection's socket stays watched, so the next request on it
 * changes nothing in the kernel's set (epoll_ctl) and a server's close is seen. */
static void test_kept_connection_stays_watched_between_requests(void **state)
{
	struct fx *f = *state;
	struct http_request req = { 0 };
	struct watches w;

	for (int i = 0; i < 5; i++) {
		assert_int_equal(fetch(f, &req, "/echo")->status, 200);
		w = watches(f, f->srv.port);
		assert_int_equal(w.of_client, 1);
		assert_int_equal(w.on_closed, 0);
	}
	assert_int_equal(f->srv.connections, 1);
}

/* A server closing an idle kept-alive connection: the client stops watching it at once
 * (not a busy loop on a readable socket), and the next request goes on a new connection. */
static void test_idle_connection_closed_by_the_server(void **state)
{
	struct fx *f = *state;
	struct dropper d = { 0 };
	struct http_request req = { 0 };
	struct result *second;
	char url[64];

	dropper_start(&d, f->lp);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/first", d.port);
	assert_string_equal(fetch_url(f, &req, url)->body, "/first");
	assert_int_equal(watches(f, d.port).of_client, 1);
	dropper_close(&d, d.open[0]);
	run_until_unwatched(f, d.port);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/second", d.port);
	second = fetch_url(f, &req, url);
	assert_int_equal(second->err, 0);
	assert_string_equal(second->body, "/second");
	assert_int_equal(d.connections, 2);
	assert_int_equal(watches(f, d.port).on_closed, 0);
	dropper_stop(&d);
}

/* libcurl closes an idle connection to make room for another (here one connection in
 * all): the closed socket's watch goes with it. A spare descriptor below the first
 * connection's, freed just before, makes the new connection take the spare's number, so
 * that the closed one's number goes to the test server's next accepted socket: with a
 * watch left on it, that socket would never be heard. */
static void test_connection_closed_by_libcurl_leaves_no_watch(void **state)
{
	struct fx *f = *state;
	struct http_client_opts opts = { .max_total_connections = 1, .max_host_connections = 1 };
	struct server other = { 0 };
	struct http_request req = { 0 };
	struct result *r;
	char url[64];
	struct watches w;
	int spare;

	new_client(f, &opts);
	server_start(&other, f->lp, NULL);
	spare = dup(STDERR_FILENO);
	assert_true(spare >= 0);
	assert_int_equal(fetch(f, &req, "/echo")->status, 200);
	assert_int_equal(watches(f, f->srv.port).of_client, 1);
	close(spare);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/echo", other.port);
	r = fetch_url(f, &req, url);
	assert_int_equal(r->err, 0);
	assert_int_equal(r->status, 200);
	w = watches(f, f->srv.port);
	assert_int_equal(w.on_closed, 0);
	assert_int_equal(w.of_client, 0);
	assert_int_equal(watches(f, other.port).of_client, 1);
	http_client_free(f->hc);	/* closes the last one */
	f->hc = NULL;
	assert_int_equal(watches(f, other.port).on_closed, 0);
	server_stop(&other);
}

/* }===== */

/* The same dead connection under a no_resend POST: libcurl must not send it again (the
 * server may have acted on it), and says it may have been sent. */
static void test_no_resend_request_is_not_sent_again(void **state)
{
	struct fx *f = *state;
	struct dropper d = { 0 };
	struct http_request get = { 0 };
	struct http_request once = { .method = "POST", .body = "x", .body_len = 1, .no_resend = true };
	struct result *second;
	char url[64];

	dropper_start(&d, f->lp);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/first", d.port);
	assert_string_equal(fetch_url(f, &get, url)->body, "/first");
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/second", d.port);
	second = fetch_url(f, &once, url);
	dropper_stop(&d);
	assert_int_equal(second->err, -ECONNRESET);
	assert_true(second->sent);
	assert_int_equal(d.others, 0);	/* libcurl may connect again, but sends nothing */
}

static void test_cancel(void **state)
{
	struct fx *f = *state;
	struct http_request req = { 0 };
	struct result *cancelled = result(f), *other;

	http_client_cancel(start(f, &req, "/hang", cancelled));
	http_client_cancel(NULL);
	assert_int_equal(http_client_in_flight(f->hc), 0);
	other = fetch(f, &req, "/echo");
	assert_int_equal(other->status, 200);
	assert_int_equal(cancelled->calls, 0);
}

struct self_cancel {
	struct result *r;
	struct http_transfer *t;
};

static void on_done_cancel_self(const struct http_response *res, int err, void *arg)
{
	struct self_cancel *c = arg;

	http_client_cancel(c->t);	/* too late: a no-op, not a double free */
	on_done(res, err, c->r);
}

static void test_cancel_inside_own_callback_is_noop(void **state)
{
	struct fx *f = *state;
	struct http_request req = { 0 };
	struct self_cancel c = { .r = result(f) };
	struct result *other = result(f);
	char url[64];

	url_for(f, url, sizeof(url), "/echo");
	req.url = url;
	assert_int_equal(http_client_request(f->hc, &req, on_done_cancel_self, &c, &c.t), 0);
	start(f, &req, "/echo", other);
	run_until(f, 2);
	assert_int_equal(c.r->status, 200);
	assert_int_equal(other->status, 200);
	assert_int_equal(http_client_in_flight(f->hc), 0);
}

static void test_in_flight_cap(void **state)
{
	struct fx *f = *state;
	struct http_client_opts opts = { .max_in_flight = 2 };
	struct http_request req = { 0 };
	struct result *ra = result(f), *rb = result(f), *refused = result(f), *after;
	struct http_transfer *a, *b;
	char url[64];

	new_client(f, &opts);
	a = start(f, &req, "/hang", ra);
	b = start(f, &req, "/hang", rb);
	url_for(f, url, sizeof(url), "/echo");
	req.url = url;
	assert_int_equal(http_client_request(f->hc, &req, on_done, refused, NULL), -EBUSY);
	assert_string_equal(http_client_strerror(-EBUSY), "too many requests in flight");
	http_client_cancel(a);
	after = fetch_url(f, &req, url);
	assert_int_equal(after->status, 200);
	http_client_cancel(b);
	assert_int_equal(ra->calls + rb->calls + refused->calls, 0);
}

static void test_invalid_requests_are_refused(void **state)
{
	struct fx *f = *state;
	struct http_header crlf[] = { { "X-Test", "a\r\nInjected: 1" } };
	struct http_header colon[] = { { "X-Te:st", "a" } };
	struct http_request bad[] = {
		{ .url = "ftp://127.0.0.1/" },
		{ .url = "not a url" },
		{ .url = "http://127.0.0.1/", .method = "get" },
		{ .url = "http://127.0.0.1/", .method = "HEAD", .body = "x", .body_len = 1 },
		{ .url = "http://127.0.0.1/", .headers = crlf, .nheaders = 1 },
		{ .url = "http://127.0.0.1/", .headers = colon, .nheaders = 1 },
	};
	struct result *r = result(f);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(http_client_request(f->hc, &bad[i], on_done, r, NULL), -EINVAL);
	assert_int_equal(http_client_in_flight(f->hc), 0);
	assert_int_equal(r->calls, 0);
}

static void test_free_cancels_in_flight(void **state)
{
	struct fx *f = *state;
	struct http_request req = { 0 };
	struct result *r0 = result(f), *r1 = result(f);

	start(f, &req, "/hang", r0);
	start(f, &req, "/hang", r1);
	http_client_free(f->hc);
	f->hc = NULL;
	assert_int_equal(r0->calls, 1);
	assert_int_equal(r0->err, -ECANCELED);
	assert_string_equal(http_client_strerror(r0->err), "cancelled");
	assert_int_equal(r1->calls, 1);
	assert_int_equal(r1->err, -ECANCELED);
}

/* The owner of the client frees it from a completion callback: the other request in flight
 * gets "cancelled", new requests are refused, and nothing is touched after. */
struct free_ctx {
	struct result *r;
	struct http_client **hc;
	int refused;
};

static void on_done_free_client(const struct http_response *res, int err, void *arg)
{
	struct free_ctx *c = arg;
	struct http_request again = { .url = "http://127.0.0.1/" };

	on_done(res, err, c->r);
	http_client_free(*c->hc);
	c->refused = http_client_request(*c->hc, &again, on_done, c->r, NULL);
	http_client_free(*c->hc);	/* a second free while the first unwinds is a no-op */
	*c->hc = NULL;
}

static void test_free_inside_callback(void **state)
{
	struct fx *f = *state;
	struct http_request req = { 0 };
	struct result *hung = result(f);
	struct free_ctx *c = calloc(1, sizeof(*c));
	char url[64];

	c->r = result(f);
	c->hc = &f->hc;
	start(f, &req, "/hang", hung);
	url_for(f, url, sizeof(url), "/echo");
	req.url = url;
	assert_int_equal(http_client_request(f->hc, &req, on_done_free_client, c, NULL), 0);
	run_until(f, 2);
	assert_null(f->hc);
	assert_int_equal(c->r->status, 200);
	assert_int_equal(c->refused, -ESHUTDOWN);
	assert_int_equal(hung->calls, 1);
	assert_int_equal(hung->err, -ECANCELED);
	free(c);
}

/* {===== TLS */

enum trust { TRUST_NONE, TRUST_REQUEST, TRUST_CLIENT };

/* Serves TLS with a fresh certificate for SAN and fetches /echo from it, trusting the
 * certificate through the request's CA file, the client's, or not at all. */
static struct result *tls_fetch(struct fx *f, const char *san, enum trust trust)
{
	struct http_client_opts opts = { 0 };
	struct cert c = { 0 };
	struct server tls = { 0 };
	struct http_request req = { 0 };
	struct result *r;
	char url[64];

	cert_make(&c, san);
	server_start(&tls, f->lp, cert_server_ctx(&c));
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/echo", tls.port);
	req.ca_file = trust == TRUST_REQUEST ? c.ca_path : NULL;
	opts.ca_file = trust == TRUST_CLIENT ? c.ca_path : NULL;
	new_client(f, &opts);
	r = fetch_url(f, &req, url);
	server_stop(&tls);
	cert_free(&c);
	return r;
}

static void test_tls_untrusted_is_refused(void **state)
{
	struct result *r = tls_fetch(*state, "IP:127.0.0.1", TRUST_NONE);

	assert_int_equal(r->err, -EPROTO);
	assert_string_equal(http_client_strerror(r->err), "tls error");
	assert_false(r->sent);
}

static void test_tls_trusted_via_ca_file(void **state)
{
	struct result *per_request = tls_fetch(*state, "IP:127.0.0.1", TRUST_REQUEST);
	struct result *per_client = tls_fetch(*state, "IP:127.0.0.1", TRUST_CLIENT);

	assert_int_equal(per_request->err, 0);
	assert_int_equal(per_request->status, 200);
	assert_int_equal(per_client->err, 0);
	assert_int_equal(per_client->status, 200);
}

static void test_tls_host_mismatch_is_refused(void **state)
{
	struct result *r = tls_fetch(*state, "DNS:other.example", TRUST_REQUEST);

	assert_int_equal(r->err, -EPROTO);
	assert_false(r->sent);
}

/* }===== */

static void test_debug_line_hides_secrets(void **state)
{
	struct fx *f = *state;
	char path[] = "/tmp/hd-test-log-XXXXXX";
	int fd = mkstemp(path);
	struct http_header h[] = { { "Authorization", "Bearer HEADERSECRET" } };
	struct http_request req = { .method = "POST", .headers = h, .nheaders = 1,
				    .body = "BODYSECRET", .body_len = 10 };
	char buf[4096] = { 0 };

	assert_true(fd >= 0);
	assert_int_equal(log_open_file(f->lg, path), 0);
	log_set_level(f->lg, LEVEL_DEBUG);
	assert_int_equal(fetch(f, &req, "/echo?t=QUERYSECRET&conv=abc")->status, 200);
	assert_true(pread(fd, buf, sizeof(buf) - 1, 0) > 0);
	close(fd);
	unlink(path);
	assert_non_null(strstr(buf, "http.done method=POST url=http://127.0.0.1:"));
	assert_non_null(strstr(buf, "/echo?t=***&conv=*** status=200"));
	assert_null(strstr(buf, "SECRET"));
	assert_null(strstr(buf, "abc"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_get_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_post_body_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_put_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_methods, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_statuses_are_responses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_after_lookup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_redirects_off_by_default, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_after_send, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_while_queued_is_not_sent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_refused_is_not_sent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_failure_is_not_sent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keepalive_reuses_connection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kept_connection_stays_watched_between_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_connection_closed_by_the_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_closed_by_libcurl_leaves_no_watch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reused_handle_starts_clean, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reused_handle_across_request_kinds, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_resend_on_reused_handle_goes_to_its_url, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_many_urls_each_reach_their_own, setup, teardown),
		cmocka_unit_test_setup_teardown(test_may_send_holds_a_request_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_may_send_is_asked_again_before_a_long_body, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_may_send_is_asked_once_for_a_short_body, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_no_resend_request_is_not_sent_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_inside_own_callback_is_noop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_in_flight_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_requests_are_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_cancels_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_inside_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_untrusted_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_trusted_via_ca_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_host_mismatch_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_debug_line_hides_secrets, setup, teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
