#!/usr/bin/python3
"""Lifecycle soak: conversations opened, relayed and ended through one daemon, with its
memory and state database sampled along the way. They must stay flat after warm-up:
an ended conversation leaves memory, and its row leaves the database after
state_retention (60 s here; hub event ids stay at least 10 minutes).

Runs the Direct Line emulator (its bot answers at once), a lean webhook-hub fake (it
counts deliveries instead of keeping them, accepts handoffs at once) and handoffd (a
non-sanitized build, please). W workers each play one conversation at a time: a
greeting and a question; then one in ten asks for a human and the agent closes it
(handoff.completed without return), one in ten says "bye" (the bot ends it), the rest
get conversation.end from the hub. Every SAMPLE conversations it prints the count, the
wall time, handoffd's RSS, the database size (state.db plus its WAL), /healthz's open
and ending counts, and the rows the database holds (conversations, ended ones, outbox,
hub event ids). Asserts nothing about time or size.

    /usr/bin/python3 tests/bench/bench_lifecycle.py build/handoffd [conversations] [workers] [sample]
"""
import collections
import json
import os
import pathlib
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from aiohttp import web  # noqa: E402

import relay_env  # noqa: E402
from fakehub import FakeHub, sign  # noqa: E402

CONFIG = """state_retention = 60, limits = { conversations = 5000 },"""


class LeanHandoffd(relay_env.Handoffd):
    """handoffd, keeping only the log lines a soak looks at (warnings, errors, start)."""

    def _read(self, proc):
        for line in proc.stderr:
            if " info " in line and "http.listen" not in line:
                continue
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()


class LeanHub(FakeHub):
    """The webhook hub, counting deliveries per conversation and path (a soak would
    otherwise measure the harness's memory)."""

    def __init__(self):
        self.counts = collections.Counter()
        super().__init__()

    async def _handle(self, request, body):
        doc = json.loads(body)
        with self.cond:
            self.counts[(doc["conversation"], request.path)] += 1
            self.cond.notify_all()
        if request.path == "/handoffs":
            return web.json_response({"accepted": True})
        return web.json_response({"ok": True})

    def wait_count(self, conv, path, n, timeout=60):
        with self.cond:
            if not self.cond.wait_for(lambda: self.counts[(conv, path)] >= n, timeout):
                raise AssertionError(f"{conv}: {n} x {path} not delivered in {timeout} s")

    def forget(self, conv):
        with self.cond:
            for path in ("/messages", "/typing", "/handoffs", "/end"):
                self.counts.pop((conv, path), None)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024


def db_bytes(workdir):
    return sum(p.stat().st_size for p in workdir.glob("state.db*"))


def db_rows(workdir):
    """Rows the state holds: conversations (ended ones among them), outbox, hub event ids."""
    db = sqlite3.connect(f"file:{workdir / 'state.db'}?mode=ro", uri=True, timeout=10)
    try:
        return tuple(db.execute(q).fetchone()[0] for q in (
            "SELECT COUNT(*) FROM conversations", "SELECT COUNT(*) FROM conversations WHERE state = 'closed'",
            "SELECT COUNT(*) FROM outbox", "SELECT COUNT(*) FROM events"))
    finally:
        db.close()


class Driver:
    def __init__(self, env):
        self.env, self.hub = env, env.hub
        self.url = f"http://127.0.0.1:{env.port}/hubs/webhook/events"

    def send(self, event):
        body = json.dumps(event).encode()
        for _ in range(100):
            ts = str(int(time.time()))
            req = urllib.request.Request(self.url, data=body, method="POST", headers={
                "Content-Type": "application/json", "X-Handoffd-Timestamp": ts,
                "X-Handoffd-Delivery": str(uuid.uuid4()), "X-Handoffd-Signature": sign(self.hub.secret, ts, body)})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                if e.code != 503:
                    raise AssertionError(f"{event['type']} answered {e.code}: {e.read()!r}")
                time.sleep(float(e.headers.get("Retry-After", "1")))  # what a hub does
        raise AssertionError("503 for too long")

    def message(self, conv, text):
        return self.send({"id": str(uuid.uuid4()), "type": "message", "conversation": conv,
                          "user": {"id": "u-" + conv, "name": "Soak"}, "text": text})

    def play(self, n):
        conv, hub = f"s-{n}", self.hub
        self.message(conv, "hello")
        hub.wait_count(conv, "/messages", 2)             # greeting and echo
        self.message(conv, "What are your opening hours?")
        hub.wait_count(conv, "/messages", 3)
        if n % 10 == 0:
            self.message(conv, "My order is late, I want a human")
            hub.wait_count(conv, "/handoffs", 1)
            self.send({"id": str(uuid.uuid4()), "type": "handoff.completed", "conversation": conv,
                       "handoff_id": "h", "return_to_bot": False})
        elif n % 10 == 1:
            self.message(conv, "bye")
            hub.wait_count(conv, "/end", 1)              # the bot ended it; the hub is told
        else:
            self.send({"id": str(uuid.uuid4()), "type": "conversation.end", "conversation": conv})
        hub.forget(conv)


def healthz(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        return json.loads(r.read())


def main():
    binary = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else str(ROOT / "build" / "handoffd")
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 48
    sample = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
    relay_env.FakeHub, relay_env.Handoffd = LeanHub, LeanHandoffd
    with tempfile.TemporaryDirectory() as tmp:
        env = relay_env.Environment(binary, tmp, extra_config=CONFIG, emulator_settings={"bot_delay_ms": 0})
        try:
            run(env, pathlib.Path(tmp), total, workers, sample)
        finally:
            print(f"handoffd exit code {env.close()}")


def run(env, workdir, total, workers, sample):
    driver, pid = Driver(env), env.daemon.proc.pid
    lock, state = threading.Lock(), {"next": 0, "done": 0, "failed": None}
    samples, t0 = [], time.monotonic()

    def worker():
        while True:
            with lock:
                if state["next"] >= total or state["failed"]:
                    return
                n = state["next"]
                state["next"] += 1
            try:
                driver.play(n)
            except Exception as e:  # the first failure stops the soak and is reported
                with lock:
                    state["failed"] = state["failed"] or f"conversation {n}: {e}"
                return
            with lock:
                state["done"] += 1

    def take(done):
        h = healthz(env.port)
        samples.append((done, time.monotonic() - t0, rss_bytes(pid), db_bytes(workdir),
                        h["conversations"], h["conversations_by_state"]["ending"]) + db_rows(workdir))
        print("%8d conversations  %6.0f s  rss %6.1f MiB  db %6.1f MiB  open %4d  ending %3d  "
              "rows: conversations %6d (ended %6d) outbox %4d events %7d" % (
                  samples[-1][0], samples[-1][1], samples[-1][2] / 2**20, samples[-1][3] / 2**20,
                  *samples[-1][4:]), flush=True)

    print(f"soak: {total} conversations, {workers} workers, sample every {sample}", flush=True)
    take(0)
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    mark = sample
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)  # a sampling clock, not a synchronisation
        with lock:
            done = state["done"]
        while done >= mark:
            take(mark)
            mark += sample
    if state["failed"]:
        print("FAILED:", state["failed"])
    with lock:
        done = state["done"]
    take(done)
    errors = env.daemon.errors()
    print(f"{done} conversations in {time.monotonic() - t0:.0f} s ({done / (time.monotonic() - t0):.0f}/s); "
          f"{len(errors)} error lines in handoffd's log")
    for line in errors[:5]:
        print("  ", line)
    warm = [s for s in samples if s[0] >= max(sample, total // 5)]
    if len(warm) >= 2:
        print("after warm-up: rss %.1f -> %.1f MiB, db %.1f -> %.1f MiB"
              % (warm[0][2] / 2**20, warm[-1][2] / 2**20, warm[0][3] / 2**20, warm[-1][3] / 2**20))


if __name__ == "__main__":
    main()
