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
import os
import signal
import time

import pytest

from conftest import BIN
from pg_server import pg_server  # noqa: F401 - the fixture
from relay_env import ROUTES, Handoffd, webhook_hub, config_text
from tests.dlemu.control import spawn
from fakehub import FakeHub

HEARTBEAT = 0.5
LEASE = 3.0
NODES = ("n1", "n2", "n3")


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
        for name in NODES:
            wd = tmp_path / name
            wd.mkdir()
            (wd / "routes.lua").write_text(ROUTES)
            text = config_text(self.emu, self.hub, wd, f"cluster = {{ node = \"{name}\", heartbeat = {HEARTBEAT},"
                               f" lease = {LEASE} }},", webhook_hub)
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
        return [d.port for d in self.nodes.values() if d.proc and d.proc.poll() is None]

    def dl_conversation(self, conversation):
        return self.pg.psql(f"SELECT dl_conversation_id FROM conversations WHERE key = 'webhook:{conversation}'") or None

    def owner(self, conversation):
        return self.pg.psql(f"SELECT node FROM owners WHERE key = 'webhook:{conversation}'")

    def bot_texts(self, conversation):
        cid = self.dl_conversation(conversation)
        return [a.get("text") for a in self.emu.ctl.received(cid) if a.get("type") == "message"] if cid else []

    def post(self, conversation, text, event_id, start=0):
        """Posts the message to a live instance (round robin from START), as a load balancer
        would, again with the same event id while the answer is not 202."""
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
            if status == 202:
                return
            time.sleep(0.05)
        raise AssertionError(f"{conversation}/{text} was never accepted")

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
    c.close()


def converse(cluster, conversations, per, on_sent=None):
    """Each conversation sends PER messages one after the other (each waits for its 202),
    the conversations at once; message i of conversation j goes to instance (i + j) mod 3
    (the instance that receives a conversation's first message claims it)."""
    def one(conv):
        j = conversations.index(conv)
        for i in range(per):
            cluster.post(conv, f"{conv} says {i}", f"{conv}-e{i}", start=i + j)
            if on_sent:
                on_sent(conv, i)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(conversations)) as pool:
        list(pool.map(one, conversations))


def expect_exactly_once(cluster, conversations, per, timeout=60):
    want = {c: [f"{c} says {i}" for i in range(per)] for c in conversations}
    cluster.hub.wait(lambda r: all(
        len([b for p, b in r if p == "/messages" and b["conversation"] == c and
             b["activity"]["text"].startswith("You said")]) >= per for c in conversations),
        timeout, "every reply at the hub")
    for c in conversations:
        assert cluster.bot_texts(c) == want[c], f"{c}: the bot got each message once, in order"
        replies = [t for t in texts(cluster.hub.messages(c)) if t.startswith("You said")]
        assert replies == [f"You said: {t}" for t in want[c]], f"{c}: every reply reached the hub once, in order"


def test_webhooks_spread_over_three_instances(cluster):
    convs = [f"rr-{i}" for i in range(20)]
    converse(cluster, convs, 10)
    expect_exactly_once(cluster, convs, 10)
    owners = {cluster.owner(c) for c in convs}
    assert owners == set(NODES), f"conversations are spread: {owners}"
    for d in cluster.nodes.values():
        assert d.errors() == []


def test_kill_9_of_an_owner_mid_traffic(cluster):
    convs = [f"k-{i}" for i in range(30)]
    per = 10
    killed = {}

    def on_sent(conv, i):
        if conv == convs[0] and i == per // 2 and not killed:
            victim = cluster.owner(conv)
            killed[victim] = time.monotonic()
            cluster.nodes[victim].proc.send_signal(signal.SIGKILL)
            cluster.nodes[victim].proc.wait()
    converse(cluster, convs, per, on_sent)
    (victim, at), = killed.items()
    expect_exactly_once(cluster, convs, per, timeout=90)
    survivors = set(NODES) - {victim}
    assert {cluster.owner(c) for c in convs} <= survivors
    taken = [l for n in survivors for l in cluster.nodes[n].lines if "cluster.took_over" in l]
    assert taken, "the survivors took the dead instance's conversations over"
    for n in survivors:
        assert cluster.nodes[n].errors() == []
