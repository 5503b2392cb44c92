#!/usr/bin/python3
"""Relay benchmark: customer message in at the hub, bot reply out to the hub.

Runs the Direct Line emulator (its bot answers at once), the webhook-hub fake and
handoffd (a non-sanitized build, please), then drives C conversations x M messages
through the generic webhook contract. Prints: messages relayed per second (wall clock,
limited by the Python harness on the same 2 cores), handoffd's CPU time per relayed
message (so its capacity on one core), p50/p99 of the round trip hub -> handoffd ->
bot -> handoffd -> hub, and handoffd's resident memory per active conversation.
Asserts nothing about time.

    /usr/bin/python3 tests/bench/bench_relay.py build-rel/handoffd [conversations] [messages]

With HANDOFFD_BENCH_PERF=FILE, `perf record` samples handoffd (call graphs through DWARF)
during the measured phase only, into FILE; its sampling costs handoffd CPU, so the CPU
figure of such a run is not the one to quote. HANDOFFD_BENCH_STRACE=FILE does the same with
`strace -c`: the system calls of the measured phase, counted (divide by the messages; strace
slows handoffd too). With HANDOFFD_BENCH_CALLGRIND=FILE, handoffd runs under valgrind's
callgrind, whose counts are zeroed before the measured phase and dumped into FILE after it:
instructions per message, unmoved by other load on the machine (`callgrind_annotate FILE`).
HANDOFFD_BENCH_TOKEN_SIZE=N gives the emulator's Direct Line tokens about N characters
(real ones have about 1,000; the emulator's own about 250). With
HANDOFFD_BENCH_STATE=postgresql, the state lives in a throwaway PostgreSQL server
(tests/integration/pg_server.py, fsync on) instead of SQLite, and the commits per relayed
message are printed too.
"""
import asyncio
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import aiohttp  # noqa: E402

from fakehub import sign  # noqa: E402
from relay_env import Environment  # noqa: E402
from pg_server import PgServer  # noqa: E402


sys_cpu = {}


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    sys_cpu[pid] = int(fields[12]) / os.sysconf("SC_CLK_TCK")  # the kernel's share, printed apart
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return cpu, rss * 1024


async def drive(env, conversations, messages, ports=None):
    """Posts MESSAGES to each of CONVERSATIONS (b-0, b-1, ...), each waiting for its 202, the
    conversations at once; with PORTS, message j of conversation i goes to
    ports[(i + j) % len(ports)], as a round-robin load balancer would (bench_cluster.py)."""
    urls = [f"http://127.0.0.1:{port}/hubs/webhook/events" for port in (ports or [env.port])]
    sent_at = {}

    async def post(session, url, conv, text):
        body = json.dumps({"id": str(uuid.uuid4()), "type": "message", "conversation": conv,
                           "user": {"id": "u-" + conv}, "text": text}).encode()
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Handoffd-Timestamp": ts,
                   "X-Handoffd-Delivery": str(uuid.uuid4()),
                   "X-Handoffd-Signature": sign(env.hub.secret, ts, body)}
        sent_at[(conv, "You said: " + text)] = time.monotonic()
        async with session.post(url, data=body, headers=headers) as r:
            assert r.status == 202, r.status

    async def conversation(session, i):
        for j in range(messages):
            await post(session, urls[(i + j) % len(urls)], f"b-{i}", f"m{j}")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:
        await asyncio.gather(*(conversation(s, i) for i in range(conversations)))
    return sent_at


def replies(received):
    """The bot's messages the hub got (each came after its typing, which the hub gets too):
    the measured phase ends when the last reply is in, not when as many POSTs as replies are."""
    return sum(1 for path, _ in received if path == "/messages")


def start_profile(pid):
    """perf record on PID into $HANDOFFD_BENCH_PERF, or `strace -c` (a count of system calls)
    into $HANDOFFD_BENCH_STRACE, or None when neither is set."""
    if os.environ.get("HANDOFFD_BENCH_STRACE"):
        # -q: no "attached" line per thread
        argv = ["strace", "-q", "-c", "-f", "-o", os.environ["HANDOFFD_BENCH_STRACE"], "-p", str(pid)]
    elif os.environ.get("HANDOFFD_BENCH_PERF"):
        argv = ["perf", "record", "-q", "-F", "499", "--call-graph", "dwarf,16384",
                "-p", str(pid), "-o", os.environ["HANDOFFD_BENCH_PERF"]]
    else:
        return None
    perf = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    time.sleep(1)  # perf has no ready signal; a late start only shortens the sample
    return perf


def stop_profile(perf):
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait()


def callgrind_wrapper(binary, tmp):
    """BINARY, or a script running it under callgrind when $HANDOFFD_BENCH_CALLGRIND is set."""
    out = os.environ.get("HANDOFFD_BENCH_CALLGRIND")
    if not out:
        return binary
    wrapper = pathlib.Path(tmp) / "callgrind.sh"
    wrapper.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={os.path.abspath(out)} "
                       f"--dump-instr=no --collect-atstart=yes {binary} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def callgrind(pid, action):
    """Zero ('-z') or dump ('-d') callgrind's counts in PID, when it runs under callgrind."""
    if os.environ.get("HANDOFFD_BENCH_CALLGRIND"):
        subprocess.run(["callgrind_control", action, str(pid)], check=True, stdout=subprocess.DEVNULL)


def server_cpu(pg):
    """CPU seconds of the PostgreSQL server so far: the postmaster and its children (the
    backend serving handoffd, the WAL writer, ...). None without PostgreSQL."""
    if not pg:
        return None
    master = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
        if d.isdigit() and (int(d) == master or int(fields[1]) == master):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def xact_commits(pg):
    """Write transactions so far: the server's transaction id counter (each write
    transaction takes one id; this query takes one too). None without PostgreSQL."""
    if not pg:
        return None
    return int(pg.psql("SELECT pg_current_xact_id()", db="postgres"))


def main():
    binary = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else str(ROOT / "build" / "handoffd")
    conversations = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    messages = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    pg = PgServer() if os.environ.get("HANDOFFD_BENCH_STATE") == "postgresql" else None
    commits = None
    with tempfile.TemporaryDirectory() as tmp:
        token_size = int(os.environ.get("HANDOFFD_BENCH_TOKEN_SIZE", "0"))
        env = Environment(callgrind_wrapper(binary, tmp), tmp,
                          emulator_settings={"bot_delay_ms": 0, "token_size": token_size},
                          pg=(pg, pg.create_db("bench")) if pg else None)
        try:
            pid = env.daemon.proc.pid
            cpu0, rss0 = proc_stat(pid)
            # open every conversation first (greeting), to measure memory per conversation
            asyncio.run(drive(env, conversations, 1))
            env.hub.wait(lambda r: replies(r) >= conversations, 300, "the greetings")
            cpu1, rss1 = proc_stat(pid)
            n = conversations * messages
            perf = start_profile(pid)
            callgrind(pid, "-z")
            cpu1, _ = proc_stat(pid)
            sys1 = sys_cpu[pid]
            commits0, server0 = xact_commits(pg), server_cpu(pg)
            t0 = time.monotonic()
            sent = asyncio.run(drive(env, conversations, messages))
            env.hub.wait(lambda r: replies(r) >= conversations * (1 + messages), 600, "every reply")
            wall = time.monotonic() - t0
            if pg:
                commits, server = xact_commits(pg) - commits0, server_cpu(pg) - server0
            cpu2, rss2 = proc_stat(pid)
            sys2 = sys_cpu[pid]
            stop_profile(perf)
            callgrind(pid, "-d")
            rtt = sorted(env.hub.arrivals[k] - v for k, v in sent.items() if k in env.hub.arrivals)
        finally:
            env.close()
            if pg:
                pg.cleanup()
    print(f"state: {'postgresql' if pg else 'sqlite'}")
    if commits is not None:
        print(f"database commits: {commits / n:.3f} per relayed message ({commits} write transactions in all); "
              f"PostgreSQL server CPU {server / n * 1e6:,.0f} us per relayed message")
    print(f"conversations {conversations}, messages {n} (each answered by the bot at once)")
    print(f"relayed: {n / wall:,.0f} messages/s wall clock (harness in Python on the same 2 cores)")
    print(f"handoffd CPU: {(cpu2 - cpu1) / n * 1e6:,.0f} us per relayed message (in + out) "
          f"= {n / max(cpu2 - cpu1, 1e-9):,.0f} messages per CPU-second; of it in the kernel "
          f"{(sys2 - sys1) / n * 1e6:,.0f} us")
    print(f"round trip hub -> handoffd -> bot -> handoffd -> hub: p50 {statistics.median(rtt) * 1e3:.2f} ms, "
          f"p99 {rtt[int(len(rtt) * 0.99) - 1] * 1e3:.2f} ms")
    print(f"resident memory: {rss0 / 2**20:.1f} MiB idle, {rss1 / 2**20:.1f} MiB with {conversations} conversations "
          f"= {(rss1 - rss0) / conversations / 1024:.1f} KiB per conversation; {rss2 / 2**20:.1f} MiB after the run")


if __name__ == "__main__":
    main()
