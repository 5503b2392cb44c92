/* wsprobe.c - drives runtime/directline/websocket.c for tests/integration/test_websocket.py.
 * Opens one socket to the URL, prints each event as one line on stdout and exits once
 * the socket ended (exit 0) or on bad usage (exit 2). The daemon's log goes to stderr
 * at debug level, so tests can check what it says and what it never says.
 *
 *   open
 *   message len=N text=<first 200 bytes, non-printable as '.'>
 *   close end=<name> code=N status=N err=N reason="..." [retry_after="..."] after_open_ms=N
 *   freed                       (the socket was freed inside a callback, no close follows)
 *   peak-rss kb=N               (with --peak-rss, after close: the process's VmHWM)
 *
 * --times N opens the URL N times one after the other with the same client (TLS resumption).
 */
#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "directline/websocket.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_HEADERS_MAX 8
#define PROBE_SENDS_MAX 8

struct probe {
	struct loop *lp;
	struct websocket *ws;
	struct loop_timer *close_timer;
	const char *sends[PROBE_SENDS_MAX];
	int nsends;
	long close_after;	/* close after this many messages; -1 = never */
	long close_after_ms;	/* close this long after open; -1 = never */
	bool free_on_open;
	bool free_on_message;
	bool close_before_open;
	bool peak_rss;
	long times;		/* sockets opened one after the other */
	long messages;
	uint64_t opened_ms;
};

static void print_text(const char *data, size_t len)
{
	size_t n = len < 200 ? len : 200;

	for (size_t i = 0; i < n; i++)
		putchar(data[i] >= 0x20 && data[i] < 0x7f ? data[i] : '.');
}

/* The process's peak resident set (VmHWM), in kB; -1 when unknown. */
static long peak_rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "VmHWM:", 6) == 0)
			kb = strtol(line + 6, NULL, 10);
	if (f)
		fclose(f);
	return kb;
}

static void finish(struct probe *p)
{
	websocket_free(p->ws);
	p->ws = NULL;
	loop_stop(p->lp);
}

static void on_open(struct websocket *ws, void *arg)
{
	struct probe *p = arg;

	p->opened_ms = clock_mono_ms();
	printf("open\n");
	fflush(stdout);
	if (p->free_on_open) {
		printf("freed\n");
		finish(p);
		return;
	}
	for (int i = 0; i < p->nsends; i++)
		if (websocket_send_text(ws, p->sends[i], strlen(p->sends[i])) < 0)
			printf("send-failed\n");
	if (p->close_after == 0)
		websocket_close(ws, 1000, "bye");
	if (p->close_after_ms >= 0)
		loop_timer_start(p->close_timer, (uint64_t)p->close_after_ms, 0);
}

static void on_message(struct websocket *ws, const char *data, size_t len, void *arg)
{
	struct probe *p = arg;

	printf("message len=%zu text=", len);
	print_text(data, len);
	printf("\n");
	fflush(stdout);
	if (p->free_on_message) {
		printf("freed\n");
		finish(p);
		return;
	}
	if (++p->messages == p->close_after)
		websocket_close(ws, 1000, "bye");
}

static void on_close(struct websocket *ws, const struct websocket_end_info *end, void *arg)
{
	struct probe *p = arg;

	(void)ws;
	printf("close end=%s code=%u status=%d err=%d reason=\"%s\"", websocket_end_name(end->kind),
	       end->code, end->http_status, end->err, end->reason);
	if (end->retry_after)
		printf(" retry_after=\"%s\"", end->retry_after);
	printf(" after_open_ms=%lld\n", p->opened_ms ? (long long)(clock_mono_ms() - p->opened_ms) : -1LL);
	if (p->peak_rss)
		printf("peak-rss kb=%ld\n", peak_rss_kb());
	fflush(stdout);
	finish(p);		/* frees the socket inside on_close, as directline.c will */
}

static const struct websocket_callbacks probe_callbacks = {
	.on_open = on_open, .on_message = on_message, .on_close = on_close,
};

static void on_close_timer(void *arg)
{
	struct probe *p = arg;

	websocket_close(p->ws, 1000, "bye");
}

enum { OPT_CA = 256, OPT_MAX_MESSAGE, OPT_PING, OPT_DEAD, OPT_CONNECT_TIMEOUT, OPT_CLOSE_TIMEOUT,
       OPT_HEADER, OPT_SEND, OPT_CLOSE_AFTER, OPT_CLOSE_AFTER_MS, OPT_FREE_ON_OPEN,
       OPT_FREE_ON_MESSAGE, OPT_CLOSE_BEFORE_OPEN, OPT_PEAK_RSS, OPT_TIMES };

static const struct option long_options[] = {
	{ "ca", required_argument, NULL, OPT_CA },
	{ "max-message", required_argument, NULL, OPT_MAX_MESSAGE },
	{ "ping", required_argument, NULL, OPT_PING },
	{ "dead", required_argument, NULL, OPT_DEAD },
	{ "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
	{ "close-timeout", required_argument, NULL, OPT_CLOSE_TIMEOUT },
	{ "header", required_argument, NULL, OPT_HEADER },
	{ "send", required_argument, NULL, OPT_SEND },
	{ "close-after", required_argument, NULL, OPT_CLOSE_AFTER },
	{ "close-after-ms", required_argument, NULL, OPT_CLOSE_AFTER_MS },
	{ "free-on-open", no_argument, NULL, OPT_FREE_ON_OPEN },
	{ "free-on-message", no_argument, NULL, OPT_FREE_ON_MESSAGE },
	{ "close-before-open", no_argument, NULL, OPT_CLOSE_BEFORE_OPEN },
	{ "peak-rss", no_argument, NULL, OPT_PEAK_RSS },
	{ "times", required_argument, NULL, OPT_TIMES },
	{ NULL, 0, NULL, 0 },
};

/* Returns false on an unknown option. */
static bool parse_option(int c, struct probe *p, struct websocket_opts *o,
			 const char **headers, int *nheaders)
{
	switch (c) {
	case OPT_CA: o->ca_file = optarg; break;
	case OPT_MAX_MESSAGE: o->max_message = strtoul(optarg, NULL, 10); break;
	case OPT_PING: o->ping_interval_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
	case OPT_DEAD: o->dead_after_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
	case OPT_CONNECT_TIMEOUT: o->connect_timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
	case OPT_CLOSE_TIMEOUT: o->close_timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
	case OPT_HEADER:
		if (*nheaders < PROBE_HEADERS_MAX)
			headers[(*nheaders)++] = optarg;
		break;
	case OPT_SEND:
		if (p->nsends < PROBE_SENDS_MAX)
			p->sends[p->nsends++] = optarg;
		break;
	case OPT_CLOSE_AFTER: p->close_after = strtol(optarg, NULL, 10); break;
	case OPT_CLOSE_AFTER_MS: p->close_after_ms = strtol(optarg, NULL, 10); break;
	case OPT_FREE_ON_OPEN: p->free_on_open = true; break;
	case OPT_FREE_ON_MESSAGE: p->free_on_message = true; break;
	case OPT_CLOSE_BEFORE_OPEN: p->close_before_open = true; break;
	case OPT_PEAK_RSS: p->peak_rss = true; break;
	case OPT_TIMES: p->times = strtol(optarg, NULL, 10); break;
	default: return false;
	}
	return true;
}

static int run(struct probe *p, struct log *lg, const struct websocket_opts *o, const char *url,
	       const char *const *headers)
{
	struct websocket_client *wc = websocket_client_new(p->lp, lg, o);
	int rc;

	if (!wc)
		return 1;
	for (long i = 0; i < p->times; i++) {
		p->messages = 0;
		p->opened_ms = 0;
		rc = websocket_connect(wc, url, headers, &probe_callbacks, p, &p->ws);
		if (rc < 0) {
			printf("connect-failed rc=%d\n", rc);
			break;
		}
		if (p->close_before_open)
			websocket_close(p->ws, 1000, "bye");
		loop_run(p->lp);
		websocket_free(p->ws);
		p->ws = NULL;
	}
	websocket_client_free(wc);
	return 0;
}

int main(int argc, char **argv)
{
	struct probe p = { .close_after = -1, .close_after_ms = -1, .times = 1 };
	struct websocket_opts o = WEBSOCKET_OPTS_DEFAULT;
	const char *headers[PROBE_HEADERS_MAX + 1] = { NULL };
	int nheaders = 0, c, rc;
	struct log *lg = log_new();

	while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1)
		if (!parse_option(c, &p, &o, headers, &nheaders))
			return 2;
	if (optind != argc - 1 || !lg) {
		fprintf(stderr, "usage: wsprobe [options] URL\n");
		return 2;
	}
	log_set_level(lg, LEVEL_DEBUG);
	p.lp = loop_new();
	p.close_timer = p.lp ? loop_timer_new(p.lp, on_close_timer, &p) : NULL;
	rc = p.close_timer ? run(&p, lg, &o, argv[optind], headers) : 1;
	loop_timer_free(p.close_timer);
	loop_free(p.lp);
	log_free(lg);
	return rc;
}
