"""The end-to-end setup of a hub integration's tests: the Direct Line emulator and its
scripted bot, the hub's contract fake, and handoffd between them on a config written for
the run (relay_env.config_text), plus what the bot heard.

    env = HubEnv(tmp_path, FakeX(), "x", hub_lines, routes)   # hub_lines(fake) -> 'hub = {...},'
"""
import urllib.request

from conftest import BIN
from relay_env import Handoffd, config_text
from tests.dlemu.control import spawn


class HubEnv:
    """Emulator + the fake (already made, started here) + handoffd, started and stopped together.
    The fake's `target` is set to handoffd's /hubs/<name>/events."""

    def __init__(self, workdir, fake, name, hub_lines, routes, extra_config=""):
        self.name, self.fake = name, fake.start()
        try:
            self.emu_ctx = spawn()
            self.emu = self.emu_ctx.__enter__()
        except BaseException:
            fake.stop()
            raise
        (workdir / "routes.lua").write_text(routes)
        (workdir / "config.lua").write_text(config_text(self.emu, fake, workdir, extra_config, hub_lines))
        self.daemon = Handoffd(BIN, workdir).start()
        fake.target = f"http://127.0.0.1:{self.daemon.port}/hubs/{name}/events"

    def dl_conversation(self, cid):
        """The Direct Line conversation handoffd talks to for CID now (its latest start)."""
        needle = f'directline.started key="{self.name}:{cid}" conv='
        self.daemon.wait_line(needle)
        with self.daemon.cond:
            line = [l for l in self.daemon.lines if needle in l][-1]
        return line.split(needle, 1)[1].split()[0]

    def bot_heard(self, cid):
        """What reached the bot: texts, handoff.status states, other activity types."""
        return [a.get("text") if a.get("type") == "message" else
                a["value"]["state"] if a.get("name") == "handoff.status" else a.get("type")
                for a in self.emu.ctl.received(self.dl_conversation(cid))]

    def wait_bot_heard(self, cid, n, timeout=20):
        self.emu.ctl.wait_count(self.dl_conversation(cid), "received", n, timeout=timeout)
        return self.bot_heard(cid)

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.daemon.port}/metrics", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return next(float(l.rsplit(" ", 1)[1]) for l in lines if l.startswith(name + " "))

    def close(self):
        """Stops everything; returns handoffd's exit code."""
        code = self.daemon.stop()
        self.emu_ctx.__exit__(None, None, None)
        self.fake.stop()
        return code


def running(env):
    """A pytest fixture's body: yields ENV, then checks handoffd stopped cleanly."""
    yield env
    assert env.close() == 0, "handoffd stops cleanly"
