"""Scripts inside the daemon: webhook routes, errors, limits, timers and hot reload.

Setup: a daemon on 127.0.0.1 with tests/integration/scripts/testhub.lua as its hub.
Input: HTTP requests to the hub's webhooks, signals and admin calls. Expected: the
answers and log lines below, and a daemon that keeps serving through every failure.
"""
import http.client
import json
import signal
import threading
import urllib.error
import urllib.request

import pytest

from conftest import SOURCE_DIR, http_get

SCRIPTS = SOURCE_DIR / "tests/integration/scripts"


def config(version="v1", extra=""):
    return f"""return {{
  listen = "127.0.0.1:0",
  script_path = "{SCRIPTS}/?.lua",
  directline = {{ secret = "test-secret-0123456789" }},
  hub = {{ module = "testhub", version = "{version}" }},
  admin = {{ token = "admin-token-1234" }},
  scripts = {{ max_instructions = 5e6, max_memory_mb = 64, retire_after = 5 }},
  {extra}
}}
"""


def request(port, method, path, body=None, headers=None, timeout=10):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def test_webhook_gets_the_request_and_shapes_the_answer(daemon):
    d = daemon(config())
    status, body, headers = request(d.port, "POST", "/t/echo?q=42", b'{"hello":"world"}',
                                    {"X-Test": "abc", "Content-Type": "application/json"})
    assert status == 201
    assert json.loads(body) == {"method": "POST", "path": "/t/echo", "q": "42", "x": "abc",
                                "body": '{"hello":"world"}', "peer": "127.0.0.1"}
    assert headers["X-Reply"] == "yes"
    assert headers["Content-Type"] == "application/json"
    assert request(d.port, "GET", "/t/nothing")[0] == 200
    assert d.error_lines() == []


def test_webhook_joins_a_repeated_header_and_lowercases_names(daemon):
    d = daemon(config())
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    conn.putrequest("POST", "/t/echo")
    conn.putheader("X-TEST", "abc")
    conn.putheader("x-test", "def")
    conn.putheader("Content-Length", "2")
    conn.endheaders(b"{}")
    r = conn.getresponse()
    assert r.status == 201
    assert json.loads(r.read())["x"] == "abc, def"
    conn.close()


def test_handler_error_is_a_500_without_detail_and_logged_with_its_line(daemon):
    d = daemon(config())
    status, body, _ = request(d.port, "GET", "/t/error")
    assert status == 500 and "boom" not in body
    line = d.wait_line("script.error")
    assert "testhub.lua:" in line and "boom in handler" in line
    status, _, _ = request(d.port, "GET", "/t/badstatus")
    assert status == 500
    d.wait_line("webhook.bad_result")
    assert http_get(d.port, "/healthz")[0] == 200


def test_endless_loop_is_stopped_and_others_keep_going(daemon):
    d = daemon(config())
    results = {}

    def slow_call():
        results["sleep"] = request(d.port, "GET", "/t/sleep?s=0.3")

    t = threading.Thread(target=slow_call)
    t.start()
    status, _, _ = request(d.port, "GET", "/t/loop")
    assert status == 500
    assert "cpu budget exceeded" in d.wait_line("script.error")
    t.join(10)
    assert results["sleep"][0] == 200, "a task waiting meanwhile still completes"
    # the loop is responsive again at once
    assert http_get(d.port, "/healthz")[0] == 200


def test_memory_cap_fails_the_callback_cleanly(daemon):
    d = daemon(config())
    status, _, _ = request(d.port, "GET", "/t/alloc", timeout=30)
    assert status == 500
    assert "not enough memory" in d.wait_line("script.error")
    assert request(d.port, "GET", "/t/version")[1] == "v1"


def test_reload_by_sighup_swaps_scripts_and_retires_timers(daemon, tmp_path):
    d = daemon(config("v1"))
    assert request(d.port, "GET", "/t/version")[1] == "v1"
    (tmp_path / "config.lua").write_text(config("v2"))
    d.signal(signal.SIGHUP)
    d.wait_line("reload.ok generation=2")
    assert "version=v1" in d.wait_line("testhub.premature")
    assert request(d.port, "GET", "/t/version")[1] == "v2"


def test_work_in_flight_finishes_on_its_generation(daemon, tmp_path):
    d = daemon(config("v1"))
    results = {}
    t = threading.Thread(target=lambda: results.update(r=request(d.port, "GET", "/t/sleep?s=0.5")))
    t.start()
    d.wait_line("testhub.sleeping")
    # reload while the handler sleeps
    (tmp_path / "config.lua").write_text(config("v2"))
    mark = len(d.lines)
    d.signal(signal.SIGHUP)
    d.wait_line("reload.ok", start=mark)
    assert request(d.port, "GET", "/t/version")[1] == "v2"
    t.join(10)
    assert results["r"][1] == "slept v1", "the old generation finished the request it started"
    d.wait_line("script.generation_closed generation=1")


def test_broken_reload_keeps_the_old_scripts(daemon, tmp_path):
    d = daemon(config("v1"))
    (tmp_path / "config.lua").write_text(config("v2").replace('version = "v2"', 'version = "v2", fail = true'))
    d.signal(signal.SIGHUP)
    line = d.wait_line("reload.failed")
    assert "testhub.lua:" in line and "refusing these settings" in line
    assert request(d.port, "GET", "/t/version")[1] == "v1"
    status, body = http_get(d.port, "/healthz")
    assert body["last_reload"]["ok"] is False and body["last_reload"]["error"] == "init"
    metrics = request(d.port, "GET", "/metrics")[1]
    assert 'handoffd_reloads_total{result="failed"} 1' in metrics
    assert 'handoffd_reloads_total{result="ok"} 1' in metrics  # the start-up load
    assert "handoffd_script_generation 1" in metrics


def test_admin_reload(daemon, tmp_path):
    d = daemon(config("v1"))
    status, body, _ = request(d.port, "POST", "/admin/reload")
    assert status == 401
    status, body, _ = request(d.port, "POST", "/admin/reload", headers={"Authorization": "Bearer wrong-token-000"})
    assert status == 401
    (tmp_path / "config.lua").write_text(config("v2"))
    auth = {"Authorization": "Bearer admin-token-1234"}
    status, body, _ = request(d.port, "POST", "/admin/reload", headers=auth)
    assert status == 200 and json.loads(body) == {"ok": True, "generation": 2}
    assert request(d.port, "GET", "/t/version")[1] == "v2"

    (tmp_path / "config.lua").write_text(config("v3").replace("hub = {", "hub = { nonsense = (,"))
    status, body, _ = request(d.port, "POST", "/admin/reload", headers=auth)
    assert status == 422
    answer = json.loads(body)
    assert answer["ok"] is False and "config.lua:" in answer["error"] and answer["generation"] == 2
    assert "admin-token-1234" not in d.log()


def test_watch_reloads_on_file_change(daemon, tmp_path):
    d = daemon(config("v1", "scripts_watch = true,").replace("scripts_watch = true,", "").replace(
        "retire_after = 5 }", "retire_after = 5, watch = true }"))
    (tmp_path / "config.lua").write_text(config("v2").replace(
        "retire_after = 5 }", "retire_after = 5, watch = true }"))
    d.wait_line("watch.changed")
    d.wait_line("reload.ok generation=2")
    assert request(d.port, "GET", "/t/version")[1] == "v2"


def test_webhook_cannot_take_a_builtin_route(daemon, tmp_path):
    (tmp_path / "clash.lua").write_text(
        'return { webhooks = { ["GET /healthz"] = function() return 200, "mine" end } }\n')
    cfg = config().replace('module = "testhub"', 'module = "clash"').replace(
        f'script_path = "{SCRIPTS}/?.lua"', f'script_path = "{tmp_path}/?.lua"')
    from conftest import run, write_config
    write_config(tmp_path, cfg, "clash_config.lua")
    out = run(["-c", "clash_config.lua"], cwd=tmp_path)
    assert out.returncode == 1 and "cannot serve GET /healthz: the route is taken" in out.stderr


def test_sigterm_waits_for_a_sleeping_handler(daemon):
    d = daemon(config())
    results = {}
    t = threading.Thread(target=lambda: results.update(r=request(d.port, "GET", "/t/sleep?s=0.5")))
    t.start()
    d.wait_line("testhub.sleeping")  # the request is inside its handler
    d.signal(signal.SIGTERM)
    t.join(10)
    assert d.wait_exit() == 0
    assert results["r"][0] == 200 and results["r"][1] == "slept v1"
