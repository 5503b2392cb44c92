"""handoffd as a user installs it, away from the tree it was built in.

Two installs, each checked the same way (`-t` on the installed example config, which is
the demo's, a missing module's error, and one message relayed to the bot and back):

- `cmake --install` of the build under test into a temporary prefix, which is then moved
  (so neither the source tree nor the configured prefix holds the scripts it runs);
- `luarocks make` with the rockspec, from a copy of the source tree built without
  sanitizers; the copy, its build directory included, is deleted before the installed
  binary runs, so the only scripts it can find are the installed ones.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import BIN, SOURCE_DIR
from fakehub import FakeHub
from relay_env import Handoffd
from tests.dlemu.control import spawn

BUILD_DIR = pathlib.Path(BIN).resolve().parent


def run(cmd, cwd=None, env=None, timeout=60):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def check_config(binary, etc):
    r = run([binary, "-t", "-c", etc / "config.lua"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "configuration ok\n"


def check_missing_module(binary, scripts, tmp, never):
    """The error names every file it tried, among them the installed scripts; none of
    them is under a path of NEVER (the source and build trees)."""
    cfg = tmp / "missing.lua"
    cfg.write_text('return { directline = { secret = "s-0123456789abcdef" },\n'
                   '  hub = { module = "hubs.nosuchhub" } }\n')
    r = run([binary, "-t", "-c", cfg])
    assert r.returncode == 1
    assert r.stderr.startswith("handoffd: hub: module 'hubs.nosuchhub' not found:"), r.stderr
    assert f"no file '{scripts}/hubs/nosuchhub.lua'" in r.stderr, r.stderr
    assert f"no file '{tmp}/hubs/nosuchhub.lua'" in r.stderr, r.stderr
    for path in never:
        assert str(path) not in r.stderr, r.stderr


def check_relay(binary, etc, state):
    """The installed example config, unchanged, relays a customer's message to the bot
    and the bot's answer back, with the secrets and addresses from the environment."""
    hub = FakeHub().start()
    try:
        with spawn() as emu:
            env = dict(HANDOFFD_LISTEN="127.0.0.1:0", HANDOFFD_STATE_DIR=str(state),
                       DIRECTLINE_BASE=emu.info["http_base"], DIRECTLINE_SECRET=emu.info["secret"],
                       HUB_URL=hub.url, HUB_SECRET=hub.secret, HUB_TOKEN=hub.token)
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                daemon = Handoffd(str(binary), etc).start()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k)
                    else:
                        os.environ[k] = v
            try:
                status, _ = hub.message(daemon.port, "chat-1", "Hello!")
                assert status == 202
                replies = hub.wait_messages("chat-1", 1)
                assert replies[0]["activity"]["text"]
            finally:
                code = daemon.stop()
            assert code == 0
            assert daemon.errors() == []
    finally:
        hub.stop()


def check_install(binary, prefix_share, etc, tmp, never):
    assert binary.is_file()
    scripts = prefix_share / "handoffd" / "scripts"
    assert (scripts / "hubs" / "webhook.lua").is_file()
    check_config(binary, etc)
    check_missing_module(binary, scripts, tmp, never)
    state = tmp / "state"
    state.mkdir()
    check_relay(binary, etc, state)


def test_cmake_install_into_a_moved_prefix(tmp_path):
    first = tmp_path / "first"
    r = run(["cmake", "--install", BUILD_DIR, "--prefix", first], timeout=120)
    assert r.returncode == 0, r.stderr
    for f in ("bin/handoffd", "share/handoffd/scripts/handoff/route.lua", "etc/handoffd/config.lua",
              "etc/handoffd/routes.lua", "lib/systemd/system/handoffd.service", "etc/logrotate.d/handoffd",
              "share/handoffd/types/handoff.lua"):
        assert (first / f).is_file(), f

    # A second install keeps an operator's edited config.
    (first / "etc/handoffd/config.lua").write_text("-- edited\nreturn {}\n")
    r = run(["cmake", "--install", BUILD_DIR, "--prefix", first], timeout=120)
    assert r.returncode == 0, r.stderr
    assert (first / "etc/handoffd/config.lua").read_text() == "-- edited\nreturn {}\n"
    shutil.copy(SOURCE_DIR / "scripts/examples/config.lua", first / "etc/handoffd/config.lua")

    moved = tmp_path / "moved"
    first.rename(moved)
    check_install(moved / "bin/handoffd", moved / "share", moved / "etc/handoffd", tmp_path,
                  never=[SOURCE_DIR, BUILD_DIR, first])


def test_luarocks_make_from_a_deleted_copy(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SOURCE_DIR, src, ignore=shutil.ignore_patterns(
        ".git", "build*", "__pycache__", "*.db", "node_modules"))
    tree = tmp_path / "tree"
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    r = run(["luarocks", "--lua-version", "5.4", "make", "--tree", tree, "handoffd-scm-1.rockspec"],
            cwd=src, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "handoffd scm-1 is now installed" in r.stdout
    shutil.rmtree(src)

    rock = tree / "lib/luarocks/rocks-5.4/handoffd/scm-1"
    assert (rock / "share/handoffd/dist/handoffd.service").is_file()
    (tmp_path / "etc").mkdir()
    etc = tmp_path / "etc"
    shutil.copy(rock / "etc/handoffd/config.lua", etc / "config.lua")
    shutil.copy(rock / "etc/handoffd/routes.lua", etc / "routes.lua")
    check_install(tree / "bin/handoffd", rock / "share", etc, tmp_path, never=[SOURCE_DIR, BUILD_DIR, src])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
