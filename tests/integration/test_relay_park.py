"""Parking end to end (relay_env: emulator, webhook hub fake, handoffd): the Direct Line
stream of a conversation closes while an agent has it and after directline.park_after
seconds without traffic; it wakes on the customer's next message and on the handoff's
end; /healthz and /metrics count conversations by stream; a kill -9 while parked loses
and repeats nothing.
"""
import json
import urllib.request

import pytest

from conftest import BIN
from relay_env import Environment, close_cleanly


def healthz(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        return json.loads(r.read())


def metric(port, series):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[1])
    return None


def texts(messages):
    return [m["activity"]["text"] for m in messages]


@pytest.fixture
def make_env(tmp_path):
    envs = []

    def make(directline):
        e = Environment(BIN, tmp_path, directline=directline)
        envs.append(e)
        return e
    yield make
    for e in envs:
        close_cleanly(e)


def test_agent_parks_the_stream_and_completion_wakes_it(make_env):
    """Held park while an agent has the conversation, also across a kill -9; the status
    events still reach the bot; the completion reopens the stream and the next reply comes
    at once (parked_sync is five minutes)."""
    env = make_env("park_after = 0, parked_sync = 300,")
    hub = env.hub
    hub.message(env.port, "c-1", "I need a human")
    handoff = hub.wait_handoff("c-1")
    cid = env.dl_conversation("c-1")
    assert healthz(env.port)["streams"] == {"streaming": 1, "parked": 0}
    closed = env.emu.ctl.stats().get("ws_closed", 0)
    hub.send(env.port, {"id": "e-acc", "type": "handoff.accepted", "conversation": "c-1",
                        "handoff_id": handoff["handoff_id"], "agent": {"id": "a-1", "name": "Sam"}})
    env.daemon.wait_line('directline.park key="webhook:c-1" conv=%s reason="held"' % cid)
    env.emu.ctl.wait_stat("ws_closed", closed + 1)
    assert healthz(env.port)["streams"] == {"streaming": 0, "parked": 1}
    assert metric(env.port, 'handoffd_conversations_streams{stream="parked"}') == 1
    assert metric(env.port, 'handoffd_conversations_streams{stream="streaming"}') == 0
    env.emu.ctl.wait_count(cid, "received", 2)          # the message and status accepted
    env.emu.ctl.bot(cid, texts=["the bot while the agent has it"])
    env.daemon.kill()
    env.daemon.start()
    env.daemon.wait_line('directline.park key="webhook:c-1" conv=%s reason="held"' % cid)
    assert healthz(env.port)["streams"] == {"streaming": 0, "parked": 1}
    accepted = env.emu.ctl.stats()["ws_accepted"]
    hub.send(env.port, {"id": "e-done", "type": "handoff.completed", "conversation": "c-1",
                        "handoff_id": handoff["handoff_id"], "return_to_bot": True})
    env.daemon.wait_line('directline.wake key="webhook:c-1"')
    hub.message(env.port, "c-1", "thanks, one more question")
    msgs = hub.wait_messages("c-1", 3, timeout=20)
    assert texts(msgs)[-1] == "You said: thanks, one more question"
    assert "the bot while the agent has it" not in texts(hub.messages("c-1")), "it stays with the bot"
    env.emu.ctl.wait_stat("ws_accepted", accepted + 1)   # the stream reopened
    assert healthz(env.port)["streams"] == {"streaming": 1, "parked": 0}
    got = [a.get("text") or a["value"]["state"] for a in env.bot_received("c-1")]
    assert got == ["I need a human", "accepted", "completed", "thanks, one more question"]
    assert env.daemon.errors() == []


def test_idle_conversation_parks_and_wakes_on_the_customer(make_env):
    """park_after: the stream closes after a second without traffic; the customer's next
    message goes out at once and its answer comes on the reopened stream."""
    env = make_env("park_after = 1, parked_sync = 300,")
    hub = env.hub
    hub.message(env.port, "c-2", "hello")
    hub.wait_messages("c-2", 2)
    env.daemon.wait_line('directline.park key="webhook:c-2"')
    assert healthz(env.port)["streams"] == {"streaming": 0, "parked": 1}
    hub.message(env.port, "c-2", "are you open on Saturday?")
    msgs = hub.wait_messages("c-2", 3, timeout=20)
    assert texts(msgs)[-1] == "You said: are you open on Saturday?"
    env.daemon.wait_line('directline.wake key="webhook:c-2"')
    assert env.daemon.errors() == []


def test_parked_kill_and_restart_loses_and_repeats_nothing(make_env):
    """What the bot says while the conversation is parked, while handoffd is down (kill -9)
    and while it is parked again after the restart reaches the customer exactly once."""
    env = make_env("park_after = 1, parked_sync = 0.5,")
    hub, ctl = env.hub, env.emu.ctl
    hub.message(env.port, "c-3", "hello")
    hub.wait_messages("c-3", 2)
    cid = env.dl_conversation("c-3")
    env.daemon.wait_line('directline.park key="webhook:c-3"')
    ctl.bot(cid, texts=["parked one"])
    hub.wait_messages("c-3", 3)
    env.daemon.kill()
    ctl.bot(cid, texts=["while down"])
    env.daemon.start()
    hub.wait_messages("c-3", 4)
    env.daemon.wait_line('directline.park key="webhook:c-3"')
    ctl.bot(cid, texts=["parked two"])
    hub.wait_messages("c-3", 5)
    hub.message(env.port, "c-3", "one more")
    msgs = hub.wait_messages("c-3", 6, timeout=20)
    assert texts(msgs)[1:] == ["You said: hello", "parked one", "while down", "parked two", "You said: one more"]
    assert [a["text"] for a in env.bot_received("c-3")] == ["hello", "one more"]
    assert env.daemon.errors() == []
