/* test_config.c - config loading: defaults, every error names key, file and line. */
#include "base/config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

struct fixture {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	strcpy(f->dir, "/tmp/handoffd-config-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/config.lua", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

/* Loads TEXT; expects failure with an error containing WANT. */
static void expect_error(struct fixture *f, const char *text, const char *want)
{
	char err[512] = "";
	struct config *cfg;

	write_file(f->path, text);
	cfg = config_load(f->path, err, sizeof(err));
	if (cfg || !strstr(err, want))
		fail_msg("want error containing \"%s\", got \"%s\"", want, err);
}

static void test_minimal_config_gets_defaults(void **state)
{
	struct fixture *f = *state;
	char err[512];
	struct config *cfg;

	write_file(f->path, "return { directline = { secret = 'abcdef' } }\n");
	cfg = config_load(f->path, err, sizeof(err));
	assert_non_null(cfg);
	assert_string_equal(cfg->listen_host, "127.0.0.1");
	assert_int_equal(cfg->listen_port, 8088);
	assert_string_equal(cfg->directline.base, "https://directline.botframework.com/v3/directline");
	assert_string_equal(cfg->directline.transport, "websocket");
	assert_string_equal(cfg->directline.secret, "abcdef");
	assert_true(cfg->shutdown_timeout > 0);
	assert_true(cfg->directline.park_after == 60 && cfg->directline.parked_sync == 300);
	assert_true(cfg->limits.idle_timeout == 86400 && cfg->state_retention == 7 * 86400);
	/* README's tables say the same; config.c's key table is the only place they are written. */
	assert_string_equal(cfg->log_level, "info");
	assert_string_equal(cfg->state, "sqlite:handoffd-state.db");
	assert_string_equal(cfg->directline.bot_name, "bot");
	assert_string_equal(cfg->directline.user_id, "dl_handoffd-");
	assert_string_equal(cfg->fallback.queue, "default");
	assert_null(cfg->fallback.skill);
	assert_true(cfg->directline.echo_grace == 5 && cfg->directline.idle_sync == 300);
	assert_true(cfg->retry.base == 1 && cfg->retry.max_delay == 60 && cfg->retry.give_up_after == 600);
	assert_true(cfg->scripts.max_instructions == 50e6 && cfg->scripts.max_memory_mb == 256 &&
		    cfg->scripts.retire_after == 60 && !cfg->scripts.watch);
	assert_true(cfg->limits.conversations == 50000 && cfg->limits.queued == 1000 && cfg->limits.connections == 0);
	assert_true(cfg->limits.request_timeout == 30 && cfg->limits.keepalive_timeout == 10 &&
		    cfg->limits.buffered_mb == 64);
	assert_true(cfg->shutdown_timeout == 10);
	assert_true(!cfg->cluster.node && cfg->cluster.heartbeat == 2 && cfg->cluster.lease == 10);
	assert_string_equal(cfg->dir, f->dir);
	config_free(cfg);
}

/* `handoffd test` without a config runs on the same defaults as a minimal config file. */
static void test_defaults_without_a_file(void **state)
{
	struct config *cfg = config_new_defaults();

	(void)state;
	assert_non_null(cfg);
	assert_string_equal(cfg->listen_host, "127.0.0.1");
	assert_int_equal(cfg->listen_port, 8088);
	assert_string_equal(cfg->directline.base, "https://directline.botframework.com/v3/directline");
	assert_string_equal(cfg->log_level, "info");
	assert_string_equal(cfg->fallback.queue, "default");
	assert_true(cfg->directline.liveness == 60 && cfg->directline.status_events);
	assert_null(cfg->directline.secret);
	config_free(cfg);
}

static void test_full_config(void **state)
{
	struct fixture *f = *state;
	char err[512], routes[160];
	struct config *cfg;

	snprintf(routes, sizeof(routes), "%s/routes.lua", f->dir);
	write_file(routes, "return function(h) return { queue = 'q' } end\n");
	setenv("HANDOFFD_TEST_SECRET", "from-the-environment", 1);
	write_file(f->path,
		   "return {\n"
		   "  listen = '[::1]:9000',\n"
		   "  log_level = 'debug',\n"
		   "  shutdown_timeout = 2.5,\n"
		   "  routes = 'routes.lua',\n"
		   "  directline = { token_url = 'https://x.invalid/token', transport = 'polling',\n"
		   "                 secret = os.getenv('HANDOFFD_TEST_SECRET') },\n"
		   "  hub = { module = 'hubs.webhook', url = 'https://hub.invalid', anything = { 1, 2 },\n"
		   "          webhook_secret = 'hook-secret', oauth = { Client_Secret = 'cs-value',\n"
		   "          access_token = 'at-value', token_url = 'https://not.secret' } },\n"
		   "  state = 'postgres://handoffd:db-pass@db.invalid/handoffd',\n"
		   "  admin = { token = 'admintoken-0123456789', allow_remote = true },\n"
		   "}\n");
	cfg = config_load(f->path, err, sizeof(err));
	if (!cfg)
		fail_msg("%s", err);
	assert_string_equal(cfg->listen_host, "::1");
	assert_int_equal(cfg->listen_port, 9000);
	assert_string_equal(cfg->log_level, "debug");
	assert_true(cfg->shutdown_timeout == 2.5);
	assert_string_equal(cfg->routes, routes);
	assert_string_equal(cfg->directline.transport, "polling");
	assert_string_equal(cfg->directline.secret, "from-the-environment");
	assert_string_equal(cfg->hub_module, "hubs.webhook");
	assert_string_equal(cfg->admin.token, "admintoken-0123456789");
	assert_true(cfg->admin.allow_remote);

	const char *secrets[CONFIG_SECRETS_MAX];
	size_t n = config_secrets(cfg, secrets, CONFIG_SECRETS_MAX);
	const char *want[] = { "from-the-environment", "hook-secret", "cs-value", "at-value",
			       "db-pass", "admintoken-0123456789" };

	assert_int_equal(n, 6);
	for (size_t i = 0; i < 6; i++) {
		bool found = false;

		for (size_t j = 0; j < n; j++)
			found = found || strcmp(secrets[j], want[i]) == 0;
		if (!found)
			fail_msg("secret %s not collected", want[i]);
	}
	for (size_t j = 0; j < n; j++)
		assert_null(strstr(secrets[j], "not.secret"));
	config_free(cfg);
}

static void test_unknown_key_named_with_line(void **state)
{
	struct fixture *f = *state;
	char want[200];

	snprintf(want, sizeof(want), "unknown key 'lisen' in %s:3", f->path);
	expect_error(f, "return {\n  directline = { secret = 'abcdef' },\n  lisen = '127.0.0.1:1',\n}\n", want);
	snprintf(want, sizeof(want), "unknown key 'directline.scret' in %s:2", f->path);
	expect_error(f, "return {\n  directline = { scret = 'abcdef' },\n}\n", want);
}

static void test_missing_keys_named(void **state)
{
	struct fixture *f = *state;

	expect_error(f, "return { listen = '127.0.0.1:1' }\n", "missing required key 'directline'");
	expect_error(f, "return { directline = {} }\n", "missing required key 'directline.secret'");
	expect_error(f, "return { directline = { secret = 'inline-0123456789\n  } }\n",
		     "unfinished string near ''***'");
	expect_error(f, "return { directline = { secret = 'abcd' },\n  admin = { token = 'short' } }\n",
		     "key 'admin.token' must be at least 16 characters in ");
	expect_error(f, "return { directline = { secret = 'abcd' }, hub = { url = 'x' } }\n",
		     "key 'hub.module' must be a string");
}

static void test_wrong_types_and_values(void **state)
{
	struct fixture *f = *state;

	expect_error(f, "return { directline = { secret = 'abcd' }, listen = 8088 }\n",
		     "key 'listen' must be a string, not number");
	expect_error(f, "return { directline = { secret = 'abcd' }, listen = 'localhost' }\n",
		     "must be \"host:port\"");
	expect_error(f, "return { directline = { secret = 'abcd' }, listen = '127.0.0.1:70000' }\n",
		     "bad port");
	expect_error(f, "return { directline = { secret = 'abcd', transport = 'carrier-pigeon' } }\n",
		     "must be \"websocket\" or \"polling\"");
	expect_error(f, "return { directline = { secret = 'abcd' }, log_level = 'loud' }\n",
		     "key 'log_level' must be");
	expect_error(f, "return { directline = { secret = 'abcd' }, routes = 'nope.lua' }\n",
		     "cannot be read");
	expect_error(f, "return { directline = { secret = 'abcd' }, limits = { idle_timeout = -1 } }\n",
		     "'limits.idle_timeout' must not be negative");
	expect_error(f, "return { directline = { secret = 'abcd' }, state_retention = -5 }\n",
		     "'state_retention' must not be negative");
	expect_error(f, "return 42\n", "must return a table, not number");
	expect_error(f, "return { directline = { secret = 'abcd', park_after = -1 } }\n",
		     "'directline.park_after' and 'parked_sync' must not be negative");
	expect_error(f, "return { directline = { secret = 'abcd' }, cluster = { heartbeat = 5, lease = 6 } }\n",
		     "2 * heartbeat <= lease");
	expect_error(f, "return { directline = { secret = 'abcd' }, cluster = { node = '' } }\n",
		     "'cluster.node' must be 1 to 127 bytes");
}

static void test_syntax_and_runtime_errors_carry_line(void **state)
{
	struct fixture *f = *state;
	char want[200];

	snprintf(want, sizeof(want), "%s:2:", f->path);
	expect_error(f, "return {\n  listen = ,\n}\n", want);
	snprintf(want, sizeof(want), "%s:1:", f->path);
	expect_error(f, "error('boom')\n", want);
}

static void test_missing_file(void **state)
{
	char err[512];

	(void)state;
	assert_null(config_load("/nonexistent/handoffd.lua", err, sizeof(err)));
	assert_non_null(strstr(err, "cannot open /nonexistent/handoffd.lua"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_minimal_config_gets_defaults, setup, teardown),
		cmocka_unit_test(test_defaults_without_a_file),
		cmocka_unit_test_setup_teardown(test_full_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_key_named_with_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_keys_named, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_types_and_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syntax_and_runtime_errors_carry_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
