#!/usr/bin/python3
"""Listener benchmark: the relay at a steady rate, alone and then next to 10,000 idle
keep-alive connections and 2,000 trickling clients.

Runs the Direct Line emulator, the webhook-hub fake and handoffd (a non-sanitized build,
please), opens the conversations, then relays RATE messages/s for SECONDS twice: once
alone (the baseline) and once while a separate process holds IDLE keep-alive connections
(one request each, then silence) and TRICKLE connections that send one byte a second,
headers for half of them and a body for the other half, reconnecting whenever handoffd
cuts them off (build/tests/bench/bench_listener_hold when it was built, else an asyncio
holder in this file, which costs more CPU than handoffd does). Prints, for both runs:
relayed messages/s, p50/p99 of the round trip hub -> handoffd -> bot -> handoffd -> hub, handoffd's CPU and resident memory, and the
listener's counters from /healthz. Asserts nothing about time.

With BENCH_PIN=1 handoffd runs alone on CPU 0 and everything else (the load, the hub and
bot stand-ins, the connection holder) on CPU 1. On a 2-core machine that one core is nearly
saturated by the Python harness at 500 messages/s, so the round trips then show the
harness's queueing more than handoffd's; handoffd's CPU figure is the one to compare.

    /usr/bin/python3 tests/bench/bench_listener.py build-rel/handoffd [rate] [seconds] [idle] [trickle]
"""
import asyncio
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

import aiohttp  # noqa: E402

from bench_relay import proc_stat  # noqa: E402
from fakehub import sign  # noqa: E402
from relay_env import Environment  # noqa: E402

CONVERSATIONS = 100
BUFFERED_MB = 64


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def listener_stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
        return json.loads(r.read())["listener"]


# --- the relay load ----------------------------------------------------------------------

async def post(session, url, secret, conv, text, sent_at):
    body = json.dumps({"id": str(uuid.uuid4()), "type": "message", "conversation": conv,
                       "user": {"id": "u-" + conv}, "text": text}).encode()
    ts = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Handoffd-Timestamp": ts,
               "X-Handoffd-Delivery": str(uuid.uuid4()),
               "X-Handoffd-Signature": sign(secret, ts, body)}
    sent_at[(conv, "You said: " + text)] = time.monotonic()
    async with session.post(url, data=body, headers=headers) as r:
        assert r.status == 202, r.status


async def paced(env, rate, seconds, tag):
    """Posts RATE messages a second for SECONDS, spread over the conversations."""
    url = f"http://127.0.0.1:{env.port}/hubs/webhook/events"
    sent_at, tasks = {}, []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:
        t0 = time.monotonic()
        for k in range(int(rate * seconds)):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(
                post(s, url, env.hub.secret, f"b-{k % CONVERSATIONS}", f"{tag}{k}", sent_at)))
        await asyncio.gather(*tasks)
    return sent_at


def relay_run(env, rate, seconds, tag):
    pid = env.daemon.proc.pid
    before = len(env.hub.received)
    cpu0, _ = proc_stat(pid)
    t0 = time.monotonic()
    sent = asyncio.run(paced(env, rate, seconds, tag))
    n = len(sent)
    env.hub.wait(lambda r: len(r) >= before + n and all(k in env.hub.arrivals for k in sent), 600, "every reply")
    last = max(env.hub.arrivals[k] for k in sent)
    cpu1, rss = proc_stat(pid)
    rtt = sorted(env.hub.arrivals[k] - v for k, v in sent.items())
    return {"n": n, "rate": n / (last - t0), "p50": statistics.median(rtt) * 1e3,
            "p99": rtt[int(len(rtt) * 0.99) - 1] * 1e3, "cpu": cpu1 - cpu0, "rss": rss}


# --- the idle and trickling connections (a child process) -------------------------------

async def hold(port, idle, trickle):
    raise_fd_limit()
    stop = asyncio.Event()
    opened = {"idle": 0, "trickle": 0, "cut": 0}
    holders = []

    async def idle_one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
        await r.readuntil(b"\r\n\r\n")
        holders.append((r, w))
        opened["idle"] += 1

    slow_body = b"POST /hubs/webhook/events HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000
    slow_headers = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000

    async def trickler(i):
        payload = slow_body if i % 2 else slow_headers
        while not stop.is_set():
            r, w = await asyncio.open_connection("127.0.0.1", port)
            opened["trickle"] += 1
            eof = asyncio.ensure_future(r.read())
            # Headers first for the body tricklers: the trickling part is what follows.
            k = payload.index(b"\r\n\r\n") + 4 if i % 2 else 0
            w.write(payload[:k])
            while not stop.is_set():
                w.write(payload[k:k + 1])
                k = k + 1 if k + 1 < len(payload) else len(payload) - 1000
                done, _ = await asyncio.wait([eof], timeout=1.0)
                if done:
                    opened["cut"] += 1
                    break
            w.close()

    for start in range(0, idle, 500):
        await asyncio.gather(*(idle_one() for _ in range(start, min(idle, start + 500))))
    tasks = []
    for i in range(trickle):
        tasks.append(asyncio.ensure_future(trickler(i)))
        if i % 200 == 199:
            await asyncio.sleep(0.1)
    while opened["trickle"] < trickle:
        await asyncio.sleep(0.1)
    print(json.dumps({"ready": opened}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    stop.set()
    print(json.dumps({"done": opened}), flush=True)
    for t in tasks:
        t.cancel()


def holder_command(binary, port, idle, trickle):
    """The C holder built next to BINARY (build/tests/bench/), which costs far less CPU than
    this file's asyncio one (the fallback), so the harness competes less with the relay."""
    native = pathlib.Path(binary).parent / "tests" / "bench" / "bench_listener_hold"
    if native.exists():
        return [str(native), str(port), str(idle), str(trickle)]
    return [sys.executable, __file__, "--hold", str(port), str(idle), str(trickle)]


def main():
    if sys.argv[1] == "--hold":
        asyncio.run(hold(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        return
    binary = os.path.abspath(sys.argv[1])
    rate = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    idle = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
    trickle = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
    hard = raise_fd_limit()
    pin = os.environ.get("BENCH_PIN") == "1"
    if pin:   # before any thread or child exists: they all inherit CPU 1
        os.sched_setaffinity(0, {1})
    limits = (f"limits = {{ connections = {idle + trickle + 1000}, keepalive_timeout = 600, "
              f"request_timeout = 30, buffered_mb = {BUFFERED_MB} }},")
    with tempfile.TemporaryDirectory() as tmp:
        env = Environment(binary, tmp, extra_config=limits, emulator_settings={"bot_delay_ms": 0})
        holder = None
        try:
            pid = env.daemon.proc.pid
            if pin:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    os.sched_setaffinity(int(tid), {0})
            _, rss_idle = proc_stat(pid)
            asyncio.run(paced(env, 200, CONVERSATIONS / 200, "open"))   # one message per conversation
            env.hub.wait(lambda r: len(r) >= CONVERSATIONS * 2, 300, "the greetings")
            relay_run(env, rate, 3, "warm")
            base = relay_run(env, rate, seconds, "base")
            holder = subprocess.Popen(holder_command(binary, env.port, idle, trickle),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            ready = json.loads(holder.stdout.readline())
            cpu0, _ = proc_stat(pid)
            time.sleep(5)   # the measurement window: what holding them costs without the relay
            cpu_held = (proc_stat(pid)[0] - cpu0) / 5
            _, rss_held = proc_stat(pid)
            held_stats = listener_stats(env.port)
            loaded = relay_run(env, rate, seconds, "load")
            after_stats = listener_stats(env.port)
            holder.stdin.write("\n")
            holder.stdin.flush()
            done = json.loads(holder.stdout.readline())
        finally:
            if holder:
                holder.wait(60)
            env.close()
    print(f"fd limit {hard}; {CONVERSATIONS} conversations; relay paced at {rate} messages/s for {seconds} s"
          + ("; handoffd alone on CPU 0, the harness on CPU 1" if pin else ""))
    print(f"held by {holder.args[0]}: {ready['ready']['idle']} idle keep-alive + {trickle} trickling connections; "
          f"tricklers connected {done['done']['trickle']} times, cut off {done['done']['cut']} times")
    for name, r in (("baseline", base), ("with idle+trickling", loaded)):
        print(f"{name:>20}: {r['n']} messages, {r['rate']:,.0f} relayed/s, round trip p50 {r['p50']:.2f} ms, "
              f"p99 {r['p99']:.2f} ms, handoffd CPU {r['cpu']:.2f} s, RSS {r['rss'] / 2**20:.1f} MiB")
    print(f"change: throughput {100 * (loaded['rate'] / base['rate'] - 1):+.1f} %, "
          f"p99 {100 * (loaded['p99'] / base['p99'] - 1):+.1f} %")
    print(f"RSS: {rss_idle / 2**20:.1f} MiB at start, {rss_held / 2**20:.1f} MiB once the connections were held, "
          f"{loaded['rss'] / 2**20:.1f} MiB after the loaded run (buffered_mb cap {BUFFERED_MB})")
    print(f"handoffd CPU while only holding them: {100 * cpu_held:.1f} % of a core")
    print(f"listener while held: {held_stats}")
    print(f"listener after the loaded run: {after_stats}")


if __name__ == "__main__":
    main()
