/* cmd_test.c - `handoffd test [-c CONFIG] FILE...`: runs *.test.lua files inside the
 * real runtime, with the real bindings, the way scripts run in the daemon. Each file
 * returns a table of name -> function; a test passes when its function returns. Users
 * test their own routing rules and hub scripts the same way. */
#include "daemon/cli.h"

#include "base/config.h"
#include "base/log.h"
#include "daemon/runtime.h"
#include "script/script_host.h"

#include <getopt.h>
#include <stdio.h>

static int usage(void)
{
	fprintf(stderr, "usage: handoffd test [-c CONFIG] FILE...\n");
	return EXIT_USAGE;
}

int cmd_test(int argc, char **argv)
{
	const char *config_path = NULL;
	char err[1024];
	unsigned passed = 0, failed = 0;
	int opt, broken = 0;

	optind = 1;
	while ((opt = getopt(argc, argv, "c:")) != -1) {
		if (opt != 'c')
			return usage();
		config_path = optarg;
	}
	if (optind >= argc)
		return usage();

	struct config *cfg = config_path ? config_load(config_path, err, sizeof(err)) : config_new_defaults();
	struct log *lg = log_new();
	struct hd_runtime *rt;

	if (!cfg) {
		fprintf(stderr, "handoffd: %s\n", config_path ? err : "out of memory");
		log_free(lg);
		return EXIT_FAIL;
	}
	rt = lg ? runtime_new(cfg, lg) : (config_free(cfg), NULL);
	if (!rt) {
		log_free(lg);
		fprintf(stderr, "handoffd: out of memory\n");
		return EXIT_FAIL;
	}
	for (int i = optind; i < argc; i++)
		if (script_host_run_tests(rt->scripts, argv[i], &passed, &failed) < 0)
			broken++;
	runtime_free(rt);
	log_free(lg);
	printf("%u passed, %u failed\n", passed, failed + (unsigned)broken);
	return failed || broken ? EXIT_FAIL : EXIT_OK;
}
