/* cmd_route.c - `handoffd route -c CONFIG PAYLOAD|-`: runs the config's routing rules on
 * a recorded Direct Line payload and prints the destination as one JSON object, so
 * rules can be tried on real transcripts before they are deployed. The payload is
 * parsed as `handoffd parse` does; the rules run as they do in the daemon (as a task,
 * with the fallback when they cannot decide). Exit: 0 printed, 1 config error, 2 usage,
 * 65 the payload is malformed or holds no handoff.initiate event. */
#include "daemon/cli.h"

#include "base/config.h"
#include "base/log.h"
#include "net/loop.h"
#include "script/routing.h"
#include "daemon/runtime.h"
#include "script/script_host.h"

#include <getopt.h>
#include <handoffd/handoff.h>
#include <stdio.h>
#include <stdlib.h>

struct route_run {
	struct hd_runtime *rt;
	const struct hd_handoff *handoff;
	char json[2048];
	int rc;
	int done;
};

static int usage(void)
{
	fprintf(stderr, "usage: handoffd route -c CONFIG PAYLOAD|-\n");
	return EXIT_USAGE;
}

static void decided(const struct route_decision *d, void *arg)
{
	struct route_run *run = arg;

	run->done = 1;
	run->rc = d && route_decision_json(d, run->json, sizeof(run->json)) > 0 ? EXIT_OK : EXIT_FAIL;
	loop_stop(run->rt->loop);
}

/* Parses BUF and leaves its first handoff in RUN; prints the reason and returns 65 if none. */
static int find_handoff(struct hd_activity_parser *p, const char *path, const char *buf, size_t len,
			struct route_run *run)
{
	struct hd_activity_set set;
	struct hd_parse_error err;

	if (hd_activity_parse(p, buf, len, len + HD_PARSE_PADDING, &set, &err) < 0) {
		fprintf(stderr, "handoffd: %s: %s at byte %zu\n", path, err.reason, err.offset);
		return EXIT_DATAERR;
	}
	run->handoff = hd_activity_set_handoff(&set);
	if (!run->handoff) {
		fprintf(stderr, "handoffd: %s: no handoff.initiate event in the payload\n", path);
		return EXIT_DATAERR;
	}
	return EXIT_OK;
}

static int route_payload(struct hd_runtime *rt, const char *path, const char *buf, size_t len)
{
	struct hd_activity_parser *p = hd_activity_parser_new(NULL);
	struct route_run run = { .rt = rt, .rc = EXIT_FAIL };
	char err[1024];
	int rc = p ? find_handoff(p, path, buf, len, &run) : EXIT_FAIL;

	if (rc == EXIT_OK && script_host_load(rt->scripts, err, sizeof(err)) < 0) {
		fprintf(stderr, "handoffd: %s\n", err);
		rc = EXIT_FAIL;
	}
	if (rc == EXIT_OK && routing_decide(rt, "route", run.handoff, decided, &run) < 0)
		rc = EXIT_FAIL;
	if (rc == EXIT_OK) {
		if (!run.done)
			loop_run(rt->loop);	/* rules may wait (a `when` filter calling out) */
		rc = run.rc;
		if (rc == EXIT_OK)
			printf("%s\n", run.json);
	}
	hd_activity_parser_free(p);
	return rc;
}

int cmd_route(int argc, char **argv)
{
	const char *config_path = NULL;
	char err[1024], *buf;
	size_t len;
	int opt, rc;

	optind = 1;
	while ((opt = getopt(argc, argv, "c:")) != -1) {
		if (opt != 'c')
			return usage();
		config_path = optarg;
	}
	if (!config_path || optind != argc - 1)
		return usage();
	struct config *cfg = config_load(config_path, err, sizeof(err));

	if (!cfg) {
		fprintf(stderr, "handoffd: %s\n", err);
		return EXIT_FAIL;
	}
	struct log *lg = log_new();
	struct hd_runtime *rt = lg ? runtime_new(cfg, lg) : (config_free(cfg), NULL);

	if (!rt) {
		log_free(lg);
		fprintf(stderr, "handoffd: out of memory\n");
		return EXIT_FAIL;
	}
	buf = cli_read_payload(argv[optind], &len);
	rc = buf ? route_payload(rt, argv[optind], buf, len) : EXIT_FAIL;
	free(buf);
	runtime_free(rt);
	log_free(lg);
	return rc;
}
