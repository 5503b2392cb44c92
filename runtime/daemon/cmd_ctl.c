/* cmd_ctl.c - `handoffd ctl -c CONFIG COMMAND`: the admin API of the running daemon
 * from the command line, so operators do not hand-craft curl calls. The daemon's
 * address and admin token come from the same config (listen, admin.token); --url
 * overrides the address (a config that listens on port 0, a daemon behind a proxy).
 * Prints the daemon's JSON answer. Exit: 0 the daemon did it, 1 it refused or could not
 * be reached (its answer or the reason on stderr), 2 usage. */
#include "daemon/cli.h"

#include "base/config.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANSWER_MAX (16 * 1024 * 1024)

struct answer {
	char *buf;
	size_t len;
};

static int usage(void)
{
	fprintf(stderr, "usage: handoffd ctl -c CONFIG [--url URL] COMMAND\n"
			"  conversations [--state STATE] [--limit N] [--after KEY]\n"
			"  show KEY | end KEY | return-to-bot KEY | reload\n");
	return EXIT_USAGE;
}

static size_t on_data(char *ptr, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t add = size * n;
	char *buf;

	if (a->len + add > ANSWER_MAX || !(buf = realloc(a->buf, a->len + add + 1)))
		return 0;
	memcpy(buf + a->len, ptr, add);
	a->buf = buf;
	a->len += add;
	a->buf[a->len] = '\0';
	return add;
}

/* The daemon's base URL from CFG's listen (a wildcard address is reached on loopback). */
static int base_url(const struct config *cfg, char *out, size_t cap)
{
	const char *host = cfg->listen_host;

	if (cfg->listen_port <= 0) {
		fprintf(stderr, "handoffd: ctl: the config listens on port %d; give --url\n", cfg->listen_port);
		return -1;
	}
	if (!host || !*host || strcmp(host, "0.0.0.0") == 0)
		host = "127.0.0.1";
	else if (strcmp(host, "::") == 0)
		host = "[::1]";
	snprintf(out, cap, strchr(host, ':') && host[0] != '[' ? "http://[%s]:%d" : "http://%s:%d", host,
		 cfg->listen_port);
	return 0;
}

/* METHOD BASE PATH with the token; prints the answer. */
static int call(const char *method, const char *base, const char *path, const char *token)
{
	CURL *h = curl_easy_init();
	struct curl_slist *headers = NULL;
	struct answer a = { 0 };
	char url[4096], auth[1024];
	long status = 0;
	CURLcode rc;

	if (!h)
		return EXIT_FAIL;
	snprintf(url, sizeof(url), "%s%s", base, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	headers = curl_slist_append(headers, auth);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "POST") == 0)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &a);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
	if (rc != CURLE_OK) {
		fprintf(stderr, "handoffd: ctl: %s: %s\n", base, curl_easy_strerror(rc));
		free(a.buf);
		return EXIT_FAIL;
	}
	fprintf(status >= 200 && status < 300 ? stdout : stderr, "%s\n", a.buf ? a.buf : "");
	free(a.buf);
	return status >= 200 && status < 300 ? EXIT_OK : EXIT_FAIL;
}

/* "/admin/conversations/<KEY escaped><SUFFIX>" into OUT. */
static int key_path(const char *key, const char *suffix, char *out, size_t cap)
{
	char *esc = curl_easy_escape(NULL, key, 0);
	int n;

	if (!esc)
		return -1;
	n = snprintf(out, cap, "/admin/conversations/%s%s", esc, suffix);
	curl_free(esc);
	return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int list_path(int argc, char **argv, char *out, size_t cap)
{
	static const struct option opts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "limit", required_argument, NULL, 'l' },
		{ "after", required_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 },
	};
	size_t n = (size_t)snprintf(out, cap, "/admin/conversations?");
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *esc;

		if (opt == '?')
			return -1;
		esc = curl_easy_escape(NULL, optarg, 0);
		if (!esc)
			return -1;
		n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s=%s&",
				      opt == 's' ? "state" : opt == 'l' ? "limit" : "after", esc);
		curl_free(esc);
	}
	if (n >= cap || optind != argc)
		return -1;
	out[n - 1] = '\0';	/* the last '?' or '&' */
	return 0;
}

static int run(const struct config *cfg, const char *base, int argc, char **argv)
{
	const char *cmd = argv[0];
	char path[4096];

	if (strcmp(cmd, "conversations") == 0)
		return list_path(argc, argv, path, sizeof(path)) < 0 ? usage()
			: call("GET", base, path, cfg->admin.token);
	if (strcmp(cmd, "reload") == 0)
		return argc != 1 ? usage() : call("POST", base, "/admin/reload", cfg->admin.token);
	if (argc != 2)
		return usage();
	if (strcmp(cmd, "show") == 0 && key_path(argv[1], "", path, sizeof(path)) == 0)
		return call("GET", base, path, cfg->admin.token);
	if (strcmp(cmd, "end") == 0 && key_path(argv[1], "/end", path, sizeof(path)) == 0)
		return call("POST", base, path, cfg->admin.token);
	if (strcmp(cmd, "return-to-bot") == 0 && key_path(argv[1], "/return-to-bot", path, sizeof(path)) == 0)
		return call("POST", base, path, cfg->admin.token);
	return usage();
}

int cmd_ctl(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "url", required_argument, NULL, 'u' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL, *url = NULL;
	struct config *cfg;
	char err[1024], base[600];
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "+c:u:", opts, NULL)) != -1) {
		if (opt == 'c')
			config_path = optarg;
		else if (opt == 'u')
			url = optarg;
		else
			return usage();
	}
	if (!config_path || optind >= argc)
		return usage();
	cfg = config_load(config_path, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "handoffd: %s\n", err);
		return EXIT_FAIL;
	}
	if (!cfg->admin.token) {
		fprintf(stderr, "handoffd: ctl: %s has no admin.token: the daemon has no admin routes\n", config_path);
		config_free(cfg);
		return EXIT_FAIL;
	}
	if (url)
		snprintf(base, sizeof(base), "%s", url);
	if (!url && base_url(cfg, base, sizeof(base)) < 0) {
		config_free(cfg);
		return EXIT_FAIL;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = run(cfg, base, argc - optind, argv + optind);
	curl_global_cleanup();
	config_free(cfg);
	return rc;
}
