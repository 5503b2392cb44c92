/* bench_parse.c - how fast a handoff.initiate payload becomes a Lua handoff object,
 * next to what a Node adapter does with it (bench_node.js, run in the same process
 * tree: JSON.parse, find the event, take its context and transcript). Payloads come
 * from the project's generator at about 2.7 KB, 18 KB, 160 KB and 1.6 MB. For each size
 * it prints the bytes and MB/s of: C parse alone; C parse plus the Lua handoff object
 * (what the daemon hands the rules: its context, transcript and parties are built on
 * first read); the same plus a Lua function that reads the context, the parties and
 * every entry's text (so every part of the object gets built, as when a hub forwards
 * the transcript); Node; and the ratio of each of the last two C figures to Node.
 * Asserts nothing. Usage: bench_parse [SECONDS_PER_SIZE] (default 2). */
#include "script/bindings/handoff_object.h"

#include <handoffd/handoff.h>

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const int sizes[] = { 2, 20, 200, 2000 };	/* transcript entries */
enum { NSIZES = sizeof(sizes) / sizeof(sizes[0]), ROUNDS = 5 };

enum work { PARSE, OBJECT, OBJECT_READ };

/* What a router and a hub read; at index 1 of the Lua stack during the run. */
static const char read_all[] =
	"local h = ...\n"
	"local n = #h.context.language + #h.user.id + #h.bot.id\n"
	"for _, e in ipairs(h.transcript) do n = n + #(e.text or '') end\n"
	"return n\n";

struct payload {
	char path[256];
	char *text;
	size_t len;
	double parse_mbs, object_mbs, read_mbs, node_mbs;
};

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int generate(struct payload *p, int entries, const char *dir)
{
	char cmd[1024];
	size_t cap = 1 << 16, got;
	FILE *fp, *out;

	snprintf(cmd, sizeof(cmd), "python3 %s/tests/payloads/genpayload.py %d", HANDOFFD_SOURCE_DIR, entries);
	snprintf(p->path, sizeof(p->path), "%s/handoff-%d.json", dir, entries);
	if (!(fp = popen(cmd, "r")) || !(p->text = malloc(cap + HD_PARSE_PADDING)))
		return -1;
	while ((got = fread(p->text + p->len, 1, cap - p->len, fp)) > 0)
		if ((p->len += got) == cap && !(p->text = realloc(p->text, (cap *= 2) + HD_PARSE_PADDING)))
			return -1;
	if (pclose(fp) != 0 || !(out = fopen(p->path, "wb")))
		return -1;
	memset(p->text + p->len, 0, HD_PARSE_PADDING);
	fwrite(p->text, 1, p->len, out);
	return fclose(out);
}

/* One unit of work: parse the payload and, beyond PARSE, make the Lua handoff object
 * and maybe read it. */
static int once(struct hd_activity_parser *parser, lua_State *L, const struct payload *p, enum work w)
{
	struct hd_activity_set set;
	struct hd_parse_error err;
	const struct hd_handoff *h;

	if (hd_activity_parse(parser, p->text, p->len, p->len + HD_PARSE_PADDING, &set, &err) < 0 ||
	    !(h = hd_activity_set_handoff(&set))) {
		fprintf(stderr, "bench_parse: %s at byte %zu\n", err.reason, err.offset);
		return -1;
	}
	if (w == OBJECT) {
		handoff_object_push(L, h);
		lua_pop(L, 1);
	} else if (w == OBJECT_READ) {
		lua_pushvalue(L, 1);
		handoff_object_push(L, h);
		lua_call(L, 1, 1);
		lua_pop(L, 1);
	}
	return 0;
}

/* Best MB/s over ROUNDS rounds lasting about SECONDS / ROUNDS each. */
static double measure(struct hd_activity_parser *parser, lua_State *L, const struct payload *p,
		      enum work w, double seconds)
{
	long iters = 1;
	double best = 1e30, t0;

	for (;;) {
		t0 = now();
		for (long i = 0; i < iters; i++)
			if (once(parser, L, p, w) < 0)
				exit(1);
		if (now() - t0 > seconds / ROUNDS / 2)
			break;
		iters *= 2;
	}
	for (int r = 0; r < ROUNDS; r++) {
		t0 = now();
		for (long i = 0; i < iters; i++)
			once(parser, L, p, w);
		double t = (now() - t0) / (double)iters;
		if (t < best)
			best = t;
	}
	return (double)p->len / best / 1e6;
}

static int run_node(struct payload *ps, double seconds)
{
	char cmd[2048], line[512];
	int n = snprintf(cmd, sizeof(cmd), "node %s %g", BENCH_NODE_SCRIPT, seconds);
	FILE *fp;

	for (int i = 0; i < NSIZES; i++)
		n += snprintf(cmd + n, sizeof(cmd) - (size_t)n, " %s", ps[i].path);
	if (!(fp = popen(cmd, "r")))
		return -1;
	for (int i = 0; i < NSIZES && fgets(line, sizeof(line), fp); i++) {
		char path[256];
		size_t bytes;
		if (sscanf(line, "%255s %zu %lf", path, &bytes, &ps[i].node_mbs) != 3 || bytes != ps[i].len)
			ps[i].node_mbs = 0;
	}
	return pclose(fp) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 2.0;
	char dir[] = "/tmp/handoffd-bench-XXXXXX";
	struct payload ps[NSIZES] = { 0 };
	struct hd_activity_parser *parser = hd_activity_parser_new(NULL);
	lua_State *L = luaL_newstate();	/* as script_host makes its states */

#if defined(__SANITIZE_ADDRESS__)
	fprintf(stderr, "bench_parse: built with sanitizers, figures are not meaningful\n");
#endif
	if (!parser || !L || !mkdtemp(dir))
		return 1;
	luaL_openlibs(L);
	if (luaL_loadstring(L, read_all))
		return 1;
	for (int i = 0; i < NSIZES; i++) {
		if (generate(&ps[i], sizes[i], dir) < 0) {
			fprintf(stderr, "bench_parse: cannot generate payloads\n");
			return 1;
		}
		ps[i].parse_mbs = measure(parser, L, &ps[i], PARSE, seconds / 2);
		ps[i].object_mbs = measure(parser, L, &ps[i], OBJECT, seconds);
		ps[i].read_mbs = measure(parser, L, &ps[i], OBJECT_READ, seconds);
	}
	if (run_node(ps, seconds) < 0)
		fprintf(stderr, "bench_parse: node failed; Node column empty\n");
	printf("%8s %8s %8s %8s %9s %8s %7s %7s\n", "entries", "bytes", "parse", "object", "obj+read",
	       "Node", "object", "obj+read");
	printf("%8s %8s %8s %8s %9s %8s %7s %7s\n", "", "", "MB/s", "MB/s", "MB/s", "MB/s", "/Node",
	       "/Node");
	for (int i = 0; i < NSIZES; i++) {
		double node = ps[i].node_mbs;
		printf("%8d %8zu %8.0f %8.0f %9.0f %8.0f %6.1fx %6.1fx\n", sizes[i], ps[i].len,
		       ps[i].parse_mbs, ps[i].object_mbs, ps[i].read_mbs, node,
		       node > 0 ? ps[i].object_mbs / node : 0.0, node > 0 ? ps[i].read_mbs / node : 0.0);
		unlink(ps[i].path);
		free(ps[i].text);
	}
	rmdir(dir);
	lua_close(L);
	hd_activity_parser_free(parser);
	return 0;
}
