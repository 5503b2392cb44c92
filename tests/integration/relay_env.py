"""The end-to-end setup shared by the relay tests and the demo: a Direct Line emulator
with its scripted bot, the contract fake of the generic webhook hub, and handoffd
between them on a config written for this run.
"""
import pathlib
import signal
import subprocess
import sys
import threading

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_DIR = HERE.parents[1]
sys.path.insert(0, str(SOURCE_DIR))

from tests.dlemu.control import spawn  # noqa: E402
from fakehub import FakeHub  # noqa: E402

ROUTES = """local route = require "handoff.route"
local queue = route.queue
return {
  route.phrase({ "refund", "order" },      queue("orders", { skill = "late-delivery", priority = 2 })),
  route.var("Global.CustomerTier", "gold", queue("vip", { priority = 1 })),
  route.always(                            queue("general")),
}
"""


def webhook_hub(hub):
    """The hub lines of the config: the generic webhook hub as front and desk."""
    return f'hub = {{ module = "hubs.webhook", url = "{hub.url}", secret = "{hub.secret}", token = "{hub.token}" }},'


def config_text(emu, hub, state_dir, extra="", hubs=webhook_hub, directline="", state=None):
    """DIRECTLINE: more keys of the directline table, e.g. "park_after = 1,". STATE: the
    state key's value (default: a SQLite file in STATE_DIR)."""
    state = state or f"sqlite:{state_dir}/state.db"
    return f"""return {{
  listen = "127.0.0.1:0",
  state = "{state}",
  directline = {{ base = "{emu.info['http_base']}", secret = "{emu.info['secret']}", echo_grace = 1, {directline} }},
  {hubs(hub)}
  routes = "routes.lua",
  retry = {{ base = 0.05, max_delay = 0.5, give_up_after = 60 }},
  {extra}
}}
"""


class Handoffd:
    """handoffd in the foreground; its log lines are collected as they come."""

    def __init__(self, binary, workdir):
        self.binary, self.workdir = binary, pathlib.Path(workdir)
        self.proc, self.port, self.lines, self.previous_lines = None, None, [], []
        self.cond = threading.Condition()

    def start(self, *args):
        self.previous_lines, self.lines = self.lines, []
        self.proc = subprocess.Popen([self.binary, "-c", "config.lua", *args], cwd=self.workdir,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self.reader.start()
        line = self.wait_line("http.listen")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def _read(self, proc):
        for line in proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, needle, timeout=30):
        def find():
            return next((l for l in self.lines if needle in l), None)
        with self.cond:
            self.cond.wait_for(lambda: find() or self.proc.poll() is not None, timeout)
            found = find()
        if not found:
            raise AssertionError(f"no log line with {needle!r}:\n" + "\n".join(self.lines[-40:]))
        return found

    def errors(self):
        with self.cond:
            return [l for l in self.lines if " error " in l or "ERROR" in l or "runtime error" in l]

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
            self.reader.join(5)  # its last words (a sanitizer's report) are in self.lines
        return self.proc.returncode if self.proc else None


def close_cleanly(env):
    """Stops ENV (anything with close() and a daemon); asserts handoffd exited 0 and, when it
    did not, shows the exit code and what handoffd said last, so that a failure seen once
    under load can be read afterwards."""
    code = env.close()
    assert code == 0, (f"handoffd stops cleanly: exit code {code}; its last lines:\n"
                       + "\n".join(env.daemon.lines[-30:]))


class Environment:
    """Emulator + fake hub + handoffd, started and stopped together."""

    def __init__(self, binary, workdir, routes=ROUTES, extra_config="", emulator_settings=None, hubs=webhook_hub,
                 directline="", pg=None):
        """PG: a (pg_server.PgServer, database name) pair to keep the state in instead of
        SQLite."""
        self.workdir = pathlib.Path(workdir)
        self.pg = pg
        self.hub = FakeHub().start()
        self.emu_ctx = spawn(settings=emulator_settings or {})
        self.emu = self.emu_ctx.__enter__()
        (self.workdir / "routes.lua").write_text(routes)
        state = pg[0].url_for(pg[1]) if pg else None
        (self.workdir / "config.lua").write_text(config_text(self.emu, self.hub, self.workdir, extra_config, hubs,
                                                             directline, state))
        self.daemon = Handoffd(binary, self.workdir).start()

    @property
    def port(self):
        return self.daemon.port

    def dl_conversation(self, conversation):
        """The Direct Line conversation id handoffd opened for a hub conversation."""
        if self.pg:
            server, db = self.pg
            key = f"webhook:{conversation}".replace("'", "''")
            return server.psql(f"SELECT dl_conversation_id FROM conversations WHERE key = '{key}'", db=db) or None
        import sqlite3
        db = sqlite3.connect(self.workdir / "state.db")
        try:
            row = db.execute("SELECT dl_conversation_id FROM conversations WHERE key = ?",
                             (f"webhook:{conversation}",)).fetchone()
        finally:
            db.close()
        return row[0] if row else None

    def bot_received(self, conversation):
        return self.emu.ctl.received(self.dl_conversation(conversation))

    def explain(self, conversation):
        """What the bot got in CONVERSATION (text, when, clientActivityID) and what handoffd
        logged, this run and the one before a restart: for a failure seen once under load."""
        got = [(a.get("text"), a.get("timestamp"), a.get("channelData", {}).get("clientActivityID"))
               for a in self.bot_received(conversation) if a.get("type") == "message"]
        return "\n".join([f"the bot got {got}", "handoffd, the run before:", *self.daemon.previous_lines,
                          "handoffd, this run:", *self.daemon.lines])

    def close(self):
        code = self.daemon.stop()
        self.emu_ctx.__exit__(None, None, None)
        self.hub.stop()
        return code
