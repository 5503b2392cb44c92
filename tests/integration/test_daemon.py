"""The handoffd binary as an operator meets it: -t, the listener, signals, -d and pidfile.

Each test starts the real daemon on 127.0.0.1 (port 0, read back from the log) and
checks what it answers, prints and logs.
"""
import json
import os
import pathlib
import signal

from conftest import (MINIMAL_CONFIG, SOURCE_DIR, http_get, run, wait_pid_exit,
                      write_config)

ROUTES_OK = "return function(h) return { queue = 'general' } end\n"


def version():
    out = run(["--version"])
    assert out.returncode == 0
    return out.stdout.split()[1]


# --- the listener ----------------------------------------------------------------------

def test_healthz_answers_json(daemon):
    d = daemon()
    status, body = http_get(d.port, "/healthz")
    assert status == 200
    assert body["status"] == "ok"
    assert body["version"] == version()
    assert isinstance(body["uptime_s"], (int, float)) and body["uptime_s"] >= 0
    assert body["conversations"] == 0
    assert body["last_reload"]["ok"] is True
    assert d.error_lines() == []


def test_unknown_path_and_wrong_method(daemon):
    d = daemon()
    assert http_get(d.port, "/nope")[0] == 404
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{d.port}/healthz", data=b"x", method="POST")
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("POST /healthz must not succeed")
    except urllib.error.HTTPError as e:
        assert e.code == 405


def test_listen_conflict_is_reported(daemon, tmp_path):
    d = daemon()
    cfg = write_config(tmp_path, MINIMAL_CONFIG.replace("127.0.0.1:0", f"127.0.0.1:{d.port}"), "taken.lua")
    out = run(["-c", str(cfg)])
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{d.port}" in out.stderr


# --- -t: check the config and what it references --------------------------------------

def test_check_good_config(tmp_path):
    (tmp_path / "routes.lua").write_text(ROUTES_OK)
    cfg = write_config(tmp_path, MINIMAL_CONFIG.replace("listen", "routes = 'routes.lua',\n  listen"))
    out = run(["-t", "-c", str(cfg)])
    assert (out.returncode, out.stdout, out.stderr) == (0, "configuration ok\n", "")


def test_check_shipped_example_config():
    out = run(["-t", "-c", str(SOURCE_DIR / "scripts/examples/config.lua")])
    assert (out.returncode, out.stdout) == (0, "configuration ok\n"), out.stderr


def check_fails(tmp_path, text, *wanted):
    write_config(tmp_path, text)
    out = run(["-t", "-c", "config.lua"], cwd=tmp_path)
    assert out.returncode == 1, out
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1, "one line naming the problem"
    for w in wanted:
        assert w in out.stderr, out.stderr
    return out.stderr


def test_check_syntax_error_names_file_and_line(tmp_path):
    check_fails(tmp_path, 'return {\n  directline = { secret = "abcd" },\n  listen = ,\n}\n',
                "config.lua:3: unexpected symbol near ','")


def test_check_unknown_key_named(tmp_path):
    check_fails(tmp_path, 'return {\n  lisen = "127.0.0.1:0",\n  directline = { secret = "abcd" },\n}\n',
                "unknown key 'lisen' in config.lua:2")


def test_check_unknown_nested_key_named(tmp_path):
    check_fails(tmp_path, 'return {\n  directline = {\n    scret = "abcd",\n  },\n}\n',
                "unknown key 'directline.scret' in config.lua:3")


def test_check_missing_key_named(tmp_path):
    check_fails(tmp_path, 'return { listen = "127.0.0.1:0" }\n', "missing required key 'directline'")
    check_fails(tmp_path, 'return { directline = { base = "http://127.0.0.1:1/v3/directline" } }\n',
                "missing required key 'directline.secret'")


def test_check_wrong_type_named(tmp_path):
    check_fails(tmp_path, 'return {\n  directline = { secret = "abcd" },\n  listen = 8088,\n}\n',
                "key 'listen' must be a string, not number in config.lua:3")


def test_check_secret_from_environment(tmp_path):
    write_config(tmp_path, 'return { directline = { secret = os.getenv("HD_TEST_SECRET") } }\n')
    env = dict(os.environ, HD_TEST_SECRET="from-env-1234")
    import subprocess
    ok = subprocess.run([os.environ["HANDOFFD_BIN"], "-t", "-c", "config.lua"], cwd=tmp_path,
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    check_fails(tmp_path, 'return { directline = { secret = os.getenv("HD_TEST_UNSET_VAR") } }\n',
                "missing required key 'directline.secret'")


def test_check_broken_routes_file_names_its_line(tmp_path):
    (tmp_path / "routes.lua").write_text("return function(h)\n  return { queue = }\nend\n")
    err = check_fails(tmp_path, MINIMAL_CONFIG.replace("listen", "routes = 'routes.lua',\n  listen"),
                      "routes.lua:2:")
    assert "routes" in err


def test_check_missing_hub_module_is_named(tmp_path):
    check_fails(tmp_path, MINIMAL_CONFIG.replace("listen", "hub = { module = 'hubs.nope' },\n  listen"),
                "module 'hubs.nope' not found")


def test_check_hub_init_rejecting_settings(tmp_path):
    (tmp_path / "myhub.lua").write_text(
        "local M = {}\nfunction M.init(s)\n  assert(s.url, 'myhub: url is required')\nend\nreturn M\n")
    check_fails(tmp_path, MINIMAL_CONFIG.replace("listen", "hub = { module = 'myhub' },\n  listen"),
                "myhub.lua:3: myhub: url is required")


# --- the command line ------------------------------------------------------------------

def test_usage_errors_exit_2():
    for args in (["--bogus"], [], ["-c"], ["-c", "x.lua", "extra"]):
        out = run(args)
        assert out.returncode == 2, args
        assert "usage: handoffd" in out.stderr


def test_help_and_version():
    out = run(["--help"])
    assert out.returncode == 0 and "usage: handoffd" in out.stdout
    out = run(["--version"])
    assert out.returncode == 0 and out.stdout.startswith("handoffd ")


def test_lua_test_runner_reports_failures():
    out = run(["test", str(SOURCE_DIR / "tests/lua/failing.check.lua")])
    assert out.returncode == 1
    assert "ok - passes" in out.stdout and "not ok - fails" in out.stdout
    assert "failing.check.lua:5: expected failure" in out.stdout
    assert out.stdout.rstrip().endswith("1 passed, 1 failed")


# --- logs ------------------------------------------------------------------------------

def test_json_logs_are_one_object_per_line(daemon):
    d = daemon(args=["--json-logs", "--log-level", "debug"])
    http_get(d.port, "/healthz")
    d.stop()
    lines = d.log().splitlines()
    assert lines
    for line in lines:
        obj = json.loads(line)
        assert {"ts", "level", "event"} <= obj.keys()


def test_secret_never_logged(daemon):
    d = daemon(args=["--log-level", "debug"])
    d.signal(signal.SIGHUP)
    d.wait_line("reload.ok")
    d.stop()
    assert "test-secret-0123456789" not in d.log()


# --- signals ---------------------------------------------------------------------------

def test_sigterm_stops_gracefully(daemon):
    d = daemon()
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    d.wait_line("shutdown.begin")
    d.wait_line("stopped")
    assert d.error_lines() == []


def test_sigint_stops_gracefully(daemon):
    d = daemon()
    d.signal(signal.SIGINT)
    assert d.wait_exit() == 0


def test_sighup_reloads_and_never_kills(daemon, tmp_path):
    (tmp_path / "routes.lua").write_text(ROUTES_OK)
    d = daemon(MINIMAL_CONFIG.replace("listen", "routes = 'routes.lua',\n  listen"))
    d.signal(signal.SIGHUP)
    d.wait_line("reload.ok generation=2")
    assert http_get(d.port, "/healthz")[1]["generation"] == 2

    (tmp_path / "routes.lua").write_text("return function(h)\n  return {\nend\n")
    mark = len(d.lines)
    d.signal(signal.SIGHUP)
    line = d.wait_line("reload.failed", start=mark)
    assert "routes.lua:3:" in line and "kept_generation=2" in line
    status, body = http_get(d.port, "/healthz")
    assert status == 200 and body["generation"] == 2
    assert body["last_reload"]["ok"] is False and body["last_reload"]["error"] == "syntax"

    (tmp_path / "routes.lua").write_text(ROUTES_OK)
    d.signal(signal.SIGHUP)
    d.wait_line("reload.ok generation=3", start=mark)
    assert http_get(d.port, "/healthz")[1]["last_reload"] == {
        "ok": True, "error": None, "time": http_get(d.port, "/healthz")[1]["last_reload"]["time"]}
    assert d.proc.poll() is None


# --- -d and the pidfile ----------------------------------------------------------------

def port_from_log(path):
    for line in pathlib.Path(path).read_text().splitlines():
        if "http.listen" in line:
            return int(line.rsplit(":", 1)[1])
    raise AssertionError("no http.listen line in " + str(path))


def test_daemon_mode_with_pidfile(tmp_path):
    write_config(tmp_path)
    pidfile, logfile = tmp_path / "handoffd.pid", tmp_path / "handoffd.log"
    out = run(["-d", "-c", "config.lua", "--pidfile", "handoffd.pid", "--log", "handoffd.log"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)  # alive
        assert os.getsid(pid) == pid, "the daemon leads its own session"
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        assert http_get(port_from_log(logfile), "/healthz")[0] == 200

        second = run(["-d", "-c", "config.lua", "--pidfile", "handoffd.pid"], cwd=tmp_path)
        assert second.returncode == 1
        assert f"already running: pidfile {pidfile} names live process {pid}" in second.stderr
        assert int(pidfile.read_text()) == pid

        fg = run(["-c", "config.lua", "--pidfile", str(pidfile)], cwd=tmp_path)
        assert fg.returncode == 1 and "already running" in fg.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_pid_exit(pid)
    assert not pidfile.exists(), "the pidfile is removed on exit"
    assert "stopped" in logfile.read_text()


def test_stale_pidfile_is_taken_over(tmp_path):
    write_config(tmp_path)
    pidfile = tmp_path / "handoffd.pid"
    pidfile.write_text("999999999\n")  # no such process
    out = run(["-d", "-c", "config.lua", "--pidfile", "handoffd.pid", "--log", "l.log"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    pid = int(pidfile.read_text())
    assert pid != 999999999
    os.kill(pid, signal.SIGTERM)
    assert wait_pid_exit(pid)


def test_daemon_start_failure_reaches_the_terminal(tmp_path, daemon):
    d = daemon()
    write_config(tmp_path, MINIMAL_CONFIG.replace("127.0.0.1:0", f"127.0.0.1:{d.port}"), "taken.lua")
    out = run(["-d", "-c", "taken.lua", "--pidfile", "p.pid"], cwd=tmp_path)
    assert out.returncode == 1
    assert "cannot listen on" in out.stderr
    assert not (tmp_path / "p.pid").exists()
