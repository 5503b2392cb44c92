#!/usr/bin/python3
"""Listener benchmark: the relay at a steady rate, alone and then next to 10,000 idle
keep-alive connections and 2,000 trickling clients.

Runs handoffd (a non-sanitized build, please) against build/tests/bench/bench_relay_load,
one C process that is the Direct Line bot (REST and WebSocket stream; it echoes each
message as "You said: ...", after a typing activity), the generic webhook hub (it checks
handoffd's signed deliveries) and the customers (signed message events over a pool of
keep-alive connections). handoffd's config is relay_env's, as for the Python emulator and
hub. It opens the conversations, then runs ROUNDS rounds of three runs, each relaying RATE
messages/s for SECONDS:
- the baseline: the relay alone;
- the control: the relay while the holder (below) holds its connections against a sink in
  this process that reads nothing after their first request. handoffd does nothing for
  them, so what the round trips lose is what the connections cost the machine: on a 2-CPU
  machine the holder and the harness share a CPU, and on the 2-vCPU development VM even
  idle connections between two other processes slowed every round trip (README, Benchmarks);
- loaded: the same holder against handoffd.
The holder (build/tests/bench/bench_listener_hold when it was built, else an asyncio holder
in this file, which costs more CPU than handoffd does) holds IDLE keep-alive connections (one
request each, then silence) and TRICKLE connections that send one byte a second (or one every
BENCH_TRICKLE_MS ms), headers for half of them and a body for the other half, reconnecting
whenever handoffd cuts them off. It runs under SCHED_IDLE (BENCH_HOLDER_SCHED=normal to change
that), as attackers on other machines would take nothing from the harness. Runs alternate, so
drift (handoffd's state grows with the messages it relayed) falls on all three alike.

Prints, for each run: replies relayed per second, p50/p90/p99/max of the round trip hub ->
handoffd -> bot -> handoffd -> hub, handoffd's CPU (per message too), its resident memory, the
time it and the harness waited for a CPU, and where the slowest round trips of the loaded runs
fell. Then the same quantiles over all the round trips of each kind pooled (one run's p99 rests
on 200 round trips and moves by tens of percent from run to run; the pooled one is steadier),
the changes between kinds, pooled and by round, and the listener's counters from /healthz.
Asserts nothing about time. The Python relay harness this replaced (emulator, fakehub, aiohttp
load) took more than a core at 500 messages/s: its queueing was what the round trips showed,
so there is no Python fallback for the relay; bench_relay_load must be built (it is, with the
tests).

With BENCH_PIN=1 handoffd runs alone on CPU 0 and everything else (the relay load and the
connection holder) on CPU 1. BENCH_STATE_DIR=DIR puts handoffd's state there (e.g. a tmpfs).
With BENCH_PERF=DIR handoffd is sampled by `perf record` during each measured run
(DIR/perf.TAG); with BENCH_STRACE=DIR its system calls are counted by `strace -c`
(DIR/strace.TAG). Both cost handoffd CPU: the figures of such a run are not the ones to quote.

    cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release
    cmake --build build-rel --target handoffd bench_relay_load bench_listener_hold
    /usr/bin/python3 tests/bench/bench_listener.py build-rel/handoffd [rate] [seconds] [idle] [trickle] [rounds]
"""
import asyncio
import collections
import json
import os
import pathlib
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from bench_relay import proc_stat  # noqa: E402
from relay_env import ROUTES, Handoffd, config_text  # noqa: E402

CONVERSATIONS = 100
BUFFERED_MB = 64
REQUEST_TIMEOUT = 30
TRICKLE_MS = int(os.environ.get("BENCH_TRICKLE_MS", "1000"))   # a trickler's byte every ... ms
HOLDER_IDLE = os.environ.get("BENCH_HOLDER_SCHED", "idle") == "idle"   # the holder under SCHED_IDLE
HOLD_WINDOW_S = 5      # what holding the connections costs, measured before the relay starts


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def listener_stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
        return json.loads(r.read())["listener"]


# --- the relay load: bot, hub and customers in one C process (bench_relay_load) ----------

class RelayLoad:
    """build/tests/bench/bench_relay_load: the Direct Line bot, the webhook hub and the
    paced customers in one libevent process. The Python ones (the emulator, fakehub and an
    aiohttp load) took more than a core at 500 messages/s, so their queueing was what the
    round trips measured; there is no Python fallback for that reason."""

    def __init__(self, binary):
        native = pathlib.Path(binary).parent / "tests" / "bench" / "bench_relay_load"
        if not native.exists():
            sys.exit(f"{native} is missing: build the tests (HANDOFFD_TESTS=ON) next to {binary}")
        self.proc = subprocess.Popen([str(native)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())

    def run(self, tag, rate, count, port):
        """COUNT messages at RATE a second; returns the harness's figures once every reply
        is in (or 60 s after the last send)."""
        self.proc.stdin.write(f"run {tag} {rate} {count} {CONVERSATIONS} {port}\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        if "error" in result:
            raise RuntimeError(f"bench_relay_load: {result}")
        return result

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


def start_daemon(binary, tmp, load, extra):
    """handoffd configured as relay_env configures it for the Python emulator and hub."""
    emu = types.SimpleNamespace(info={"http_base": load.info["directline"], "secret": load.info["dl_secret"]})
    hub = types.SimpleNamespace(url=load.info["hub"], secret=load.info["hub_secret"], token=load.info["hub_token"])
    (pathlib.Path(tmp) / "routes.lua").write_text(ROUTES)
    (pathlib.Path(tmp) / "config.lua").write_text(config_text(emu, hub, tmp, extra))
    return Handoffd(binary, tmp).start()


def profiler(pid, tag):
    """With BENCH_PERF=DIR, `perf record` of handoffd into DIR/perf.TAG; with BENCH_STRACE=DIR,
    `strace -c` of it into DIR/strace.TAG (it slows every system call: not for the figures)."""
    perf, strace = os.environ.get("BENCH_PERF"), os.environ.get("BENCH_STRACE")
    if perf:
        cmd = ["perf", "record", "-q", "-F", "999", "-g", "-p", str(pid), "-o", f"{perf}/perf.{tag}"]
    elif strace:
        cmd = ["strace", "-c", "-f", "-p", str(pid), "-o", f"{strace}/strace.{tag}"]
    else:
        return None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)   # neither tool says when it is attached; a late start only shortens the sample
    return proc


def run_queue_wait(pid):
    """Seconds PID's threads spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat):
    on a shared machine, the time other processes held the cores handoffd wanted."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


class CutWatch:
    """Polls /healthz every 0.25 s while a run lasts, to tell when the listener cut
    connections off at their request deadline (seconds into the run, from the counter)."""

    def __init__(self, port):
        self.port, self.seen, self.stop = port, [], threading.Event()
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.stop.wait(0.25):
            self.seen.append((time.monotonic() - self.t0, listener_stats(self.port)["timed_out"]))

    def close(self):
        self.stop.set()
        self.thread.join()
        if len(self.seen) < 2 or self.seen[-1][1] == self.seen[0][1]:
            return "no connection cut off during the run"
        first = self.seen[0][1]
        start = next(t for t, n in self.seen if n > first)
        end = next(t for t, n in self.seen if n == self.seen[-1][1])
        return f"{self.seen[-1][1] - first} connections cut off between {start - 0.25:.1f} and {end:.1f} s into the run"


class StateSampler:
    """Reads handoffd's loop thread every 5 ms while a run lasts: its state (/proc/PID/stat:
    D is blocked in the kernel, on a disk: SQLite writes and syncs on the loop) and the time it
    ran and waited for a CPU (/proc/PID/schedstat). Summed per second of the run, so that the
    second in which the slowest round trips were sent can be told apart: handoffd busy (ran),
    the machine busy (waited), or the disk (blocked)."""

    def __init__(self, pid):
        self.pid, self.samples, self.stop = pid, [], threading.Event()
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while not self.stop.wait(0.005):
            try:
                with open(f"/proc/{self.pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                with open(f"/proc/{self.pid}/schedstat") as f:
                    ran, waited = (int(x) for x in f.read().split()[:2])
            except (FileNotFoundError, ProcessLookupError):
                return
            self.samples.append((time.monotonic() - self.t0, state, ran, waited))

    def close(self):
        self.stop.set()
        self.thread.join()
        per_second = collections.defaultdict(lambda: [0, 0, 0, 0])   # ran ns, waited ns, D samples, samples
        for (_, _, ran0, wait0), (t, state, ran, waited) in zip(self.samples, self.samples[1:]):
            sec = per_second[int(t)]
            sec[0] += ran - ran0
            sec[1] += waited - wait0
            sec[2] += state == "D"
            sec[3] += 1
        return per_second


def describe_second(per_second, sec):
    ran, waited, blocked, samples = per_second.get(sec, (0, 0, 0, 0))
    return (f"second {sec}: ran {ran / 1e6:.0f} ms, waited for a CPU {waited / 1e6:.0f} ms, "
            f"blocked on disk in {blocked} of {samples} samples")


def relay_run(load, daemon, rate, seconds, tag, watch=False):
    pid = daemon.proc.pid
    prof = profiler(pid, tag) if tag.startswith(("base", "control", "load")) else None
    cpu0, _ = proc_stat(pid)
    h0 = proc_stat(load.proc.pid)[0]
    wait0 = run_queue_wait(pid)
    cuts = CutWatch(daemon.port) if watch else None
    states = StateSampler(pid)
    hwait0 = run_queue_wait(load.proc.pid)
    r = load.run(tag, rate, int(rate * seconds), daemon.port)
    r["harness_wait"] = run_queue_wait(load.proc.pid) - hwait0
    r["states"] = states.close()
    r["cuts"] = cuts.close() if cuts else None
    cpu1, rss = proc_stat(pid)
    r["cpu_wait"] = run_queue_wait(pid) - wait0
    if prof:
        prof.send_signal(signal.SIGINT)
        prof.wait()
    r.update(cpu=cpu1 - cpu0, rss=rss, harness_cpu=proc_stat(load.proc.pid)[0] - h0)
    if r["lost"] or r["errors"] or r["misrouted"] or r["hub_rejected"]:
        print(f"warning: run {tag}: {r}", file=sys.stderr)
    return r


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
                done, _ = await asyncio.wait([eof], timeout=TRICKLE_MS / 1000)
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


class Sink:
    """The control's target: a socket on 127.0.0.1 that accepts every connection, answers
    the first complete request on it with an empty 200 (the idle connections wait for one)
    and then never reads again, so the trickled bytes cost nothing but the kernel's buffer.
    The holder aimed at it does all it does in the loaded run, on the harness's CPU, while
    handoffd has nothing to do with it: what the round trips lose then is the harness's
    share, not handoffd's."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def __init__(self):
        import selectors
        import socket
        self.sel = selectors.DefaultSelector()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4096)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.held = []
        self.sel.register(self.lsock, selectors.EVENT_READ)
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        import selectors
        while not self.stopping:
            for key, _ in self.sel.select(0.2):
                if key.fileobj is self.lsock:
                    try:
                        conn, _ = self.lsock.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    self.held.append(conn)
                    self.sel.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = key.fileobj.recv(4096)
                except BlockingIOError:
                    continue
                # One read a connection: an idle one's request comes whole in its first
                # segment; a trickler's bytes after its first stay in the kernel.
                if b"\r\n\r\n" in data:
                    key.fileobj.send(self.ANSWER)
                self.sel.unregister(key.fileobj)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        for c in self.held:
            c.close()
        self.lsock.close()


def holder_command(binary, port, idle, trickle):
    """The C holder built next to BINARY (build/tests/bench/), which costs far less CPU than
    this file's asyncio one (the fallback), so the harness competes less with the relay."""
    native = pathlib.Path(binary).parent / "tests" / "bench" / "bench_listener_hold"
    if native.exists():
        return [str(native), str(port), str(idle), str(trickle), str(TRICKLE_MS)]
    return [sys.executable, __file__, "--hold", str(port), str(idle), str(trickle)]


def start_holder(binary, port, idle, trickle):
    """The holder, under SCHED_IDLE unless BENCH_HOLDER_SCHED=normal: it takes a CPU only
    when the harness does not want it, as a holder on another machine would."""
    return subprocess.Popen(holder_command(binary, port, idle, trickle),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0)))
                            if HOLDER_IDLE else None)


def stop_holder(holder):
    """Tells the holder to let go; its {"done": ...} line."""
    holder.stdin.write("\n")
    holder.stdin.flush()
    done = holder.stdout.readline()
    holder.wait(60)
    return done


def change(a, b):
    """From run (or pool) A to B, in %."""
    per_msg = [r["cpu"] / max(r["received"], 1) for r in (a, b)]
    return (f"throughput {100 * (b['rate'] / a['rate'] - 1):+.1f} %, p50 {100 * (b['p50'] / a['p50'] - 1):+.1f} %, "
            f"p99 {100 * (b['p99'] / a['p99'] - 1):+.1f} %, handoffd CPU per message {100 * (per_msg[1] / per_msg[0] - 1):+.1f} %")


def slowest_seconds(r, top=6):
    """The seconds of the run in which most of the slowest 1 % were sent, "s:count"."""
    per_second = collections.Counter(int(t) for t, _ in r["slowest"])
    return ", ".join(f"{s}:{n}" for s, n in per_second.most_common(top)) + \
        f" (of {len(r['slowest'])}, from {min((ms for _, ms in r['slowest']), default=0):.1f} ms)"


def log_summary(lines):
    """How many warn and error lines handoffd logged, by event name."""
    counts = collections.Counter(f"{f[1]} {f[2]}" for f in (l.split(" ", 3) for l in lines)
                                 if len(f) > 2 and f[1] in ("warn", "error"))
    return ", ".join(f"{k} x{n}" for k, n in counts.most_common()) or "no warnings, no errors"


def cpu_of(pid):
    return proc_stat(pid)[0] if pid else 0.0


def control_run(binary, load, daemon, rate, seconds, idle, trickle, tag):
    """The relay while the same holder, on the same CPU, holds its connections against a
    Sink instead of handoffd (see Sink); a run as long as the loaded one, its tricklers
    never cut off."""
    sink = Sink()
    holder = start_holder(binary, sink.port, idle, trickle)
    try:
        json.loads(holder.stdout.readline())
        # The loaded run's measurement window, so that both runs start as long after the
        # holder opened its connections (a pacing, not a wait for anything).
        time.sleep(HOLD_WINDOW_S)
        return relay_run(load, daemon, rate, seconds, tag)
    finally:
        stop_holder(holder)
        sink.close()


def loaded_run(binary, load, daemon, rate, seconds, idle, trickle, tag):
    """The relay while the holder holds its connections against handoffd; the figures of
    holding them (before the relay starts) go into the result as "held"."""
    pid = daemon.proc.pid
    before_held = listener_stats(daemon.port)["connections"]
    holder = start_holder(binary, daemon.port, idle, trickle)
    try:
        ready = json.loads(holder.stdout.readline())["ready"]
        cpu0, hold0 = proc_stat(pid)[0], cpu_of(holder.pid)
        time.sleep(HOLD_WINDOW_S)   # the measurement window: what holding them costs without the relay
        held = {"ready": ready, "cpu": (proc_stat(pid)[0] - cpu0) / HOLD_WINDOW_S,
                "holder_cpu": (cpu_of(holder.pid) - hold0) / HOLD_WINDOW_S, "rss": proc_stat(pid)[1],
                "stats": listener_stats(daemon.port)}
        hold1 = cpu_of(holder.pid)
        r = relay_run(load, daemon, rate, seconds, tag, watch=True)
        held["holder_loaded"] = cpu_of(holder.pid) - hold1
        held["stats_after"] = listener_stats(daemon.port)
    finally:
        done = stop_holder(holder)
    held["done"] = json.loads(done)["done"]
    r["held"] = held
    # handoffd closes the 12,000 connections the holder left over a few loop turns: the
    # next run starts once they are gone, not while it is still closing them.
    deadline = time.monotonic() + 60
    while listener_stats(daemon.port)["connections"] > before_held and time.monotonic() < deadline:
        time.sleep(0.2)
    return r


def pooled(runs):
    """p50/p90/p99/max of the round trips of RUNS together, as bench_relay_load computes a
    run's (the value at rank n*q)."""
    v = sorted(x for r in runs for x in r["rtt"])
    q = {name: v[max(int(len(v) * f) - 1, 0)] for name, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
    q.update(max=v[-1], n=len(v), rate=sum(r["rate"] for r in runs) / len(runs),
             cpu=sum(r["cpu"] for r in runs), received=sum(r["received"] for r in runs))
    return q


def describe_run(name, r):
    return (f"{name:>22}: {r['received']}/{r['sent']} replies, {r['rate']:,.0f} relayed/s, round trip "
            f"p50 {r['p50']:.2f} ms, p90 {r['p90']:.2f} ms, p99 {r['p99']:.2f} ms, max {r['max']:.1f} ms; "
            f"handoffd CPU {r['cpu']:.2f} s = {r['cpu'] / max(r['received'], 1) * 1e6:,.0f} us/message, "
            f"RSS {r['rss'] / 2**20:.1f} MiB; handoffd waited {r['cpu_wait'] * 1e3:,.0f} ms for a CPU; "
            f"harness CPU {r['harness_cpu']:.2f} s, waited {r['harness_wait'] * 1e3:,.0f} ms for a CPU; "
            f"errors {r['errors']}, lost {r['lost']}")


def describe_loaded(r):
    """Where the slowest round trips of a loaded run fell, and what handoffd's loop did then."""
    worst = collections.Counter(int(t) for t, _ in r["slowest"]).most_common(1)
    blocked = sum(v[2] for v in r["states"].values())
    lines = [f"{'':>22}  {r['cuts']}; the slowest 1 % were sent in seconds {slowest_seconds(r)}",
             f"{'':>22}  handoffd's loop thread (sampled every 5 ms) in "
             f"{describe_second(r['states'], worst[0][0]) if worst else '-'}; blocked on disk in {blocked} samples in all"]
    return "\n".join(lines)


def main():
    if sys.argv[1] == "--hold":
        asyncio.run(hold(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        return
    binary = os.path.abspath(sys.argv[1])
    rate = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    idle = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
    trickle = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
    rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 4
    hard = raise_fd_limit()
    pin = os.environ.get("BENCH_PIN") == "1"
    if pin:   # before any thread or child exists: they all inherit CPU 1
        os.sched_setaffinity(0, {1})
    connections = idle + trickle + 1000
    limits = (f"limits = {{ connections = {connections}, keepalive_timeout = 600, "
              f"request_timeout = {REQUEST_TIMEOUT}, buffered_mb = {BUFFERED_MB} }},")
    load_avg = os.getloadavg()
    runs = {"baseline": [], "control": [], "loaded": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_STATE_DIR")) as tmp:
        load = RelayLoad(binary)
        daemon = None
        try:
            daemon = start_daemon(binary, tmp, load, limits)
            pid = daemon.proc.pid
            if pin:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    os.sched_setaffinity(int(tid), {0})
            _, rss_idle = proc_stat(pid)
            relay_run(load, daemon, 200, CONVERSATIONS / 200, "open")   # one message per conversation
            relay_run(load, daemon, rate, 3, "warm")
            for i in range(rounds):
                runs["baseline"].append(relay_run(load, daemon, rate, seconds, f"base{i}"))
                runs["control"].append(control_run(binary, load, daemon, rate, seconds, idle, trickle, f"control{i}"))
                runs["loaded"].append(loaded_run(binary, load, daemon, rate, seconds, idle, trickle, f"load{i}"))
        finally:
            if daemon:
                daemon.stop()
            load.close()
    load_after = os.getloadavg()
    held = runs["loaded"][-1]["held"]
    print(f"fd limit {hard}; {CONVERSATIONS} conversations; relay paced at {rate} messages/s; {rounds} rounds "
          f"of three {seconds}-s runs (baseline, control, loaded)"
          + ("; handoffd alone on CPU 0, the harness on CPU 1" if pin else "")
          + f"; load average {load_avg[0]:.2f} before, {load_after[0]:.2f} after (1 min)")
    print(f"relay load, bot and hub: {load.proc.args[0]}; holder: {holder_command(binary, 0, 0, 0)[0]} "
          f"({'SCHED_IDLE' if HOLDER_IDLE else 'normal priority'})")
    print(f"held: {held['ready']['idle']} idle keep-alive + {trickle} trickling connections, a byte every "
          f"{TRICKLE_MS} ms each; in the last "
          f"round the tricklers connected {held['done']['trickle']} times and were cut off {held['done']['cut']} times")
    for i in range(rounds):
        base, control, loaded = (runs[k][i] for k in ("baseline", "control", "loaded"))
        print(f"round {i + 1}:")
        print(describe_run("baseline", base))
        print(describe_run("control (holder vs sink)", control))
        print(describe_run("loaded", loaded))
        print(describe_loaded(loaded))
    print("p99 by round, ms (baseline / control / loaded):  " + "; ".join(
        f"{b['p99']:.2f} / {c['p99']:.2f} / {l['p99']:.2f}"
        for b, c, l in zip(runs["baseline"], runs["control"], runs["loaded"])))
    pool = {k: pooled(v) for k, v in runs.items()}
    for k, q in pool.items():
        print(f"pooled {k:>8}: {q['n']} round trips, {q['rate']:,.0f} relayed/s, p50 {q['p50']:.2f} ms, "
              f"p90 {q['p90']:.2f} ms, p99 {q['p99']:.2f} ms, max {q['max']:.1f} ms; "
              f"handoffd CPU {q['cpu'] / max(q['received'], 1) * 1e6:,.0f} us/message")
    for name, a, b in (("loaded vs baseline", "baseline", "loaded"),
                       ("loaded vs control (what the connections cost the machine taken out)", "control", "loaded"),
                       ("control vs baseline (what the connections cost the machine)", "baseline", "control")):
        print(f"change, pooled, {name}: " + change(pool[a], pool[b]) + "; p99 by round "
              + ", ".join(f"{100 * (y['p99'] / x['p99'] - 1):+.0f} %" for x, y in zip(runs[a], runs[b]))
              + f" (median {statistics.median([100 * (y['p99'] / x['p99'] - 1) for x, y in zip(runs[a], runs[b])]):+.1f} %)")
    print(f"RSS: {rss_idle / 2**20:.1f} MiB at start, {held['rss'] / 2**20:.1f} MiB once the connections were held, "
          f"{max(r['rss'] for r in runs['loaded']) / 2**20:.1f} MiB at most after a loaded run "
          f"(caps: buffered_mb {BUFFERED_MB}, connections {connections})")
    print(f"handoffd CPU while only holding them: {100 * held['cpu']:.1f} % of a core; the holder's "
          f"{100 * held['holder_cpu']:.1f} % then, {held['holder_loaded']:.2f} s during the loaded run")
    print(f"handoffd's log: {log_summary(daemon.lines)}")
    print(f"listener while held: {held['stats']}")
    print(f"listener after the loaded run: {held['stats_after']}")


if __name__ == "__main__":
    main()
