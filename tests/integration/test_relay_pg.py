"""The relay with its state in PostgreSQL (state = "postgresql://..."), against a real
server (pg_server.py): the main flows of test_relay.py run unchanged on it, then what
only a database server brings: it stops mid-traffic (webhooks answer 503 with
Retry-After, nothing is lost, everything is delivered once it is back), and
`handoffd -t` tells a reachable database from an unreachable one and a newer schema.

Each test has a database of its own on the module's server."""
import itertools
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

import test_relay
from conftest import BIN
from fakehub import sign
from pg_server import pg_server  # noqa: F401 - the fixture
from relay_env import Environment, close_cleanly

_names = itertools.count()


@pytest.fixture
def env(tmp_path, pg_server):  # noqa: F811
    e = Environment(BIN, tmp_path, pg=(pg_server, pg_server.create_db(f"relay{next(_names)}")))
    e.daemon.wait_line("store.opened backend=postgresql")
    yield e
    close_cleanly(e)


def test_complete_flow(env):
    test_relay.test_complete_flow(env)


def test_handoff_accepted_at_once_and_closed_after(env):
    test_relay.test_handoff_accepted_at_once_and_closed_after(env)


def test_duplicate_events_have_one_effect(env):
    test_relay.test_signatures_and_malformed_events(env)


def test_parallel_conversations_keep_their_order(env):
    test_relay.test_parallel_conversations_keep_their_order(env)


def test_kill_and_restart_mid_traffic(env):
    test_relay.test_kill_and_restart_mid_traffic(env)


def test_kill_with_send_in_flight_and_slow_replay(env):
    test_relay.test_kill_with_send_in_flight_and_slow_replay(env)


def texts(messages):
    return [m["activity"]["text"] for m in messages]


def wait_count(daemon, needle, n, timeout=30):
    """Waits until N of handoffd's log lines hold NEEDLE."""
    def count():
        return sum(needle in line for line in daemon.lines)
    with daemon.cond:
        assert daemon.cond.wait_for(lambda: count() >= n or daemon.proc.poll() is not None, timeout) \
            and count() >= n, f"fewer than {n} lines with {needle!r}:\n" + "\n".join(daemon.lines[-30:])


def post_event(hub, port, event):
    """The hub's POST of EVENT: (status, headers, body), headers included (Retry-After)."""
    body = json.dumps(event).encode()
    ts = str(int(time.time()))
    req = urllib.request.Request(f"http://127.0.0.1:{port}/hubs/webhook/events", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "X-Handoffd-Timestamp": ts,
                                          "X-Handoffd-Signature": sign(hub.secret, ts, body)})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


def message_event(conversation, text):
    return {"id": f"ev-{conversation}-{text}", "type": "message", "conversation": conversation,
            "user": {"id": "u-7", "name": "Dana"}, "text": text, "locale": "en-US"}


def test_database_stopped_mid_traffic(env, pg_server):  # noqa: F811
    hub, port = env.hub, env.port
    sent = [f"m{j}" for j in range(5)]
    for t in sent:
        assert hub.message(port, "d-1", t)[0] == 202
    hub.wait_messages("d-1", 1 + len(sent))
    cid = env.dl_conversation("d-1")

    pg_server.stop()
    try:
        env.daemon.wait_line("store.db_down")
        # What the bot says meanwhile is kept (Direct Line would not say it again), and goes
        # to the hub once it is written.
        env.emu.ctl.bot(cid, texts=["said while the database was down"])
        # A webhook cannot be made durable: 503 and when to come back.
        refused = [message_event("d-1", f"m{j}") for j in range(5, 10)]
        for ev in refused:
            status, headers, body = post_event(hub, port, ev)
            assert status == 503, (status, body)
            assert int(headers["Retry-After"]) > 0
    finally:
        pg_server.start()  # the next tests of the module use the server too
    wait_count(env.daemon, "store.db_up", 2)  # the start, and now
    for ev in refused:  # the hub delivers again, as told, until taken
        deadline = time.monotonic() + 30
        while (status := post_event(hub, port, ev)[0]) == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 202
        sent.append(ev["text"])
    got = texts(hub.wait_messages("d-1", 2 + len(sent), timeout=60))
    assert [t for t in got if t.startswith("You said")] == [f"You said: {t}" for t in sent], "every reply once, in order"
    assert got.count("said while the database was down") == 1
    assert [a.get("text") for a in env.bot_received("d-1") if a.get("type") == "message"] == sent

    # What was written while the database was down reached it: after kill -9 nothing goes
    # to the bot again and the conversation carries on.
    env.daemon.kill()
    env.daemon.start()
    assert hub.message(env.port, "d-1", "after the restart")[0] == 202
    hub.wait(lambda _: "You said: after the restart" in texts(hub.messages("d-1")))
    assert [a.get("text") for a in env.bot_received("d-1") if a.get("type") == "message"] == \
        sent + ["after the restart"], "every message reached the bot once"


def check_config(tmp_path, state):
    """`handoffd -t` on a config whose state is STATE: (exit code, stdout + stderr)."""
    (tmp_path / "config.lua").write_text(f'return {{ listen = "127.0.0.1:0", state = "{state}",\n'
                                         f'  directline = {{ base = "http://127.0.0.1:9", secret = "s" }} }}\n')
    r = subprocess.run([BIN, "-t", "-c", "config.lua"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_check_config_reaches_the_database(tmp_path, pg_server):  # noqa: F811
    db = pg_server.create_db("checked")
    # A new database is fine: handoffd makes the schema when it starts.
    assert check_config(tmp_path, pg_server.url_for(db)) == (0, "configuration ok\n")
    # A wrong password is said as such.
    wrong = pg_server.url_for(db).replace(pg_server.password, "not-the-password")
    code, out = check_config(tmp_path, wrong)
    assert code == 1 and "database unreachable:" in out and "password authentication failed" in out, out
    # A schema written by a newer handoffd is refused.
    pg_server.psql("SET ROLE handoffd; CREATE TABLE handoffd_schema (version integer NOT NULL);"
                   " INSERT INTO handoffd_schema VALUES (99)",
                   db=db)
    code, out = check_config(tmp_path, pg_server.url_for(db))
    assert code == 1 and "schema version 99, expected 2" in out, out


def test_kill_during_concurrent_traffic_is_exactly_once(env):
    """kill -9 while many conversations talk at once: the hub delivers each event again
    (same id) until it is answered 2xx, as hubs do. Every message reaches the bot once,
    in order: nothing leaves for the bot before its write is committed, and the event id
    commits with the message, so a retry of a message that made it is a duplicate."""
    hub = env.hub
    n_conv, n_msg = 20, 15
    accepted = []
    lock = threading.Lock()

    def talk(i):
        for j in range(n_msg):
            ev = message_event(f"x-{i}", f"m{j}")
            deadline = time.monotonic() + 60
            while True:
                try:
                    status = post_event(hub, env.port, ev)[0]
                except OSError:  # killed under us, or not listening yet
                    status = None
                if status in (200, 202):
                    break
                assert time.monotonic() < deadline, f"x-{i} m{j} never taken (last status {status})"
                time.sleep(0.05)  # the hub's retry interval
            with lock:
                accepted.append((i, j))

    threads = [threading.Thread(target=talk, args=(i,)) for i in range(n_conv)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(accepted) < n_conv * n_msg // 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    env.daemon.kill()  # mid-traffic: batches in flight, POSTs to the bot in flight
    env.daemon.start()
    for t in threads:
        t.join()
    assert len(accepted) == n_conv * n_msg
    for i in range(n_conv):
        want = [f"m{j}" for j in range(n_msg)]
        env.emu.ctl.wait_count(env.dl_conversation(f"x-{i}"), "received", n_msg, timeout=60)
        got = [a.get("text") for a in env.bot_received(f"x-{i}") if a.get("type") == "message"]
        assert got == want, f"x-{i}: every message once, in order"
