"""runtime/net/pg_conn.c against a real PostgreSQL server (pg_server.py), through the
C driver tests/tools/pg_driver.c.

Each scenario states what the connection must do: a turn's statements commit as ONE
transaction (every row carries the server's transaction id, so "one commit" is counted by
the server, not by us); a failing statement rolls its whole batch back and the next batch
works; the queue is bounded; a stopped or restarted server fails what was pending, the
connection comes back by itself and the next batch commits; a wrong password says so.
Waiting is for the driver's events and the server's own view, always with a deadline.
"""
import os
import socket
import time

import pytest

from jsonl_proc import JsonLinesProcess
from pg_server import pg_server  # noqa: F401 - the fixture

TOOLS = os.environ.get("HANDOFFD_TOOLS_DIR", "build/tests/tools")
DRIVER = os.path.join(TOOLS, "pg_driver")
DEADLINE = 20.0
ECONNRESET, ENOTCONN, EPROTO, EBUSY, ECANCELED = -104, -107, -71, -16, -125
ETIMEDOUT, ECONNREFUSED, EPERM, EINVAL = -110, -111, -1, -22


class PgDriver(JsonLinesProcess):
    """pg_driver with its JSON events collected on a thread; its log goes to a file."""

    def __init__(self, tmp_path, server, password=None, *args, conninfo=None):
        env = dict(os.environ, HANDOFFD_TEST_PG_PASSWORD=server.password if password is None else password)
        super().__init__([DRIVER, "--conninfo", conninfo or server.conninfo, "--password-env",
                          "HANDOFFD_TEST_PG_PASSWORD", "--backoff-max", "500", *args],
                         tmp_path / "pg_driver.log", env, name="pg_driver")
        self.wait_for(lambda e: e["ev"] == "ready")

    def run(self, *words, ev="batch"):
        """Sends a command and returns its outcome event (matched by tag)."""
        since = self.mark()
        self.cmd(*words)
        tag = str(words[1])
        return self.wait_for(lambda e: e["ev"] in (ev, "refused") and e.get("tag") == tag, since)

    def query(self, sql):
        e = self.run("exec", f"q{self.mark()}", sql, ev="done")
        assert e["ev"] == "done" and e["err"] == 0, e
        return e["rows"]

    def stats(self):
        since = self.mark()
        self.cmd("stats")
        return self.wait_for(lambda e: e["ev"] == "stats", since)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(scope="module")
def schema(pg_server):  # noqa: F811
    pg_server.psql("CREATE TABLE items (id bigserial PRIMARY KEY, tag text NOT NULL, n int NOT NULL,"
                   " xid xid8 NOT NULL DEFAULT pg_current_xact_id());"
                   " ALTER TABLE items OWNER TO handoffd")
    return pg_server


@pytest.fixture
def driver(tmp_path, schema):
    d = PgDriver(tmp_path, schema)
    d.wait_for(lambda e: e["ev"] == "state" and e["up"])
    yield d
    d.close()


def rows_of(server, tag):
    """(rows, distinct transactions) for TAG as the server sees them, read apart from the driver."""
    out = server.psql(f"SELECT count(*), count(DISTINCT xid) FROM items WHERE tag = '{tag}'")
    return tuple(int(x) for x in out.split("|"))


def test_a_turn_of_1000_inserts_is_one_commit(driver, schema):
    before = driver.stats()
    e = driver.run("batch", "burst", 1000)
    assert (e["ok"], e["failed"], e["err"]) == (1000, 0, 0), e
    after = driver.stats()
    assert after["batches_committed"] - before["batches_committed"] == 1
    assert after["statements_committed"] - before["statements_committed"] == 1000
    assert after["queued"] == 0
    # The server's view: 1000 rows, all written by the same transaction.
    assert rows_of(schema, "burst") == (1000, 1)
    # Read back through the connection itself.
    assert driver.query("SELECT count(*), min(n), max(n) FROM items WHERE tag = 'burst'") == [["1000", "0", "999"]]


def test_a_failing_statement_rolls_back_its_batch_and_the_next_commits(driver, schema):
    e = driver.run("badbatch", "bad", 10)
    assert (e["ok"], e["failed"], e["err"]) == (0, 10, EPROTO), e
    assert 'relation "missing_table" does not exist' in e["msg"]
    assert rows_of(schema, "bad") == (0, 0)
    e = driver.run("batch", "after-bad", 10)
    assert (e["ok"], e["err"]) == (10, 0), e
    assert rows_of(schema, "after-bad") == (10, 1)


def test_the_queue_is_bounded(tmp_path, schema):
    with PgDriver(tmp_path, schema, None, "--max-queued", "10") as d:
        d.wait_for(lambda e: e["ev"] == "state" and e["up"])
        since = d.mark()
        d.cmd("batch", "cap", 11)
        refused = d.wait_for(lambda e: e["ev"] == "refused", since)
        assert (refused["err"], refused["reason"]) == (EBUSY, "too many statements queued")
        e = d.wait_for(lambda e: e["ev"] == "batch" and e["tag"] == "cap", since)
        assert (e["ok"], e["failed"]) == (10, 0), e
        assert rows_of(schema, "cap") == (10, 1)


def test_free_cancels_what_is_queued(driver, schema):
    e = driver.run("cancel", "gone", 5)
    assert (e["ok"], e["failed"], e["err"]) == (0, 5, ECANCELED), e
    assert rows_of(schema, "gone") == (0, 0)


def test_database_down_refuses_then_comes_back(driver, schema):
    since = driver.mark()
    schema.stop()
    try:
        down = driver.wait_for(lambda e: e["ev"] == "state" and not e["up"], since)
        assert down["reason"]
        e = driver.run("batch", "while-down", 3)
        assert (e["ev"], e["err"], e["reason"]) == ("refused", ENOTCONN, "database unavailable"), e
    finally:
        schema.start()
    driver.wait_for(lambda e: e["ev"] == "state" and e["up"], since)
    e = driver.run("batch", "back", 5)
    assert (e["ok"], e["err"]) == (5, 0), e
    assert rows_of(schema, "back") == (5, 1)
    assert rows_of(schema, "while-down") == (0, 0)


def wait_server_sleeping(server, pid):
    """Until the batch's pg_sleep runs in backend PID, i.e. the batch is in flight there."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if server.psql(f"SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND pid = {pid}") == "1":
            return
    raise AssertionError("the batch never reached pg_sleep at the server")


def test_restart_mid_batch_fails_it_and_the_connection_comes_back(driver, schema):
    [[pid]] = driver.query("SELECT pg_backend_pid()")
    since = driver.mark()
    driver.cmd("batch", "mid", 100, 60)  # 100 inserts, then 60 s of pg_sleep before the commit
    wait_server_sleeping(schema, pid)
    schema.restart()
    e = driver.wait_for(lambda e: e["ev"] == "batch" and e["tag"] == "mid", since)
    assert (e["ok"], e["failed"], e["err"], e["reason"]) == (0, 101, ECONNRESET, "connection lost"), e
    driver.wait_for(lambda e: e["ev"] == "state" and not e["up"], since)
    driver.wait_for(lambda e: e["ev"] == "state" and e["up"], since)
    e = driver.run("batch", "after-restart", 100)
    assert (e["ok"], e["err"]) == (100, 0), e
    assert rows_of(schema, "mid") == (0, 0)
    assert rows_of(schema, "after-restart") == (100, 1)
    assert driver.stats()["connects"] == 2


def test_a_wrong_password_says_so_and_keeps_retrying(tmp_path, schema):
    with PgDriver(tmp_path, schema, "not-the-password") as d:
        down = d.wait_for(lambda e: e["ev"] == "state")
        assert not down["up"]
        assert 'password authentication failed for user "handoffd"' in down["reason"], down
        d.wait_for(lambda e: e["ev"] == "state" and e is not down)  # it tries again by itself
        stats = d.stats()
        assert not stats["up"] and stats["connects"] == 0 and stats["connect_failures"] >= 2
        assert "not-the-password" not in d.log()
        e = d.run("batch", "nopw", 1)
        assert (e["ev"], e["err"]) == ("refused", ENOTCONN), e


def test_a_batch_without_answer_times_out_and_the_connection_is_made_again(tmp_path, schema):
    with PgDriver(tmp_path, schema, None, "--batch-timeout", "300") as d:
        d.wait_for(lambda e: e["ev"] == "state" and e["up"])
        since = d.mark()
        e = d.run("batch", "slow", 3, 3)  # the server sleeps 3 s before it could commit
        assert (e["ok"], e["failed"], e["err"], e["reason"]) == (0, 4, ETIMEDOUT, "timeout"), e
        d.wait_for(lambda e: e["ev"] == "state" and not e["up"], since)
        d.wait_for(lambda e: e["ev"] == "state" and e["up"], since)
        e = d.run("batch", "after-slow", 2)
        assert (e["ok"], e["err"]) == (2, 0), e
        assert rows_of(schema, "after-slow") == (2, 1)
        assert d.stats()["connects"] == 2
    # Nothing is asserted about "slow": the server already holds the whole batch and may
    # still commit it after its sleep. That is why -ETIMEDOUT means "outcome unknown".


def test_the_synchronous_check(tmp_path, schema):
    with PgDriver(tmp_path, schema, None, "--check", "SELECT current_user") as d:
        e = d.wait_for(lambda e: e["ev"] == "check")
        assert (e["rc"], e["out"], e["err"]) == (0, "handoffd", ""), e
    with PgDriver(tmp_path, schema, "not-the-password", "--check", "SELECT 1") as d:
        e = d.wait_for(lambda e: e["ev"] == "check")
        assert e["rc"] == ECONNREFUSED and 'password authentication failed for user "handoffd"' in e["err"], e


def test_a_host_list_skips_a_refusing_host(tmp_path, schema):
    # libpq opens a new socket for the second host, often with the number of the first:
    # the connection must still come up at once, not at the connect deadline.
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))  # bound, not listening: refuses
        conninfo = (f"host=127.0.0.1,127.0.0.1 port={dead.getsockname()[1]},{schema.port}"
                    " dbname=handoffd user=handoffd")
        with PgDriver(tmp_path, schema, None, conninfo=conninfo) as d:
            e = d.wait_for(lambda e: e["ev"] == "state", timeout=5)
            assert e["up"], e
            assert d.run("batch", "hosts", 1)["ok"] == 1


def test_the_prologue_opens_every_batch_in_its_transaction_and_bare_statements_go_without(driver, schema):
    assert driver.run("prologue", "p", "INSERT INTO items(tag, n) VALUES ('prologue', 0)", ev="prologue")["err"] == 0
    try:
        e = driver.run("batch", "with-prologue", 5)
        assert (e["ok"], e["err"]) == (5, 0), e
        # One prologue row, written by the batch's own transaction.
        assert rows_of(schema, "prologue") == (1, 1)
        assert schema.psql("SELECT count(DISTINCT xid) FROM items WHERE tag IN ('prologue', 'with-prologue')") == "1"
        e = driver.run("bare", "b1", "INSERT INTO items(tag, n) VALUES ('bare', 1)", ev="done")
        assert e["err"] == 0, e
        assert rows_of(schema, "prologue") == (1, 1)  # no prologue for a bare statement
    finally:
        assert driver.run("prologue", "p", "-", ev="prologue")["err"] == 0
    assert driver.run("batch", "no-prologue", 2)["ok"] == 2
    assert rows_of(schema, "prologue") == (1, 1)


def test_a_failing_prologue_refuses_the_batch_and_its_owner_hears_first(driver, schema):
    before = driver.stats()
    assert driver.run("prologue", "p", "SELECT 1/0", ev="prologue")["err"] == 0
    try:
        since = driver.mark()
        e = driver.run("batch", "refused", 3)
        assert (e["ok"], e["failed"], e["err"], e["reason"]) == (0, 3, EPERM, "fenced"), e
        hook = driver.wait_for(lambda e: e["ev"] == "prologue_failed", since)
        assert hook["sqlstate"] == "22012" and "division by zero" in hook["msg"], hook
        assert driver.events.index(hook) < driver.events.index(e)
        assert rows_of(schema, "refused") == (0, 0)
        # Bare statements still go, and a plain failure keeps its own error and SQLSTATE.
        assert driver.run("bare", "b2", "SELECT 1", ev="done")["rows"] == [["1"]]
    finally:
        assert driver.run("prologue", "p", "-", ev="prologue")["err"] == 0
    e = driver.run("exec", "e1", "SELECT 1/0", ev="done")
    assert (e["err"], e["sqlstate"]) == (EPROTO, "22012"), e
    after = driver.stats()
    assert after["batches_fenced"] - before["batches_fenced"] == 1
    # Every batch is one round trip; committed ones count towards the commit latency.
    assert after["round_trips"] - before["round_trips"] == 3  # refused, b2, e1
    assert after["commit_us_count"] - before["commit_us_count"] == 1  # b2
    assert after["commit_us_sum"] > before["commit_us_sum"]


def test_notifications_arrive_and_listening_resumes_after_a_restart(driver, schema):
    since = driver.mark()
    assert driver.run("listen", "l1", "chan_a", ev="listen")["err"] == 0
    driver.wait_for(lambda e: e["ev"] == "notify" and e["channel"] is None, since)  # listening
    schema.psql("NOTIFY chan_a, 'hello'; NOTIFY other_channel, 'not for us'")
    e = driver.wait_for(lambda e: e["ev"] == "notify" and e["channel"] is not None, since)
    assert (e["channel"], e["payload"]) == ("chan_a", "hello"), e
    assert driver.run("listen", "l2", "bad-name;", ev="listen")["err"] == EINVAL
    since = driver.mark()
    schema.restart()
    driver.wait_for(lambda e: e["ev"] == "state" and e["up"], since)
    driver.wait_for(lambda e: e["ev"] == "notify" and e["channel"] is None, since)  # listening again
    schema.psql("NOTIFY chan_a, 'again'")
    e = driver.wait_for(lambda e: e["ev"] == "notify" and e["channel"] == "chan_a", since)
    assert e["payload"] == "again"
