"""What the Direct Line tests (test_directline*.py) share: the emulator (tests/dlemu) and the
C test driver (tests/dl_driver.c) that runs runtime/directline/directline.c.

The driver reads commands on stdin and prints one JSON event per line; Driver collects them
on a thread and lets a test wait for an event with a deadline, never for a fixed time. The
checks at the bottom are the properties every scenario must keep: each bot activity
dispatched exactly once and in the order the bot sent it, and each of our activities
received by the bot exactly once and in the order we sent it.
"""
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

SOURCE_DIR = pathlib.Path(os.environ.get("HANDOFFD_SOURCE_DIR", pathlib.Path(__file__).parents[2]))
sys.path.insert(0, str(SOURCE_DIR))
from tests.dlemu.control import spawn  # noqa: E402
from jsonl_proc import JsonLinesProcess  # noqa: E402

DRIVER = os.environ.get("DL_DRIVER", str(SOURCE_DIR / "build" / "tests" / "dl_driver"))
DEADLINE = 15.0
# Every emulator token (conversation and stream) is a JWT with this header.
JWT_HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

# Test timings: fast reconnects, a short liveness window, a short echo grace.
FAST = {"reconnect_base": 0.1, "reconnect_cap": 2, "liveness": 2, "echo_grace": 0.5, "poll_interval": 0.5}


def lua_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def write_config(path, **directline):
    fields = ",\n    ".join("%s = %s" % (k, lua_value(v)) for k, v in directline.items() if v is not None)
    path.write_text("return {\n  directline = {\n    %s,\n  },\n}\n" % fields)
    return path


class Driver(JsonLinesProcess):
    """dl_driver with its events collected; the log goes to a file in the test's tmp dir."""

    def __init__(self, tmp_path, emu, base="http_base", log_level="info", **settings):
        directline = dict(FAST)
        directline.update(base=base if "://" in base else emu.info[base], secret=emu.info["secret"],
                          ca_file=emu.info["ca_file"])
        directline.update(settings)
        self.config = write_config(tmp_path / "dl.lua", **directline)
        super().__init__([DRIVER, "-c", str(self.config), "--log-level", log_level, "--print-tokens", "1"],
                         tmp_path / "driver.log", name="dl_driver")
        self.wait_for(lambda e: e["ev"] == "ready")

    def batch(self, *lines):
        """Several commands in one write, so the driver reads them in one loop turn."""
        self.proc.stdin.write("".join(" ".join(str(w) for w in line) + "\n" for line in lines))
        self.proc.stdin.flush()

    def open(self, key, state="online"):
        """Opens KEY and waits until it is STATE; returns its Direct Line conversation id."""
        self.cmd("open", key)
        return self.wait_state(key, state)["conv"]

    def send(self, key, tag, text):
        self.cmd("send", key, tag, text)

    def send_json(self, key, tag, activity):
        self.cmd("sendjson", key, tag, json.dumps(activity))

    def sent(self, tag, timeout=DEADLINE):
        """Waits for the outcome of the send tagged TAG."""
        return self.wait_for(lambda e: e["ev"] in ("sent", "refused") and e["tag"] == tag, timeout)

    def stats(self):
        n = len(self.events)
        self.cmd("stats")
        return self.wait_for(lambda e: e["ev"] == "stats", start=n)

    def wait_stat(self, name, at_least, timeout=DEADLINE):
        """Asks for the figures until NAME reaches AT_LEAST (each answer is an event)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.stats()[name]
            if value >= at_least or time.monotonic() > deadline:
                assert value >= at_least, "%s stayed at %s" % (name, value)
                return value
            with self.cond:     # wake early if the driver says anything
                self.cond.wait(0.05)

    def metrics(self):
        n = len(self.events)
        self.cmd("metrics")
        return self.wait_for(lambda e: e["ev"] == "metrics", start=n)["text"]

    def metric(self, name):
        """The value of one series, e.g. metric('handoffd_directline_collisions_total')."""
        for line in self.metrics().splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
        return 0

    # ---- waiting --------------------------------------------------------------------
    def wait_for(self, pred, timeout=DEADLINE, start=0):
        return super().wait_for(pred, start, timeout)

    def wait_state(self, key, state, start=0, timeout=DEADLINE):
        return self.wait_for(lambda e: e["ev"] == "state" and e["key"] == key and e["state"] == state,
                             timeout, start)

    def wait_activity(self, key, activity_id, timeout=DEADLINE):
        return self.wait_for(lambda e: e["ev"] == "activity" and e["key"] == key and e["id"] == activity_id,
                             timeout)

    def wait_log(self, needle, timeout=DEADLINE):
        """Waits for a log line holding NEEDLE."""
        deadline = time.monotonic() + timeout
        while needle not in self.log() and self.proc.poll() is None and time.monotonic() < deadline:
            with self.cond:     # the log is a file: look again every 50 ms or on an event
                self.cond.wait(0.05)
        assert needle in self.log(), "no log line with %r:\n%s" % (needle, self.log()[-4000:])

    # ---- reading --------------------------------------------------------------------
    def activities(self, key):
        return [e for e in self.events if e["ev"] == "activity" and e["key"] == key]

    def states(self, key, start=0):
        return [(e["state"], e["reason"]) for e in self.events[start:] if e["ev"] == "state" and e["key"] == key]

    def tokens(self):
        return {e["token"] for e in self.events if e["ev"] == "persist" and e.get("token")}

    def stop(self):
        """Ends the driver (end of input) and checks it exited cleanly."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        self.log_file.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def emu():
    with spawn(args=["--wrong-tls-port", "0"]) as e:
        yield e


@pytest.fixture(scope="module")
def short_emu():
    """Tokens live 3 s; a refresh is due every ~1.5 s."""
    with spawn(token_ttl=3) as e:
        yield e


@pytest.fixture(scope="module")
def long_token_emu():
    """As short_emu, with tokens as long as Direct Line's (about 1,200 characters, where the
    emulator's own are about 250): in Authorization headers, streamUrls and refreshes."""
    with spawn(token_ttl=3, settings={"token_size": 1200}) as e:
        yield e


@pytest.fixture
def driver_factory(tmp_path, emu):
    """driver_factory(**settings) -> a Driver; each is stopped and checked at teardown."""
    drivers = []

    def make(emulator=None, subdir=None, **settings):
        path = tmp_path / (subdir or "d%d" % len(drivers))
        path.mkdir()
        d = Driver(path, emulator or emu, **settings)
        drivers.append(d)
        return d
    yield make
    for d in drivers:
        assert d.stop() == 0, "driver failed:\n" + d.log()[-4000:]
        assert "ERROR" not in d.log() and " error " not in d.log(), d.log()[-4000:]


# ---- the properties every scenario keeps --------------------------------------------

def bot_ids(ctl, cid, typing=False):
    return [a["id"] for a in ctl.sent(cid) if typing or a.get("type") != "typing"]


def settle(drv, ctl, key, cid):
    """Waits until the last non-typing activity the bot sent has been dispatched."""
    ids = bot_ids(ctl, cid)
    if ids:
        drv.wait_activity(key, ids[-1])


def check_exactly_once(drv, ctl, key, cid):
    """Every bot activity dispatched once, in the bot's order (typing can only come over
    the stream, so it is checked for duplicates but may be missing)."""
    settle(drv, ctl, key, cid)
    got = [a["id"] for a in drv.activities(key)]
    assert len(got) == len(set(got)), "duplicates dispatched: %s" % got
    assert [i for i in got if i in set(bot_ids(ctl, cid))] == bot_ids(ctl, cid)
    assert all(a["role"] == "bot" for a in drv.activities(key)), "an echo of ours was dispatched"
    return got


def check_received(ctl, cid, texts):
    """The bot received our messages exactly once each, in order."""
    got = [a.get("text") for a in ctl.received(cid) if a.get("type") == "message"]
    assert got == texts
    ids = [a["channelData"]["clientActivityID"] for a in ctl.received(cid)]
    assert len(ids) == len(set(ids)) and all(i.startswith("hd1.") for i in ids)


def texts(drv, key):
    return [a["raw"].get("text") for a in drv.activities(key) if a["type"] == "message"]
