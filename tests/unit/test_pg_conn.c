/* test_pg_conn.c - pg_conn.c where no database answers: a refused port, a peer that never
 * speaks, a malformed connection string, refusals while down, a free from inside the state
 * callback, the synchronous check. Every wait is for the state callback, under a watchdog.
 * The paths with a real server are in tests/integration/test_pg_conn.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "base/log.h"
#include "net/loop.h"
#include "net/pg_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WATCHDOG_MS 10000

struct fx {
	struct loop *lp;
	struct log *lg;
	struct pg_conn *pc;
	struct loop_timer *watchdog;
	int fd;			/* a bound local socket: refuses, or (listening) never answers */
	int port;
	int downs;		/* state callbacks with up == false */
	int stop_after;		/* stop the loop after this many */
	bool free_in_callback;
	bool expired;
	char reason[512];
};

static void on_watchdog(void *arg)
{
	struct fx *f = arg;

	f->expired = true;
	loop_stop(f->lp);
}

static void on_state(void *arg, bool up, const char *reason)
{
	struct fx *f = arg;

	assert_false(up);
	assert_non_null(reason);
	snprintf(f->reason, sizeof(f->reason), "%s", reason);
	if (f->free_in_callback) {
		pg_conn_free(f->pc);
		f->pc = NULL;
	}
	if (++f->downs >= f->stop_after)
		loop_stop(f->lp);
}

static int setup(void **state)
{
	static struct fx f;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);

	memset(&f, 0, sizeof(f));
	f.lp = loop_new();
	f.lg = log_new();
	f.watchdog = loop_timer_new(f.lp, on_watchdog, &f);
	assert_non_null(f.watchdog);
	log_set_level(f.lg, LEVEL_ERROR);
	loop_timer_start(f.watchdog, WATCHDOG_MS, 0);
	/* Bound but not listening: connections to it are refused, and no one else can take
	 * the port while the test runs. */
	f.fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f.fd >= 0);
	assert_int_equal(bind(f.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(f.fd, (struct sockaddr *)&sa, &len), 0);
	f.port = ntohs(sa.sin_port);
	f.stop_after = 1;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	pg_conn_free(f->pc);
	loop_timer_free(f->watchdog);
	loop_free(f->lp);
	log_free(f->lg);
	close(f->fd);
	return 0;
}

static void start(struct fx *f, const char *extra, uint32_t connect_timeout_ms)
{
	char conninfo[256];
	struct pg_conn_opts o = { .conninfo = conninfo, .password = "not-used",
				  .connect_timeout_ms = connect_timeout_ms, .backoff_min_ms = 10,
				  .backoff_max_ms = 20 };

	snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d dbname=x user=y %s", f->port, extra);
	f->pc = pg_conn_new(f->lp, f->lg, &o, on_state, f);
	assert_non_null(f->pc);
	/* Nothing runs inside pg_conn_new: the first attempt starts from the loop. */
	assert_int_equal(f->downs, 0);
	assert_false(pg_conn_is_up(f->pc));
}

static void test_refused_port_is_reported_and_retried(void **state)
{
	struct fx *f = *state;
	struct pg_conn_stats st;

	f->stop_after = 3;
	start(f, "", 0);
	assert_int_equal(loop_run(f->lp), 0);
	assert_false(f->expired);
	assert_non_null(strstr(f->reason, "Connection refused"));
	pg_conn_stats(f->pc, &st);
	assert_false(st.up);
	assert_int_equal(st.connects, 0);
	assert_true(st.connect_failures >= 3);
}

static void test_queue_is_refused_while_down(void **state)
{
	struct fx *f = *state;
	const char *params[] = { "a" };

	start(f, "", 0);
	assert_int_equal(pg_conn_queue(f->pc, "SELECT 1", 0, NULL, NULL, NULL), -ENOTCONN);
	assert_int_equal(pg_conn_queue(f->pc, NULL, 0, NULL, NULL, NULL), -EINVAL);
	assert_int_equal(pg_conn_queue(f->pc, "SELECT $1", 1, NULL, NULL, NULL), -EINVAL);
	assert_int_equal(pg_conn_queue(f->pc, "SELECT $1", PG_CONN_MAX_PARAMS + 1, params, NULL, NULL),
			 -EINVAL);
	assert_string_equal(pg_conn_strerror(-ENOTCONN), "database unavailable");
	assert_string_equal(pg_conn_strerror(-EBUSY), "too many statements queued");
}

static void test_silent_peer_times_out(void **state)
{
	struct fx *f = *state;

	/* Listening, never accepting: the kernel completes the handshake, then nothing. */
	assert_int_equal(listen(f->fd, 8), 0);
	start(f, "", 200);
	assert_int_equal(loop_run(f->lp), 0);
	assert_false(f->expired);
	assert_string_equal(f->reason, "timeout");
}

static void test_malformed_conninfo_is_reported(void **state)
{
	struct fx *f = *state;

	start(f, "no_such_option=1", 0);
	assert_int_equal(loop_run(f->lp), 0);
	assert_false(f->expired);
	assert_non_null(strstr(f->reason, "no_such_option"));
}

static void test_free_inside_state_callback(void **state)
{
	struct fx *f = *state;

	f->free_in_callback = true;
	start(f, "", 0);
	assert_int_equal(loop_run(f->lp), 0);
	assert_false(f->expired);
	assert_null(f->pc);	/* freed inside; ASan checks nothing touched it after */
}

static void test_new_needs_a_conninfo(void **state)
{
	struct fx *f = *state;
	struct pg_conn_opts o = { 0 };

	assert_null(pg_conn_new(f->lp, f->lg, &o, on_state, f));
}

/* The prologue, LISTEN channels and the SQLSTATE accessor check their arguments without
 * a database; what they do with one is in test_pg_conn.py. */
static void test_prologue_and_listen_arguments(void **state)
{
	struct fx *f = *state;
	const char *params[] = { "n1", "7" };

	start(f, "", 0);
	assert_int_equal(pg_conn_set_prologue(f->pc, "SELECT hd_fence($1, $2::bigint)", -1, NULL, NULL, NULL),
			 -EINVAL);
	assert_int_equal(pg_conn_set_prologue(f->pc, "SELECT $1", 1, NULL, NULL, NULL), -EINVAL);
	assert_int_equal(pg_conn_set_prologue(f->pc, "SELECT hd_fence($1, $2::bigint)", 2, params, NULL, NULL), 0);
	assert_int_equal(pg_conn_set_prologue(f->pc, NULL, 0, NULL, NULL, NULL), 0);	/* cleared */
	assert_int_equal(pg_conn_listen(f->pc, ""), -EINVAL);
	assert_int_equal(pg_conn_listen(f->pc, "no-dashes"), -EINVAL);
	assert_int_equal(pg_conn_listen(f->pc, "x\"; DROP TABLE nodes; --"), -EINVAL);
	for (int i = 0; i < PG_CONN_MAX_CHANNELS; i++) {
		char name[16];

		snprintf(name, sizeof(name), "chan_%d", i);
		assert_int_equal(pg_conn_listen(f->pc, name), 0);	/* not up: listened on connect */
	}
	assert_int_equal(pg_conn_listen(f->pc, "chan_0"), 0);	/* known: once */
	assert_int_equal(pg_conn_listen(f->pc, "one_too_many"), -ENOSPC);
	assert_int_equal(pg_conn_queue_bare(f->pc, "SELECT 1", 0, NULL, NULL, NULL), -ENOTCONN);
	assert_string_equal(pg_conn_batch_sqlstate(f->pc), "");
	assert_string_equal(pg_conn_strerror(-EPERM), "fenced");
}

static void test_sync_check_on_refused_port(void **state)
{
	struct fx *f = *state;
	char conninfo[128], out[16] = "x", err[256] = "";
	struct pg_conn_opts o = { .conninfo = conninfo, .connect_timeout_ms = 2000 };

	snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d dbname=x user=y", f->port);
	assert_int_equal(pg_conn_check_sync(&o, "SELECT 1", out, sizeof(out), err, sizeof(err)),
			 -ECONNREFUSED);
	assert_string_equal(out, "");
	assert_non_null(strstr(err, "Connection refused"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_refused_port_is_reported_and_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_is_refused_while_down, setup, teardown),
		cmocka_unit_test_setup_teardown(test_silent_peer_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_conninfo_is_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_inside_state_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_needs_a_conninfo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_check_on_refused_port, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prologue_and_listen_arguments, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
