#!/usr/bin/python3
"""Cluster benchmark: handoffd instances on one PostgreSQL (issue 14, point 8).

Two parts, both with the Direct Line emulator (its bot answers at once) and the webhook
hub's fake, every instance a non-sanitized build (please) with the same config:

1. The same load on one SQLite instance, then on 1, 2 and 3 instances sharing one
   PostgreSQL server (tests/integration/pg_server.py, fsync on): C conversations are
   opened (a greeting each), then each posts M messages one after the other (each waits for
   its 202), message j of conversation i to instance (i + j) mod N as a round-robin load
   balancer would (so with N > 1 most messages reach an instance that does not own their
   conversation). The measured phase ends with the last reply at the hub. Printed per
   configuration: messages/s (wall clock, the Python harness shares the 2 cores), each
   instance's CPU per relayed message and their sum (utime + stime from /proc), the
   PostgreSQL server's CPU per message (the postmaster and its children), commits per
   message (pg_stat_database.xact_commit of handoffd's database; the server publishes it
   within a second or so of each transaction, so it is read STATS_SETTLE seconds after the
   phase, heartbeats included) and write transactions per message (transaction ids taken),
   database round trips per message (handoffd_db_round_trips_total, summed over the
   instances), and the p50/p99 round trip hub -> handoffd -> bot -> handoffd -> hub.

2. Failover: RUNS times, three instances on a fresh database with traffic flowing
   (FAILOVER_CONVERSATIONS conversations, each posting a message every FAILOVER_PERIOD
   seconds to the live instances in turn, retrying elsewhere when one does not answer);
   once every conversation has had a reply, kill -9 of the owner of conversation 0, then
   the time from the kill to the first reply (delivered or re-delivered) at the hub in one
   of the dead instance's conversations, and to when the others own all of them. Each run
   and the p50s are printed. The cluster keys are the defaults (heartbeat 2 s, lease 10 s)
   unless LEASE is given (the heartbeat is then a fifth of it).

Asserts nothing about time.

    /usr/bin/python3 tests/bench/bench_cluster.py build/handoffd [conversations=100] [messages=20] [runs=10] [lease]
"""
import asyncio
import os
import pathlib
import signal
import statistics
import sys
import tempfile
import threading
import time
import types
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from bench_relay import drive, proc_stat, replies, server_cpu, xact_commits  # noqa: E402
from fakehub import FakeHub  # noqa: E402
from fakeserver import ServedFake  # noqa: E402
from pg_server import PgServer  # noqa: E402
from relay_env import ROUTES, Handoffd, config_text  # noqa: E402
from tests.dlemu.control import spawn  # noqa: E402

NODES = ("n1", "n2", "n3")
STATS_SETTLE = 4.0            # s: > one heartbeat (2 s) + the server's 1 s between statistics flushes
FAILOVER_CONVERSATIONS = 30
FAILOVER_PERIOD = 0.25        # s between two messages of one conversation in the failover runs


class Cluster:
    """The emulator, the webhook hub's fake and COUNT handoffd instances on one state:
    database DB of the PostgreSQL server PG, or a SQLite file (one instance) without PG."""

    def __init__(self, binary, workdir, count, pg=None, db=None, cluster_keys=""):
        self.pg, self.db = pg, db
        self.hub = FakeHub().start()
        self.emu_ctx = spawn(settings={"bot_delay_ms": 0})
        self.emu = self.emu_ctx.__enter__()
        self.nodes = {}
        try:
            for name in NODES[:count]:
                wd = pathlib.Path(workdir) / name
                wd.mkdir(parents=True)
                (wd / "routes.lua").write_text(ROUTES)
                extra = f'cluster = {{ node = "{name}", {cluster_keys} }},' if pg else ""
                (wd / "config.lua").write_text(config_text(self.emu, self.hub, wd, extra,
                                                           state=pg.url_for(db) if pg else None))
                self.nodes[name] = Handoffd(binary, wd).start()
                if pg:
                    self.nodes[name].wait_line("cluster.registered")
        except BaseException:
            self.close()
            raise

    def ports(self):
        return [d.port for d in self.nodes.values() if d.proc.poll() is None]

    def owner(self, conversation):
        return self.pg.psql(f"SELECT node FROM owners WHERE key = 'webhook:{conversation}'", db=self.db)

    def owned(self, node):
        """The conversation ids NODE owns."""
        keys = self.pg.psql(f"SELECT key FROM owners WHERE node = '{node}'", db=self.db).split()
        return {k.split(":", 1)[1] for k in keys}

    def post(self, conversation, text, event_id, start, stop):
        """Posts the message to a live instance (in turn from START), again with the same event
        id while the answer is no success, until STOP is set."""
        i = start
        while not stop.is_set():
            ports = self.ports()
            try:
                status, _ = self.hub.message(ports[i % len(ports)], conversation, text, event_id=event_id)
            except OSError:
                status = None
            if status in (200, 202):
                return
            i += 1
            stop.wait(0.05)

    def chat(self, conversation, start, stop):
        """Messages in CONVERSATION every FAILOVER_PERIOD seconds until STOP is set."""
        k = 0
        while not stop.is_set():
            self.post(conversation, f"{conversation} says {k}", f"{conversation}-e{k}", start + k, stop)
            k += 1
            stop.wait(FAILOVER_PERIOD)

    def sample(self):
        """Each instance's CPU seconds and database round trips so far."""
        return {name: (proc_stat(d.proc.pid)[0], round_trips(d.port)) for name, d in self.nodes.items()}

    def close(self):
        for d in self.nodes.values():
            d.stop()
        self.emu_ctx.__exit__(None, None, None)
        self.hub.stop()


def round_trips(port):
    """handoffd_db_round_trips_total of the instance on PORT (None on SQLite: not counted)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("handoffd_db_round_trips_total "):
                return float(line.split()[1])
    return None


def stat_commits(pg, db):
    """Committed transactions of database DB, as the server's statistics have them."""
    return int(pg.psql(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{db}'", db="postgres"))


def load(binary, tmp, pg, count, conversations, messages):
    """One configuration of part 1; returns its figures."""
    label = f"pg{count}" if pg else "sqlite"
    db = pg.create_db(f"load_{label}") if pg else None
    c = Cluster(binary, tmp / label, count, pg, db)
    try:
        env = types.SimpleNamespace(hub=c.hub, port=None)
        ports = c.ports()
        asyncio.run(drive(env, conversations, 1, ports))      # opens (and claims) every conversation
        c.hub.wait(lambda r: replies(r) >= conversations, 300, "the greetings")
        if pg:
            time.sleep(STATS_SETTLE)   # the statistics have no event to wait for
            commits0, xacts0, server0 = stat_commits(pg, db), xact_commits(pg), server_cpu(pg)
        before = c.sample()
        t0 = time.monotonic()
        sent = asyncio.run(drive(env, conversations, messages, ports))
        c.hub.wait(lambda r: replies(r) >= conversations * (1 + messages), 600, "every reply")
        wall = time.monotonic() - t0
        after = c.sample()
        n = conversations * messages
        out = {"label": label, "instances": count, "n": n, "rate": n / wall,
               "cpu": {name: (after[name][0] - before[name][0]) / n for name in after}}
        if pg:
            out["xacts"] = (xact_commits(pg) - xacts0) / n
            out["server"] = (server_cpu(pg) - server0) / n
            out["trips"] = sum(after[name][1] - before[name][1] for name in after) / n
            time.sleep(STATS_SETTLE)
            out["commits"] = (stat_commits(pg, db) - commits0) / n
        rtt = sorted(c.hub.arrivals[k] - v for k, v in sent.items() if k in c.hub.arrivals)
        out["p50"], out["p99"] = statistics.median(rtt), rtt[int(len(rtt) * 0.99) - 1]
        return out
    finally:
        c.close()


def print_load(f):
    us = 1e6
    print(f"{f['label']}: {f['instances']} instance(s), {f['n']} messages, "
          f"{f['rate']:,.0f} messages/s wall clock")
    per = ", ".join(f"{name} {cpu * us:,.0f}" for name, cpu in f["cpu"].items())
    total = sum(f["cpu"].values())
    print(f"  handoffd CPU per relayed message: {per} us; summed {total * us:,.0f} us "
          f"(= {1 / max(total, 1e-9):,.0f} messages per CPU-second)")
    if "commits" in f:
        print(f"  PostgreSQL server CPU {f['server'] * us:,.0f} us per message; commits {f['commits']:.3f} per message "
              f"(xact_commit), write transactions {f['xacts']:.3f}; round trips {f['trips']:.3f} per message")
    print(f"  round trip hub -> handoffd -> bot -> handoffd -> hub: p50 {f['p50'] * 1e3:.1f} ms, "
          f"p99 {f['p99'] * 1e3:.1f} ms", flush=True)


def failover(binary, tmp, pg, run, cluster_keys):
    """One run of part 2: (victim, conversations it owned, s to the first reply in one of
    them, s until the others own them all)."""
    db = pg.create_db(f"failover_{run}")
    c = Cluster(binary, tmp / f"failover{run}", 3, pg, db, cluster_keys)
    convs = [f"f{run}-{i}" for i in range(FAILOVER_CONVERSATIONS)]
    stop = threading.Event()
    chats = [threading.Thread(target=c.chat, args=(conv, i, stop), daemon=True) for i, conv in enumerate(convs)]
    try:
        for t in chats:
            t.start()
        c.hub.wait(lambda r: {b["conversation"] for p, b in r if p == "/messages"} >= set(convs), 120,
                   "a reply in every conversation")
        victim = c.owner(convs[0])
        owned = c.owned(victim)
        marks = len(c.hub.received), len(c.hub.redelivered)
        killed = time.monotonic()
        c.nodes[victim].proc.send_signal(signal.SIGKILL)
        c.nodes[victim].proc.wait()
        took = {}

        def watch():
            while time.monotonic() - killed < 120 and "all" not in took:
                if not c.owned(victim):
                    took["all"] = time.monotonic() - killed
                time.sleep(0.1)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        def replied(hub):
            new = hub.received[marks[0]:] + hub.redelivered[marks[1]:]
            return any(p == "/messages" and b["conversation"] in owned for p, b in new)
        ServedFake.wait(c.hub, replied, 120, "a reply in a conversation of the dead instance")
        first = time.monotonic() - killed
        watcher.join(120)
        return victim, len(owned), first, took.get("all")
    finally:
        stop.set()
        for t in chats:
            t.join(60)
        c.close()


def main():
    binary = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else str(ROOT / "build" / "handoffd")
    conversations = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    messages = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    lease = float(sys.argv[5]) if len(sys.argv) > 5 else None
    cluster_keys = f"heartbeat = {lease / 5}, lease = {lease}" if lease else ""
    print(f"load average {os.getloadavg()[0]:.1f} at start; {conversations} conversations x {messages} messages "
          f"per configuration", flush=True)
    pg = PgServer()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            print_load(load(binary, tmp, None, 1, conversations, messages))
            for count in (1, 2, 3):
                print_load(load(binary, tmp, pg, count, conversations, messages))
            print(f"failover: {runs} runs, three instances, {FAILOVER_CONVERSATIONS} conversations each posting "
                  f"every {FAILOVER_PERIOD} s; lease {f'{lease} s' if lease else 'default (10 s, heartbeat 2 s)'}",
                  flush=True)
            firsts, alls = [], []
            for run in range(runs):
                victim, owned, first, took = failover(binary, tmp, pg, run, cluster_keys)
                firsts.append(first)
                if took is not None:
                    alls.append(took)
                took_text = f"{took:.2f} s" if took is not None else "not within 120 s"
                print(f"  run {run + 1}: kill -9 of {victim} ({owned} conversations): first reply in one of them "
                      f"after {first:.2f} s, all owned by the others after {took_text}", flush=True)
            print(f"failover p50: first reply {statistics.median(firsts):.2f} s, all taken over "
                  f"{statistics.median(alls) if alls else float('nan'):.2f} s")
    finally:
        pg.cleanup()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
