/* test_cluster.c - the arithmetic of cluster membership (relay/cluster_lease.c): the fair
 * share of orphans, the local lease check against a fake clock, and what cluster_new
 * refuses. The database side is in tests/integration/test_cluster.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "base/log.h"
#include "net/loop.h"
#include "net/pg_conn.h"
#include "relay/cluster.h"

#include <errno.h>
#include <string.h>

static void test_orphans_split_evenly_between_idle_nodes(void **state)
{
	(void)state;
	/* 21 orphans, two live nodes owning nothing: 11 and 10, in either order. */
	assert_int_equal(cluster_fair_share(21, 21, 2, 0, 500), 11);
	assert_int_equal(cluster_fair_share(10, 21, 2, 0, 500), 10);	/* the other one, later */
	/* Three nodes at once: 7 each. */
	assert_int_equal(cluster_fair_share(21, 21, 3, 0, 500), 7);
	/* Even: 10 and 10. */
	assert_int_equal(cluster_fair_share(20, 20, 2, 0, 500), 10);
	assert_int_equal(cluster_fair_share(10, 20, 2, 0, 500), 10);
}

static void test_the_share_evens_out_the_total_not_the_orphans(void **state)
{
	(void)state;
	/* 100 owned in all (10 orphans), two live nodes: the one holding 60 takes nothing,
	 * the one holding 30 takes every orphan. */
	assert_int_equal(cluster_fair_share(10, 100, 2, 60, 500), 0);
	assert_int_equal(cluster_fair_share(10, 100, 2, 30, 500), 10);
	/* Nobody loses out: shares over all live nodes always cover the orphans. */
	for (uint64_t a = 0; a <= 40; a++) {
		uint64_t b = 40 - a, orphans = 13, total = 40 + orphans;
		uint64_t first = cluster_fair_share(orphans, total, 2, a, 500);
		uint64_t second = cluster_fair_share(orphans - first, total, 2, b, 500);

		assert_int_equal(first + second, orphans);
	}
}

static void test_the_share_is_capped_and_handles_edges(void **state)
{
	(void)state;
	assert_int_equal(cluster_fair_share(5000, 5000, 2, 0, 500), 500);	/* one round's cap */
	assert_int_equal(cluster_fair_share(0, 100, 2, 0, 500), 0);		/* no orphans */
	assert_int_equal(cluster_fair_share(7, 7, 0, 0, 500), 7);		/* no live count: itself */
	assert_int_equal(cluster_fair_share(7, 7, 1, 0, 500), 7);		/* alone: all */
	assert_int_equal(cluster_fair_share(3, 10, 2, 9, 500), 0);		/* already above */
}

static void test_the_lease_holds_until_lease_minus_margin(void **state)
{
	struct cluster_lease l;

	(void)state;
	cluster_lease_init(&l, 10000);	/* 10 s: margin 1 s */
	assert_false(cluster_lease_valid_at(&l, 0));	/* never renewed */
	cluster_lease_renew(&l, 5000);
	assert_true(cluster_lease_valid_at(&l, 5000));
	assert_true(cluster_lease_valid_at(&l, 13999));
	assert_false(cluster_lease_valid_at(&l, 14000));
	/* A heartbeat queued earlier that commits later does not move it back. */
	cluster_lease_renew(&l, 7000);
	cluster_lease_renew(&l, 6000);
	assert_true(cluster_lease_valid_at(&l, 15999));
	assert_false(cluster_lease_valid_at(&l, 16000));
	/* Resumed after a stall (SIGSTOP) far beyond the lease: invalid until renewed. */
	assert_false(cluster_lease_valid_at(&l, 60000));
	cluster_lease_renew(&l, 60000);
	assert_true(cluster_lease_valid_at(&l, 60001));
	/* Lost: invalid at once, whatever the clock. */
	cluster_lease_drop(&l);
	assert_false(cluster_lease_valid_at(&l, 60001));
}

static void test_a_short_lease_keeps_a_quarter_as_margin(void **state)
{
	struct cluster_lease l;

	(void)state;
	cluster_lease_init(&l, 2000);	/* margin 500 ms */
	cluster_lease_renew(&l, 0);
	assert_true(cluster_lease_valid_at(&l, 1499));
	assert_false(cluster_lease_valid_at(&l, 1500));
}

static void test_new_refuses_bad_timings(void **state)
{
	struct loop *lp = loop_new();
	struct log *lg = log_new();
	struct pg_conn_opts po = { .conninfo = "host=127.0.0.1 port=1 connect_timeout=1" };
	struct pg_conn *pc = pg_conn_new(lp, lg, &po, NULL, NULL);
	struct cluster_callbacks cb = { 0 };
	struct cluster_opts bad = { .heartbeat_s = 2, .lease_s = 3 };	/* lease < 2 heartbeats */
	struct cluster_opts good = { .node = "n1" };
	char long_name[CLUSTER_NODE_MAX + 1];
	struct cluster *c;
	struct cluster_stats st;

	(void)state;
	log_set_level(lg, LEVEL_ERROR);
	assert_non_null(pc);
	assert_null(cluster_new(lp, lg, pc, &bad, &cb));
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_null(cluster_new(lp, lg, pc, &(struct cluster_opts){ .node = long_name }, &cb));
	c = cluster_new(lp, lg, pc, &good, &cb);
	assert_non_null(c);
	/* Not registered (no database): no lease, no claims. */
	assert_false(cluster_lease_valid(c));
	assert_int_equal(cluster_claim(c, "k", NULL, NULL), -ENOTCONN);
	assert_int_equal(cluster_release_all(c, NULL, NULL), -ENOTCONN);
	cluster_stats(c, &st);
	assert_string_equal(st.node, "n1");
	assert_int_equal(st.epoch, 0);
	assert_false(st.registered);
	cluster_free(c);
	pg_conn_free(pc);
	log_free(lg);
	loop_free(lp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_orphans_split_evenly_between_idle_nodes),
		cmocka_unit_test(test_the_share_evens_out_the_total_not_the_orphans),
		cmocka_unit_test(test_the_share_is_capped_and_handles_edges),
		cmocka_unit_test(test_the_lease_holds_until_lease_minus_margin),
		cmocka_unit_test(test_a_short_lease_keeps_a_quarter_as_margin),
		cmocka_unit_test(test_new_refuses_bad_timings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
