/* bench_http_transport.c - what one outgoing request costs the client, through http_client
 * (libcurl) or through libevent's own HTTP client, on the same in-process evhttp server.
 * The request is a Direct Line POST as handoffd sends it: a bearer token of a real
 * token's size (about 1,000 characters), Accept, x-ms-bot-agent, Content-Type and a small
 * JSON body, on kept-alive connections. It measures the candidate transport before anyone
 * writes it: the relay makes about three such requests per relayed message.
 *
 * Usage: bench_http_transport curl|evhttp [N=20000] [in flight=50] [connections=16] [token=1000]
 * Prints CPU per request of the whole process (client and server share it; the server's
 * part is the same for both). For instructions, run it under callgrind and read
 * curl_multi_socket_action / evhttp_make_request and the callbacks below them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "net/http_client.h"
#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "../unit/http_test_server.h"

#include <event2/event.h>
#include <event2/http.h>
#include <signal.h>
#include <sys/resource.h>

#define TOKEN_MAX 4096
#define MAX_CONNS 64

static const char body[] = "{\"type\":\"message\",\"text\":\"hello\",\"from\":{\"id\":\"u-1\"},"
			   "\"channelData\":{\"clientActivityID\":\"h-0123456789abcdef\"}}";

struct bench {
	struct loop *lp;
	int done, started, failed, n, window;
	bool stuck;			/* a request could not start */
	char auth[TOKEN_MAX + 8];
	char url[64], host[32];
	/* evhttp */
	struct evhttp_connection *conns[MAX_CONNS];
	unsigned nconns, next;
	/* curl */
	struct http_client *hc;
};

static void fill_token(struct bench *b, size_t len)
{
	memcpy(b->auth, "Bearer ", 7);
	for (size_t i = 0; i < len; i++)
		b->auth[7 + i] = "abcdefghijklmnopqrstuvwxyz0123456789-_."[i % 39];
	b->auth[7 + len] = '\0';
}

static void start_more(struct bench *b);

static void finished(struct bench *b, int ok)
{
	b->done++;
	b->failed += !ok;
	if (b->done == b->n || b->stuck)
		loop_stop(b->lp);
	else
		start_more(b);
}

static void on_curl_done(const struct http_response *res, int err, void *arg)
{
	finished(arg, !err && res->status == 200);
}

static void on_evhttp_done(struct evhttp_request *req, void *arg)
{
	finished(arg, req && evhttp_request_get_response_code(req) == 200);
}

static int start_curl(struct bench *b)
{
	const struct http_header h[] = { { "Authorization", b->auth },
					 { "Accept", "application/json" },
					 { "x-ms-bot-agent", "handoffd/bench" },
					 { "Content-Type", "application/json" } };
	struct http_request req = { .method = "POST", .url = b->url, .headers = h, .nheaders = 4,
				    .body = body, .body_len = sizeof(body) - 1, .no_resend = true };

	return http_client_request(b->hc, &req, on_curl_done, b, NULL);
}

static int start_evhttp(struct bench *b)
{
	struct evhttp_connection *c = b->conns[b->next++ % b->nconns];
	struct evhttp_request *req = evhttp_request_new(on_evhttp_done, b);
	struct evkeyvalq *h;

	if (!req)
		return -1;
	h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", b->host);	/* as libcurl sends it */
	evhttp_add_header(h, "Authorization", b->auth);
	evhttp_add_header(h, "Accept", "application/json");
	evhttp_add_header(h, "x-ms-bot-agent", "handoffd/bench");
	evhttp_add_header(h, "Content-Type", "application/json");
	evbuffer_add(evhttp_request_get_output_buffer(req), body, sizeof(body) - 1);
	return evhttp_make_request(c, req, EVHTTP_REQ_POST, "/echo");
}

static void start_more(struct bench *b)
{
	while (!b->stuck && b->started < b->n && b->started - b->done < b->window) {
		if ((b->hc ? start_curl(b) : start_evhttp(b)) != 0)
			b->stuck = true;
		else
			b->started++;
	}
	if (b->stuck && b->started == b->done)
		loop_stop(b->lp);	/* nothing left in flight to end the loop */
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "curl";
	struct bench b = { .lp = loop_new(), .n = argc > 2 ? atoi(argv[2]) : 20000,
			   .window = argc > 3 ? atoi(argv[3]) : 50 };
	unsigned conns = argc > 4 ? (unsigned)atoi(argv[4]) : 16;
	int token = argc > 5 ? atoi(argv[5]) : 1000;
	struct log *lg = log_new();
	struct server srv = { 0 };
	uint64_t t0;
	double cpu0;

	signal(SIGPIPE, SIG_IGN);
	if (!b.lp || !lg || http_client_global_init() < 0 || b.n <= 0 || b.window <= 0 ||
	    conns == 0 || conns > MAX_CONNS || token < 0 || token > TOKEN_MAX ||
	    (strcmp(mode, "curl") != 0 && strcmp(mode, "evhttp") != 0))
		return 1;
	server_start(&srv, b.lp, NULL);
	fill_token(&b, (size_t)token);
	snprintf(b.url, sizeof(b.url), "http://127.0.0.1:%u/echo", srv.port);
	snprintf(b.host, sizeof(b.host), "127.0.0.1:%u", srv.port);
	if (strcmp(mode, "curl") == 0) {
		struct http_client_opts opts = { .max_total_connections = conns, .proxy = "" };

		b.stuck = !(b.hc = http_client_new(b.lp, lg, &opts));
	} else {
		for (b.nconns = 0; b.nconns < conns && !b.stuck; b.nconns++)
			b.stuck = !(b.conns[b.nconns] = evhttp_connection_base_new(
					    loop_base(b.lp), NULL, "127.0.0.1", srv.port));
	}
	t0 = clock_mono_ms();
	cpu0 = cpu_seconds();
	start_more(&b);
	if (!b.stuck)
		loop_run(b.lp);
	if (b.stuck)
		fprintf(stderr, "bench_http_transport: a request could not start\n");
	printf("%s: requests=%d in_flight=%d connections=%u token=%d opened=%d failed=%d "
	       "cpu_us_per_request=%.1f wall_ms=%llu\n", mode, b.n, b.window, conns, token,
	       srv.connections, b.failed, (cpu_seconds() - cpu0) / b.n * 1e6,
	       (unsigned long long)(clock_mono_ms() - t0));
	for (unsigned i = 0; i < b.nconns; i++)
		if (b.conns[i])
			evhttp_connection_free(b.conns[i]);
	if (b.hc)
		http_client_free(b.hc);
	server_stop(&srv);
	http_client_global_cleanup();
	log_free(lg);
	loop_free(b.lp);
	return b.failed != 0 || b.stuck;
}
