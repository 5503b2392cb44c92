"""runtime/relay/cluster.c against a real PostgreSQL server (pg_server.py): three members,
each a tests/tools/cluster_driver process with its own connection, as three handoffd
instances would be.

Each scenario states what the cluster must do: a key claimed by everyone at once has
exactly one owner; after kill -9 of an owner the two others take all its keys, evenly,
after its lease passed by the database's clock and within lease + 5 s; an owner stalled
beyond its lease (SIGSTOP) does nothing when it resumes before it learns it was fenced,
then registers again with a larger epoch, and its transaction left open (stopped halfway
through a batch) does not keep it alive; a drained member's keys move at once, not
after the lease; a wake-up travels only with a committed batch, also after the database
restarted. Waiting is for the drivers' events and the server's own view, with deadlines.
"""
import os
import signal
import subprocess
import threading
import time

import pytest

from jsonl_proc import DEADLINE, JsonLinesProcess
from pg_server import pg_server  # noqa: F401 - the fixture

TOOLS = os.environ.get("HANDOFFD_TOOLS_DIR", "build/tests/tools")
DRIVER = os.path.join(TOOLS, "cluster_driver")
HEARTBEAT = 0.5
SHORT_LEASE = 4.0   # the failover scenarios wait for it
LONG_LEASE = 30.0   # scenarios where a takeover must NOT come from the lease
EPROTO, EPERM, ESHUTDOWN = -71, -1, -108


class Member(JsonLinesProcess):
    """One cluster_driver (node NAME), registered when the constructor returns."""

    def __init__(self, tmp_path, server, name, lease, schema=False, cond=None):
        env = dict(os.environ, HANDOFFD_TEST_PG_PASSWORD=server.password)
        super().__init__([DRIVER, "--conninfo", server.conninfo, "--password-env", "HANDOFFD_TEST_PG_PASSWORD",
                          "--node", name, "--heartbeat", str(HEARTBEAT), "--lease", str(lease),
                          "--schema", "1" if schema else "0"], tmp_path / f"{name}.log", env, cond, name)
        self.killed = False
        self.epoch = self.wait_for(lambda e: e["ev"] == "registered")["epoch"]

    def claim(self, *keys):
        """Claims KEYS; returns {key: claim event}."""
        since = self.mark()
        self.cmd("claim", *keys)
        for k in keys:
            self.wait_for(lambda e: e["ev"] == "claim" and e["key"] == k, since)
        return {e["key"]: e for e in self.since(since, "claim")}

    def stats(self):
        since = self.mark()
        self.cmd("stats")
        return self.wait_for(lambda e: e["ev"] == "stats", since)

    def claimed_keys(self, since=0):
        return [k for e in self.since(since, "claimed") for k in e["keys"]]

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        self.killed = True

    def close(self):
        if self.killed:
            self.log_file.close()
            return
        self.proc.send_signal(signal.SIGCONT)  # harmless unless a test left it stopped
        super().close()


@pytest.fixture
def cluster(tmp_path, pg_server):  # noqa: F811
    """start(lease) -> three members a, b, c on an empty schema; all closed at the end."""
    members = []
    cond = threading.Condition()

    def start(lease):
        pg_server.psql("DROP TABLE IF EXISTS nodes, owners; DROP SEQUENCE IF EXISTS handoffd_epoch;"
                       " DROP FUNCTION IF EXISTS hd_fence, hd_cut")
        for i, name in enumerate(("a", "b", "c")):
            members.append(Member(tmp_path, pg_server, name, lease, schema=i == 0, cond=cond))
        return members

    yield start
    for m in members:
        m.close()


def wait_all_taken(members, keys, since, timeout):
    """Until MEMBERS' claimed events (from SINCE, one index per member) hold every key."""
    end = time.monotonic() + timeout
    cond = members[0].cond
    assert all(m.cond is cond for m in members)
    with cond:
        while True:
            got = {m.name: m.claimed_keys(s) for m, s in zip(members, since)}
            taken = [k for ks in got.values() for k in ks]
            if sorted(taken) == sorted(keys):
                return got
            assert len(taken) == len(set(taken)), f"a key taken twice: {got}"
            left = end - time.monotonic()
            assert left > 0, f"not all taken in {timeout} s: {got}"
            cond.wait(left)


def owners(server, keys):
    rows = server.psql("SELECT key, node FROM owners WHERE key IN (%s)" % ",".join(f"'{k}'" for k in keys))
    return dict(r.split("|") for r in rows.splitlines())


def test_a_key_claimed_by_all_three_has_exactly_one_owner(cluster, pg_server):  # noqa: F811
    members = cluster(LONG_LEASE)
    keys = [f"x{i}" for i in range(20)]
    marks = [m.mark() for m in members]
    for m in members:  # all three at once: the claims race at the server
        m.cmd("claim", *keys)
    results = {}
    for m, since in zip(members, marks):
        for k in keys:
            results.setdefault(k, []).append(
                m.wait_for(lambda e: e["ev"] == "claim" and e["key"] == k, since) | {"by": m.name})
    in_db = owners(pg_server, keys)
    for k, outcomes in results.items():
        assert all(o["err"] == 0 for o in outcomes), outcomes
        winners = [o["by"] for o in outcomes if o["mine"]]
        assert len(winners) == 1, outcomes
        assert all(o["owner"] == winners[0] for o in outcomes), outcomes
        assert in_db[k] == winners[0]
    # Claiming again what one owns says "mine" and counts nothing new.
    a = members[0]
    a_keys = [k for k in keys if in_db[k] == "a"]
    before = a.stats()
    if a_keys:
        assert a.claim(a_keys[0])[a_keys[0]]["mine"]
    after = a.stats()
    assert after["claims"] == before["claims"] == len(a_keys)
    assert after["owned"] == len(a_keys)
    # A key given up (its conversation ended) is free for the next claimer.
    b = members[1]
    if a_keys:
        since = a.mark()
        a.cmd("release", a_keys[0])
        assert a.wait_for(lambda e: e["ev"] == "released", since)["err"] == 0
        assert a.stats()["owned"] == len(a_keys) - 1
        assert b.claim(a_keys[0])[a_keys[0]]["mine"]
        assert owners(pg_server, [a_keys[0]]) == {a_keys[0]: "b"}


def test_kill_9_of_an_owner_its_keys_go_to_the_others_evenly_after_the_lease(cluster, pg_server):  # noqa: F811
    a, b, c = cluster(SHORT_LEASE)
    keys = [f"k{i}" for i in range(21)]
    assert all(e["mine"] for e in c.claim(*keys).values())
    marks = [a.mark(), b.mark()]
    c.kill()
    t_kill = time.monotonic()
    last_beat = pg_server.psql("SELECT heartbeat_at FROM nodes WHERE node = 'c'")
    assert last_beat, "c's row went before its lease passed"
    got = wait_all_taken([a, b], keys, marks, SHORT_LEASE + 5)
    elapsed = time.monotonic() - t_kill
    assert abs(len(got["a"]) - len(got["b"])) <= 1, got
    assert set(owners(pg_server, keys).values()) <= {"a", "b"}
    # None taken before c's lease passed, by the database's clock.
    early = pg_server.psql(f"SELECT count(*) FROM owners WHERE claimed_at < '{last_beat}'::timestamptz"
                           f" + make_interval(secs => {SHORT_LEASE})")
    assert early == "0"
    assert pg_server.psql("SELECT count(*) FROM nodes WHERE node = 'c'") == "0"
    sa, sb = a.stats(), b.stats()
    assert sa["takeovers"] + sb["takeovers"] == len(keys)
    assert sa["nodes_expired"] + sb["nodes_expired"] == 1
    assert sa["peers"] == sb["peers"] == 2
    print(f"failover: {elapsed:.2f} s from kill -9 to the last key taken (lease {SHORT_LEASE} s)")


def test_a_stalled_owner_is_fenced_when_it_resumes_and_registers_again(cluster, pg_server):  # noqa: F811
    a, b, c = cluster(SHORT_LEASE)
    keys = [f"s{i}" for i in range(10)]
    c.claim(*keys)
    marks = [a.mark(), b.mark()]
    c.proc.send_signal(signal.SIGSTOP)
    try:
        wait_all_taken([a, b], keys, marks, SHORT_LEASE + 5)
        since = c.mark()
        c.cmd("write", "w1", keys[0])  # read by c first thing when it runs again
    finally:
        c.proc.send_signal(signal.SIGCONT)
    write = c.wait_for(lambda e: e["ev"] == "write", since)
    lost = c.wait_for(lambda e: e["ev"] == "lost", since)
    again = c.wait_for(lambda e: e["ev"] == "registered", since)
    assert write["lease"] is False, write  # nothing was sent before it knew
    with c.cond:
        order = [e["ev"] for e in c.events[since:]]
    assert order.index("write") < order.index("lost") < order.index("registered"), order
    assert (lost["epoch"], lost["sqlstate"]) == (c.epoch, "HD001"), lost
    assert again["epoch"] > c.epoch
    assert set(owners(pg_server, keys).values()) <= {"a", "b"}
    stats = c.stats()
    assert stats["lost"] == 1 and stats["fenced"] >= 1 and stats["registered"], stats
    # Registered again, it writes again: fenced by its new epoch, which holds.
    c.wait_for(lambda e: e["ev"] == "registered", since)
    since = c.mark()
    c.cmd("write", "w2", keys[0])
    w2 = c.wait_for(lambda e: e["ev"] == "write" and e["tag"] == "w2", since)
    assert (w2["lease"], w2["err"]) == (True, 0), w2


def test_a_member_stopped_inside_a_transaction_is_still_taken_over(cluster, pg_server):  # noqa: F811
    """A member stopped halfway through sending a batch leaves its transaction open: its
    backend waits for the rest of the pipeline, not idle, holding the member's row against
    the others' DELETE. Here that transaction is a session of the same role, fenced with
    the member's epoch and kept busy; the others end it once the lease passed (hd_cut) and
    take the member's keys."""
    a, b, c = cluster(SHORT_LEASE)
    keys = [f"m{i}" for i in range(6)]
    c.claim(*keys)
    # One transaction over three commands: psql prints "fenced" once the fence holds.
    held = subprocess.Popen([f"{pg_server.bindir}/psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                             pg_server.url, "-c", "BEGIN", "-c", f"SELECT 'fenced' FROM hd_fence('c', {c.epoch})",
                             "-c", "SELECT pg_sleep(600)"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert held.stdout.readline() == "fenced\n"
        assert pg_server.psql("SELECT count(*) FROM pg_stat_activity"
                              f" WHERE application_name = 'handoffd epoch {c.epoch}'") == "1"
        marks = [a.mark(), b.mark()]
        c.proc.send_signal(signal.SIGSTOP)
        try:
            wait_all_taken([a, b], keys, marks, SHORT_LEASE + 5)
        finally:
            c.proc.send_signal(signal.SIGCONT)
        assert held.wait(timeout=DEADLINE) != 0
        assert "terminating connection" in held.stdout.read()
    finally:
        held.kill()
        held.wait()


def test_a_restart_under_the_same_name_frees_the_old_epoch_s_keys_at_once(cluster, pg_server, tmp_path):  # noqa: F811
    a, b, c = cluster(LONG_LEASE)
    keys = [f"r{i}" for i in range(12)]
    c.claim(*keys)
    c.kill()
    marks = [a.mark(), b.mark()]
    c2 = Member(tmp_path, pg_server, "c", LONG_LEASE, cond=a.cond)  # same cluster.node, new process
    try:
        assert c2.epoch > c.epoch
        got = wait_all_taken([a, b, c2], keys, marks + [0], 10)  # the lease is 30 s: not the lease
        assert max(map(len, got.values())) - min(map(len, got.values())) <= 1, got
        rows = pg_server.psql("SELECT DISTINCT node || ':' || epoch FROM owners").splitlines()
        assert f"c:{c.epoch}" not in rows, rows
    finally:
        c2.close()


def test_a_drained_member_s_keys_move_at_once(cluster, pg_server):  # noqa: F811
    a, b, c = cluster(LONG_LEASE)
    keys = [f"d{i}" for i in range(10)]
    c.claim(*keys)
    since = c.mark()
    c.cmd("drain-begin")  # finishing in-flight work: no new claims, writes still go
    c.cmd("claim", "during-drain")
    assert "shutting down" in c.wait_for(lambda e: e["ev"] == "error", since)["msg"]
    c.cmd("write", "dw", keys[0])
    assert c.wait_for(lambda e: e["ev"] == "write", since)["err"] == 0
    assert pg_server.psql("SELECT draining FROM nodes WHERE node = 'c'") == "t"
    marks = [a.mark(), b.mark()]
    since = c.mark()
    c.cmd("drain")
    assert c.wait_for(lambda e: e["ev"] == "drained", since)["err"] == 0
    got = wait_all_taken([a, b], keys, marks, 10)  # the lease is 30 s: this is not the lease
    assert abs(len(got["a"]) - len(got["b"])) <= 1, got
    assert pg_server.psql("SELECT count(*) FROM nodes WHERE node = 'c'") == "0"
    stats = c.stats()
    assert (stats["owned"], stats["registered"], stats["lease_valid"]) == (0, False, False), stats
    # Gone: a write of the old epoch can no longer commit.
    since = c.mark()
    c.cmd("claim", "after-drain")
    assert "shutting down" in c.wait_for(lambda e: e["ev"] == "error", since)["msg"]


def test_a_wake_up_travels_with_its_committed_batch_and_after_a_database_restart(cluster, pg_server):  # noqa: F811
    a, b, _ = cluster(LONG_LEASE)
    assert b.claim("w1")["w1"]["mine"]
    since_b = b.mark()
    since = a.mark()
    a.cmd("notify", "n1", "w1", "bad")  # the batch fails: the NOTIFY must not go out
    assert a.wait_for(lambda e: e["ev"] == "notified" and e["tag"] == "n1", since)["err"] == EPROTO
    a.cmd("notify", "n2", "w2")
    assert a.wait_for(lambda e: e["ev"] == "notified" and e["tag"] == "n2", since)["err"] == 0
    b.wait_for(lambda e: e["ev"] == "woken" and e["key"] == "w2", since_b)
    # Notifications of one session arrive in commit order: w2 without w1 means w1 never went.
    assert [e["key"] for e in b.since(since_b, "woken")] == ["w2"]

    marks = a.mark(), b.mark()
    pg_server.restart()
    a.wait_for(lambda e: e["ev"] == "woken" and e["key"] is None, marks[0])  # listening again
    b.wait_for(lambda e: e["ev"] == "woken" and e["key"] is None, marks[1])
    since = a.mark()
    a.cmd("notify", "n3", "w1")
    assert a.wait_for(lambda e: e["ev"] == "notified" and e["tag"] == "n3", since)["err"] == 0
    b.wait_for(lambda e: e["ev"] == "woken" and e["key"] == "w1", marks[1])
    # A short outage within the lease costs nobody their conversations.
    assert a.since(marks[0], "lost") == [] and b.since(marks[1], "lost") == []
    assert b.claim("w1")["w1"]["mine"]
