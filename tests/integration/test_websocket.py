"""runtime/directline/websocket.c over real sockets.

Setup: tests/wsserver.py (aiohttp) on 127.0.0.1 with kernel-chosen ports: one plain
listener, one TLS listener with a certificate for localhost/127.0.0.1 and one with a
certificate for wrong.example (both made here with the openssl CLI). Each test runs
tests/tools/wsprobe (links handoffd_core) against one server path; the probe prints one
line per event (open, message, close ...) and the daemon log on stderr. The tests assert
those lines and what the server saw on the wire ("request path=...", "server-close ...").
"""
import base64
import hashlib
import os
import pathlib
import re
import select
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

SOURCE = pathlib.Path(os.environ.get("HANDOFFD_SOURCE_DIR", pathlib.Path(__file__).parents[2]))
TOOLS = pathlib.Path(os.environ.get("HANDOFFD_TOOLS_DIR", SOURCE / "build" / "tests" / "tools"))
PROBE = TOOLS / "wsprobe"
FIELD = re.compile(r'(\w+)=("([^"]*)"|\S*)')


class Server:
    """The wsserver.py process and the lines it printed, read by a thread."""

    def __init__(self, args):
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(SOURCE / "tests" / "wsserver.py"), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.ports = {}
        for i in range(1 + args.count("--tls")):
            name = "plain" if i == 0 else f"tls{i - 1}"
            self.ports[name] = int(self.wait_for(rf"^PORT {name} \d+$", since=0).split()[2])

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.lines)

    def wait_for(self, pattern, since, timeout=10):
        """The first line after SINCE matching PATTERN, waiting up to TIMEOUT seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[since:]:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"server never printed {pattern!r}: {self.lines[since:]}"
                self.cond.wait(left)

    def seen(self, since):
        with self.cond:
            return list(self.lines[since:])

    def sync(self):
        """Returns once the server handled a request made now, so every connection made
        before it has been handled too."""
        since = self.mark()
        url = f"http://127.0.0.1:{self.ports['plain']}/status?code=204"
        urllib.request.urlopen(url, timeout=10).close()
        self.wait_for(r"request path=/status", since)

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


class Run:
    """One wsprobe run: its event lines, parsed close line and log."""

    def __init__(self, stdout, log):
        self.events = stdout.splitlines()
        self.log = log
        closes = [e for e in self.events if e.startswith("close ")]
        assert len(closes) <= 1, f"on_close more than once: {self.events}"
        self.close = {k: (q if q or v == '""' else v) for k, v, q in FIELD.findall(closes[0])} \
            if closes else None

    def messages(self):
        return [e.split(" text=", 1)[1] for e in self.events if e.startswith("message ")]


def probe(*args, timeout=20):
    proc = subprocess.run([str(PROBE), *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"wsprobe exit {proc.returncode}: {proc.stdout}\n{proc.stderr}"
    assert "ERROR: AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr
    return Run(proc.stdout, proc.stderr)


def make_cert(directory, name, san):
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", f"/CN={name}", "-addext",
                    f"subjectAltName={san}"], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    return {"good": make_cert(directory, "localhost", "DNS:localhost,IP:127.0.0.1"),
            "wrong": make_cert(directory, "wrong.example", "DNS:wrong.example")}


@pytest.fixture(scope="module")
def server(certs):
    srv = Server(["--tls", *map(str, certs["good"]), "--tls", *map(str, certs["wrong"])])
    yield srv
    srv.stop()


def ws(server, path):
    return f"ws://127.0.0.1:{server.ports['plain']}{path}"


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- plain ws: messages -------------------------------------------------------------

def test_echo_then_clean_close(server):
    since = server.mark()
    run = probe("--send", "hello", "--close-after", "1", ws(server, "/echo"))
    assert run.events[:2] == ["open", "message len=5 text=hello"]
    assert run.close["end"] == "local" and run.close["code"] == "1000"
    assert run.close["reason"] == "bye"
    server.wait_for(r"^server-close code=1000 reason=bye$", since)


def test_pushed_messages_arrive_in_order(server):
    run = probe("--close-after", "5", ws(server, "/push?n=5"))
    assert run.messages() == [f"msg-{i}" for i in range(1, 6)]
    assert run.close["end"] == "local"


def test_empty_and_blank_messages_are_delivered(server):
    run = probe("--close-after", "3", ws(server, "/keepalive"))
    assert [e.split(" text=")[0] for e in run.events if e.startswith("message")] == [
        "message len=0", "message len=3", "message len=4"]
    assert run.messages()[2] == "done"


def test_fragmented_message_is_reassembled_and_ping_answered(server):
    since = server.mark()
    run = probe(ws(server, "/fragmented"))
    assert run.messages() == ["Hello, world", "after"]
    assert (run.close["end"], run.close["reason"]) == ("closed", "done")
    server.wait_for(r"^server-got type=PONG data=p$", since)	# the ping between fragments


def test_binary_messages_are_ignored(server):
    run = probe("--close-after", "1", ws(server, "/binary"))
    assert run.messages() == ["after"]


def test_message_at_the_limit_is_delivered(server):
    run = probe("--max-message", "1000", "--close-after", "1", ws(server, "/big?size=1000"))
    assert run.events[1].startswith("message len=1000 ")
    assert run.close["end"] == "local"


def test_oversize_message_closes_with_1009(server):
    since = server.mark()
    run = probe("--max-message", "1000", ws(server, "/big?size=1001"))
    assert run.events[0] == "open" and not run.messages()
    assert run.close["end"] == "too_large" and run.close["code"] == "1009"
    assert "message too large" in run.close["reason"]
    server.wait_for(r"^server-close code=1009", since)


def test_default_limit_is_one_mebibyte(server):
    run = probe("--close-after", "1", ws(server, f"/big?size={1024 * 1024}"))
    assert run.events[1].startswith(f"message len={1024 * 1024} ")
    run = probe(ws(server, f"/big?size={1024 * 1024 + 1}"))
    assert run.close["end"] == "too_large"


# ---- plain ws: how it ends ------------------------------------------------------------

@pytest.mark.parametrize("code", [1000, 4001])
def test_server_close_code_and_reason_are_reported(server, code):
    run = probe(ws(server, f"/close?code={code}&reason=collision"))
    assert run.close["end"] == "closed"
    assert run.close["code"] == str(code) and run.close["reason"] == "collision"


def test_abrupt_tcp_close_is_eof(server):
    run = probe(ws(server, "/abrupt"))
    assert run.messages() == ["bye"]
    assert run.close["end"] == "eof" and run.close["code"] == "0"


def test_silent_server_is_declared_dead_after_the_window(server):
    since = server.mark()
    run = probe("--ping", "100", "--dead", "500", ws(server, "/silent"))
    assert run.close["end"] == "dead" and run.close["err"] == "-110"
    assert int(run.close["after_open_ms"]) >= 490	# open and the last byte: same ms, or 1 apart
    server.wait_for(r"^server-ping$", since)	# we did ask


def test_pongs_keep_an_idle_socket_alive(server):
    # The server answers pings but sends nothing else; the window is 10 pings long and
    # the socket lives 3 windows, so only pongs keep it from being declared dead.
    run = probe("--ping", "50", "--dead", "500", "--close-after-ms", "1500", ws(server, "/echo"))
    assert run.close["end"] == "local", run.events


def answer_upgrade(conn):
    """Reads the client's upgrade request on a raw socket and accepts it."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(4096)
    key = re.search(rb"Sec-WebSocket-Key: *(\S+)", head, re.I).group(1)
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def frame(opcode, payload, fin=True):
    """One unmasked server frame, with the shortest length encoding (RFC 6455 5.2)."""
    first = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        return first + bytes([len(payload)]) + payload
    if len(payload) < 65536:
        return first + b"\x7e" + len(payload).to_bytes(2, "big") + payload
    return first + b"\x7f" + len(payload).to_bytes(8, "big") + payload


class Dribbler:
    """A WebSocket peer on a raw socket that sends its frames cut at uneven places: one
    byte, two, three ... then a large piece, each its own TCP segment a few milliseconds
    apart, so the client reads headers, payloads and fragmented messages in parts. (The
    pauses only cut the stream; the test waits for events, never for time.) Then it
    closes 1000 "done" and reports whether a pong came back for its ping."""
    CUTS = (1, 2, 3, 5, 7, 11, 13, 4096)

    def __init__(self, stream):
        self.stream, self.pong = stream, False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            answer_upgrade(conn)
            at, i = 0, 0
            while at < len(self.stream):
                cut = self.CUTS[i % len(self.CUTS)]
                conn.sendall(self.stream[at:at + cut])
                at, i = at + cut, i + 1
                time.sleep(0.003)
            conn.sendall(frame(0x8, b"\x03\xe8done"))
            conn.settimeout(30)
            got, opcodes = b"", []
            while 0x8 not in opcodes:      # until the client answered the close
                data = conn.recv(65536)
                if not data:
                    break
                got += data
                # the client's frames here are short and masked: 2 bytes, mask, payload
                while len(got) >= 6 and len(got) >= 6 + (got[1] & 0x7f):
                    opcodes.append(got[0] & 0x0f)
                    got = got[6 + (got[1] & 0x7f):]
            self.pong = 0xa in opcodes


def test_frames_cut_anywhere_across_reads_are_reassembled():
    # The client frees its wslay context between messages (websocket_frames.c, ws_idle_framing) and
    # must keep it while a frame or a fragmented message is only partly read: cut the
    # stream everywhere (inside headers of every length encoding, payloads, between the
    # fragments of a message, around a ping inside one) and every message must come whole.
    first = bytes(ord("a") + i % 26 for i in range(300))
    big = bytes(ord("A") + i % 26 for i in range(70000))
    stream = (frame(0x1, first) + frame(0x1, b"Hel", fin=False) + frame(0x9, b"p") +
              frame(0x0, b"lo, ", fin=False) + frame(0x0, b"world") + frame(0x1, b"") +
              frame(0x1, big) + frame(0x1, b"last"))
    peer = Dribbler(stream)
    run = probe(f"ws://127.0.0.1:{peer.port}/stream")
    peer.thread.join(10)
    lens = [int(e.split()[1][4:]) for e in run.events if e.startswith("message ")]
    assert lens == [300, 12, 0, 70000, 4], run.events
    assert run.messages() == [first[:200].decode(), "Hello, world", "", big[:200].decode(), "last"]
    assert (run.close["end"], run.close["reason"]) == ("closed", "done")
    assert peer.pong


class PingFlooder:
    """A hostile WebSocket peer on a raw socket (aiohttp would read for us): it answers
    the upgrade, then sends N pings of 125 bytes (more than the kernels' buffers hold)
    and reads none of the pongs until the client stops taking pings, or FLOOD_S seconds;
    then it reads, counts the pongs, and closes 1000 "flooded"."""
    FLOOD_S = 2.0
    PING = b"\x89\x7d" + b"p" * 125

    def __init__(self, pings):
        self.pings, self.pongs, self.unsent = pings, 0, None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _count_pongs(self, buf):
        """Counts the complete client frames (masked, under 126 bytes) at the start of BUF;
        returns what is left."""
        at = 0
        while len(buf) - at >= 6 and len(buf) - at >= 6 + (buf[at + 1] & 0x7f):
            if buf[at] & 0x0f == 0xa:
                self.pongs += 1
            at += 6 + (buf[at + 1] & 0x7f)
        return buf[at:]

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            answer_upgrade(conn)
            flood = memoryview(self.PING * self.pings)
            conn.settimeout(self.FLOOD_S)
            try:
                while flood:
                    flood = flood[conn.send(flood):]
            except socket.timeout:
                pass                # the client stopped reading: the rest waits
            self.unsent = len(flood)
            conn.settimeout(30)
            buf = b""
            while self.pongs < self.pings:
                if flood and select.select([], [conn], [], 0)[1]:
                    flood = flood[conn.send(flood):]
                data = conn.recv(1 << 20)
                if not data:
                    break
                buf = self._count_pongs(buf + data)
            conn.sendall(flood.tobytes() + b"\x88\x09\x03\xe8flooded")   # close 1000 "flooded"
            conn.recv(64)


def probe_peak_rss(pings):
    """wsprobe against a PingFlooder, with the sanitizer's quarantine off (it would keep
    every freed pong and measure itself); returns the run, the flooder, the peak RSS (kB)."""
    flooder = PingFlooder(pings)
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "quarantine_size_mb=0"]))
    proc = subprocess.run([str(PROBE), "--peak-rss", f"ws://127.0.0.1:{flooder.port}/stream"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    flooder.thread.join(10)
    run = Run(proc.stdout, proc.stderr)
    peak = [int(e.split("kb=")[1]) for e in run.events if e.startswith("peak-rss ")]
    return run, flooder, peak[0]


def test_ping_flood_from_a_peer_that_does_not_read_stays_bounded():
    # 100,000 pings (12.7 MB) from a peer that reads none of the pongs for a while:
    # unbounded, the pongs beyond what the kernels hold queued up in wslay. Bounded by max_output (64 KiB), the
    # client stops reading while they wait, and every pong still goes out once the peer
    # reads again.
    small, _, small_peak = probe_peak_rss(100)
    assert small.close["end"] == "closed" and small.close["reason"] == "flooded"
    run, flooder, peak = probe_peak_rss(100000)
    assert run.close["end"] == "closed" and run.close["reason"] == "flooded"
    assert flooder.pongs == 100000
    print(f"peak RSS: {small_peak} kB after 100 pings, {peak} kB after 100000 "
          f"({flooder.unsent} bytes of pings left unread during the flood)")
    assert peak - small_peak < 8 * 1024, f"{peak - small_peak} kB more for the flood"


def test_client_close_before_open_aborts(server):
    run = probe("--close-before-open", ws(server, "/echo"))
    assert run.events == [run.events[0]] and run.close["end"] == "local"
    assert run.close["reason"] == "closed before open"


@pytest.mark.parametrize("flag,expect", [
    ("--free-on-open", ["open", "freed"]),
    ("--free-on-message", ["open", "message len=5 text=msg-1", "freed"]),
])
def test_free_inside_a_callback_stops_everything(server, flag, expect):
    run = probe(flag, ws(server, "/push?n=3"))
    assert run.events == expect	# and ASan saw no use after free or leak


# ---- handshake -------------------------------------------------------------------------

@pytest.mark.parametrize("query,status,retry_after", [
    ("code=403", "403", None),
    ("code=429&retry_after=7", "429", "7"),
    ("code=500", "500", None),
])
def test_refused_upgrade_reports_status_and_retry_after(server, query, status, retry_after):
    run = probe(ws(server, f"/status?{query}"))
    assert run.events == [run.events[0]]	# no open
    assert run.close["end"] == "http" and run.close["status"] == status
    assert run.close.get("retry_after") == retry_after


def test_handshake_timeout(server):
    run = probe("--connect-timeout", "300", ws(server, "/stall"))
    assert run.close["end"] == "timeout" and run.close["err"] == "-110"


def test_wrong_accept_is_refused(server):
    run = probe(ws(server, "/badaccept"))
    assert run.close["end"] == "handshake"
    assert "Sec-WebSocket-Accept" in run.close["reason"]


def test_oversized_handshake_answer_is_refused(server):
    run = probe(ws(server, "/hugeheader"))
    assert run.close["end"] == "handshake" and "over 8192 bytes" in run.close["reason"]


def test_extra_headers_are_sent(server):
    since = server.mark()
    probe("--header", "X-Test: probe-1", "--close-after", "0", ws(server, "/echo"))
    server.wait_for(r"^request path=/echo x-test=probe-1$", since)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "ws://user@127.0.0.1/x", "ws://127.0.0.1:99999/x", "ws:///x",
    "ws://127.0.0.1/a b", "ws://[::1/x",
])
def test_bad_urls_are_refused_at_once(url):
    run = probe(url)
    assert run.events == ["connect-failed rc=-22"]


def test_header_injection_is_refused(server):
    run = probe("--header", "X-Test: a\r\nX-Evil: b", ws(server, "/echo"))
    assert run.events == ["connect-failed rc=-22"]


def test_connection_refused(server):
    run = probe(f"ws://127.0.0.1:{closed_port()}/echo")
    assert run.close["end"] == "connect" and run.close["err"] == "-111"


def test_query_is_never_logged(server):
    run = probe("--close-after", "0", ws(server, "/echo?watermark=4&t=SECRET1&x=SECRET2"))
    assert run.close["end"] == "local"
    assert f"where=127.0.0.1:{server.ports['plain']}/echo " in run.log
    assert "SECRET" not in run.log and "watermark" not in run.log


# ---- wss --------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])	# IP SAN; DNS name + SNI
def test_wss_echo(server, certs, host):
    run = probe("--ca", str(certs["good"][0]), "--send", "hi", "--close-after", "1",
                f"wss://{host}:{server.ports['tls0']}/echo")
    assert run.events[:2] == ["open", "message len=2 text=hi"]
    assert run.close["end"] == "local" and run.close["code"] == "1000"


def test_wss_second_connection_resumes_the_session(server, certs):
    proc = subprocess.run([str(PROBE), "--ca", str(certs["good"][0]), "--send", "hi",
                           "--close-after", "1", "--times", "2",
                           f"wss://localhost:{server.ports['tls0']}/echo"],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0 and "ERROR: AddressSanitizer" not in proc.stderr
    assert proc.stdout.count("message len=2 text=hi") == 2
    assert proc.stdout.count("close end=local code=1000") == 2
    assert re.findall(r"websocket\.open .*resumed=(\d)", proc.stderr) == ["0", "1"], proc.stderr


def test_wss_server_close_and_abrupt_close(server, certs):
    url = f"wss://localhost:{server.ports['tls0']}"
    run = probe("--ca", str(certs["good"][0]), f"{url}/close?code=1000&reason=collision")
    assert (run.close["end"], run.close["reason"]) == ("closed", "collision")
    run = probe("--ca", str(certs["good"][0]), f"{url}/abrupt")
    assert run.messages() == ["bye"] and run.close["end"] == "eof"


@pytest.mark.parametrize("ca,port,detail", [
    ("wrong", "tls1", "certificate verify failed: hostname mismatch"),
    (None, "tls0", "certificate verify failed: self-signed certificate"),
])
def test_wss_bad_certificate_fails_before_the_upgrade(server, certs, ca, port, detail):
    since = server.mark()
    args = ["--ca", str(certs[ca][0])] if ca else []
    run = probe(*args, f"wss://localhost:{server.ports[port]}/echo")
    assert run.close["end"] == "tls" and run.close["reason"] == detail
    assert run.events == [run.events[0]]
    server.sync()
    assert not [line for line in server.seen(since) if "path=/echo" in line]


def test_wss_connection_refused_is_a_connect_error(certs):
    run = probe("--ca", str(certs["good"][0]), f"wss://127.0.0.1:{closed_port()}/echo")
    assert run.close["end"] == "connect" and run.close["err"] == "-111"
