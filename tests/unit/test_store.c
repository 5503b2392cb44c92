/* test_store.c - the durable state on a real SQLite file: conversations, dedupe,
 * outbox order, group commit and what survives a reopen. With HANDOFFD_TEST_PG_URL set
 * (integration/test_store_pg.py starts a PostgreSQL server and sets it) the same tests
 * run against that database instead, each on freshly dropped tables. */
#include "net/loop.h"
#include "base/log.h"
#include "relay/store.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

struct fixture {
	char dir[64];
	char path[1024];
	struct log *lg;
	struct loop *lp;
	struct store *st;
};

static struct store *reopen(struct fixture *f)
{
	char err[256];

	store_close(f->st);
	f->st = store_open(f->lp, f->lg, f->path, err, sizeof(err));
	if (!f->st)
		fail_msg("%s", err);
	return f->st;
}

/* Runs SQL on the test database (blocking); PostgreSQL only. */
static void pg_exec(const char *sql)
{
	PGconn *conn = PQconnectdb(getenv("HANDOFFD_TEST_PG_URL"));
	PGresult *r;

	if (PQstatus(conn) != CONNECTION_OK)
		fail_msg("connect: %s", PQerrorMessage(conn));
	r = PQexec(conn, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(conn);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *url = getenv("HANDOFFD_TEST_PG_URL");

	strcpy(f->dir, "/tmp/handoffd-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/state.db", f->dir);
	if (url) {
		snprintf(f->path, sizeof(f->path), "%s", url);
		pg_exec("DROP TABLE IF EXISTS conversations, events, outbox, inbound, owners, nodes, handoffd_schema;"
			"DROP SEQUENCE IF EXISTS handoffd_outbox_id, handoffd_outbox_block, handoffd_epoch");
	}
	f->lg = log_new();
	f->lp = loop_new();
	reopen(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	store_close(f->st);
	loop_free(f->lp);
	log_free(f->lg);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void stop_loop(void *arg)
{
	loop_stop(arg);
}

/* Runs the loop until what was written so far is committed (a PostgreSQL connection
 * keeps the loop busy, so loop_run alone would not return). */
static void settle(struct fixture *f)
{
	bool pending = store_write_pending(f->st);

	assert_int_equal(store_after_commit(f->st, stop_loop, f->lp), 0);
	if (pending)
		loop_run(f->lp);
}

struct answer {
	struct loop *lp;
	int rc;
	bool done;
};

static void got_answer(void *arg, int rc)
{
	struct answer *a = arg;

	a->rc = rc;
	a->done = true;
	loop_stop(a->lp);
}

/* store_event_add, waiting for the database's answer when the backend asks it, and for
 * the id's commit: the next question sees it. */
static int event_add(struct fixture *f, const char *id)
{
	struct answer a = { .lp = f->lp };
	int rc = store_event_add_async(f->st, id, got_answer, &a);

	if (rc == -EINPROGRESS) {
		while (!a.done)
			loop_run(f->lp);
		rc = a.rc;
	}
	settle(f);
	return rc;
}

static void test_file_is_private(void **state)
{
	struct fixture *f = *state;
	struct stat sb;

	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
}

static void test_conversation_round_trip_survives_reopen(void **state)
{
	struct fixture *f = *state;
	uint64_t seen[] = { 11, 22, 33 };
	struct store_conv c = { .key = "webhook:c-42", .state = "agent", .user_json = "{\"id\":\"u-7\"}",
				.dl_conversation_id = "DL-1", .dl_token = "tok", .dl_token_expiry = 1234,
				.watermark = "17", .seen = seen, .nseen = 3, .hub_data = "{}", .handoff_id = "h-1" };
	struct store_conv out;

	assert_int_equal(store_conv_put(f->st, &c), 0);
	reopen(f);
	assert_int_equal(store_conv_get(f->st, "webhook:c-42", &out), 0);
	assert_string_equal(out.state, "agent");
	assert_string_equal(out.dl_conversation_id, "DL-1");
	assert_string_equal(out.watermark, "17");
	assert_int_equal(out.dl_token_expiry, 1234);
	assert_int_equal(out.nseen, 3);
	assert_memory_equal(out.seen, seen, sizeof(seen));
	store_conv_clear(&out);
	c.state = "bot";
	c.watermark = NULL;
	assert_int_equal(store_conv_put(f->st, &c), 0);
	assert_int_equal(store_conv_get(f->st, "webhook:c-42", &out), 0);
	assert_string_equal(out.state, "bot");
	assert_null(out.watermark);
	store_conv_clear(&out);
	assert_int_equal(store_conv_get(f->st, "nope", &out), -ENOENT);
}

static int count_open(const struct store_conv *c, void *arg)
{
	(void)c;
	(*(int *)arg)++;
	return 0;
}

static void test_each_open_skips_closed(void **state)
{
	struct fixture *f = *state;
	struct store_conv a = { .key = "a", .state = "bot" }, b = { .key = "b", .state = "closed" },
			  c = { .key = "c", .state = "agent" };
	int n = 0;

	store_conv_put(f->st, &a);
	store_conv_put(f->st, &b);
	store_conv_put(f->st, &c);
	assert_int_equal(store_conv_each_open(f->st, count_open, &n), 0);
	assert_int_equal(n, 2);
	a.state = "closed";	/* closing one leaves one */
	store_conv_put(f->st, &a);
	n = 0;
	store_conv_each_open(f->st, count_open, &n);
	assert_int_equal(n, 1);
}

static void test_event_ids(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(event_add(f, "ev-1"), 1);
	assert_int_equal(event_add(f, "ev-1"), 0);
	reopen(f);
	assert_int_equal(event_add(f, "ev-1"), 0);
	assert_int_equal(event_add(f, "ev-2"), 1);
	assert_int_equal(store_event_delete(f->st, "ev-2"), 0);
	settle(f);
	assert_int_equal(event_add(f, "ev-2"), 1);	/* forgotten, so new again */
}

static void test_outbox_order_retry_done(void **state)
{
	struct fixture *f = *state;
	struct store_item it;
	int64_t a = store_outbox_add(f->st, "k", "to_hub", "first", 5);
	int64_t b = store_outbox_add(f->st, "k", "to_hub", "sec\0nd", 6);

	assert_true(a > 0 && b > a);
	store_outbox_add(f->st, "k", "to_bot", "other queue", 11);
	assert_int_equal(store_outbox_count(f->st, "k", "to_hub"), 2);
	assert_int_equal(store_outbox_count(f->st, "k", "to_bot"), 1);
	assert_int_equal(store_outbox_count(f->st, "nobody", "to_bot"), 0);
	assert_int_equal(store_outbox_head(f->st, "k", "to_hub", &it), 0);
	assert_int_equal(it.id, a);
	assert_string_equal(it.payload, "first");
	store_item_clear(&it);
	assert_int_equal(store_outbox_retry(f->st, a, 3, 99999), 0);
	reopen(f);
	assert_int_equal(store_outbox_head(f->st, "k", "to_hub", &it), 0);
	assert_int_equal(it.id, a);
	assert_int_equal(it.attempts, 3);
	assert_int_equal(it.next_at_ms, 99999);
	store_item_clear(&it);
	assert_int_equal(store_outbox_done(f->st, a), 0);
	assert_int_equal(store_outbox_head(f->st, "k", "to_hub", &it), 0);
	assert_int_equal(it.payload_len, 6);
	assert_memory_equal(it.payload, "sec\0nd", 6);
	store_item_clear(&it);
	store_outbox_done(f->st, b);
	assert_int_equal(store_outbox_head(f->st, "k", "to_hub", &it), -ENOENT);
}

static void test_purge_removes_ended_rows_and_their_leftovers(void **state)
{
	struct fixture *f = *state;
	struct store_conv open = { .key = "open", .state = "bot" }, done = { .key = "done", .state = "closed" };
	struct store_item it;
	int n = 0;

	store_conv_put(f->st, &open);
	store_conv_put(f->st, &done);
	store_outbox_add(f->st, "done", "to_hub", "left over", 9);
	store_outbox_add(f->st, "open", "to_bot", "kept", 4);
	event_add(f, "ev-old");
	/* Retention not reached: rows written now are not before now - 60 s. */
	assert_int_equal(store_purge_ended(f->st, (int64_t)time(NULL) - 60, (int64_t)time(NULL) - 60), 0);
	/* Reached (a cut-off in the future): only the ended row goes, with its outbox. */
	assert_int_equal(store_purge_ended(f->st, (int64_t)time(NULL) + 10, (int64_t)time(NULL) + 10), 1);
	reopen(f);
	assert_int_equal(store_conv_get(f->st, "done", &done), -ENOENT);
	assert_int_equal(store_conv_get(f->st, "open", &open), 0);
	store_conv_clear(&open);
	assert_int_equal(store_outbox_head(f->st, "done", "to_hub", &it), -ENOENT);
	assert_int_equal(store_outbox_head(f->st, "open", "to_bot", &it), 0);
	store_item_clear(&it);
	assert_int_equal(event_add(f, "ev-old"), 1);	/* its dedupe entry expired too */
	store_conv_each_open(f->st, count_open, &n);
	assert_int_equal(n, 1);
}

static void mark(void *arg)
{
	(*(int *)arg)++;
}

static void test_after_commit_waits_for_the_commit(void **state)
{
	struct fixture *f = *state;
	int ran = 0;

	assert_int_equal(store_after_commit(f->st, mark, &ran), 0);
	assert_int_equal(ran, 1);	/* nothing pending: at once */
	store_outbox_add(f->st, "k", "to_bot", "x", 1);
	store_after_commit(f->st, mark, &ran);
	assert_int_equal(ran, 1);
	settle(f);	/* the end-of-turn commit */
	assert_int_equal(ran, 2);
	assert_int_equal(store_commit_error(f->st), 0);
}

struct deferred {
	struct store *st;
	int calls;
	int after_ran_first;	/* an after-commit callback ran before the hook */
	int after;
};

/* The hook writes what the turn deferred: one conversation row. */
static void write_deferred(void *arg)
{
	struct deferred *d = arg;
	struct store_conv c = { .key = "webhook:late", .state = "agent" };

	d->calls++;
	d->after_ran_first += d->after;
	store_conv_put(d->st, &c);
}

static void count_after(void *arg)
{
	((struct deferred *)arg)->after++;
}

/* What the before-commit hook writes is in the commit the after-commit callbacks wait
 * for (a 202 may go); a turn that wrote nothing does not call it. */
static void test_before_commit_writes_join_the_commit(void **state)
{
	struct fixture *f = *state;
	struct deferred d = { .st = f->st };
	struct store_conv out;

	store_before_commit(f->st, write_deferred, &d);
	assert_int_equal(store_flush(f->st), 0);
	assert_int_equal(d.calls, 0);	/* nothing pending */
	assert_int_equal(store_begin(f->st), 0);
	assert_int_equal(store_after_commit(f->st, count_after, &d), 0);
	settle(f);	/* the end-of-turn commit */
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.after, 1);
	assert_int_equal(d.after_ran_first, 0);
	store_before_commit(f->st, NULL, NULL);
	reopen(f);
	assert_int_equal(store_conv_get(f->st, "webhook:late", &out), 0);
	assert_string_equal(out.state, "agent");
	store_conv_clear(&out);
}

/* A hub call's role and function are columns: they come back as stored, and a plain
 * item has neither. */
static void test_outbox_call_kind_survives_reopen(void **state)
{
	struct fixture *f = *state;
	struct store_item it;

	assert_true(store_outbox_add_call(f->st, "k", "to_hub", "desk", "escalate", "{}", 2) > 0);
	store_outbox_add(f->st, "k", "to_bot", "{\"type\":\"message\"}", 18);
	reopen(f);
	assert_int_equal(store_outbox_head(f->st, "k", "to_hub", &it), 0);
	assert_string_equal(it.role, "desk");
	assert_string_equal(it.fn, "escalate");
	assert_string_equal(it.payload, "{}");
	store_item_clear(&it);
	assert_int_equal(store_outbox_head(f->st, "k", "to_bot", &it), 0);
	assert_null(it.role);
	assert_null(it.fn);
	store_item_clear(&it);
}

/* PostgreSQL: a schema written by a newer handoffd is refused, and says which. */
static void test_pg_newer_schema_is_refused(void **state)
{
	struct fixture *f = *state;
	char err[256];

	store_close(f->st);
	f->st = NULL;
	pg_exec("UPDATE handoffd_schema SET version = 99");
	assert_null(store_open(f->lp, f->lg, f->path, err, sizeof(err)));
	assert_non_null(strstr(err, "schema version 99, expected 2"));
	assert_int_equal(store_check(f->path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "schema version 99, expected 2"));
	pg_exec("UPDATE handoffd_schema SET version = 2");
	assert_int_equal(store_check(f->path, err, sizeof(err)), 0);
	reopen(f);
}

/* An integer out of SQL on the test database (PostgreSQL only). */
static long pg_value(const char *sql)
{
	PGconn *conn = PQconnectdb(getenv("HANDOFFD_TEST_PG_URL"));
	PGresult *r = PQexec(conn, sql);
	long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : -1;

	PQclear(r);
	PQfinish(conn);
	return v;
}

struct probe {
	struct store *st;
	struct loop *lp;
	bool ran;
	int err;
};

static void note_commit(void *arg)
{
	struct probe *p = arg;

	p->ran = true;
	p->err = store_commit_error(p->st);
	loop_stop(p->lp);
}

/* PostgreSQL: the connection dies under a write. Its waiter hears it (the webhook answers
 * 503), the write stays queued, and once the connection is back it is written. */
static void test_pg_lost_connection_fails_the_waiter_and_keeps_the_write(void **state)
{
	struct fixture *f = *state;
	struct probe p = { .st = f->st, .lp = f->lp };
	struct store_item it;
	int64_t first = store_outbox_add(f->st, "k", "to_bot", "first", 5), second;

	settle(f);	/* connected, and FIRST is written */
	pg_value("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
		 " WHERE datname = current_database() AND pid <> pg_backend_pid()");
	while (pg_value("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
			" AND pid <> pg_backend_pid()") > 0)
		;	/* gone before anything more is sent */
	second = store_outbox_add(f->st, "k", "to_bot", "second", 6);
	assert_int_equal(store_after_commit(f->st, note_commit, &p), 0);
	while (!p.ran)
		loop_run(f->lp);
	assert_true(p.err < 0);
	assert_true(store_write_pending(f->st));	/* kept */
	while (store_write_pending(f->st))
		settle(f);	/* fails fast until the connection is back, then commits */
	assert_int_equal(store_commit_error(f->st), 0);
	reopen(f);
	assert_int_equal(store_outbox_head(f->st, "k", "to_bot", &it), 0);
	assert_int_equal(it.id, first);
	store_item_clear(&it);
	store_outbox_done(f->st, first);
	assert_int_equal(store_outbox_head(f->st, "k", "to_bot", &it), 0);
	assert_int_equal(it.id, second);
	assert_string_equal(it.payload, "second");
	store_item_clear(&it);
}

/* PostgreSQL: the server refuses a batch (here: a privilege taken away). Its waiter hears
 * it, the write stays and is sent again a second later, and commits once it can. */
static void test_pg_refused_batch_is_sent_again(void **state)
{
	struct fixture *f = *state;
	struct probe p = { .st = f->st, .lp = f->lp };
	struct store_item it;
	struct store_conv c = { .key = "k", .state = "bot" };
	int64_t id;

	store_conv_put(f->st, &c);
	settle(f);	/* connected */
	pg_exec("REVOKE INSERT ON outbox FROM handoffd");
	id = store_outbox_add(f->st, "k", "to_bot", "refused", 7);
	assert_int_equal(store_after_commit(f->st, note_commit, &p), 0);
	while (!p.ran)
		loop_run(f->lp);
	assert_int_equal(p.err, -EPROTO);
	assert_true(store_write_pending(f->st));
	pg_exec("GRANT INSERT ON outbox TO handoffd");
	while (store_write_pending(f->st))
		settle(f);
	reopen(f);
	assert_int_equal(store_outbox_head(f->st, "k", "to_bot", &it), 0);
	assert_int_equal(it.id, id);
	store_item_clear(&it);
}

/* An outbox id is never handed out twice, even once the outbox is empty again and across
 * a restart (the relay holds ids in memory; Direct Line's copy of a message carries its). */
static void test_ids_grow_across_reopen(void **state)
{
	struct fixture *f = *state;
	int64_t a = store_outbox_add(f->st, "k", "to_bot", "a", 1), b;

	store_outbox_done(f->st, a);
	reopen(f);
	b = store_outbox_add(f->st, "k", "to_bot", "b", 1);
	assert_true(b > a);
	store_outbox_done(f->st, b);
	assert_int_equal(store_flush(f->st), 0);
	assert_true(store_outbox_add(f->st, "k", "to_bot", "c", 1) > b);
}

/* Runs SQL on the fixture's SQLite file, outside the store. */
static void sqlite_exec(struct fixture *f, const char *sql)
{
	sqlite3 *db = NULL;
	char *err = NULL;

	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err);
	sqlite3_close(db);
}

/* A state of schema version 1 gave ids by AUTOINCREMENT: upgraded, its ids go on above
 * the highest one it handed out, though that row is gone. */
static void test_upgraded_ids_go_on_above_autoincrement(void **state)
{
	struct fixture *f = *state;

	store_close(f->st);
	f->st = NULL;
	unlink(f->path);
	sqlite_exec(f, "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,"
		       " queue TEXT NOT NULL, payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
		       " next_at INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL DEFAULT 0, role TEXT, fn TEXT);"
		       "INSERT INTO outbox (id, key, queue, payload) VALUES (41, 'k', 'to_bot', 'gone');"
		       "INSERT INTO outbox (id, key, queue, payload) VALUES (7, 'k', 'to_hub', 'kept');"
		       "DELETE FROM outbox WHERE id = 41;"
		       "PRAGMA user_version = 1;");
	reopen(f);
	assert_int_equal(store_outbox_add(f->st, "k", "to_hub", "new", 3), 42);
	assert_int_equal(store_outbox_count(f->st, "k", "to_hub"), 2);
}

static off_t file_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* WAL checkpoints (and their fsyncs) run on the checkpoint thread, not in the commits on
 * the loop: what the loop committed reaches the database file while the store is open
 * and idle, though it is far below SQLite's own checkpoint threshold (1000 pages). */
static void test_checkpoints_run_off_the_loop(void **state)
{
	struct fixture *f = *state;
	char payload[512];
	off_t before, after = 0;

	memset(payload, 'x', sizeof(payload));
	for (int i = 0; i < 1000; i++)
		assert_true(store_outbox_add(f->st, "k", "to_hub", payload, sizeof(payload)) > 0);
	settle(f);
	before = file_size(f->path);
	for (int i = 0; i < 100 && (after = file_size(f->path)) < before + 256 * 1024; i++)
		nanosleep(&(struct timespec){ .tv_nsec = 50 * 1000 * 1000 }, NULL);
	assert_true(after >= before + 256 * 1024);
}

int main(void)
{
	const struct CMUnitTest sqlite_only[] = {
		cmocka_unit_test_setup_teardown(test_file_is_private, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoints_run_off_the_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgraded_ids_go_on_above_autoincrement, setup, teardown),
	};
	const struct CMUnitTest pg_only[] = {
		cmocka_unit_test_setup_teardown(test_pg_newer_schema_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_refused_batch_is_sent_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_lost_connection_fails_the_waiter_and_keeps_the_write, setup,
						teardown),
	};
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_conversation_round_trip_survives_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_each_open_skips_closed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_ids, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox_order_retry_done, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ids_grow_across_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox_call_kind_survives_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_after_commit_waits_for_the_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_before_commit_writes_join_the_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_purge_removes_ended_rows_and_their_leftovers, setup, teardown),
	};

	bool pg = getenv("HANDOFFD_TEST_PG_URL") != NULL;
	int failed = cmocka_run_group_tests(tests, NULL, NULL);

	if (pg)
		return failed + cmocka_run_group_tests(pg_only, NULL, NULL);
	return failed + cmocka_run_group_tests(sqlite_only, NULL, NULL);
}
