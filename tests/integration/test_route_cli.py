"""`handoffd route -c CONFIG PAYLOAD`: the rules applied to recorded payloads.

Setup: a config whose rules file routes by language and customer tier (no time windows,
so the answer does not depend on the clock), payloads made by tests/payloads/genpayload.py.
Expected: the destination JSON on stdout; the fallback (with why) when the rules cannot
decide; exit 65 for a payload that is malformed or has no handoff.initiate.
"""
import json
import subprocess

import pytest

from conftest import BIN, SOURCE_DIR

GEN = SOURCE_DIR / "tests/payloads/genpayload.py"

RULES = """local route = require "handoff.route"
local queue = route.queue
return {
  route.var("Global.CustomerTier", "platinum", queue("vip", { priority = 1, skill = "white-glove" })),
  route.language("fr", queue("support-fr")),
  route.when(function(h) return h.context.language == "xx-BOOM" and h.nope.field end, queue("never")),
  route.phrase("refund", queue("billing")),
}
"""


def payload(*args):
    return subprocess.run(["/usr/bin/python3", str(GEN), *args],
                          capture_output=True, check=True).stdout


@pytest.fixture
def config(tmp_path):
    (tmp_path / "routes.lua").write_text(RULES)
    path = tmp_path / "config.lua"
    path.write_text("""return {
  directline = { secret = "test-secret-0123456789" },
  routes = "routes.lua",
  fallback = { queue = "general", reason = "no rule matched" },
}
""")
    return path


def route(config, data):
    return subprocess.run([BIN, "route", "-c", str(config), "-"], input=data, capture_output=True, timeout=30)


def test_rule_decides(config):
    out = route(config, payload("20", "--language", "fr-FR"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"fallback": False, "queue": "support-fr", "rule": 2}


def test_destination_carries_every_field(config):
    data = payload("4").replace(b'"Global.CustomerTier":"gold"', b'"Global.CustomerTier":"platinum"')
    out = route(config, data)
    assert json.loads(out.stdout) == {"fallback": False, "queue": "vip", "skill": "white-glove",
                                      "priority": 1, "rule": 1}


def test_no_match_uses_the_fallback(config):
    out = route(config, payload("4"))
    assert out.returncode == 0
    assert json.loads(out.stdout) == {"fallback": True, "queue": "general", "reason": "no rule matched",
                                      "rule": 0, "why": "no match"}


def test_rule_error_uses_the_fallback_and_names_the_rule(config):
    out = route(config, payload("4", "--language", "xx-BOOM"))
    answer = json.loads(out.stdout)
    assert answer["fallback"] is True and answer["queue"] == "general"
    assert answer["why"].startswith("rule 3 (") and "routes.lua:6" in answer["why"]


def test_variants_are_routed_too(config):
    for variant in (["--value-as-string"], ["--content-as-string"], ["--name", "TRANSCRIPT"],
                    ["--no-transcript"], ["--mixed"], ["--ascii"]):
        out = route(config, payload("6", "--language", "fr-CA", *variant))
        assert json.loads(out.stdout)["queue"] == "support-fr", variant


def test_malformed_payload_exits_65(config):
    out = route(config, b'{"activities": [ {"type": ')
    assert out.returncode == 65 and out.stdout == b""
    assert out.stderr.startswith(b"handoffd: -: ") and b" at byte " in out.stderr


def test_payload_without_handoff_exits_65(config):
    out = route(config, b'{"activities":[{"type":"message","id":"1","text":"hi"}],"watermark":"1"}')
    assert out.returncode == 65
    assert b"no handoff.initiate event" in out.stderr


def test_usage_and_config_errors(config, tmp_path):
    assert subprocess.run([BIN, "route", "-"], capture_output=True).returncode == 2
    bad = tmp_path / "bad.lua"
    bad.write_text("return { lisen = 1 }")
    out = subprocess.run([BIN, "route", "-c", str(bad), "-"], input=b"{}", capture_output=True)
    assert out.returncode == 1 and b"unknown key 'lisen'" in out.stderr
