"""The escalation task routes and escalates on one handoff object; rules that fail send
the handoff to config.fallback.

Setup (relay_env.Environment): the webhook hub, the emulator's bot (which hands off when
asked for a human), and a rules function that fails in one of two ways: it raises (caught
inside the task, which goes on to the desk at once), or it runs past
scripts.max_instructions (the task ends; the retry escalates to the fallback without
running the rules again). Expected: the desk gets the handoff with the fallback queue
and fallback = true, the log names why, and the admin API shows the same decision.
"""
import json
import urllib.parse
import urllib.request

from conftest import BIN
from relay_env import Environment

TOKEN = "inspect-token-0123456789"

RAISES = 'return function(h) error("rules exploded on " .. h.context.language) end\n'
ENDLESS = "return function(h) while true do end end\n"


def handoff_with(tmp_path, rules, extra=""):
    env = Environment(BIN, tmp_path, routes=rules, extra_config=f'admin = {{ token = "{TOKEN}" }}, ' + extra)
    env.hub.message(env.port, "r-1", "a human please")
    return env, env.hub.wait_handoff("r-1")


def test_rules_that_raise_route_to_the_fallback(tmp_path):
    env, handoff = handoff_with(tmp_path, RAISES)
    try:
        assert handoff["routing"]["queue"] == "default"
        line = env.daemon.wait_line("route.fallback")
        assert "rules exploded on" in line
        assert "fallback=yes" in env.daemon.wait_line("handoff.routed conv=webhook:r-1")
        path = "/admin/conversations/" + urllib.parse.quote("webhook:r-1", safe="")
        req = urllib.request.Request(f"http://127.0.0.1:{env.port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            route = json.loads(r.read())["route"]
        assert route["fallback"] is True and route["queue"] == "default" and "rules exploded on" in route["why"]
        assert len(env.hub.handoff_attempts) == 1, "routing and escalate are one task: one call to the desk"
    finally:
        assert env.close() == 0


def test_rules_past_their_cpu_budget_route_to_the_fallback(tmp_path):
    env, handoff = handoff_with(tmp_path, ENDLESS, "scripts = { max_instructions = 200000 },")
    try:
        assert handoff["routing"]["queue"] == "default"
        assert "cpu budget exceeded" in env.daemon.wait_line("route.fallback")
        env.daemon.wait_line("relay.to_hub_retry conv=webhook:r-1")
    finally:
        assert env.close() == 0
