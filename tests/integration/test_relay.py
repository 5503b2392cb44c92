"""End to end through the generic webhook hub: relay, handoff, durable state.

Setup (relay_env.Environment): the Direct Line emulator and its scripted bot, the
contract fake of the webhook hub, and handoffd between them; routing rules send
"order"/"refund" talk to queue orders and gold customers to vip. Each test states its
input (hub events, bot activities) and the traffic it expects on both wires.
"""
import asyncio
import concurrent.futures
import json
import threading
import time

import pytest
from aiohttp import web

from conftest import BIN, SOURCE_DIR, http_get
from fakeserver import FakeServer, post_json
from relay_env import Environment, close_cleanly


@pytest.fixture
def env(tmp_path):
    e = Environment(BIN, tmp_path)
    yield e
    close_cleanly(e)


def texts(messages):
    return [m["activity"]["text"] for m in messages]


def test_complete_flow(env):
    hub, port = env.hub, env.port
    # greeting and a question the bot answers
    assert hub.message(port, "c-1", "hello") == (202, {"ok": True})
    assert texts(hub.wait_messages("c-1", 2))[1] == "You said: hello"
    assert hub.messages("c-1")[1]["activity"]["attachments"] == [], "no attachments: an empty JSON array"
    hub.message(port, "c-1", "What are your opening hours?")
    assert "open Monday to Friday" in texts(hub.wait_messages("c-1", 3))[2]
    # the customer asks for a human: the bot's last words, then the handoff
    hub.message(port, "c-1", "My order is late, I want a human")
    handoff = hub.wait_handoff("c-1")
    assert texts(hub.messages("c-1"))[-1].startswith("Transferring you")
    assert handoff["conversation"] == "c-1" and handoff["handoff_id"].startswith("h-")
    assert handoff["user"] == {"id": "u-7", "name": "Dana"}
    assert handoff["routing"]["queue"] == "orders" and handoff["routing"]["skill"] == "late-delivery"
    assert handoff["routing"]["priority"] == 2 and handoff["routing"]["reason"]
    ctx = handoff["context"]
    assert ctx["conversation_id"] == env.dl_conversation("c-1")
    assert ctx["vars"]["Global.CustomerTier"] == "gold" and "va_LastTopic" in ctx["vars"]
    said = [e["text"] for e in handoff["transcript"]]
    assert said[:2] == ["hello", env.hub.messages("c-1")[0]["activity"]["text"]]
    assert "My order is late, I want a human" in said
    assert all(set(e) >= {"id", "role", "text", "timestamp"} for e in handoff["transcript"])
    # the agent takes it: the bot is told, and from now on stays out
    assert hub.send(port, {"id": "e-acc", "type": "handoff.accepted", "conversation": "c-1",
                           "handoff_id": handoff["handoff_id"], "agent": {"id": "a-1", "name": "Sam"}})[0] == 202
    env.emu.ctl.wait_count(env.dl_conversation("c-1"), "received", 4, timeout=20)
    statuses = [a["value"]["state"] for a in env.bot_received("c-1") if a.get("name") == "handoff.status"]
    assert statuses == ["accepted"]
    before = len(env.bot_received("c-1"))
    assert hub.message(port, "c-1", "hi Sam, where is it?")[0] == 202
    env.emu.ctl.bot(env.dl_conversation("c-1"), texts=["the bot still talking"])
    # completion: status to the bot, and the conversation is the bot's again
    assert hub.send(port, {"id": "e-done", "type": "handoff.completed", "conversation": "c-1",
                           "handoff_id": handoff["handoff_id"], "return_to_bot": True})[0] == 202
    # the hub says it again (another event id): no handoff is under way, nothing happens
    assert hub.send(port, {"id": "e-done-again", "type": "handoff.completed", "conversation": "c-1",
                           "handoff_id": handoff["handoff_id"], "return_to_bot": False})[0] == 202
    hub.message(port, "c-1", "thanks, one more question")
    msgs = hub.wait_messages("c-1", 5)
    assert texts(msgs)[-1] == "You said: thanks, one more question"
    assert "the bot still talking" not in texts(msgs), "nothing the bot says during the handoff reaches the customer"
    received = [a.get("text") or a["value"]["state"] for a in env.bot_received("c-1")[before:]]
    assert received == ["completed", "thanks, one more question"], "customer lines during the handoff stay away from the bot"
    assert env.daemon.errors() == []


def test_handoff_accepted_at_once_and_closed_after(env):
    env.hub.accept_handoffs = True
    env.hub.message(env.port, "c-2", "I need an agent")
    env.hub.wait_handoff("c-2")
    env.daemon.wait_line("conv.state conv=webhook:c-2 from=routing to=agent")
    assert env.hub.send(env.port, {"id": "e-2", "type": "handoff.completed", "conversation": "c-2",
                                   "handoff_id": "x", "return_to_bot": False})[0] == 202
    env.daemon.wait_line("conv.state conv=webhook:c-2 from=agent to=ending")
    env.emu.ctl.wait_count(env.dl_conversation("c-2"), "received", 4, timeout=20)
    got = [a["value"]["state"] if a.get("name") == "handoff.status" else a["type"] for a in env.bot_received("c-2")]
    assert got == ["message", "accepted", "completed", "endOfConversation"], "the status reaches the bot before the end"


def test_replayed_handoff_escalates_once(env):
    env.hub.message(env.port, "c-3", "agent please")
    env.hub.wait_handoff("c-3")
    cid = env.dl_conversation("c-3")
    env.emu.ctl.bot(cid, resend="last_handoff")   # the same activity id again (F24)
    env.emu.ctl.bot(cid, handoff={})              # and a new one while routing
    env.daemon.wait_line("handoff.ignored conv=webhook:c-3")  # both are behind us now
    assert len(env.hub.handoffs("c-3")) == 1


def test_signatures_and_malformed_events(env):
    hub, port = env.hub, env.port
    ev = {"id": "s-1", "type": "message", "conversation": "c-4", "user": {"id": "u"}, "text": "hi"}
    assert hub.send(port, ev, secret="wrong-secret-wrong-secret")[0] == 401
    assert hub.send(port, ev, ts=int(time.time()) - 3600)[0] == 401
    assert hub.send(port, None, raw=b"{not json")[0] == 400
    assert hub.send(port, {"id": "s-2", "type": "nonsense", "conversation": "c-4"}) == (400, {"error": "unknown type nonsense"})
    assert hub.send(port, {"id": "s-3", "type": "message", "conversation": "c-4", "user": {"id": "u"}})[0] == 400
    # One instance says "unknown conversation" at once; a cluster member (a PostgreSQL state)
    # hands the event to the conversation's owner, whichever instance that is, and the
    # owner drops it (logged: cluster.inbound_refused).
    unknown = 202 if getattr(env, "pg", None) else 400
    assert hub.send(port, {"id": "s-4", "type": "handoff.accepted", "conversation": "nobody"})[0] == unknown
    assert hub.send(port, ev) == (202, {"ok": True})
    assert hub.send(port, ev) == (200, {"ok": True, "duplicate": True})
    hub.wait_messages("c-4", 2)
    assert [a["text"] for a in env.bot_received("c-4")] == ["hi"], "a duplicate event has no second effect"
    assert hub.rejected == [], "every request handoffd sent was signed correctly"


def test_parallel_conversations_keep_their_order(env):
    n_conv, n_msg = 100, 20
    hub, port = env.hub, env.port

    def talk(i):
        for j in range(n_msg):
            status, _ = hub.message(port, f"p-{i}", f"m{j}")
            assert status == 202
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(talk, range(n_conv)))
    for i in range(n_conv):
        msgs = hub.wait_messages(f"p-{i}", n_msg + 1, timeout=120)
        assert texts(msgs)[1:] == [f"You said: m{j}" for j in range(n_msg)], f"order at the hub in p-{i}"
        assert [a["text"] for a in env.bot_received(f"p-{i}")] == [f"m{j}" for j in range(n_msg)]
    assert env.daemon.errors() == []


def test_hub_outage_loses_nothing(env):
    hub, port = env.hub, env.port
    hub.message(port, "o-1", "m0")
    hub.wait_messages("o-1", 2)
    hub.script = [(500, None)] * 6 + [(429, {"Retry-After": "0"})] * 2 + [(503, None)] * 4
    for j in range(1, 8):
        assert hub.message(port, "o-1", f"m{j}")[0] == 202
    msgs = hub.wait_messages("o-1", 9, timeout=60)
    assert texts(msgs)[1:] == [f"You said: m{j}" for j in range(8)]
    assert hub.script == []
    env.daemon.wait_line("relay.to_hub_retry")


def test_sigterm_mid_traffic_stops_cleanly_and_loses_nothing(env):
    """A graceful stop while messages queue up for the bot: handoffd exits 0 (what the store's
    last commit completes finds the Direct Line client gone and sends nothing), and after
    a restart every message reaches the bot once and every reply the hub once, in order."""
    hub = env.hub
    sent = [f"m{j}" for j in range(12)]
    for text in sent[:8]:
        assert hub.message(env.port, "g-1", text)[0] == 202
    code = env.daemon.stop()
    assert code == 0, "handoffd stops cleanly; its last lines:\n" + "\n".join(env.daemon.lines[-40:])
    env.daemon.start()
    for text in sent[8:]:
        assert hub.message(env.port, "g-1", text)[0] == 202
    msgs = hub.wait_messages("g-1", 13, timeout=60)
    assert [a["text"] for a in env.bot_received("g-1")] == sent, \
        f"every message reached the bot once\n{env.explain('g-1')}"
    assert texts(msgs)[1:] == [f"You said: {t}" for t in sent], f"every reply once, in order\n{env.explain('g-1')}"


def test_kill_and_restart_mid_traffic(env):
    hub, port = env.hub, env.port
    sent = []
    for j in range(10):
        assert hub.message(port, "k-1", f"m{j}")[0] == 202
        sent.append(f"m{j}")
    env.daemon.kill()  # kill -9 while replies and deliveries are in flight
    env.daemon.start()
    for j in range(10, 20):
        assert hub.message(env.port, "k-1", f"m{j}")[0] == 202
        sent.append(f"m{j}")
    msgs = hub.wait_messages("k-1", 21, timeout=60)
    assert [a["text"] for a in env.bot_received("k-1")] == sent, \
        f"every message reached the bot once\n{env.explain('k-1')}"
    # A reply whose delivery the kill interrupted comes again with the same id, which the
    # contract tells the hub to drop (the fake does, into hub.redelivered).
    assert texts(msgs)[1:] == [f"You said: {t}" for t in sent], f"every reply once, in order\n{env.explain('k-1')}"


def test_kill_with_send_in_flight_and_slow_replay(env):
    """kill -9 while a message's POST is in flight (the bot has it, its answer has not come),
    and after the restart the stream replays slower than directline.echo_grace (a loaded
    service): the history from the stored watermark decides, so the bot gets the message
    once, and what the customer says next follows it."""
    hub, port, ctl = env.hub, env.port, env.emu.ctl
    hub.message(port, "s-1", "m0")
    hub.wait_messages("s-1", 2)
    cid = env.dl_conversation("s-1")
    ctl.settings(conversation=cid, post_delay_ms=30000, replay_delay_ms=4000)
    assert hub.message(port, "s-1", "m1")[0] == 202
    ctl.wait_count(cid, "received", 2)  # the bot has m1; our POST still waits for its answer
    env.daemon.kill()
    ctl.settings(conversation=cid, post_delay_ms=0)
    env.daemon.start()
    assert hub.message(env.port, "s-1", "m2")[0] == 202
    assert "found=history" in env.daemon.wait_line("directline.send_reconciled")
    msgs = hub.wait_messages("s-1", 4, timeout=60)
    assert texts(msgs)[1:] == ["You said: m0", "You said: m1", "You said: m2"]
    assert [a["text"] for a in env.bot_received("s-1")] == ["m0", "m1", "m2"], "each message reached the bot once"


def test_rules_edited_mid_conversation(env):
    """A reload between two handoffs of one conversation: the second uses the new rules,
    and the conversation (and its Direct Line conversation) carries on."""
    import signal
    hub, port = env.hub, env.port
    hub.message(port, "r-1", "my order is late, I want a human")
    first = hub.wait_handoff("r-1")
    assert first["routing"]["queue"] == "orders"
    dl_id = env.dl_conversation("r-1")
    hub.send(port, {"id": "r-done", "type": "handoff.completed", "conversation": "r-1",
                    "handoff_id": first["handoff_id"], "return_to_bot": True})
    (env.workdir / "routes.lua").write_text(
        (env.workdir / "routes.lua").read_text().replace('queue("orders"', 'queue("orders-v2"'))
    env.daemon.proc.send_signal(signal.SIGHUP)
    env.daemon.wait_line("reload.ok generation=2")
    hub.message(port, "r-1", "thanks")
    assert texts(hub.wait_messages("r-1", 3))[-1] == "You said: thanks"
    hub.message(port, "r-1", "the order again, a human please")
    env.hub.wait(lambda r: len([b for p, b in r if p == "/handoffs" and b["conversation"] == "r-1"]) >= 2,
                 30, "the second handoff")
    second = hub.handoffs("r-1")[1]
    assert second["routing"]["queue"] == "orders-v2"
    assert second["handoff_id"] != first["handoff_id"]
    assert env.dl_conversation("r-1") == dl_id, "the same conversation with the bot throughout"
    assert env.daemon.errors() == []


def test_limits_answer_503(tmp_path):
    """limits.conversations and limits.queued: the hub is told to come back later (503)."""
    env = Environment(BIN, tmp_path, extra_config="limits = { conversations = 3, queued = 3 },")
    try:
        hub, port = env.hub, env.port
        for i in range(3):
            assert hub.message(port, f"l-{i}", "hello")[0] == 202
        assert hub.message(port, "l-3", "hello") == (503, {"error": "overloaded"})
        hub.wait_messages("l-0", 2)
        # the bot stops taking messages: l-0's messages pile up to the limit
        env.emu.ctl.fail("post", *([{"status": 500}] * 200), conversation=env.dl_conversation("l-0"))
        answers = [hub.message(port, "l-0", f"m{j}")[0] for j in range(5)]
        assert answers[:3] == [202, 202, 202] and 503 in answers[3:], answers
        assert hub.message(port, "l-1", "others are not affected")[0] == 202
    finally:
        assert env.close() == 0


def test_unreachable_desk_fails_the_handoff(tmp_path):
    """The desk keeps answering 503 past retry.give_up_after: the fallback destination is
    tried once, then the bot is told handoff.status failed and has the customer again."""
    env = Environment(BIN, tmp_path, extra_config="retry = { base = 0.05, max_delay = 0.2, give_up_after = 1 },")
    try:
        hub, port = env.hub, env.port
        hub.handoff_status = 503
        hub.message(port, "f-1", "a human please, about my order")
        env.daemon.wait_line("handoff.fallback conv=webhook:f-1")
        env.daemon.wait_line("conv.state conv=webhook:f-1 from=routing to=bot")
        queues = {a["queue"] for a in hub.handoff_attempts}
        assert queues == {"orders", "default"}, queues  # the rules' choice, then config.fallback
        cid = env.dl_conversation("f-1")
        env.emu.ctl.wait_count(cid, "received", 2, timeout=20)
        status = [a for a in env.emu.ctl.received(cid) if a.get("name") == "handoff.status"]
        assert status[0]["value"]["state"] == "failed" and status[0]["value"]["message"]
        hub.message(port, "f-1", "hello again")
        assert texts(hub.wait_messages("f-1", 3))[-1] == "You said: hello again"
    finally:
        assert env.close() == 0


def test_conversation_end_reaches_the_bot_after_the_queue(env):
    hub, port = env.hub, env.port
    hub.message(port, "e-1", "hello")
    hub.wait_messages("e-1", 2)  # the bot's conversation exists (its id is stored)
    hub.message(port, "e-1", "and goodbye")
    assert hub.send(port, {"id": "e-end", "type": "conversation.end", "conversation": "e-1"})[0] == 202
    cid = env.dl_conversation("e-1")
    env.emu.ctl.wait_count(cid, "received", 3, timeout=20)
    assert [a.get("text") or a["type"] for a in env.bot_received("e-1")] == ["hello", "and goodbye", "endOfConversation"]
    env.daemon.wait_line("conv.state conv=webhook:e-1 from=bot to=ending")


def slowdesk_env(tmp_path, release, answer):
    """The webhook front and tests/integration/scripts/slowdesk.lua as the desk, whose
    escalate waits on POST /hold of the returned holder until RELEASE is set, then gets ANSWER."""
    async def hold(request, body):
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        return web.Response(text=answer)
    holder = FakeServer().route("POST", "/hold", hold).start()

    def hubs(front):
        return (f'front = {{ module = "hubs.webhook", url = "{front.url}", secret = "{front.secret}", token = "{front.token}" }},\n'
                f'  desk = {{ module = "slowdesk", target = "{holder.url}" }},\n'
                f'  script_path = "{SOURCE_DIR}/tests/integration/scripts/?.lua",')
    return Environment(BIN, tmp_path, hubs=hubs), holder


def test_hub_call_keeps_what_a_webhook_stored_meanwhile(tmp_path):
    """An escalation changes conv.data, then waits on the network while a webhook stores
    data with hd.set_data: the runtime keeps the webhook's data with only the call's own
    changes (keys set, changed, removed) put onto it (scripts/handoff/relay.lua)."""
    release = threading.Event()
    env, holder = slowdesk_env(tmp_path, release, "i-9")
    try:
        hub, port = env.hub, env.port
        url = f"http://127.0.0.1:{port}/slowdesk/data"

        def set_data(data):
            assert post_json(url, json.dumps({"id": "d-1", "data": data}).encode(),
                             {"Content-Type": "application/json"}) == (200, {"ok": True})
        hub.message(port, "d-1", "hello")
        hub.wait_messages("d-1", 2)
        set_data({"gone": 1, "shared": "old"})
        hub.message(port, "d-1", "I want a human")
        holder.wait_requests(1)                     # escalate is waiting on the network
        set_data({"gone": 1, "shared": "new", "agent": "a-1"})
        release.set()
        handoff_id = env.daemon.wait_line("handoff.delivered conv=webhook:d-1").rsplit("handoff=", 1)[1]
        assert http_get(port, "/slowdesk/data?id=d-1") == (200, {
            "shared": "new", "agent": "a-1",                  # the webhook's, untouched by the call
            "escalated": handoff_id, "interaction": "i-9",    # the call's, set before and after the wait
        }), "the call removed `gone`, and put only its own keys onto the data stored meanwhile"
    finally:
        release.set()
        assert env.close() == 0
        holder.stop()


def test_agent_messages_only_while_the_desk_has_the_conversation(tmp_path):
    """Which messages an agent may send is the runtime's rule, not the desk script's:
    hd.agent is refused ("not with an agent") while the bot has the conversation, before
    the handoff and after it, and taken while the handoff is under way (routing)."""
    release = threading.Event()
    env, holder = slowdesk_env(tmp_path, release, "i-1")
    try:
        hub, port = env.hub, env.port

        def agent(text):
            return post_json(f"http://127.0.0.1:{port}/slowdesk/agent", json.dumps({"id": "a-1", "text": text}).encode(),
                             {"Content-Type": "application/json"})
        hub.message(port, "a-1", "hello")
        hub.wait_messages("a-1", 2)
        assert agent("too early") == (200, {"ok": False, "err": "not with an agent"})
        hub.message(port, "a-1", "I want a human")
        holder.wait_requests(1)                     # routing: escalate waits on the network
        assert agent("Hi, Sam here") == (200, {"ok": True})
        release.set()
        handoff_id = env.daemon.wait_line("handoff.delivered conv=webhook:a-1").rsplit("handoff=", 1)[1]
        assert texts(hub.wait_messages("a-1", 4))[-1] == "Hi, Sam here"
        assert hub.send(port, {"id": "e-done", "type": "handoff.completed", "conversation": "a-1",
                               "handoff_id": handoff_id})[0] == 202
        env.daemon.wait_line("conv.state conv=webhook:a-1 from=routing to=bot")
        assert agent("too late") == (200, {"ok": False, "err": "not with an agent"})
        hub.message(port, "a-1", "anyone?")
        assert texts(hub.wait_messages("a-1", 5))[-1] == "You said: anyone?"
        said = texts(hub.messages("a-1"))
        assert "too early" not in said and "too late" not in said, said
        assert env.daemon.errors() == []
    finally:
        release.set()
        assert env.close() == 0
        holder.stop()
