"""The public listener under abuse: trickling clients, connection caps, buffered bytes,
descriptor exhaustion, conflicting Content-Length and the admin loopback check on [::].

Every test talks to the real daemon over real sockets. Trickling clients send a byte at a
time until the daemon closes the connection; the assertions are on what it answered and
on /healthz's listener counters, with deadlines generous enough not to flake.
"""
import json
import os
import resource
import socket
import time

from conftest import DEADLINE, MINIMAL_CONFIG, http_get


# /healthz counts the bytes of its own request among those held.
PROBE_BYTES = 200


def config(**limits):
    body = ", ".join(f"{k} = {v}" for k, v in limits.items())
    return MINIMAL_CONFIG.replace("directline", f"limits = {{ {body} }},\n  directline")


def connect(port, source=None, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=DEADLINE, source_address=(source, 0) if source else None)
    return s


def read_until_closed(s, timeout=DEADLINE):
    """Everything the daemon sends until it closes the connection."""
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def status_of(data):
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else None


def trickle(s, data, interval=0.2, timeout=DEADLINE):
    """Sends DATA one byte per INTERVAL (cycling) until the daemon answers or closes.
    Returns (what it answered, seconds it took)."""
    start = time.monotonic()
    s.setblocking(False)
    i = 0
    try:
        while time.monotonic() - start < timeout:
            try:
                chunk = s.recv(65536)
                if chunk or chunk == b"":
                    s.setblocking(True)
                    return chunk + (read_until_closed(s) if chunk else b""), time.monotonic() - start
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return b"", time.monotonic() - start
            try:
                s.send(data[i % len(data):i % len(data) + 1])
            except (BrokenPipeError, ConnectionResetError):
                pass
            i += 1
            time.sleep(interval)  # the trickle itself, not a synchronisation
    finally:
        s.setblocking(True)
    raise AssertionError(f"the daemon kept a trickling connection for {timeout} s")


def listener_stats(port):
    status, body = http_get(port, "/healthz")
    assert status == 200, body
    return body["listener"]


def wait_stats(port, pred, timeout=DEADLINE, conn=None):
    """Polls /healthz (on keep-alive connection CONN if given, so that the poll does not
    count as one more connection) until PRED(listener stats) holds; returns the stats."""
    end = time.monotonic() + timeout
    while True:
        st = keepalive_get(conn)[1]["listener"] if conn else listener_stats(port)
        if pred(st):
            return st
        if time.monotonic() > end:
            raise AssertionError(f"listener stats never matched: {st}")
        time.sleep(0.05)


def keepalive_get(s, path="/healthz"):
    """One GET on an open keep-alive connection; returns (status, JSON body)."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    f = s.makefile("rb")
    status = int(f.readline().split()[1])
    length = 0
    while True:
        line = f.readline().strip()
        if not line:
            break
        k, v = line.split(b":", 1)
        if k.lower() == b"content-length":
            length = int(v)
    body = f.read(length)
    f.close()
    return status, json.loads(body)


# --- the whole-request deadline ---------------------------------------------------------

def test_trickling_headers_are_cut_off(daemon):
    d = daemon(config(request_timeout=1, keepalive_timeout=5))
    s = connect(d.port)
    answer, took = trickle(s, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000)
    assert status_of(answer) == 408, answer
    assert took < 8
    assert listener_stats(d.port)["timed_out"] >= 1


def test_trickling_body_is_cut_off(daemon):
    d = daemon(config(request_timeout=1, keepalive_timeout=5))
    s = connect(d.port)
    s.sendall(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
    answer, took = trickle(s, b"x")
    assert status_of(answer) == 408, answer
    assert took < 8
    s.close()
    st = wait_stats(d.port, lambda st: st["connections"] == 1)
    assert st["buffered_bytes"] < PROBE_BYTES


def test_idle_keepalive_connection_is_closed(daemon):
    d = daemon(config(request_timeout=30, keepalive_timeout=0.5))
    s = connect(d.port)
    assert keepalive_get(s)[0] == 200
    start = time.monotonic()
    assert read_until_closed(s) == b""
    assert time.monotonic() - start < 10
    assert listener_stats(d.port)["timed_out"] >= 1


def test_keepalive_connection_serves_many_requests(daemon):
    d = daemon(config(request_timeout=2, keepalive_timeout=2))
    s = connect(d.port)
    for _ in range(20):
        status, body = keepalive_get(s)
        assert status == 200
        assert body["listener"]["connections"] == 1
    s.close()


def test_a_crowd_connecting_at_once_is_served(daemon):
    """300 connections waiting in the backlog together are accepted 64 a turn (so that the
    other sockets get their turns in between), and every one of them is served."""
    d = daemon(config(connections=1000))
    crowd = [connect(d.port) for _ in range(300)]
    for s in crowd:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert [status_of(read_until_closed(s)) for s in crowd] == [200] * 300
    for s in crowd:
        s.close()
    wait_stats(d.port, lambda st: st["connections"] == 1)


# --- connection caps -------------------------------------------------------------------

def fill_and_overflow(d, total):
    """Holds TOTAL connections (the first one a keep-alive for /healthz), then checks the
    next one is answered 503 and closed. Returns (keep, the idle ones)."""
    keep = connect(d.port)
    idle = [connect(d.port) for _ in range(total - 1)]
    wait_stats(d.port, lambda st: st["connections"] == total, conn=keep)
    answer = read_until_closed(connect(d.port))
    assert status_of(answer) == 503, answer
    return keep, idle


def test_total_connection_cap(daemon):
    d = daemon(config(connections=5))
    keep, idle = fill_and_overflow(d, 5)
    # The others did not pay for it.
    status, body = keepalive_get(keep)
    assert status == 200
    assert body["listener"]["refused"] == 1
    assert body["listener"]["connections_max"] == 5
    assert "limit=connections" in d.wait_line("http.refused")
    for c in idle:
        c.close()
    st = wait_stats(d.port, lambda st: st["connections"] == 1, conn=keep)
    assert st["buffered_bytes"] < PROBE_BYTES
    assert http_get(d.port, "/healthz")[0] == 200


def test_connections_per_ip(daemon):
    d = daemon(config(connections_per_ip=3))
    keep, mine = fill_and_overflow(d, 3)
    other = connect(d.port, source="127.0.0.2")
    assert keepalive_get(other)[0] == 200
    assert "limit=connections_per_ip" in d.wait_line("http.refused")
    for c in mine:
        c.close()
    wait_stats(d.port, lambda st: st["connections"] == 2, conn=keep)
    assert http_get(d.port, "/healthz")[0] == 200


def test_buffered_bytes_cap(daemon):
    d = daemon(config(buffered_mb=0.05, request_timeout=30))  # 52428 bytes
    head = b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 40000\r\n\r\n"
    a = connect(d.port)
    a.sendall(head + b"a" * 30000)
    wait_stats(d.port, lambda st: st["buffered_bytes"] >= 30000)
    b = connect(d.port)
    b.sendall(head + b"b" * 30000)
    answer = read_until_closed(b, timeout=10)
    assert status_of(answer) == 503, answer
    a.sendall(b"a" * 10000)
    a.settimeout(DEADLINE)
    assert status_of(a.recv(65536)) == 404
    a.close()
    wait_stats(d.port, lambda st: st["buffered_bytes"] < PROBE_BYTES and st["connections"] == 1)


# --- descriptor exhaustion -------------------------------------------------------------

def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_descriptor_exhaustion_is_calm(daemon):
    d = daemon(config(connections=100000, request_timeout=60, keepalive_timeout=60))
    keep = connect(d.port)
    assert keepalive_get(keep)[0] == 200
    resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (64, 64))
    clients = [connect(d.port) for _ in range(150)]
    d.wait_line("http.accept_paused")
    # While out of descriptors: no spinning, no flood, and /healthz still answers on a
    # connection that was already open.
    cpu_before = cpu_seconds(d.proc.pid)
    time.sleep(2.0)  # the measurement window, not a synchronisation
    cpu_used = cpu_seconds(d.proc.pid) - cpu_before
    assert cpu_used < 0.6, f"daemon used {cpu_used:.2f} s of CPU in 2 s while out of descriptors"
    assert len(d.log()) < 20000, d.log()[-3000:]
    status, body = keepalive_get(keep)
    assert status == 200
    assert body["listener"]["fd_exhausted"] >= 1
    assert body["listener"]["accept_paused"] is True
    for c in clients:
        c.close()
    # Accepting resumes by itself once descriptors are free again. Only a new connection
    # shows it (the daemon cannot know before accept() works), so the test asks the way a
    # client would: until the answer is no longer the 503 a waiting client is shed with.
    end = time.monotonic() + DEADLINE
    while True:
        try:
            status, body = http_get(d.port, "/healthz")
            if status == 200 and body["listener"]["accept_paused"] is False:
                break
        except OSError:
            pass
        assert time.monotonic() < end, "accepting did not resume"
        time.sleep(0.1)
    d.wait_line("http.accept_resumed")
    text = d.log()
    assert text.count("http.accept_paused") <= 5, text[-3000:]
    assert text.count("Too many open files") <= 12, text[-3000:]


# --- request framing and the admin check -----------------------------------------------

def test_conflicting_content_length_is_refused(daemon):
    d = daemon()
    s = connect(d.port)
    s.sendall(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde")
    answer = read_until_closed(s)
    assert status_of(answer) == 400, answer
    assert b"Content-Length" in answer.split(b"\r\n\r\n", 1)[1]
    # The same value twice is merely redundant.
    s = connect(d.port)
    s.sendall(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n"
              b"Connection: close\r\n\r\nabc")
    assert status_of(read_until_closed(s)) == 404


def test_admin_on_ipv6_any_accepts_v4_mapped_loopback(daemon):
    text = MINIMAL_CONFIG.replace("127.0.0.1:0", "[::]:0").replace(
        "directline", "admin = { token = 'admin-token-0123456789abcdef' },\n  directline")
    d = daemon(text)
    s = connect(d.port, host="127.0.0.1")
    s.sendall(b"POST /admin/reload HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
              b"Authorization: Bearer admin-token-0123456789abcdef\r\nConnection: close\r\n\r\n")
    answer = read_until_closed(s)
    assert status_of(answer) == 200, answer


# --- the config keys -------------------------------------------------------------------

def test_listener_limits_are_checked(tmp_path):
    from conftest import run, write_config
    write_config(tmp_path, config(connections=0, connections_per_ip=10, request_timeout=5,
                                  keepalive_timeout=2, buffered_mb=16))
    out = run(["-t", "-c", "config.lua"], cwd=tmp_path)
    assert (out.returncode, out.stdout) == (0, "configuration ok\n"), out.stderr
    for bad, key in ((dict(connections=1.5), "limits.connections"),
                     (dict(connections_per_ip=-1), "limits.connections_per_ip"),
                     (dict(request_timeout=0), "limits.request_timeout"),
                     (dict(keepalive_timeout=7200), "limits.keepalive_timeout"),
                     (dict(buffered_mb=0), "limits.buffered_mb")):
        write_config(tmp_path, config(**bad))
        out = run(["-t", "-c", "config.lua"], cwd=tmp_path)
        assert out.returncode == 1 and key in out.stderr, (bad, out.stderr)


# --- routes that answer later -----------------------------------------------------------

def hub_config(**limits):
    from conftest import SOURCE_DIR
    scripts = SOURCE_DIR / "tests/integration/scripts"
    return config(**limits).replace(
        "directline", f'script_path = "{scripts}/?.lua",\n  hub = {{ module = "testhub" }},\n  directline')


def test_webhook_connections_are_released(daemon):
    d = daemon(hub_config())
    keep = connect(d.port)
    for _ in range(5):
        s = connect(d.port)
        s.sendall(b"POST /t/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
        assert status_of(s.recv(65536)) == 201
        s.close()
    # A peer that hangs up while its webhook is still running: its connection goes when
    # the answer cannot be delivered.
    s = connect(d.port)
    s.sendall(b"GET /t/sleep?s=0.5 HTTP/1.1\r\nHost: t\r\n\r\n")
    d.wait_line("testhub.sleeping")
    s.close()
    st = wait_stats(d.port, lambda st: st["connections"] == 1, conn=keep)
    assert st["buffered_bytes"] < PROBE_BYTES
