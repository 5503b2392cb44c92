"""Client side of the emulator for tests: start it as a process, drive its control API.

Standard library only, so any Python can import it (the emulator itself needs Debian's
aiohttp, which is why spawn() runs it under /usr/bin/python3).

    from tests.dlemu.control import spawn
    with spawn(token_ttl=6, settings={"page_size": 2}) as emu:
        emu.info["http_base"], emu.info["secret"], emu.info["ca_file"]
        emu.ctl.fail("post", {"status": 502}, conversation=cid)
        emu.ctl.wait_count(cid, "received", 3)
"""
import json
import os
import select
import subprocess
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = os.environ.get("DLEMU_PYTHON", "/usr/bin/python3")
READY_TIMEOUT = 20.0


class ControlError(Exception):
    def __init__(self, status, body):
        super().__init__("control API answered %s: %s" % (status, body))
        self.status = status
        self.body = body


class Control:
    """One method per control endpoint (README.md). `conversation=None` means all
    conversations for actions and global for settings and queued failures."""

    def __init__(self, url):
        self.url = url.rstrip("/")

    def call(self, method, path, body=None, timeout=30.0):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise ControlError(e.code, e.read().decode(errors="replace")) from None

    def post(self, path, conversation=None, **body):
        if conversation is not None:
            body["conversation"] = conversation
        return self.call("POST", path, body)

    # ---- observation ----------------------------------------------------------------
    def info(self):
        return self.call("GET", "/info")

    def stats(self):
        return self.call("GET", "/stats")

    def reset_stats(self):
        return self.post("/stats/reset")

    def auth_failures(self):
        return self.call("GET", "/auth_failures")

    def conversations(self):
        return self.call("GET", "/conversations")

    def conversation(self, cid):
        return self.call("GET", "/conversations/" + quote(cid))

    def received(self, cid):
        """What the bot received, in order (each with its channelData.clientActivityID)."""
        return self.call("GET", "/conversations/%s/received" % quote(cid))

    def sent(self, cid):
        return self.call("GET", "/conversations/%s/sent" % quote(cid))

    def activities(self, cid):
        return self.call("GET", "/conversations/%s/activities" % quote(cid))

    def wait_stat(self, stat, at_least=1, timeout=5.0):
        """Blocks until stats()[stat] >= at_least; returns it, or raises TimeoutError."""
        return self.wait({"stat": stat, "at_least": at_least}, timeout)

    def wait_count(self, cid, count="received", at_least=1, timeout=5.0):
        """Blocks until the conversation's received/sent/activities/sockets count is reached."""
        return self.wait({"conversation": cid, "count": count, "at_least": at_least}, timeout)

    def wait(self, condition, timeout):
        reply = self.call("POST", "/wait", dict(condition, timeout=timeout), timeout=timeout + 10)
        if not reply["ok"]:
            raise TimeoutError("%s still %s after %.1f s" % (condition, reply["value"], timeout))
        return reply["value"]

    # ---- faults ---------------------------------------------------------------------
    def settings(self, conversation=None, **values):
        return self.post("/settings", conversation, **values)

    def fail(self, op, *responses, conversation=None):
        """Queues failures for the next requests of op, e.g. fail("refresh", {"status": 500},
        {"status": 500}) or fail("post", {"status": 429, "retry_after": 2})."""
        return self.post("/fail", conversation, op=op, responses=list(responses))

    def drop(self, conversation=None, mode="abort", code=1000, reason=""):
        return self.post("/drop", conversation, mode=mode, code=code, reason=reason)

    def close(self, conversation=None, code=1000, reason=""):
        return self.drop(conversation, "close", code, reason)

    def stall(self, conversation=None):
        return self.post("/stall", conversation)

    def frames(self, frames, conversation=None):
        return self.post("/frames", conversation, frames=frames)

    def watermark_reset(self, conversation=None):
        return self.post("/watermark_reset", conversation)

    def expire(self, conversation):
        return self.post("/expire", conversation)

    def bot(self, conversation=None, **order):
        """Makes the bot send now, e.g. bot(cid, seq=50) or bot(cid, handoff={"transcript": 375})."""
        return self.post("/bot", conversation, **order)

    def listener_down(self, name="tls", seconds=1.0):
        return self.post("/listener", name=name, down_for=seconds)


def quote(cid):
    return urllib.request.quote(cid, safe="")


class EmulatorProcess:
    """A running emulator process; stops it on exit from the with block."""

    def __init__(self, args, timeout=READY_TIMEOUT):
        self.proc = subprocess.Popen([PYTHON, "-m", "tests.dlemu"] + args, cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            self.info = json.loads(self.ready_line(timeout))
        except BaseException:
            self.stop()
            raise
        self.ctl = Control(self.info["control"])

    def ready_line(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("emulator exited with %s before it was ready" % self.proc.wait())
                return line
        raise TimeoutError("emulator not ready after %.0f s" % timeout)

    def stop(self):
        """Closes its stdin (the emulator stops on EOF), then insists."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def spawn(settings=None, args=(), **options):
    """Starts `python3 -m tests.dlemu`. options are CLI flags by name (token_ttl=6 ->
    --token-ttl 6, wrong_tls_port=0), settings any setting (--set NAME=JSON)."""
    argv = list(args)
    for name, value in options.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    for name, value in (settings or {}).items():
        argv += ["--set", "%s=%s" % (name, json.dumps(value))]
    return EmulatorProcess(argv)
