/* test_directline.c - the parts of the Direct Line client that need no service: the
 * seen-id set (dedupe.c), the directline settings in the config (defaults, ranges, the
 * line of a bad key), and what directline_open/send/close promise before anything is on
 * the wire (refusals, the queue bound, cancellation on close). Everything that talks to
 * Direct Line is tested against the emulator in tests/integration/test_directline_*.py. */
#include "base/config.h"
#include "directline/dedupe.h"
#include "directline/directline.h"
#include "net/http_client.h"
#include "base/log.h"
#include "net/loop.h"
#include "base/metrics.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* {===== dedupe */

static void test_dedupe_remembers_and_forgets_the_oldest(void **state)
{
	struct dedupe d = { 0 };
	const uint64_t *items;

	(void)state;
	for (uint64_t i = 1; i <= DEDUPE_MAX + 10; i++) {
		assert_false(dedupe_contains(&d, i));
		assert_int_equal(dedupe_add(&d, i), 0);
		assert_true(dedupe_contains(&d, i));
	}
	for (uint64_t i = 1; i <= 10; i++)
		assert_false(dedupe_contains(&d, i));	/* evicted, oldest first */
	assert_true(dedupe_contains(&d, 11));
	assert_int_equal(dedupe_items(&d, &items), DEDUPE_MAX);
	for (size_t i = 0; i < DEDUPE_MAX; i++)
		assert_int_equal(items[i], i + 11);	/* oldest first, contiguous */
	assert_true(dedupe_contains(&d, DEDUPE_MAX + 10));	/* still found after the rotation */
	assert_int_equal(dedupe_add(&d, 7), 0);
	assert_false(dedupe_contains(&d, 11));
	dedupe_clear(&d);
	assert_false(dedupe_contains(&d, 12));
	assert_int_equal(dedupe_items(&d, &items), 0);
	dedupe_clear(&d);
}

static void test_dedupe_hash_is_stable(void **state)
{
	(void)state;
	/* FNV-1a 64: persisted sets must read the same after an upgrade. */
	assert_int_equal(dedupe_hash("", 0), 0xcbf29ce484222325ull);
	assert_int_equal(dedupe_hash("a", 1), 0xaf63dc4c8601ec8cull);
	assert_int_not_equal(dedupe_hash("conv|0000001", 12), dedupe_hash("conv|0000002", 12));
}

/* }===== */

/* {===== settings */

struct files {
	char dir[64];
	char path[128];
};

static int files_setup(void **state)
{
	struct files *f = calloc(1, sizeof(*f));

	strcpy(f->dir, "/tmp/handoffd-dl-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/config.lua", f->dir);
	*state = f;
	return 0;
}

static int files_teardown(void **state)
{
	struct files *f = *state;

	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static struct config *load(struct files *f, const char *text, char *err, size_t errlen)
{
	FILE *fp = fopen(f->path, "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
	err[0] = '\0';
	return config_load(f->path, err, errlen);
}

static void expect_error(struct files *f, const char *text, const char *want)
{
	char err[512];
	struct config *cfg = load(f, text, err, sizeof(err));

	if (cfg || !strstr(err, want))
		fail_msg("want an error containing \"%s\", got \"%s\"", want, err);
}

static void test_settings_defaults(void **state)
{
	char err[512];
	struct config *cfg = load(*state, "return { directline = { secret = 's3cr3t-value' } }", err, sizeof(err));
	const struct config_directline *dl;

	assert_non_null(cfg);
	dl = &cfg->directline;
	assert_string_equal(dl->transport, "websocket");
	assert_string_equal(dl->user_id, "dl_handoffd-");
	assert_true(dl->poll_interval == 5.0 && dl->liveness == 60.0 && dl->token_refresh == 0.5);
	assert_true(dl->reconnect_max_concurrent == 64 && dl->reconnect_base == 1 && dl->reconnect_cap == 60);
	assert_true(dl->post_timeout == 20.0 && dl->post_timeout > 15.0);	/* the bot has 15 s */
	assert_true(dl->echo_grace == 5.0 && dl->max_message >= 1024 * 1024);
	assert_false(dl->greeting || dl->regional_discovery);
	assert_true(dl->status_events);	/* bots that ignore the event lose nothing */
	config_free(cfg);
}

static void test_settings_checked(void **state)
{
	struct files *f = *state;

	expect_error(f, "return { directline = { secret = 's',\n token_refresh = 0.95 } }",
		     "'directline.token_refresh' must be from 0.1 to 0.9 in");
	expect_error(f, "return { directline = { secret = 's',\n token_refresh = 0.95 } }", "config.lua:2");
	expect_error(f, "return { directline = { secret = 's', reconnect_max_concurrent = 2.5 } }",
		     "reconnect_max_concurrent");
	expect_error(f, "return { directline = { secret = 's', reconnect_base = 10, reconnect_cap = 5 } }",
		     "0 < base <= cap");
	expect_error(f, "return { directline = { secret = 's', liveness = 0 } }", "'directline.liveness'");
	expect_error(f, "return { directline = { secret = 's', max_message = 1000 } }", "'directline.max_message'");
	expect_error(f, "return { directline = { secret = 's', regional_discovery = true } }",
		     "needs 'directline.token_url'");
	expect_error(f, "return { directline = { secret = 's', greeting = 'yes' } }",
		     "'directline.greeting' must be a boolean");
	expect_error(f, "return { directline = { secret = 's', poll_intervall = 2 } }",
		     "unknown key 'directline.poll_intervall'");
}

/* }===== */

/* {===== the API before anything is on the wire */

struct api {
	struct loop *lp;
	struct log *lg;
	struct http_client *hc;
	struct metrics *m;
	struct config *cfg;
	struct directline *dl;
	int done_calls, done_cancelled;
	char reason[32];
};

static const struct directline_callbacks no_callbacks = { 0 };

static int api_setup(void **state)
{
	struct api *a = calloc(1, sizeof(*a));

	assert_int_equal(http_client_global_init(), 0);
	a->lp = loop_new();
	a->lg = log_new();
	log_set_level(a->lg, LEVEL_ERROR);
	a->hc = http_client_new(a->lp, a->lg, NULL);
	a->m = metrics_new();
	a->cfg = config_new_defaults();
	assert_non_null(a->cfg);
	/* Nothing listens there: the first step would fail, but no loop turn runs here. */
	free(a->cfg->directline.base);
	a->cfg->directline.base = strdup("http://127.0.0.1:9/v3/directline");
	a->cfg->directline.secret = strdup("unit-test-secret");
	a->dl = directline_new(a->lp, a->lg, a->hc, a->m, &a->cfg->directline, &no_callbacks, a);
	assert_non_null(a->dl);
	*state = a;
	return 0;
}

static int api_teardown(void **state)
{
	struct api *a = *state;

	directline_free(a->dl);
	http_client_free(a->hc);
	metrics_free(a->m);
	config_free(a->cfg);
	log_free(a->lg);
	loop_free(a->lp);
	http_client_global_cleanup();
	free(a);
	return 0;
}

static void on_done(struct dl_conv *c, int err, const char *reason, const char *id, void *arg)
{
	struct api *a = arg;

	(void)c;
	assert_null(id);
	a->done_calls++;
	a->done_cancelled += err == -ECANCELED;
	snprintf(a->reason, sizeof(a->reason), "%s", reason);
}

static void test_no_credentials_no_client(void **state)
{
	struct api *a = *state;
	struct config *cfg = config_new_defaults();

	assert_null(directline_new(a->lp, a->lg, a->hc, a->m, &cfg->directline, &no_callbacks, NULL));
	config_free(cfg);
}

static void test_send_refusals(void **state)
{
	struct api *a = *state;
	struct dl_conv *c = directline_open(a->dl, "key-1", NULL);
	static char big[300 * 1024];

	assert_non_null(c);
	assert_string_equal(directline_key(c), "key-1");
	assert_null(directline_conversation_id(c));
	assert_int_equal(directline_state(c), DL_STATE_CONNECTING);
	assert_int_equal(directline_send(c, "[1,2]", 5, on_done, a), -EINVAL);
	assert_int_equal(directline_send(c, "{\"text\":\"x\"}", 12, on_done, a), -EINVAL);
	assert_int_equal(directline_send(c, "{\"type\":\"\"}", 11, on_done, a), -EINVAL);
	assert_int_equal(directline_send(c, "{\"type\":\"message\"", 17, on_done, a), -EINVAL);
	memset(big, ' ', sizeof(big));
	memcpy(big, "{\"type\":\"message\"}", 18);
	assert_int_equal(directline_send(c, big, sizeof(big), on_done, a), -EFBIG);
	/* an item needs the caller's id */
	assert_int_equal(directline_send_item(c, "{\"type\":\"message\"}", 18,
					      &(struct dl_send_item){ .id = 0, .created_ms = 1 }, on_done, a), -EINVAL);
	assert_int_equal(a->done_calls, 0);
	directline_close(c, false);
}

static void test_close_cancels_the_queue(void **state)
{
	struct api *a = *state;
	struct dl_conv *c = directline_open(a->dl, "key-2", NULL);
	const char msg[] = "{\"type\":\"message\",\"text\":\"queued\"}";
	int queued = 0;

	while (directline_send(c, msg, sizeof(msg) - 1, on_done, a) == 0)
		queued++;
	assert_int_equal(directline_send(c, msg, sizeof(msg) - 1, on_done, a), -ENOBUFS);
	assert_true(queued >= 100);
	assert_int_equal(a->done_calls, 0);	/* nothing reported from inside send */
	directline_close(c, true);		/* end: no conversation yet, so nothing to tell */
	assert_int_equal(a->done_calls, queued);
	assert_int_equal(a->done_cancelled, queued);
	assert_string_equal(a->reason, "closed");
}

static void test_resume_needs_a_conversation_id(void **state)
{
	struct api *a = *state;
	struct dl_persist p = { .conversation_id = NULL };
	struct dl_persist ok = { .conversation_id = "abc-us", .watermark = "7" };
	struct dl_conv *c;

	assert_null(directline_open(a->dl, "key-3", &p));
	c = directline_open(a->dl, "key-3", &ok);
	assert_non_null(c);
	assert_string_equal(directline_conversation_id(c), "abc-us");
	directline_close(c, false);
}

/* }===== */

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dedupe_remembers_and_forgets_the_oldest),
		cmocka_unit_test(test_dedupe_hash_is_stable),
		cmocka_unit_test_setup_teardown(test_settings_defaults, files_setup, files_teardown),
		cmocka_unit_test_setup_teardown(test_settings_checked, files_setup, files_teardown),
		cmocka_unit_test_setup_teardown(test_no_credentials_no_client, api_setup, api_teardown),
		cmocka_unit_test_setup_teardown(test_send_refusals, api_setup, api_teardown),
		cmocka_unit_test_setup_teardown(test_close_cancels_the_queue, api_setup, api_teardown),
		cmocka_unit_test_setup_teardown(test_resume_needs_a_conversation_id, api_setup, api_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
