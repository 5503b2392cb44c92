"""Shared pieces of the integration tests: start the real daemon, wait for events.

Every daemon listens on 127.0.0.1 port 0 and reports the port it bound in its
`http.listen` log line, so no test races another for a port. Waiting is always for an
event (a log line, a process exit) with a deadline, never a fixed sleep.
"""
import json
import os
import pathlib
import select
import signal
import subprocess
import threading
import urllib.error
import urllib.request

import pytest

BIN = os.environ.get("HANDOFFD_BIN", "handoffd")
SOURCE_DIR = pathlib.Path(os.environ.get("HANDOFFD_SOURCE_DIR", pathlib.Path(__file__).parents[2]))
DEADLINE = 20.0

MINIMAL_CONFIG = """return {
  listen = "127.0.0.1:0",
  directline = { secret = "test-secret-0123456789" },
}
"""


def write_config(dirpath, text=MINIMAL_CONFIG, name="config.lua"):
    path = pathlib.Path(dirpath) / name
    path.write_text(text)
    return path


def run(args, cwd=None, timeout=DEADLINE):
    """Runs handoffd to completion; returns the CompletedProcess (text mode)."""
    return subprocess.run([BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def wait_pid_exit(pid, timeout=DEADLINE):
    """Waits for a process that is not our child to exit (pidfd: an event, not a poll)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def http_get(port, path):
    """GET on the daemon; returns (status, parsed JSON body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Daemon:
    """handoffd in the foreground with its log captured line by line."""

    def __init__(self, config_path, extra_args=(), cwd=None):
        self.proc = subprocess.Popen([BIN, "-c", str(config_path), *extra_args], cwd=cwd,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = None

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, needle, timeout=DEADLINE, start=0):
        """Returns the first log line at index >= START containing NEEDLE, or fails."""
        def find():
            for line in self.lines[start:]:
                if needle in line:
                    return line
            return None
        with self.cond:
            self.cond.wait_for(lambda: find() or self.proc.poll() is not None, timeout)
            line = find()
        if not line:
            raise AssertionError(f"no log line with {needle!r} (exit={self.proc.poll()}):\n" + self.log())
        return line

    def wait_ready(self):
        line = self.wait_line("http.listen")
        self.port = int(line.rsplit(":", 1)[1].split()[0].strip('"}'))
        return self

    def signal(self, signo):
        self.proc.send_signal(signo)

    def wait_exit(self, timeout=DEADLINE):
        code = self.proc.wait(timeout)
        self.reader.join(timeout)
        return code

    def log(self):
        with self.cond:
            return "\n".join(self.lines)

    def error_lines(self):
        return [l for l in self.log().splitlines() if " error " in l or '"level":"error"' in l
                or "ERROR" in l or "runtime error" in l]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(DEADLINE)


@pytest.fixture
def daemon(tmp_path):
    """Factory: daemon(config_text=None, args=()) starts a ready daemon; all stop at teardown."""
    started = []

    def start(config_text=MINIMAL_CONFIG, args=(), name="config.lua"):
        d = Daemon(write_config(tmp_path, config_text, name), args, cwd=tmp_path)
        started.append(d)
        return d.wait_ready()

    yield start
    for d in started:
        d.stop()
