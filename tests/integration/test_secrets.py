"""Nothing secret leaves, and nothing a hub sends can forge a log line or merge ids.

Setup: a daemon on 127.0.0.1 whose hub is tests/integration/scripts/secrethub.lua (it
logs what it is posted and calls the `handoff` module with the ids it is given), with
secrets at several depths of `hub`; for the end-to-end cases, the relay environment
(Direct Line emulator, the webhook hub's contract fake, handoffd between them).
Input: reloads of a config broken next to a secret, webhook posts carrying secrets,
newlines, quotes and NUL bytes. Expected: /healthz and the log never show a secret,
every log line is one line (one JSON object with --json-logs), ids with a NUL byte are
refused with "bad id".
"""
import json
import signal
import urllib.error
import urllib.request

import pytest

from conftest import SOURCE_DIR, http_get, run, write_config
from test_relay import env  # noqa: F401  (the relay environment, stopped cleanly at teardown)

SCRIPTS = SOURCE_DIR / "tests/integration/scripts"
SECRETS = {
    "directline": "test-secret-0123456789",
    "webhook": "whsec-first-0123456789",
    "client": "cs-oauth-0123456789",
    "api": "ak-0123456789abcdef",
    "admin": "admin-token-0123456789",
}
ROTATED = "whsec-rotated-9876543210"    # appears only in the broken config
FORGED = "2026-12-06T00:00:00.000Z error forged.line x=1"


def config(hub_line=None, extra=""):
    hub_line = hub_line or f'webhook_secret = "{SECRETS["webhook"]}",'
    return f"""return {{
  listen = "127.0.0.1:0",
  script_path = "{SCRIPTS}/?.lua",
  directline = {{ secret = "{SECRETS["directline"]}" }},
  hub = {{ module = "secrethub", {hub_line}
          oauth = {{ client_secret = "{SECRETS["client"]}", nested = {{ api_key = "{SECRETS["api"]}" }} }},
          {extra} }},
  admin = {{ token = "{SECRETS["admin"]}" }},
}}
"""


def error_level_lines(lines):
    """Lines logged at level error (the text form is "time level event ..."); the usual
    substring check would count the forged text inside an escaped value."""
    return [l for l in lines if l.split(" ")[1:2] == ["error"]]


def post(port, path, body, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def assert_no_secret(text, *extra):
    for name, value in [*SECRETS.items(), *(("extra", e) for e in extra)]:
        assert value not in text, f"the {name} secret leaked:\n{text}"


def test_broken_reload_next_to_a_secret_shows_only_its_category(daemon, tmp_path):
    d = daemon(config())
    # A new secret whose string is never closed: Lua's message quotes the rest of the line.
    write_config(tmp_path, config(hub_line=f'webhook_secret = "{ROTATED},'))
    mark = len(d.lines)
    d.signal(signal.SIGHUP)
    line = d.wait_line("reload.failed", start=mark)
    assert "config.lua:5: unfinished string" in line and "***" in line
    status, body = http_get(d.port, "/healthz")
    assert status == 200 and body["last_reload"]["ok"] is False
    assert body["last_reload"]["error"] == "syntax" and body["last_reload"]["time"]
    assert_no_secret(json.dumps(body), ROTATED)
    # The admin answer (behind the token) keeps the message, redacted too.
    status, answer = post(d.port, "/admin/reload", {}, {"Authorization": "Bearer " + SECRETS["admin"]})
    assert status == 422 and "config.lua:5: unfinished string" in answer["error"]
    assert_no_secret(json.dumps(answer), ROTATED)
    # An init that quotes a secret in its error: category "init", message redacted.
    write_config(tmp_path, config(extra="fail = true"))
    mark = len(d.lines)
    d.signal(signal.SIGHUP)
    line = d.wait_line("reload.failed", start=mark)
    assert "secrethub.lua:" in line and "refusing client_secret ***" in line
    assert http_get(d.port, "/healthz")[1]["last_reload"]["error"] == "init"
    d.stop()
    assert_no_secret(d.log(), ROTATED)


def test_hub_secrets_are_redacted_in_the_log(daemon):
    d = daemon(config())
    line = d.wait_line("secrethub.init")
    assert "client_secret=***" in line
    said = " ".join(SECRETS.values())
    assert post(d.port, "/s/log", {"id": "c1", "text": "the desk echoed " + said})[0] == 200
    line = d.wait_line("secrethub.said")
    assert line.count("***") == len(SECRETS)
    d.stop()
    assert_no_secret(d.log())


def test_a_newline_in_a_hub_id_does_not_forge_a_line(daemon):
    d = daemon(config())
    assert post(d.port, "/s/log", {"id": "c1\n" + FORGED, "text": 'a" forged="1'})[0] == 200
    line = d.wait_line("secrethub.said")
    assert f'id="c1\\n{FORGED}"' in line and 'text="a\\" forged=\\"1"' in line
    d.stop()
    assert not [l for l in d.log().splitlines() if l.startswith(FORGED[:24])]
    assert error_level_lines(d.log().splitlines()) == []


def test_json_log_stays_one_object_per_line(daemon):
    d = daemon(config(), args=["--json-logs"])
    ident = "c1\n" + FORGED + '\r\n{"level":"error"}\u0001'
    assert post(d.port, "/s/log", {"id": ident, "text": 'quote " and \\ backslash'})[0] == 200
    d.wait_line("secrethub.said")
    d.stop()
    said = []
    for line in d.log().splitlines():
        obj = json.loads(line)      # every line is one whole object
        if obj["event"] == "secrethub.said":
            said.append(obj)
        assert obj.get("level") != "error", line
    assert len(said) == 1 and said[0]["id"] == ident and said[0]["text"] == 'quote " and \\ backslash'


@pytest.mark.parametrize("fn", ["customer", "to_bot", "agent", "handoff_event", "end_conversation",
                                "remember_event", "forget_event", "conversation", "set_data"])
def test_ids_with_a_nul_byte_are_refused(daemon, fn):
    d = daemon(config())
    assert post(d.port, "/s/call", {"fn": fn, "id": "c\u0000x"}) == (200, {"ok": False, "err": "bad id"})
    if fn == "remember_event":      # the same id without the NUL is an ordinary one
        assert post(d.port, "/s/call", {"fn": fn, "id": "c"}) == (200, {"ok": True, "err": None})
    assert d.error_lines() == []


def test_admin_token_shorter_than_16_characters_is_a_config_error(tmp_path):
    path = write_config(tmp_path, config().replace(SECRETS["admin"], "short-token"))
    out = run(["-t", "-c", str(path)])
    assert out.returncode == 1
    assert "key 'admin.token' must be at least 16 characters in" in out.stderr
    assert "short-token" not in out.stderr


def test_webhook_hub_ids_end_to_end(env):
    """Through the generic webhook hub and the relay: a conversation id with a newline is
    one escaped value in conv.open; ids and event ids with a NUL are refused (400)."""
    hub, port = env.hub, env.port
    assert hub.message(port, "c-1\n" + FORGED, "hello") == (202, {"ok": True})
    line = env.daemon.wait_line("conv.open")
    assert f"c-1\\n{FORGED}" in line
    assert hub.message(port, "c\u0000x", "hello") == (400, {"error": "bad id"})
    assert hub.message(port, "c-2", "hello", event_id="e\u0000x") == (400, {"error": "bad id"})
    assert not [l for l in env.daemon.lines if l.startswith(FORGED[:24])]
    assert error_level_lines(env.daemon.lines) == []
