/* bench_directline.c - the Direct Line client (runtime/directline/directline.c) at scale against the
 * emulator (tests/dlemu) on loopback: N concurrent streaming conversations. Prints figures,
 * asserts nothing about time.
 *
 *   bench_directline [-n CONVERSATIONS] [--tls] [--rounds R] [--source REPO_DIR]
 *   bench_directline -n 10000 --tls --parked 0.9 [--wakes W]
 *   bench_directline -n 400 --tls --idle-wakes
 *
 * Phases: open N conversations and wait until all are online (time, resident memory per
 * conversation once idle); R rounds of one bot message to every conversation (latency from
 * the emulator's timestamp to dispatch, p50/p99; CPU time per dispatched activity; the time
 * the client spends per activity, from its own histogram); then the reconnect storm of F26:
 * the emulator drops every socket at once and the bot talks to everyone meanwhile (time
 * until all are back, reconnects in flight at most, 429s, activities lost or repeated).
 * The emulator runs as a child process (/usr/bin/python3 -m tests.dlemu); --rate-limit N
 * makes it refuse more than N reconnects and handshakes per second with 429 (F26).
 *
 * With --parked F the phases are instead: open N conversations of which a fraction F is
 * held parked from the start (directline_park before the stream opens: they never hold a
 * socket) and the rest streams; resident memory once idle, and what malloc_trim(0) then
 * gives back (the heap's freed but kept pages); then W of the parked ones
 * (default 200) are woken one after the other and sent a message at once, as the relay
 * does when a handoff ends, and the time until the bot's answer is dispatched is compared
 * with the same exchange on streaming conversations: the added latency of a wake, p50/p99.
 * With --idle-wakes (park_after = 2 s), the first half of N conversations is asked while
 * streaming, then, once all have parked on their own, the second half: the wake a
 * customer's message causes (it reopens the stream at once; no GET first). */
#define _GNU_SOURCE	/* memmem, strptime */
#include "base/clock.h"
#include "base/config.h"
#include "directline/directline.h"
#include "net/http_client.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"

#include <handoffd/activity.h>

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define INFO_MAX 4096
#define PHASE_DEADLINE_MS (10u * 60u * 1000u)

struct bench {
	struct loop *lp;
	struct log *lg;
	struct http_client *hc;
	struct metrics *m;
	struct directline *dl;
	struct dl_conv **convs;
	unsigned *got;		/* activities dispatched per conversation */
	double *lat_ms;		/* emulator timestamp to dispatch, per activity of the rounds */
	size_t nlat, lat_cap;
	size_t n, online, dispatched, waiting_for;	/* waiting_for: stop at this many */
	bool measuring;
	bool storm;
	size_t parked;		/* --parked: conversations [0, parked) are held parked */
	double *asked_ms;	/* --parked: when each conversation was sent its question */
	double *answer_ms;	/* and when the answer was dispatched */
	size_t answers;
	uint64_t deadline_ms;
	struct loop_timer *check;
	char control[256], base[256], ca[512], secret[128];
};

/* {===== Emulator process */

/* The string value of "KEY": "..." in the emulator's one-line JSON info (its own format,
 * flat and ASCII). */
static int info_field(const char *info, const char *key, char *out, size_t cap)
{
	char pat[64];
	const char *p, *e;

	snprintf(pat, sizeof(pat), "\"%s\": \"", key);
	p = strstr(info, pat);
	if (!p)
		return -ENOENT;
	p += strlen(pat);
	e = strchr(p, '"');
	if (!e || (size_t)(e - p) >= cap)
		return -ENOSPC;
	memcpy(out, p, (size_t)(e - p));
	out[e - p] = '\0';
	return 0;
}

static pid_t spawn_emulator(const char *source, char *info, size_t cap)
{
	int out[2], in[2];
	pid_t pid;
	FILE *f;

	if (pipe(out) < 0 || pipe(in) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(in[0], 0);
		close(out[0]);
		close(in[1]);
		if (chdir(source) < 0)
			_exit(127);
		execl("/usr/bin/python3", "python3", "-m", "tests.dlemu", "--stdin", "watch", (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	close(in[0]);	/* in[1] stays open: the emulator stops when we exit */
	f = fdopen(out[0], "r");
	if (pid < 0 || !f || !fgets(info, (int)cap, f))
		return -1;
	return pid;
}

/* }===== */

/* {===== Client callbacks */

static double now_realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The emulator stamps each activity with UTC microseconds ("2026-11-25T00:24:28.907923Z"). */
static double stamp_ms(const char *raw, size_t len)
{
	const char *p = memmem(raw, len, "\"timestamp\":\"", 13);
	struct tm tm = { 0 };
	double frac = 0;
	char *end;

	if (!p)
		return -1;
	end = strptime(p + 13, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		return -1;
	if (*end == '.')
		frac = strtod(end, NULL);
	return (double)timegm(&tm) * 1e3 + frac * 1e3;
}

static void on_activity(struct dl_conv *c, const char *key, const struct hd_activity *a, void *arg)
{
	struct bench *b = arg;
	size_t i = strtoul(key + 1, NULL, 10);
	double ts;

	(void)c;
	if (!hd_str_eq(a->type, "message"))
		return;
	if (b->asked_ms && b->asked_ms[i] > 0 && b->answer_ms[i] == 0 &&
	    memmem(a->raw.ptr, a->raw.len, "You said:", 9)) {
		b->answer_ms[i] = now_realtime_ms();
		if (++b->answers == b->waiting_for)
			loop_stop(b->lp);
		return;
	}
	b->got[i]++;
	b->dispatched++;
	if (b->measuring && b->nlat < b->lat_cap && (ts = stamp_ms(a->raw.ptr, a->raw.len)) > 0)
		b->lat_ms[b->nlat++] = now_realtime_ms() - ts;
	if (b->waiting_for && b->dispatched >= b->waiting_for)
		loop_stop(b->lp);
}

static void on_state(struct dl_conv *c, const char *key, enum dl_state state, const char *reason, void *arg)
{
	struct bench *b = arg;

	(void)c;
	(void)key;
	(void)reason;
	if (!b->storm && state == DL_STATE_ONLINE && ++b->online == b->n && !b->asked_ms)
		loop_stop(b->lp);
}

static const struct directline_callbacks callbacks = { .on_activity = on_activity, .on_state = on_state };

/* }===== */

/* {===== Helpers */

static double rss_mb(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

static void on_check(void *arg)
{
	struct bench *b = arg;

	if (clock_mono_ms() > b->deadline_ms)
		loop_stop(b->lp);
}

/* Runs the loop until a callback stops it or the phase deadline passes. */
static void run(struct bench *b)
{
	b->deadline_ms = clock_mono_ms() + PHASE_DEADLINE_MS;
	loop_timer_start(b->check, 1000, 1);
	loop_run(b->lp);
	loop_timer_stop(b->check);
}

static void on_control_done(const struct http_response *res, int err, void *arg)
{
	(void)arg;
	if (err || res->status != 200)
		fprintf(stderr, "control call failed: %s %d\n", http_client_strerror(err), res->status);
}

static void control(struct bench *b, const char *path, const char *body)
{
	char url[512];
	struct http_header h[] = { { "Content-Type", "application/json" } };
	struct http_request req = { .method = "POST", .url = url, .headers = h, .nheaders = 1,
				    .body = body, .body_len = strlen(body), .timeout_ms = 120000 };

	snprintf(url, sizeof(url), "%s%s", b->control, path);
	http_client_request(b->hc, &req, on_control_done, b, NULL);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
	return n ? v[(size_t)((double)(n - 1) * p)] : 0;
}

/* The histogram's bucket bound (microseconds) below which a fraction P of activities fall. */
static unsigned hist_pct(const struct directline_stats *st, double p)
{
	uint64_t total = 0, acc = 0;
	size_t nb = sizeof(st->dispatch_us_hist) / sizeof(st->dispatch_us_hist[0]);

	for (size_t i = 0; i < nb; i++)
		total += st->dispatch_us_hist[i];
	for (size_t i = 0; i < nb; i++) {
		acc += st->dispatch_us_hist[i];
		if (acc >= (uint64_t)((double)total * p))
			return 1u << i;
	}
	return 0;
}

/* }===== */

/* {===== Phases */

static int write_config(const struct bench *b, const char *path, unsigned max_concurrent, double park_after)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fprintf(f, "return { directline = { base = \"%s\", secret = \"%s\", ca_file = \"%s\",\n"
		"  reconnect_max_concurrent = %u, reconnect_base = 1, reconnect_cap = 30, park_after = %g } }\n",
		b->base, b->secret, b->ca, max_concurrent, park_after);
	fclose(f);
	return 0;
}

static void phase_open(struct bench *b)
{
	double rss0 = rss_mb(), t0 = now_realtime_ms();
	char key[32];

	for (size_t i = 0; i < b->n; i++) {
		snprintf(key, sizeof(key), "c%zu", i);
		b->convs[i] = directline_open(b->dl, key, NULL);
	}
	run(b);
	printf("open: conversations=%zu online=%zu seconds=%.1f\n", b->n, b->online,
	       (now_realtime_ms() - t0) / 1e3);
	/* Idle a moment so what the opening needed (requests, handshakes) is released. */
	b->waiting_for = (size_t)-1;
	b->deadline_ms = clock_mono_ms() + 2000;
	loop_timer_start(b->check, 200, 1);
	loop_run(b->lp);
	loop_timer_stop(b->check);
	b->waiting_for = 0;
	printf("memory: rss_before_mb=%.1f rss_idle_mb=%.1f per_conversation_kb=%.1f\n", rss0, rss_mb(),
	       (rss_mb() - rss0) * 1024.0 / (double)b->n);
}

static void phase_rounds(struct bench *b, unsigned rounds)
{
	double cpu0 = cpu_s();
	struct directline_stats st;
	size_t before = b->dispatched;

	b->measuring = true;
	for (unsigned r = 0; r < rounds; r++) {
		b->waiting_for = b->dispatched + b->n;
		control(b, "/bot", "{\"seq\":1,\"prefix\":\"round-\"}");
		run(b);
	}
	b->measuring = false;
	b->waiting_for = 0;
	qsort(b->lat_ms, b->nlat, sizeof(double), cmp_double);
	directline_get_stats(b->dl, &st);
	printf("rounds: activities=%zu cpu_us_per_activity=%.1f\n", b->dispatched - before,
	       (cpu_s() - cpu0) * 1e6 / (double)(b->dispatched - before));
	printf("latency emulator timestamp to dispatch, ms: min=%.2f p50=%.2f p99=%.2f max=%.2f\n",
	       pct(b->lat_ms, b->nlat, 0), pct(b->lat_ms, b->nlat, 0.5), pct(b->lat_ms, b->nlat, 0.99),
	       pct(b->lat_ms, b->nlat, 1.0));
	printf("dispatch (client's own time per activity, whole run): p50<%uus p99<%uus\n",
	       hist_pct(&st, 0.5), hist_pct(&st, 0.99));
}

static void print_emulator_stats(struct bench *b);

/* Runs the loop for MS milliseconds (callbacks do not stop it). */
static void idle_for(struct bench *b, uint64_t ms)
{
	size_t saved = b->waiting_for;

	b->waiting_for = (size_t)-1;
	b->deadline_ms = clock_mono_ms() + ms;
	loop_timer_start(b->check, 100, 1);
	loop_run(b->lp);
	loop_timer_stop(b->check);
	b->waiting_for = saved;
}

/* What the heap holds freed but not given back (glibc fragmentation): the resident memory
 * malloc_trim(0) returns now, and what the call costs. */
static void print_trim(void)
{
	double before = rss_mb(), cpu0 = cpu_s();

	malloc_trim(0);
	printf("trim: rss_after_malloc_trim_mb=%.1f returned_mb=%.1f cpu_ms=%.1f\n", rss_mb(), before - rss_mb(),
	       (cpu_s() - cpu0) * 1e3);
}

/* Opens N conversations, the first b->parked of them held parked before their stream
 * opens; waits until every streaming one is online and every parked one had its first
 * GET (directline_get_stats counts both as online). */
static void phase_open_parked(struct bench *b)
{
	double rss0 = rss_mb(), t0 = now_realtime_ms();
	struct directline_stats st;
	char key[32];

	for (size_t i = 0; i < b->n; i++) {
		snprintf(key, sizeof(key), "c%zu", i);
		b->convs[i] = directline_open(b->dl, key, NULL);
		if (i < b->parked)
			directline_park(b->convs[i]);
	}
	for (;;) {
		idle_for(b, 200);
		directline_get_stats(b->dl, &st);
		if (st.online == b->n || now_realtime_ms() - t0 > PHASE_DEADLINE_MS)
			break;
	}
	printf("open: conversations=%zu online=%zu parked=%zu streaming=%zu seconds=%.1f\n", b->n, st.online,
	       st.parked, st.conversations - st.parked, (now_realtime_ms() - t0) / 1e3);
	idle_for(b, 2000);
	printf("memory: rss_before_mb=%.1f rss_idle_mb=%.1f per_conversation_kb=%.1f heap_in_use_mb=%.1f\n", rss0,
	       rss_mb(), (rss_mb() - rss0) * 1024.0 / (double)b->n, (double)mallinfo2().uordblks / 1048576.0);
	print_trim();
	if (getenv("BENCH_EXIT_WHEN_IDLE"))	/* under heaptrack: what is live now shows as leaked */
		exit(0);
}

/* One question to each conversation in [from, from + count), one after the other, woken
 * first when WAKE; returns the answer times (ms) sorted, in OUT. */
static size_t ask(struct bench *b, size_t from, size_t count, bool wake, double *out)
{
	static const char q[] = "{\"type\":\"message\",\"text\":\"are you there?\"}";
	size_t n = 0;

	for (size_t i = from; i < from + count && i < b->n; i++) {
		b->answers = 0;
		b->waiting_for = 1;
		if (wake)
			directline_wake(b->convs[i]);
		b->asked_ms[i] = now_realtime_ms();
		if (directline_send(b->convs[i], q, sizeof(q) - 1, NULL, NULL) < 0)
			continue;
		run(b);
		if (b->answer_ms[i] > 0)
			out[n++] = b->answer_ms[i] - b->asked_ms[i];
	}
	b->waiting_for = 0;
	qsort(out, n, sizeof(double), cmp_double);
	return n;
}

static void phase_wakes(struct bench *b, size_t wakes)
{
	double *woken = calloc(wakes + 1, sizeof(double)), *streaming = calloc(wakes + 1, sizeof(double));
	size_t nw, ns;

	if (!woken || !streaming || b->parked == b->n || wakes == 0) {
		free(woken);
		free(streaming);
		return;
	}
	ns = ask(b, b->parked, wakes, false, streaming);
	nw = ask(b, 0, wakes < b->parked ? wakes : b->parked, true, woken);
	printf("answer after a question, streaming: n=%zu p50_ms=%.2f p99_ms=%.2f\n", ns, pct(streaming, ns, 0.5),
	       pct(streaming, ns, 0.99));
	printf("answer after a wake and a question: n=%zu p50_ms=%.2f p99_ms=%.2f\n", nw, pct(woken, nw, 0.5),
	       pct(woken, nw, 0.99));
	printf("wake: added latency p50_ms=%.2f p99_ms=%.2f\n", pct(woken, nw, 0.5) - pct(streaming, ns, 0.5),
	       pct(woken, nw, 0.99) - pct(streaming, ns, 0.99));
	free(woken);
	free(streaming);
}

static void phase_idle_wakes(struct bench *b)
{
	size_t half = b->n / 2, ns, nw;
	double *streaming = calloc(half + 1, sizeof(double)), *woken = calloc(half + 1, sizeof(double));
	struct directline_stats st;

	if (!streaming || !woken) {
		free(streaming);
		free(woken);
		return;
	}
	ns = ask(b, 0, half, false, streaming);
	do {
		idle_for(b, 500);
		directline_get_stats(b->dl, &st);
	} while (st.parked < b->n);
	nw = ask(b, half, half, false, woken);
	printf("answer after a question, streaming: n=%zu p50_ms=%.2f p99_ms=%.2f\n", ns, pct(streaming, ns, 0.5),
	       pct(streaming, ns, 0.99));
	printf("answer after a question that wakes an idle-parked conversation: n=%zu p50_ms=%.2f p99_ms=%.2f\n",
	       nw, pct(woken, nw, 0.5), pct(woken, nw, 0.99));
	printf("idle wake: added latency p50_ms=%.2f p99_ms=%.2f\n", pct(woken, nw, 0.5) - pct(streaming, ns, 0.5),
	       pct(woken, nw, 0.99) - pct(streaming, ns, 0.99));
	free(streaming);
	free(woken);
}

static void phase_storm(struct bench *b, unsigned rounds)
{
	struct directline_stats st;
	double t0 = now_realtime_ms();
	uint64_t deadline = clock_mono_ms() + PHASE_DEADLINE_MS, reconnects0;
	size_t lost = 0, repeated = 0, expected = b->dispatched + b->n;

	directline_get_stats(b->dl, &st);
	reconnects0 = st.reconnects;
	b->storm = true;
	control(b, "/stats/reset", "{}");
	control(b, "/drop", "{}");
	control(b, "/bot", "{\"seq\":1,\"prefix\":\"storm-\"}");
	b->waiting_for = expected;
	for (;;) {	/* 100 ms slices until everything is back */
		b->deadline_ms = clock_mono_ms() + 100;
		loop_timer_start(b->check, 100, 1);
		loop_run(b->lp);
		directline_get_stats(b->dl, &st);
		if ((b->dispatched >= expected && st.online == b->n) || clock_mono_ms() > deadline)
			break;
	}
	loop_timer_stop(b->check);
	b->waiting_for = 0;
	for (size_t i = 0; i < b->n; i++) {
		lost += b->got[i] < rounds + 1u;
		repeated += b->got[i] > rounds + 1u;
	}
	printf("storm: seconds_until_all_back=%.1f online=%zu reconnects=%llu connects_in_flight_peak=%u "
	       "conversations_missing_an_activity=%zu conversations_with_a_repeat=%zu\n",
	       (now_realtime_ms() - t0) / 1e3, st.online, (unsigned long long)(st.reconnects - reconnects0),
	       st.connects_peak, lost, repeated);
	print_emulator_stats(b);
}

static void on_stats(const struct http_response *res, int err, void *arg)
{
	struct bench *b = arg;

	if (!err)
		printf("emulator stats after the storm: %.*s\n", (int)res->body_len, res->body);
	loop_stop(b->lp);
}

static void print_emulator_stats(struct bench *b)
{
	char url[512];
	struct http_request req = { .url = url, .timeout_ms = 30000 };

	snprintf(url, sizeof(url), "%s/stats", b->control);
	if (http_client_request(b->hc, &req, on_stats, b, NULL) == 0)
		run(b);
}

/* }===== */

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		printf("open files limit: %llu\n", (unsigned long long)rl.rlim_cur);
	}
}

struct args {
	const char *source;
	unsigned rounds, max_concurrent, rate_limit;
	double parked;		/* --parked: fraction held parked; < 0: the classic phases */
	size_t wakes;
	bool tls;
	bool idle_wakes;
};

static void parse_args(int argc, char **argv, struct bench *b, struct args *a)
{
	*a = (struct args){ .source = HANDOFFD_SCRIPT_DIR "/..", .rounds = 5, .max_concurrent = 64,
			    .parked = -1, .wakes = 200 };
	b->n = 1000;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			b->n = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
			a->rounds = (unsigned)atoi(argv[++i]);
		else if (strcmp(argv[i], "--concurrent") == 0 && i + 1 < argc)
			a->max_concurrent = (unsigned)atoi(argv[++i]);
		else if (strcmp(argv[i], "--rate-limit") == 0 && i + 1 < argc)
			a->rate_limit = (unsigned)atoi(argv[++i]);
		else if (strcmp(argv[i], "--source") == 0 && i + 1 < argc)
			a->source = argv[++i];
		else if (strcmp(argv[i], "--tls") == 0)
			a->tls = true;
		else if (strcmp(argv[i], "--parked") == 0 && i + 1 < argc)
			a->parked = atof(argv[++i]);
		else if (strcmp(argv[i], "--wakes") == 0 && i + 1 < argc)
			a->wakes = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--idle-wakes") == 0)
			a->idle_wakes = true;
	}
	if (a->idle_wakes)
		a->parked = 0;	/* everything streams until it parks on its own */
}

/* The emulator's addresses, and the client's settings through the real config loader. */
static struct config *emulator_config(struct bench *b, const struct args *a, const char *info)
{
	char err[512] = "", path[] = "/tmp/bench_directline_XXXXXX";
	struct config *cfg = NULL;
	int fd;

	if (info_field(info, a->tls ? "https_base" : "http_base", b->base, sizeof(b->base)) < 0 ||
	    info_field(info, "control", b->control, sizeof(b->control)) < 0 ||
	    info_field(info, "secret", b->secret, sizeof(b->secret)) < 0 ||
	    info_field(info, "ca_file", b->ca, sizeof(b->ca)) < 0)
		return NULL;
	fd = mkstemp(path);
	if (fd >= 0 && write_config(b, path, a->max_concurrent, a->idle_wakes ? 2 : 0) == 0)
		cfg = config_load(path, err, sizeof(err));
	if (fd >= 0) {
		close(fd);
		unlink(path);
	}
	if (!cfg)
		fprintf(stderr, "config: %s\n", err);
	return cfg;
}

static int setup(struct bench *b, const struct args *a, const struct config *cfg)
{
	b->lp = loop_new();
	b->lg = log_new();
	b->m = metrics_new();
	if (!b->lp || !b->lg || !b->m || http_client_global_init() < 0)
		return -ENOMEM;
	log_set_level(b->lg, LEVEL_WARN);
	b->hc = http_client_new(b->lp, b->lg, &(struct http_client_opts){ .ca_file = b->ca, .proxy = "" });
	b->dl = b->hc ? directline_new(b->lp, b->lg, b->hc, b->m, &cfg->directline, &callbacks, b) : NULL;
	b->check = loop_timer_new(b->lp, on_check, b);
	b->convs = calloc(b->n, sizeof(*b->convs));
	b->got = calloc(b->n, sizeof(*b->got));
	b->lat_cap = b->n * a->rounds;
	b->lat_ms = calloc(b->lat_cap + 1, sizeof(double));
	if (a->parked >= 0) {
		b->parked = (size_t)((double)b->n * (a->parked > 1 ? 1 : a->parked));
		b->asked_ms = calloc(b->n, sizeof(double));
		b->answer_ms = calloc(b->n, sizeof(double));
		if (!b->asked_ms || !b->answer_ms)
			return -ENOMEM;
	}
	return b->dl && b->check && b->convs && b->got && b->lat_ms ? 0 : -ENOMEM;
}

static void teardown(struct bench *b)
{
	for (size_t i = 0; b->convs && i < b->n; i++)
		directline_close(b->convs[i], false);
	directline_free(b->dl);
	loop_timer_free(b->check);
	http_client_free(b->hc);
	http_client_global_cleanup();
	metrics_free(b->m);
	log_free(b->lg);
	loop_free(b->lp);
	free(b->convs);
	free(b->got);
	free(b->lat_ms);
	free(b->asked_ms);
	free(b->answer_ms);
}

int main(int argc, char **argv)
{
	static struct bench b;
	struct args a;
	char info[INFO_MAX];
	struct config *cfg;
	pid_t emu;
	int rc = 1;

	parse_args(argc, argv, &b, &a);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	emu = spawn_emulator(a.source, info, sizeof(info));
	cfg = emu > 0 ? emulator_config(&b, &a, info) : NULL;
	if (!cfg) {
		fprintf(stderr, "the emulator did not start (run from a build of %s)\n", a.source);
		return 1;
	}
	printf("bench_directline: conversations=%zu transport=%s rounds=%u reconnect_max_concurrent=%u "
	       "emulator_rate_limit=%u\n", b.n, a.tls ? "wss" : "ws", a.rounds, a.max_concurrent, a.rate_limit);
	if (setup(&b, &a, cfg) == 0) {
		char body[64];

		snprintf(body, sizeof(body), "{\"connect_rate_limit\":%u}", a.rate_limit);
		control(&b, "/settings", body);
		if (a.idle_wakes) {
			phase_open_parked(&b);
			phase_idle_wakes(&b);
		} else if (a.parked >= 0) {
			phase_open_parked(&b);
			phase_wakes(&b, a.wakes);
		} else {
			phase_open(&b);
			phase_rounds(&b, a.rounds);
			phase_storm(&b, a.rounds);
		}
		rc = 0;
	}
	teardown(&b);
	config_free(cfg);
	kill(emu, SIGTERM);
	waitpid(emu, NULL, 0);
	return rc;
}
