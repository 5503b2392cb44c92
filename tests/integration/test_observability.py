"""What an operator sees of a running handoffd: the latency histograms at /metrics after
real traffic (relay each way, handoff answer and acceptance, hub calls, Direct Line sends),
and the shipped Grafana dashboard naming only metrics the daemon exports.

Setup (relay_env.Environment): the Direct Line emulator and its scripted bot, the generic
webhook hub's fake, handoffd between them.
"""
import json
import re
import urllib.request

import pytest

from conftest import BIN, SOURCE_DIR
from relay_env import Environment, close_cleanly

CHAT_BUCKETS = ["0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf"]


@pytest.fixture
def env(tmp_path):
    e = Environment(BIN, tmp_path)
    yield e
    close_cleanly(e)


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def series(text):
    """{(name, labels without le): {le or None: value}} of the exposition TEXT."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-z_]+)(?:\{(.*)\})? (\S+)', line)
        assert m, f"malformed line {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        le = re.search(r'(?:^|,)le="([^"]*)"', labels)
        rest = re.sub(r',?le="[^"]*"', "", labels).lstrip(",")
        out.setdefault((name, rest), {})[le.group(1) if le else None] = value
    return out


def histogram(all_series, name, labels):
    buckets = all_series[(name + "_bucket", labels)]
    count = all_series[(name + "_count", labels)][None]
    total = all_series[(name + "_sum", labels)][None]
    assert list(buckets) == CHAT_BUCKETS, "the chat buckets, in order, +Inf last"
    values = [buckets[le] for le in CHAT_BUCKETS]
    assert values == sorted(values), "buckets are cumulative"
    assert values[-1] == count and total >= 0
    return count


def test_histograms_after_a_handoff(env):
    hub, port = env.hub, env.port
    hub.message(port, "c-1", "hello")
    hub.wait_messages("c-1", 2)
    hub.message(port, "c-1", "My order is late, I want a human")
    handoff = hub.wait_handoff("c-1")
    assert hub.send(port, {"id": "e-acc", "type": "handoff.accepted", "conversation": "c-1",
                           "handoff_id": handoff["handoff_id"]})[0] == 202
    env.daemon.wait_line("conv.state conv=webhook:c-1 from=routing to=agent")
    text = scrape(port)
    assert "# TYPE handoffd_relay_latency_seconds histogram" in text
    s = series(text)
    assert histogram(s, "handoffd_relay_latency_seconds", 'to="bot"') >= 2    # hello, the handoff request
    assert histogram(s, "handoffd_relay_latency_seconds", 'to="hub"') >= 3    # greeting, answer, escalation
    assert histogram(s, "handoffd_handoff_seconds", 'until="answer"') == 1
    assert histogram(s, "handoffd_handoff_seconds", 'until="accepted"') == 1
    assert histogram(s, "handoffd_hub_call_seconds", 'hub="webhook",call="escalate"') == 1
    assert histogram(s, "handoffd_hub_call_seconds", 'hub="webhook",call="to_user"') >= 2
    assert histogram(s, "handoffd_directline_send_seconds", "") >= 2
    assert env.daemon.errors() == []


def test_dashboard_names_only_exported_metrics(env):
    dash = json.loads((SOURCE_DIR / "dist" / "grafana-handoffd.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs.append(dash["templating"]["list"][1]["query"]["query"])
    named = {n for e in exprs for n in re.findall(r"\bhandoffd_[a-z_]+", e)}
    assert len(named) >= 15
    exported = {name for name, _ in series(scrape(env.port))}
    missing = sorted(named - exported)
    assert not missing, f"the dashboard queries metrics handoffd does not export: {missing}"
    histograms = {n[:-len("_bucket")] for n in named if n.endswith("_bucket")}
    assert histograms >= {"handoffd_relay_latency_seconds", "handoffd_handoff_seconds",
                          "handoffd_hub_call_seconds", "handoffd_directline_send_seconds"}
