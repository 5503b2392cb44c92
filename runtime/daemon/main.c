/* main.c - the handoffd command line: options, subcommands, daemon start-up, exit codes.
 * Builds the log and the runtime, hands over to runtime_run() and tears down in
 * reverse order. Everything that is not about the command line lives elsewhere. */
#include "daemon/cli.h"
#include "base/config.h"
#include "daemon/daemon.h"
#include "net/event_log.h"
#include "base/log.h"
#include "daemon/runtime.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

struct options {
	const char *config;
	const char *pidfile;
	const char *log_file;
	const char *log_level;
	bool daemonize;
	bool check_only;
	bool json_logs;
};

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
} subcommands[] = {
	{ "ctl", cmd_ctl },
	{ "parse", cmd_parse },
	{ "route", cmd_route },
	{ "test", cmd_test },
};

static void print_usage(FILE *out)
{
	fprintf(out,
		"usage: handoffd -c FILE [-d] [--pidfile FILE] [--log FILE] [--log-level LEVEL] [--json-logs]\n"
		"       handoffd -t -c FILE\n"
		"       handoffd test [-c FILE] TEST.lua...\n"
		"       handoffd parse PAYLOAD|-\n"
		"       handoffd route -c FILE PAYLOAD|-\n"
		"       handoffd ctl -c FILE [--url URL] conversations|show KEY|end KEY|return-to-bot KEY|reload\n"
		"\n"
		"  -c, --config FILE    Lua config file returning a table (required)\n"
		"  -t, --test-config    load and check the config and the scripts it names, then exit\n"
		"  -d, --daemon         detach: fork, setsid, chdir /, stdio to /dev/null\n"
		"      --pidfile FILE   write the pid here; refuse to start while it names a live process\n"
		"      --log FILE       append the log to FILE instead of stderr (reopened on SIGHUP)\n"
		"      --log-level L    debug, info, warn or error (default: config log_level, else info)\n"
		"      --json-logs      one JSON object per log line\n"
		"  -V, --version        print the version\n"
		"  -h, --help           this text\n"
		"\n"
		"Signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the scripts and reopens the log.\n");
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "test-config", no_argument, NULL, 't' },
		{ "daemon", no_argument, NULL, 'd' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "log", required_argument, NULL, 'l' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "json-logs", no_argument, NULL, 'j' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	while ((opt = getopt_long(argc, argv, "c:tdVh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': o->config = optarg; break;
		case 't': o->check_only = true; break;
		case 'd': o->daemonize = true; break;
		case 'p': o->pidfile = optarg; break;
		case 'l': o->log_file = optarg; break;
		case 'L': o->log_level = optarg; break;
		case 'j': o->json_logs = true; break;
		case 'V': printf("handoffd %s\n", HANDOFFD_VERSION); exit(EXIT_OK);
		case 'h': print_usage(stdout); exit(EXIT_OK);
		default: print_usage(stderr); return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "handoffd: unexpected argument '%s'\n", argv[optind]);
		print_usage(stderr);
		return -EINVAL;
	}
	if (!o->config) {
		fprintf(stderr, "handoffd: a config file is required (-c FILE)\n");
		print_usage(stderr);
		return -EINVAL;
	}
	return 0;
}

/* A path that stays valid after the daemon leaves its working directory. */
static char *absolute(const char *path)
{
	char cwd[PATH_MAX];
	size_t n;
	char *out;

	if (path[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		return strdup(path);
	n = strlen(cwd) + strlen(path) + 2;
	out = malloc(n);
	if (out)
		snprintf(out, n, "%s/%s", cwd, path);
	return out;
}

static int setup_log(struct log *lg, const struct options *o, const struct config *cfg)
{
	const char *level = o->log_level ? o->log_level : cfg->log_level;
	enum log_level lv = LEVEL_INFO;
	const char *secrets[CONFIG_SECRETS_MAX];
	size_t n = config_secrets(cfg, secrets, CONFIG_SECRETS_MAX);

	if (level && log_level_parse(level, &lv) < 0) {
		fprintf(stderr, "handoffd: unknown log level '%s' (debug, info, warn, error)\n", level);
		return -EINVAL;
	}
	log_set_level(lg, lv);
	log_set_json(lg, o->json_logs);
	for (size_t i = 0; i < n; i++)
		log_add_secret(lg, secrets[i]);
	if (o->log_file) {
		char *path = absolute(o->log_file);
		int rc = path ? log_open_file(lg, path) : -ENOMEM;

		free(path);
		if (rc < 0) {
			fprintf(stderr, "handoffd: cannot open log %s: %s\n", o->log_file, strerror(-rc));
			return rc;
		}
	}
	return 0;
}

/* Thousands of conversations mean thousands of sockets: take what the hard limit allows. */
static void raise_fd_limit(struct log *lg)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < 16384)
		log_warn(lg, "limits.nofile", "open_files=%llu note=\"too low for thousands of conversations; "
			 "raise the hard limit (ulimit -Hn)\"", (unsigned long long)rl.rlim_cur);
	else
		log_debug(lg, "limits.nofile", "open_files=%llu", (unsigned long long)rl.rlim_cur);
}

static int check_config(struct hd_runtime *rt)
{
	char err[1024];

	if (runtime_check(rt, err, sizeof(err)) < 0) {
		fprintf(stderr, "handoffd: %s\n", err);
		return EXIT_FAIL;
	}
	printf("configuration ok\n");
	return EXIT_OK;
}

/* Start-up after the config is known: detach, pidfile, listener, then the loop. */
static int serve(struct hd_runtime *rt, const struct options *o)
{
	struct daemon_handle *dh = NULL;
	char err[1024] = "";
	char *pidfile = o->pidfile ? absolute(o->pidfile) : NULL;
	int pidfd = -1, rc = EXIT_FAIL;

	if (o->daemonize && !(dh = daemon_detach(err, sizeof(err))))
		goto report;
	if (pidfile && (pidfd = daemon_pidfile_acquire(pidfile, err, sizeof(err))) < 0)
		goto report;
	raise_fd_limit(rt->log);
	if (runtime_start(rt, err, sizeof(err)) < 0)
		goto report;
	if (dh) {
		daemon_ready(dh, NULL);
		dh = NULL;
	}
	rc = runtime_run(rt);
	err[0] = '\0';
report:
	/* The pidfile goes before the failure is told: the parent of -d exits on hearing it,
	 * and whoever started it may look at the pidfile at once. */
	daemon_pidfile_release(pidfile, pidfd);
	free(pidfile);
	if (err[0] && dh)
		daemon_ready(dh, err);
	else if (err[0])
		fprintf(stderr, "handoffd: %s\n", err);
	return rc;
}

static int run_subcommand(int argc, char **argv, int *rc)
{
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
		if (strcmp(argv[1], subcommands[i].name) == 0) {
			*rc = subcommands[i].run(argc - 1, argv + 1);
			return 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct config *cfg;
	struct hd_runtime *rt;
	struct log *lg;
	char err[1024];
	int rc;

	signal(SIGPIPE, SIG_IGN);	/* a peer closing a socket must not kill the daemon */
	if (argc > 1 && argv[1][0] != '-' && run_subcommand(argc, argv, &rc))
		return rc;
	if (parse_options(argc, argv, &o) < 0)
		return EXIT_USAGE;
	cfg = config_load(o.config, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "handoffd: %s\n", err);
		return EXIT_FAIL;
	}
	lg = log_new();
	if (!lg || setup_log(lg, &o, cfg) < 0) {
		config_free(cfg);
		log_free(lg);
		return EXIT_FAIL;
	}
	rt = runtime_new(cfg, lg);
	if (!rt) {
		fprintf(stderr, "handoffd: out of memory\n");
		log_free(lg);
		return EXIT_FAIL;
	}
	event_log_route(lg);
	rc = o.check_only ? check_config(rt) : serve(rt, &o);
	runtime_free(rt);
	event_log_unroute(lg);
	log_free(lg);
	return rc;
}
