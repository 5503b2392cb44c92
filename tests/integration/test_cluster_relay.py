"""Three handoffd instances on one PostgreSQL (pg_server.py), the Direct Line emulator and
the webhook hub's fake (relay_env.py): a hub may post to any instance, each conversation
is owned by one, and what the hub and the bot see is as if there were one handoffd.

Each scenario states its traffic and checks both wires: every customer message reaches
the bot exactly once and in order (the emulator's record per Direct Line conversation),
every bot reply reaches the hub (the fake keeps first deliveries apart from re-deliveries
of the same id). Waits are for log lines, the hub's and the emulator's records, with
deadlines; the short lease (cluster.lease) keeps the failover scenarios short.
"""
import concurrent.futures
import json
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, SOURCE_DIR, http_get
from pg_server import pg_server  # noqa: F401 - the fixture
from relay_env import ROUTES, Handoffd, config_text
from tests.dlemu.control import spawn
from fakehub import FakeHub

HEARTBEAT = 0.5
LEASE = 3.0
NODES = ("n1", "n2", "n3")
SCRIPTS = SOURCE_DIR / "tests/integration/scripts"
PREFIX = "peekhub"      # the hub module (hubs.webhook and a route that shows hd.conversation)


def peek_hub(hub):
    return (f'script_path = "{SCRIPTS}/?.lua",\n  hub = {{ module = "{PREFIX}", url = "{hub.url}", '
            f'secret = "{hub.secret}", token = "{hub.token}" }},')


def texts(messages):
    return [m["activity"]["text"] for m in messages]


class Cluster:
    """The emulator, the fake hub and three handoffd instances sharing PG."""

    def __init__(self, tmp_path, pg):
        self.pg = pg
        self.hub = FakeHub().start()
        self.emu_ctx = spawn(settings={})
        self.emu = self.emu_ctx.__enter__()
        self.nodes = {}
        self.paused = set()
        self.statuses = []
        for name in NODES:
            wd = tmp_path / name
            wd.mkdir()
            (wd / "routes.lua").write_text(ROUTES)
            text = config_text(self.emu, self.hub, wd, f"cluster = {{ node = \"{name}\", heartbeat = {HEARTBEAT},"
                               f" lease = {LEASE} }},", peek_hub)
            text = text.replace(f'state = "sqlite:{wd}/state.db"', f'state = "{pg.url}"')
            (wd / "config.lua").write_text(text)
            self.nodes[name] = Handoffd(BIN, wd)
        for name in NODES:
            self.start(name)

    def start(self, name):
        d = self.nodes[name].start()
        d.wait_line("cluster.registered")
        return d

    def ports(self):
        return [d.port for n, d in self.nodes.items()
                if d.proc and d.proc.poll() is None and n not in self.paused]

    def dl_conversation(self, conversation):
        return self.pg.psql(f"SELECT dl_conversation_id FROM conversations WHERE key = '{PREFIX}:{conversation}'") or None

    def owner(self, conversation):
        return self.pg.psql(f"SELECT node FROM owners WHERE key = '{PREFIX}:{conversation}'")

    def bot_texts(self, conversation):
        cid = self.dl_conversation(conversation)
        return [a.get("text") for a in self.emu.ctl.received(cid) if a.get("type") == "message"] if cid else []

    def post(self, conversation, text, event_id, start=0):
        """Posts the message to a live instance (round robin from START), as a load balancer
        would, again with the same event id while the answer is not a success."""
        deadline = time.monotonic() + 60
        i = start
        while time.monotonic() < deadline:
            ports = self.ports()
            port = ports[i % len(ports)]
            i += 1
            try:
                status, _ = self.hub.message(port, conversation, text, event_id=event_id)
            except OSError:
                status = None
            self.statuses.append(status)
            if status in (200, 202):    # 200: a delivery retried after its commit was not confirmed
                return
            time.sleep(0.05)
        raise AssertionError(f"{conversation}/{text} was never accepted: statuses {self.statuses[-5:]}\n"
                             + "\n".join(f"{n}: {l}" for n, d in self.nodes.items() for l in d.lines[-25:]))

    def owned_by(self, node):
        return int(self.pg.psql(f"SELECT count(*) FROM owners WHERE node = '{node}'"))

    def health(self, name):
        return http_get(self.nodes[name].port, "/healthz")[1]

    def close(self):
        codes = {name: d.stop() for name, d in self.nodes.items() if d.proc}
        self.emu_ctx.__exit__(None, None, None)
        self.hub.stop()
        return codes


@pytest.fixture
def cluster(tmp_path, pg_server):  # noqa: F811
    pg_server.psql("DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION handoffd")
    c = Cluster(tmp_path, pg_server)
    yield c
    codes = c.close()
    assert set(codes.values()) <= {0, -signal.SIGKILL}, f"every instance not killed left cleanly: {codes}"


def converse(cluster, conversations, per, on_sent=None, first=0):
    """Each conversation sends PER messages one after the other (each waits for its 202),
    the conversations at once; message i of conversation j goes to instance (i + j) mod 3
    (the instance that receives a conversation's first message claims it)."""
    def one(conv):
        j = conversations.index(conv)
        for i in range(first, per):
            cluster.post(conv, f"{conv} says {i}", f"{conv}-e{i}", start=i + j)
            if on_sent:
                on_sent(conv, i)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(conversations)) as pool:
        list(pool.map(one, conversations))


def replies_in(received, conversation):
    return [b for p, b in received if p == "/messages" and b["conversation"] == conversation and
            b["activity"]["text"].startswith("You said")]


def explain(cluster, conversation):
    """What the bot got in CONVERSATION, and every instance's log lines about it or warnings."""
    cid = cluster.dl_conversation(conversation)
    got = [(a.get("text"), a.get("timestamp"), a.get("channelData", {}).get("clientActivityID"))
           for a in (cluster.emu.ctl.received(cid) if cid else []) if a.get("type") == "message"]
    print(f"{conversation}: owner {cluster.owner(conversation)}; the bot got (text, at, clientActivityID) {got}")
    hub = [(b["id"], b["activity"]["text"]) for b in cluster.hub.messages(conversation)]
    print(f"{conversation}: the hub got (id, text) {hub}")
    for n, d in cluster.nodes.items():
        print("\n".join(f"{n}{run}: {l}" for run, lines in (("-before", d.previous_lines), ("", d.lines))
                         for l in lines if f":{conversation} " in l or f":{conversation}\"" in l
                         or " warn " in l or " error " in l))


def expect_exactly_once(cluster, conversations, per, timeout=60):
    want = {c: [f"{c} says {i}" for i in range(per)] for c in conversations}
    try:
        cluster.hub.wait(lambda r: all(len(replies_in(r, c)) >= per for c in conversations),
                         timeout, "every reply at the hub")
    except AssertionError:
        received = cluster.hub.messages()
        short = [c for c in conversations if len(replies_in([("/messages", b) for b in received], c)) < per]
        for c in short:
            explain(cluster, c)
        keys = ",".join(f"'{PREFIX}:{c}'" for c in short)
        for sql in ("SELECT node, epoch, heartbeat_at, draining FROM nodes",
                    f"SELECT key, node, epoch, claimed_at FROM owners WHERE key IN ({keys})",
                    f"SELECT key, seq, op, done, origin FROM inbound WHERE key IN ({keys}) AND NOT done",
                    f"SELECT key, id, queue, attempts, next_at FROM outbox WHERE key IN ({keys})",
                    "SELECT pid, state, wait_event_type, wait_event, left(query, 80) FROM pg_stat_activity"
                    " WHERE datname IS NOT NULL"):
            print(sql, "\n", cluster.pg.psql(sql))
        raise AssertionError(f"replies missing after {timeout} s in {short}") from None
    for c in conversations:
        got = cluster.bot_texts(c)
        if got != want[c]:
            explain(cluster, c)
        assert got == want[c], f"{c}: the bot got each message once, in order"
        replies = [t for t in texts(cluster.hub.messages(c)) if t.startswith("You said")]
        if replies != [f"You said: {t}" for t in want[c]]:
            explain(cluster, c)
        assert replies == [f"You said: {t}" for t in want[c]], f"{c}: every reply reached the hub once, in order"


def test_webhooks_spread_over_three_instances(cluster):
    convs = [f"rr-{i}" for i in range(20)]
    converse(cluster, convs, 10)
    expect_exactly_once(cluster, convs, 10)
    owners = {cluster.owner(c) for c in convs}
    assert owners == set(NODES), f"conversations are spread: {owners}"
    health = {n: cluster.health(n)["cluster"] for n in NODES}
    assert {h["node"] for h in health.values()} == set(NODES)
    assert all(h["peers"] == 3 and h["epoch"] > 0 for h in health.values())
    assert sum(h["owned"] for h in health.values()) == len(convs), health
    assert all(h["owned"] == cluster.owned_by(n) for n, h in health.items()), health
    # hd.conversation answers on every instance: a conversation held elsewhere is read
    # from the database
    for c in convs[:3]:
        for n in NODES:
            status, body = http_get(cluster.nodes[n].port, f"/peek?id={c}")
            assert status == 200 and body == {"key": f"{PREFIX}:{c}", "id": c, "state": "bot",
                                              "user": {"id": "u-7", "name": "Dana"}}, (n, c, body)
    assert http_get(cluster.nodes["n1"].port, "/peek?id=nobody")[0] == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.nodes['n1'].port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    for name in ("handoffd_cluster_owned", "handoffd_cluster_peers 3", "handoffd_cluster_claims_total",
                 "handoffd_cluster_takeovers_total", "handoffd_cluster_fenced_total",
                 "handoffd_db_round_trips_total", "handoffd_db_commit_seconds_avg"):
        assert f"\n{name}" in metrics, name
    for d in cluster.nodes.values():
        assert d.errors() == []


def test_kill_9_of_an_owner_mid_traffic(cluster):
    convs = [f"k-{i}" for i in range(100)]
    per = 20
    killed = {}

    def on_sent(conv, i):
        if conv == convs[0] and i == per // 2 and not killed:
            victim = cluster.owner(conv)
            owned = cluster.pg.psql(f"SELECT key FROM owners WHERE node = '{victim}'").split()
            cluster.nodes[victim].proc.send_signal(signal.SIGKILL)
            cluster.nodes[victim].proc.wait()
            killed[victim] = (owned, time.time())
    converse(cluster, convs, per, on_sent)
    (victim, (owned, killed_at)), = killed.items()
    expect_exactly_once(cluster, convs, per, timeout=90)
    # when the last of them was claimed: the database stamps every claim (same clock)
    keys = ",".join(f"'{k}'" for k in owned)
    last = float(cluster.pg.psql(f"SELECT extract(epoch FROM max(claimed_at)) FROM owners WHERE key IN ({keys})"
                                 f" AND node <> '{victim}'"))
    took = {"after": last - killed_at}
    assert cluster.owned_by(victim) == 0, "the dead owner's conversations were all taken over"
    assert owned and took["after"] <= LEASE + 5, f"{len(owned)} conversations taken over after {took}"
    print(f"kill -9: {len(owned)} conversations of {victim} owned by the others {took['after']:.2f} s after")
    survivors = set(NODES) - {victim}
    assert {cluster.owner(c) for c in convs} <= survivors
    # Orphans go to whoever claims them first: a sweep, which evens out the survivors'
    # totals (not the orphans: one that already owned more may rightly take none), or the
    # instance an event reached. So the split is printed, not asserted; test_cluster.py's
    # test_kill_9_of_an_owner_its_keys_go_to_the_others_evenly_after_the_lease asserts the
    # even split, without traffic.
    shares = {n: sum(cluster.owner(k.split(":", 1)[1]) == n for k in owned) for n in survivors}
    print(f"kill -9: the {len(owned)} conversations of {victim} split {shares}")
    for n in survivors:
        assert cluster.nodes[n].errors() == []


def test_a_stalled_owner_is_fenced(cluster):
    convs = [f"s-{i}" for i in range(12)]
    converse(cluster, convs, 3)
    victim = cluster.owner(convs[0])
    before = cluster.nodes[victim].lines[:]
    cluster.nodes[victim].proc.send_signal(signal.SIGSTOP)
    cluster.paused.add(victim)
    try:
        # The others carry on. The stalled owner's conversations wait for its lease: a reply
        # in one of them comes only once another instance has taken it over, so when every
        # reply is in, the stalled owner owns nothing (every conversation got a message).
        converse(cluster, convs, 6, first=3)
        expect_exactly_once(cluster, convs, 6, timeout=60)
        assert cluster.owned_by(victim) == 0, "the stalled owner's conversations were taken over"
    finally:
        cluster.nodes[victim].proc.send_signal(signal.SIGCONT)
        cluster.paused.discard(victim)
    cluster.nodes[victim].wait_line("cluster.lost")
    # once back, it is fenced: it registers again and takes part as a new member
    cluster.nodes[victim].wait_line("cluster.dropped")
    for c in convs:
        for i in range(6, 9):
            cluster.post(c, f"{c} says {i}", f"{c}-e{i}", start=i)
    expect_exactly_once(cluster, convs, 9)
    assert len(before) < len(cluster.nodes[victim].lines)


def test_database_restart_mid_traffic(cluster):
    convs = [f"d-{i}" for i in range(10)]
    per = 8
    restarted = threading.Event()

    def on_sent(conv, i):
        if conv == convs[0] and i == per // 2 and not restarted.is_set():
            restarted.set()
            cluster.pg.stop()
            try:
                status, headers = raw_post(cluster, "d-down", "while the database is down")
                assert status == 503 and int(headers["Retry-After"]) > 0
            finally:
                cluster.pg.start()
    converse(cluster, convs, per, on_sent)
    expect_exactly_once(cluster, convs, per, timeout=90)


def raw_post(cluster, conversation, text):
    """One signed webhook POST to the first instance: (status, headers)."""
    body = json.dumps({"id": f"raw-{time.monotonic()}", "type": "message", "conversation": conversation,
                       "user": {"id": "u-1", "name": "Al"}, "text": text}).encode()
    ts = str(int(time.time()))
    from fakehub import sign
    req = urllib.request.Request(f"http://127.0.0.1:{cluster.ports()[0]}/hubs/webhook/events", data=body,
                                 method="POST", headers={
                                     "Content-Type": "application/json", "X-Handoffd-Timestamp": ts,
                                     "X-Handoffd-Delivery": "raw", "X-Handoffd-Signature": sign(cluster.hub.secret, ts, body)})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_rolling_restart(cluster):
    convs = [f"r-{i}" for i in range(15)]
    per = 12
    codes, left, last_words = [], [], []

    def restart_all():
        for name in NODES:
            codes.append(cluster.nodes[name].stop())
            left.append(any("cluster.left released=yes" in l for l in cluster.nodes[name].lines))
            last_words.extend(f"{name}: {l}" for l in cluster.nodes[name].lines[-80:])
            cluster.start(name)
    t = threading.Thread(target=restart_all)

    def on_sent(conv, i):
        if conv == convs[0] and i == 2:
            t.start()
    converse(cluster, convs, per, on_sent)
    t.join(120)
    assert codes == [0, 0, 0] and left == [True, True, True], \
        "each instance released its conversations and left; their last lines:\n" + "\n".join(last_words)
    expect_exactly_once(cluster, convs, per, timeout=90)


def test_a_handoff_in_flight_completes_once_after_kill_9(cluster):
    hub = cluster.hub
    cluster.post("h-1", "hello", "h-1-e0")
    hub.wait_messages("h-1", 2)
    hub.handoff_status = 503            # the desk is down: the escalation stays under way
    cluster.post("h-1", "I want a human", "h-1-e1", start=1)
    victim = cluster.owner("h-1")
    cluster.nodes[victim].wait_line(f"relay.to_hub_retry conv={PREFIX}:h-1")    # the escalation failed once
    cluster.nodes[victim].proc.send_signal(signal.SIGKILL)
    cluster.nodes[victim].proc.wait()
    hub.handoff_status = None           # back: the new owner's retry gets through
    handoff = hub.wait_handoff("h-1", timeout=60)
    assert cluster.owner("h-1") != victim
    assert len(hub.handoffs("h-1")) == 1, "one handoff reached the desk"
    assert all(d["handoff_id"] == handoff["handoff_id"] for p, d in hub.redelivered if p == "/handoffs"), \
        "a re-delivery carries the handoff's original id"
    assert cluster.bot_texts("h-1") == ["hello", "I want a human"], "each message reached the bot once"
