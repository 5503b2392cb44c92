"""The end-to-end setup of a hub integration's tests: the Direct Line emulator and its
scripted bot, the hub's contract fake (and any other fake the config names), and handoffd
between them on a config written for the run (relay_env.config_text), plus what the bot
heard.

    env = HubEnv(tmp_path, FakeX(), "x", hub_lines)   # hub_lines(fake) -> 'hub = {...},'
    with HubEnv(...) as env: ...                      # closes it; handoffd must stop cleanly

NAME is the front hub's module name: the prefix of handoffd's conversation keys. Every
fake is told handoffd's port (fakeserver.ServedFake.handoffd_port) once it listens.
"""
import pathlib
import sqlite3
import time
import urllib.request

from conftest import BIN
from relay_env import ROUTES, Handoffd, close_cleanly, config_text
from tests.dlemu.control import spawn

# The rules of the desk hubs' tests: "order" talk to queue orders, "manager" to agent sam.
AGENT_ROUTES = """local route = require "handoff.route"
local queue = route.queue
return {
  route.phrase({ "refund", "order" }, queue("orders", { skill = "late-delivery", priority = 2 })),
  route.phrase("manager",             queue("escalations", { agent = "sam" })),
  route.always(                       queue("general")),
}
"""


class HubEnv:
    """Emulator + the fakes (made, started here) + handoffd, started and stopped together.
    OTHERS: more fakes the config needs (a desk behind the front, say)."""

    def __init__(self, workdir, fake, name, hub_lines, routes=ROUTES, extra_config="", others=()):
        self.workdir, self.name = pathlib.Path(workdir), name
        self.fakes = []
        try:
            for f in (fake, *others):
                self.fakes.append(f.start())
            self.emu_ctx = spawn()
            self.emu = self.emu_ctx.__enter__()
        except BaseException:
            for f in self.fakes:
                f.stop()
            raise
        self.hub = fake
        (self.workdir / "routes.lua").write_text(routes)
        (self.workdir / "config.lua").write_text(config_text(self.emu, fake, self.workdir, extra_config, hub_lines))
        self.daemon = Handoffd(BIN, self.workdir).start()
        self._tell_fakes()

    def _tell_fakes(self):
        for f in self.fakes:
            f.handoffd_port = self.daemon.port

    @property
    def port(self):
        return self.daemon.port

    def restart(self):
        """Stops handoffd (it must stop cleanly) and starts it again on the same state."""
        assert self.daemon.stop() == 0
        self.daemon.start()
        self._tell_fakes()

    # --- the conversations as handoffd keeps them --------------------------------------

    def _stored(self, cid):
        db = sqlite3.connect(self.workdir / "state.db")
        try:
            return db.execute("SELECT dl_conversation_id FROM conversations WHERE key = ?",
                              (f"{self.name}:{cid}",)).fetchone()
        finally:
            db.close()

    def known(self, cid):
        """Whether handoffd keeps a conversation CID (now, without waiting)."""
        return self._stored(cid) is not None

    def dl(self, cid):
        """The Direct Line conversation stored for CID now, or None (without waiting)."""
        row = self._stored(cid)
        return row[0] if row else None

    def dl_conversation(self, cid, timeout=30):
        """The Direct Line conversation handoffd talks to for CID: the latest one it started,
        or resumed since its own (re)start. Waits for one."""
        key = f'key="{self.name}:{cid}" conv='

        def latest():
            ids = [l.split(key, 1)[1].split()[0] for l in self.daemon.lines
                   if key in l and (" directline.started " in l or " directline.open " in l)]
            return next((i for i in reversed(ids) if i != "-"), None)   # "-": opened, not started yet
        with self.daemon.cond:
            self.daemon.cond.wait_for(lambda: latest() or self.daemon.proc.poll() is not None, timeout)
            found = latest()
        if not found:
            raise AssertionError(f"no Direct Line conversation for {cid}:\n" + "\n".join(self.daemon.lines[-40:]))
        return found

    # --- what the bot heard ------------------------------------------------------------

    def bot_received(self, cid):
        return self.emu.ctl.received(self.dl_conversation(cid))

    def bot_heard(self, cid):
        """What reached the bot: texts, handoff.status states, other activity types."""
        return [a.get("text") if a.get("type") == "message" else
                a["value"]["state"] if a.get("name") == "handoff.status" else a.get("type")
                for a in self.bot_received(cid)]

    def wait_bot_heard(self, cid, n, timeout=20):
        self.emu.ctl.wait_count(self.dl_conversation(cid), "received", n, timeout=timeout)
        return self.bot_heard(cid)

    def wait_bot(self, cid, predicate, timeout=20, what="the bot to receive it"):
        """Waits (on the emulator, no polling) until PREDICATE(what the bot heard)."""
        deadline = time.monotonic() + timeout
        while True:
            heard = self.bot_heard(cid)
            if predicate(heard):
                return heard
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; the bot got {heard}; handoffd said:\n"
                                     + "\n".join(self.daemon.lines[-30:]))
            try:
                self.emu.ctl.wait_count(self.dl_conversation(cid), "received", len(heard) + 1, timeout=left)
            except TimeoutError:
                pass

    def statuses(self, cid):
        return [a["value"]["state"] for a in self.bot_received(cid) if a.get("name") == "handoff.status"]

    def wait_statuses(self, cid, states):
        self.wait_bot(cid, lambda _: self.statuses(cid) == states, what=f"handoff.status {states}")

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.daemon.port}/metrics", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return next(float(l.rsplit(" ", 1)[1]) for l in lines if l.startswith(name + " "))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        close_cleanly(self)

    def close(self):
        """Stops everything; returns handoffd's exit code."""
        code = self.daemon.stop()
        self.emu_ctx.__exit__(None, None, None)
        for f in self.fakes:
            f.stop()
        return code


def running(env):
    """A pytest fixture's body: yields ENV, then checks handoffd stopped cleanly."""
    yield env
    close_cleanly(env)
