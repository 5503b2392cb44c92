"""The conversation lifecycle through the generic webhook hub: ending, draining, the
slot freed, idle expiry, the hub and the bot told, retention on disk.

Setup (relay_env.Environment): the Direct Line emulator and its scripted bot (it echoes
"You said: ..." and, to a message with the word "bye", says goodbye and sends
endOfConversation), the contract fake of the webhook hub, and handoffd between them.
Each test states the events it sends and what both wires and /healthz must show.
"""
import json
import sqlite3
import time
import urllib.request
import uuid

import pytest

from conftest import BIN
from fakehub import sign
from relay_env import Environment, close_cleanly


def end_event(conversation, event_id=None):
    return {"id": event_id or str(uuid.uuid4()), "type": "conversation.end", "conversation": conversation}


def healthz(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        return json.loads(r.read())


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def send_with_headers(env, event):
    """POSTs EVENT signed; returns (status, headers, body) for checks on the headers."""
    body = json.dumps(event).encode()
    ts = str(int(time.time()))
    req = urllib.request.Request(
        f"http://127.0.0.1:{env.port}/hubs/webhook/events", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-Handoffd-Timestamp": ts,
                 "X-Handoffd-Delivery": str(uuid.uuid4()), "X-Handoffd-Signature": sign(env.hub.secret, ts, body)})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def rows(env, sql, *args):
    db = sqlite3.connect(env.workdir / "state.db")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def received(env, cid):
    return [a.get("text") or a["type"] for a in env.emu.ctl.received(cid)]


def talk_and_end(env, conversation, text="hello"):
    """One short chat: a message, the bot's two answers, the hub's end, the departure.
    Returns the Direct Line conversation it had."""
    hub, port = env.hub, env.port
    before = len(hub.messages(conversation))
    assert hub.message(port, conversation, text) == (202, {"ok": True})
    hub.wait_messages(conversation, before + 2)
    cid = env.dl_conversation(conversation)
    assert hub.send(port, end_event(conversation)) == (202, {"ok": True})
    env.daemon.wait_line(f"conv.ended conv=webhook:{conversation} dl={cid}")
    env.emu.ctl.wait_count(cid, "received", 2, timeout=20)
    assert received(env, cid) == [text, "endOfConversation"], "the bot got the message, then the end"
    return cid


@pytest.fixture
def env(tmp_path):
    e = Environment(BIN, tmp_path)
    yield e
    close_cleanly(e)


def test_ended_conversations_free_their_slots(tmp_path):
    """The issue's scenario with limits.conversations = 3: three chats end; the fourth and
    then 46 more, opened and ended one after another, are all accepted, each with a new
    Direct Line conversation, and /healthz counts 0 open at the end."""
    env = Environment(BIN, tmp_path, extra_config="limits = { conversations = 3 },")
    try:
        hub, port = env.hub, env.port
        for i in range(3):
            assert hub.message(port, f"l-{i}", "hello")[0] == 202
        status, headers, body = send_with_headers(env, {"id": "x-1", "type": "message", "conversation": "l-3",
                                                        "user": {"id": "u"}, "text": "hello"})
        assert (status, body) == (503, {"error": "overloaded"}) and int(headers["Retry-After"]) > 0
        assert healthz(port)["conversations"] == 3
        for i in range(3):
            assert hub.send(port, end_event(f"l-{i}")) == (202, {"ok": True})
            env.daemon.wait_line(f"conv.ended conv=webhook:l-{i}")
        dl_ids = set()
        for i in range(3, 50):
            dl_ids.add(talk_and_end(env, f"l-{i}"))
        assert len(dl_ids) == 47, "every chat had its own Direct Line conversation"
        health = healthz(port)
        assert health["conversations"] == 0
        assert health["conversations_by_state"] == {"bot": 0, "routing": 0, "agent": 0, "ending": 0}
        text = metrics(port)
        assert 'handoffd_conversations_by_state{state="bot"} 0' in text
        assert 'handoffd_conversations_ended_total{cause="hub"} 50' in text
        assert rows(env, "SELECT COUNT(*) FROM conversations WHERE state = 'closed'") == [(50,)]
        assert env.daemon.errors() == []
    finally:
        assert env.close() == 0


def test_a_message_after_the_end_starts_a_new_conversation(env):
    first = talk_and_end(env, "n-1", "hello")
    assert env.hub.message(env.port, "n-1", "hello again")[0] == 202
    assert env.hub.wait_messages("n-1", 4)[-1]["activity"]["text"] == "You said: hello again"
    second = env.dl_conversation("n-1")
    assert second != first, "a new Direct Line conversation"
    assert received(env, second) == ["hello again"]
    health = healthz(env.port)
    assert health["conversations"] == 1 and health["conversations_by_state"]["bot"] == 1


def test_a_message_while_the_end_drains_waits_for_it(env):
    """The customer writes again while the previous conversation still drains (the bot is
    slow to take its endOfConversation): the message waits for the departure and starts
    the new conversation; the hub gets 202, not 503."""
    hub, port = env.hub, env.port
    assert hub.message(port, "w-1", "hello")[0] == 202
    hub.wait_messages("w-1", 2)
    first = env.dl_conversation("w-1")
    env.emu.ctl.fail("post", *([{"status": 503}] * 2), conversation=first)  # the goodbye stalls
    assert hub.send(port, end_event("w-1")) == (202, {"ok": True})
    env.daemon.wait_line("conv.state conv=webhook:w-1 from=bot to=ending")
    assert hub.message(port, "w-1", "hello again")[0] == 202
    assert hub.wait_messages("w-1", 4)[-1]["activity"]["text"] == "You said: hello again"
    assert received(env, first)[-1] == "endOfConversation"
    assert received(env, env.dl_conversation("w-1")) == ["hello again"]


def test_repeated_end_answers_200(env):
    hub, port = env.hub, env.port
    assert hub.send(port, end_event("never-seen")) == (200, {"ok": True, "open": False})
    talk_and_end(env, "r-1")
    assert hub.send(port, end_event("r-1")) == (200, {"ok": True, "open": False}), "a hub retrying its end"
    assert hub.send(port, end_event("r-1", "same-id")) == (200, {"ok": True, "open": False})
    assert hub.send(port, end_event("r-1", "same-id")) == (200, {"ok": True, "duplicate": True})
    assert hub.ends() == [], "the hub is not told about its own end"
    assert env.daemon.errors() == []


def test_idle_conversations_end(tmp_path):
    """limits.idle_timeout: a chat nobody touches ends; the bot gets endOfConversation and
    the hub POST /end with reason idle; the slot is free."""
    env = Environment(BIN, tmp_path, extra_config="limits = { idle_timeout = 3 },")
    try:
        hub, port = env.hub, env.port
        assert hub.message(port, "i-1", "hello")[0] == 202
        hub.wait_messages("i-1", 2)
        cid = env.dl_conversation("i-1")
        env.daemon.wait_line("conv.idle conv=webhook:i-1")
        env.daemon.wait_line("conv.ended conv=webhook:i-1")
        assert received(env, cid) == ["hello", "endOfConversation"]
        ends = hub.ends("i-1")
        assert len(ends) == 1 and ends[0]["reason"] == "idle" and ends[0]["type"] == "conversation.end"
        assert healthz(port)["conversations"] == 0
        assert hub.rejected == [] and env.daemon.errors() == []
    finally:
        assert env.close() == 0


def test_bot_ends_the_conversation(env):
    """The bot's endOfConversation: its last words reach the customer, then the hub's /end."""
    hub, port = env.hub, env.port
    assert hub.message(port, "b-1", "bye")[0] == 202
    env.daemon.wait_line("conv.ended conv=webhook:b-1")
    assert hub.messages("b-1")[-1]["activity"]["text"].startswith("Goodbye")
    assert [e["reason"] for e in hub.ends("b-1")] == ["bot"]
    heard = [received(env, c["id"]) for c in env.emu.ctl.conversations()]
    assert heard == [["bye"]], "the bot is not told its own end"
    assert healthz(port)["conversations"] == 0


def test_direct_line_gone_ends_the_conversation(env):
    hub, port = env.hub, env.port
    assert hub.message(port, "g-1", "hello")[0] == 202
    hub.wait_messages("g-1", 2)
    env.emu.ctl.expire(env.dl_conversation("g-1"))
    env.daemon.wait_line("conv.ended conv=webhook:g-1")
    assert [e["reason"] for e in hub.ends("g-1")] == ["directline"]
    assert healthz(port)["conversations"] == 0


def test_end_waits_for_queued_messages(env):
    """Messages queued for the bot when the hub ends the chat are delivered first, in
    order, then endOfConversation."""
    hub, port = env.hub, env.port
    assert hub.message(port, "q-1", "m0")[0] == 202
    hub.wait_messages("q-1", 2)
    cid = env.dl_conversation("q-1")
    env.emu.ctl.fail("post", *([{"status": 503}] * 3), conversation=cid)  # the bot stalls a while
    for j in range(1, 5):
        assert hub.message(port, "q-1", f"m{j}")[0] == 202
    assert hub.send(port, end_event("q-1")) == (202, {"ok": True})
    env.daemon.wait_line("conv.state conv=webhook:q-1 from=bot to=ending")
    env.daemon.wait_line("conv.ended conv=webhook:q-1")
    assert received(env, cid) == ["m0", "m1", "m2", "m3", "m4", "endOfConversation"]


def test_kill_during_draining(env):
    """kill -9 while an ending conversation still has a reply for the hub queued: after the
    restart the reply is delivered once, the bot got one end, and the conversation leaves."""
    hub, port = env.hub, env.port
    assert hub.message(port, "k-1", "m0")[0] == 202
    hub.wait_messages("k-1", 2)
    cid = env.dl_conversation("k-1")
    hub.script = [(503, None)] * 1000            # the hub is down: the reply waits in the outbox
    assert hub.message(port, "k-1", "m1")[0] == 202
    env.daemon.wait_line("relay.to_hub_retry conv=webhook:k-1")
    assert hub.send(port, end_event("k-1"))[0] == 202
    env.daemon.wait_line("conv.state conv=webhook:k-1 from=bot to=ending")
    env.emu.ctl.wait_count(cid, "received", 3, timeout=20)   # m0, m1, endOfConversation
    env.daemon.kill()
    hub.script = []
    env.daemon.start()
    env.daemon.wait_line("relay.ready front=webhook desk_only=no resumed=1")
    env.daemon.wait_line("conv.ended conv=webhook:k-1")
    assert [m["activity"]["text"] for m in hub.messages("k-1")][1:] == ["You said: m0", "You said: m1"]
    assert received(env, cid) == ["m0", "m1", "endOfConversation"], "nothing lost, nothing twice"
    assert healthz(env.port)["conversations"] == 0
    assert rows(env, "SELECT COUNT(*) FROM outbox") == [(0,)]


def test_retention_removes_ended_rows(tmp_path):
    env = Environment(BIN, tmp_path, extra_config="state_retention = 1,")
    try:
        talk_and_end(env, "d-1")
        healthz(env.port)  # one more turn of handoffd's loop: the departure is committed
        assert rows(env, "SELECT state FROM conversations WHERE key = 'webhook:d-1'") == [("closed",)]
        assert env.hub.message(env.port, "d-2", "still here")[0] == 202
        env.hub.wait_messages("d-2", 2)
        env.daemon.wait_line("conv.purged count=1")
        assert rows(env, "SELECT key FROM conversations") == [("webhook:d-2",)], "open conversations stay"
        assert rows(env, "SELECT COUNT(*) FROM outbox WHERE key = 'webhook:d-1'") == [(0,)]
    finally:
        assert env.close() == 0


def test_front_ends_while_a_desk_agent_has_it(tmp_path):
    """Webhook front, Genesys desk: the customer's chat ends while an agent has it. The bot
    gets endOfConversation, the desk hears of it (genesys: one last message to the agent),
    the front is not told its own end, and the conversation leaves."""
    from test_hub_genesys import hand_off, start
    env = start(tmp_path)
    try:
        hand_off(env, "a-1")
        env.genesys.agent_says(env.port, "a-1", "Hi Dana, I'm Sam")
        env.daemon.wait_line("conv.state conv=webhook:a-1 from=routing to=agent")
        cid = env.dl_conversation("a-1")
        assert env.hub.send(env.port, end_event("a-1")) == (202, {"ok": True})
        env.daemon.wait_line("conv.state conv=webhook:a-1 from=agent to=ending")
        env.daemon.wait_line("conv.ended conv=webhook:a-1")
        assert received(env, cid)[-1] == "endOfConversation"
        assert env.hub.ends("a-1") == []
        assert healthz(env.port)["conversations"] == 0
        assert env.daemon.errors() == []
    finally:
        assert env.close() == 0     # stops the Genesys fake too
