"""docs/getting-started.md stays true: its config, rules, stand-in desk and signing
recipe, taken from the page itself, against the Direct Line emulator.

The page's `config.lua` and `routes.lua` pass `handoffd -t`; `docs/print-desk.py` receives
what handoffd sends and checks the signatures; the page's `hub_send` shell function signs
events handoffd accepts; the first message reaches the bot and its answer the desk; asking
for a human hands the conversation to the desk on the queue the page shows. Only the
fixed ports of the page are replaced by free ones.
"""
import os
import re
import secrets
import socket
import subprocess
import threading

import pytest

from conftest import BIN, SOURCE_DIR
from relay_env import Handoffd
from tests.dlemu.control import spawn

PAGE = (SOURCE_DIR / "docs/getting-started.md").read_text()


def code_blocks(lang):
    return re.findall(r"```" + lang + r"\n(.*?)```", PAGE, re.S)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Desk:
    """docs/print-desk.py, its output collected line by line."""

    def __init__(self, port, env):
        self.proc = subprocess.Popen(["/usr/bin/python3", str(SOURCE_DIR / "docs/print-desk.py"), str(port)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines, self.cond = [], threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait(self, needle, timeout=30):
        with self.cond:
            ok = self.cond.wait_for(lambda: any(needle in l for l in self.lines), timeout)
        assert ok, f"desk never printed {needle!r}:\n" + "\n".join(self.lines)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def page_env(tmp_path, monkeypatch):
    config, routes = code_blocks("lua")[:2]
    assert 'module = "hubs.webhook"' in config and "route.always" in routes
    assert '"127.0.0.1:8088"' in config
    (tmp_path / "config.lua").write_text(config.replace('"127.0.0.1:8088"', '"127.0.0.1:0"'))
    (tmp_path / "routes.lua").write_text(routes)
    with spawn() as emu:
        desk_port = free_port()
        env = dict(DIRECTLINE_SECRET=emu.info["secret"], DIRECTLINE_BASE=emu.info["http_base"],
                   HUB_URL=f"http://127.0.0.1:{desk_port}", HUB_SECRET=secrets.token_hex(24))
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        desk = Desk(desk_port, dict(os.environ))
        try:
            desk.wait("desk listening")
            yield tmp_path, desk
        finally:
            desk.stop()


def hub_send(port, event_json):
    block = next(b for b in code_blocks("sh") if "hub_send() {" in b)
    function = block[:block.index("\n}\n") + 3].replace("127.0.0.1:8088", f"127.0.0.1:{port}")
    r = subprocess.run(["bash", "-c", function + "hub_send \"$1\"", "hub_send", event_json],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def page_event(marker):
    """The JSON of the page's `hub_send '...'` line that contains MARKER."""
    return next(m for m in re.findall(r"^hub_send '(.*)'$", PAGE, re.M) if marker in m)


def test_the_page_config_checks_relays_and_hands_off(page_env):
    workdir, desk = page_env
    r = subprocess.run([BIN, "-t", "-c", "config.lua"], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "configuration ok\n"), r.stderr

    daemon = Handoffd(BIN, workdir).start()
    try:
        assert hub_send(daemon.port, page_event('"id":"m1"')) == '{"ok":true}'
        desk.wait('"text": "You said: Hello"')
        assert hub_send(daemon.port, page_event('"id":"m2"')) == '{"ok":true}'
        desk.wait("POST /handoffs (signature ok)")
        desk.wait('"queue": "vip"')
        assert not any("WRONG" in line for line in desk.lines)
    finally:
        code = daemon.stop()
    assert code == 0
    assert daemon.errors() == []
