"""A test driver process (tests/tools/*_driver.c) that reads commands on stdin and prints
one JSON object per line: its events are collected on a thread, and tests wait for the
event they need, with a deadline, never for a fixed time.

    p = JsonLinesProcess([DRIVER, ...], tmp_path / "x.log", env)
    since = p.mark(); p.cmd("stats"); p.wait_for(lambda e: e["ev"] == "stats", since)
    p.close()   # end of input: the driver must exit 0 (ASan reports leaks as a failure)

Several processes may share one threading.Condition (COND), so that one wait covers
events from all of them.
"""
import json
import subprocess
import threading
import time

DEADLINE = 20.0


class JsonLinesProcess:
    def __init__(self, args, log_path, env=None, cond=None, name="driver"):
        self.name = name
        self.log_path = log_path
        self.log_file = open(log_path, "w")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log_file, text=True, env=env)
        self.events = []
        self.cond = cond or threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.events.append(json.loads(line))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def cmd(self, *words):
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()

    def mark(self):
        with self.cond:
            return len(self.events)

    def wait_for(self, pred, since=0, timeout=DEADLINE):
        """The first event from index SINCE on that matches PRED."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events[since:]:
                    if pred(e):
                        return e
                left = end - time.monotonic()
                assert left > 0 and self.proc.poll() is None, \
                    f"{self.name}: no matching event; events: {self.events[since:][-10:]}\n{self.log()}"
                self.cond.wait(left)

    def since(self, since, ev):
        """The events named EV from index SINCE on."""
        with self.cond:
            return [e for e in self.events[since:] if e["ev"] == ev]

    def log(self):
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text()

    def close(self):
        """End of input: the driver frees everything and must exit 0."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        rc = self.proc.wait(timeout=DEADLINE)
        self.log_file.close()
        assert rc == 0, f"{self.name} exited {rc}\n{self.log_path.read_text()}"
