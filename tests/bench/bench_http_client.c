/* bench_http_client.c - http_client throughput against the in-process evhttp server of the
 * unit test: N small POSTs, K kept in flight, through at most C connections. Client and
 * server share one loop and one core, so the figures are a floor, not a ceiling.
 * Usage: bench_http_client [N]   (default 20000) */
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

#include <signal.h>

struct bench {
	struct loop *lp;
	int done;
	int failed;
};

static void on_done(const struct http_response *res, int err, void *arg)
{
	struct bench *b = arg;

	b->done++;
	if (err || res->status != 200)
		b->failed++;
	loop_stop(b->lp);
}

static void run(struct bench *b, struct log *lg, struct server *srv, int n, unsigned conns,
		int window)
{
	struct http_client_opts opts = { .max_total_connections = conns, .proxy = "" };
	struct http_client *hc = http_client_new(b->lp, lg, &opts);
	static const char body[] = "{\"type\":\"message\",\"text\":\"hello\"}";
	struct http_request req = { .method = "POST", .body = body, .body_len = sizeof(body) - 1 };
	char url[64];
	int started = 0;
	uint64_t t0 = clock_mono_ms(), ms;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/echo", srv->port);
	req.url = url;
	b->done = b->failed = 0;
	srv->connections = 0;
	while (b->done < n) {
		while (started < n && started - b->done < window &&
		       http_client_request(hc, &req, on_done, b, NULL) == 0)
			started++;
		loop_run(b->lp);
	}
	ms = clock_mono_ms() - t0;
	printf("requests=%d in_flight=%d max_connections=%u opened=%d failed=%d ms=%llu req_per_s=%.0f\n",
	       n, window, conns, srv->connections, b->failed, (unsigned long long)ms,
	       n * 1000.0 / (double)(ms ? ms : 1));
	http_client_free(hc);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 20000;
	struct bench b = { .lp = loop_new() };
	struct log *lg = log_new();
	struct server srv = { 0 };

	signal(SIGPIPE, SIG_IGN);
	if (!b.lp || !lg || http_client_global_init() < 0)
		return 1;
	server_start(&srv, b.lp, NULL);
	run(&b, lg, &srv, n, 1, 1);
	run(&b, lg, &srv, n, 8, 500);
	run(&b, lg, &srv, n, 32, 500);
	run(&b, lg, &srv, n, 32, 4000);
	server_stop(&srv);
	http_client_global_cleanup();
	log_free(lg);
	loop_free(b.lp);
	return 0;
}
