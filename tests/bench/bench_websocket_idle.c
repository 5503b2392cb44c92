/* bench_websocket_idle.c - memory held per idle plain ws:// socket (runtime/directline/websocket.c).
 * Opens N sockets (default 1000) to tests/wsserver.py's /hold, 256 connecting at a time,
 * waits until all are open, and prints the process RSS and the heap in use before and
 * after, per socket. Starts the server itself unless a URL is given. Asserts nothing.
 *
 *   bench_websocket_idle [N [URL [CA_FILE]]]
 *
 * With a wss:// URL (start `tests/wsserver.py --tls CERT KEY` yourself) and its CA_FILE
 * it measures TLS sockets instead.
 *
 * Measure on a build without sanitizers (-DHANDOFFD_SANITIZE=OFF): ASan's shadow memory
 * and quarantine would dwarf the figure. N above ~10,000 needs `ulimit -n` above N. */
#include "base/clock.h"
#include "base/log.h"
#include "net/loop.h"
#include "directline/websocket.h"

#include <malloc.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define BENCH_IN_FLIGHT 256

extern char **environ;

struct bench {
	struct loop *lp;
	struct websocket_client *wc;
	struct websocket **ws;
	const char *url;
	long n, started, opened, failed;
};

static long rss_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

static size_t heap_bytes(void)
{
	return mallinfo2().uordblks;
}

static void start_more(struct bench *b);

static void on_open(struct websocket *ws, void *arg)
{
	struct bench *b = arg;

	(void)ws;
	b->opened++;
	if (b->opened + b->failed == b->n)
		loop_stop(b->lp);
	else
		start_more(b);
}

static void on_close(struct websocket *ws, const struct websocket_end_info *end, void *arg)
{
	struct bench *b = arg;

	if (b->failed++ == 0)
		fprintf(stderr, "first failure: %s %s\n", websocket_end_name(end->kind), end->reason);
	for (long i = 0; i < b->started; i++)
		if (b->ws[i] == ws)
			b->ws[i] = NULL;
	websocket_free(ws);
	if (b->opened + b->failed == b->n)
		loop_stop(b->lp);
	else
		start_more(b);
}

static const struct websocket_callbacks bench_callbacks = { .on_open = on_open, .on_close = on_close };

static void start_more(struct bench *b)
{
	while (b->started < b->n && b->started - b->opened - b->failed < BENCH_IN_FLIGHT) {
		struct websocket **slot = &b->ws[b->started];

		if (websocket_connect(b->wc, b->url, NULL, &bench_callbacks, b, slot) < 0) {
			fprintf(stderr, "connect failed\n");
			exit(1);
		}
		b->started++;
	}
}

/* Starts wsserver.py with a pipe on its stdin (closing it stops the server) and reads
 * its plain port. Returns the pid or -1. */
static pid_t spawn_server(int *stdin_fd, int *port)
{
	char script[4096], line[128];
	char *argv[] = { "/usr/bin/python3", script, "--backlog", "4096", "--quiet", NULL };
	int in[2], out[2];
	posix_spawn_file_actions_t fa;
	pid_t pid;
	FILE *f;

	snprintf(script, sizeof(script), "%s/wsserver.py", HANDOFFD_TEST_DIR);
	if (pipe(in) < 0 || pipe(out) < 0)
		return -1;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	posix_spawn_file_actions_addclose(&fa, in[1]);
	posix_spawn_file_actions_addclose(&fa, out[0]);
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0)
		return -1;
	posix_spawn_file_actions_destroy(&fa);
	close(in[0]);
	close(out[1]);
	*stdin_fd = in[1];
	f = fdopen(out[0], "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "PORT plain %d", port) == 1)
			return pid;	/* --quiet: nothing more comes to fill the pipe */
	return -1;
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void run(struct bench *b, struct log *lg, const char *ca_file)
{
	struct websocket_opts o = WEBSOCKET_OPTS_DEFAULT;
	long rss0, rss1;
	size_t heap0, heap1;
	uint64_t t0;

	o.ca_file = ca_file;
	b->wc = websocket_client_new(b->lp, lg, &o);
	b->ws = calloc((size_t)b->n, sizeof(*b->ws));
	if (!b->wc || !b->ws)
		exit(1);
	rss0 = rss_kib();
	heap0 = heap_bytes();
	t0 = clock_mono_ms();
	start_more(b);
	loop_run(b->lp);
	rss1 = rss_kib();
	heap1 = heap_bytes();
	printf("sockets open: %ld of %ld (failed %ld) in %llu ms\n", b->opened, b->n, b->failed,
	       (unsigned long long)(clock_mono_ms() - t0));
	printf("rss:  %ld KiB -> %ld KiB, %.0f bytes per open socket\n", rss0, rss1,
	       b->opened ? (rss1 - rss0) * 1024.0 / b->opened : 0.0);
	printf("heap: %zu -> %zu bytes in use, %.0f bytes per open socket\n", heap0, heap1,
	       b->opened ? (double)(heap1 - heap0) / b->opened : 0.0);
	for (long i = 0; i < b->started; i++)
		websocket_free(b->ws[i]);
	websocket_client_free(b->wc);
	free(b->ws);
}

int main(int argc, char **argv)
{
	struct bench b = { .n = argc > 1 ? atol(argv[1]) : 1000 };
	char url[128];
	int server_in = -1, port = 0;
	pid_t server = -1;
	struct log *lg = log_new();

	raise_fd_limit();
	if (argc > 2) {
		b.url = argv[2];
	} else {
		server = spawn_server(&server_in, &port);
		if (server < 0) {
			fprintf(stderr, "cannot start wsserver.py\n");
			return 1;
		}
		snprintf(url, sizeof(url), "ws://127.0.0.1:%d/hold", port);
		b.url = url;
	}
	log_set_level(lg, LEVEL_WARN);
	b.lp = loop_new();
	if (b.n < 1 || !b.lp || !lg)
		return 1;
	run(&b, lg, argc > 3 ? argv[3] : NULL);
	loop_free(b.lp);
	log_free(lg);
	if (server > 0) {
		close(server_in);
		waitpid(server, NULL, 0);
	}
	return 0;
}
