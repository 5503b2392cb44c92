"""End to end with Genesys Cloud Open Messaging as the desk behind the generic webhook front.

Setup (hub_env.HubEnv with front = hubs.webhook, desk = hubs.genesys): the Direct
Line emulator and its scripted bot, the webhook hub's contract fake (where the customer
chats), the Genesys contract fake (fake_genesys.py: OAuth login, the inbound Open
Messaging API, the Conversations API, signed outbound webhooks), and handoffd. Routing
sends "order" talk to queue orders with skill late-delivery. Each test states its input
and the traffic it expects on every wire.
"""
import json

import pytest

from fake_genesys import (AGENT, CLIENT_ID, CLIENT_SECRET, INTEGRATION_ID, INTEGRATION_NAME, NOTICE_TOKEN,
                          WEBHOOK_SECRET, FakeGenesys, sign)
from fakehub import FakeHub
from hub_env import HubEnv, running


def desk_config(genesys, extra):
    def hubs(front):
        return f"""front = {{ module = "hubs.webhook", url = "{front.url}", secret = "{front.secret}", token = "{front.token}" }},
  desk = {{ module = "hubs.genesys", api_url = "{genesys.url}", login_url = "{genesys.url}",
           client_id = "{CLIENT_ID}", client_secret = "{CLIENT_SECRET}", integration_id = "{INTEGRATION_ID}",
           webhook_secret = "{WEBHOOK_SECRET}", timeout_ms = 5000, {extra} }},"""
    return hubs


# No extra configuration: the agent's disconnect is found by reading the conversation once
# Genesys is quiet (0.3 s here, 30 s by default).
QUICK_CHECK = "quiet_check_s = 0.3"
# The Trigger's notices, and quiet checks too rare to fire during a test.
NOTICES = f'disconnect_token = "{NOTICE_TOKEN}", quiet_check_s = 3600'


def start(tmp_path, token_lifetime=3600, extra=QUICK_CHECK):
    """The webhook front's fake is env.hub, Genesys's env.genesys."""
    genesys = FakeGenesys(token_lifetime)
    env = HubEnv(tmp_path, FakeHub(), "webhook", desk_config(genesys, extra), others=[genesys])
    env.genesys = genesys
    return env


@pytest.fixture
def env(tmp_path):
    yield from running(start(tmp_path))


def texts(messages):
    return [m["activity"]["text"] for m in messages]


def hand_off(env, conv, says="My order is late, I want a human"):
    """The customer talks to the bot, then asks for a human; returns the first inbound message."""
    env.hub.message(env.port, conv, "hello")
    env.hub.wait_messages(conv, 2)
    before = len(env.genesys.inbound)
    env.hub.message(env.port, conv, says)
    return env.genesys.wait_inbound(before + 1)[before]


def test_full_flow(env):
    hub, genesys, port = env.hub, env.genesys, env.port
    genesys.script = [(429, {"Retry-After": "0"}), (503, None)]   # the handoff is retried through both
    query, first, token = hand_off(env, "c-1")
    # the handoff: one inbound message that opens the Genesys conversation
    assert query == {"prefetchConversationId": "true"}
    frm = first["channel"]["from"]
    assert frm == {"id": "c-1", "idType": "Opaque", "nickname": "Dana", "firstName": "Dana"}
    attrs = first["channel"]["metadata"]["customAttributes"]
    assert attrs["queue"] == "orders" and attrs["skill"] == "late-delivery" and attrs["priority"] == "2"
    assert attrs["handoffd_conversation"] == "c-1" and attrs["handoffd_handoff"].startswith("h-")
    assert attrs["customer_id"] == "u-7" and attrs["customer_name"] == "Dana"
    assert attrs["var.Global.CustomerTier"] == "gold" and attrs["conversation_id"] == env.dl_conversation("c-1")
    lines = first["text"].splitlines()
    assert lines[0].startswith("Conversation with the bot before the handoff")
    assert "Dana: hello" in lines and "Dana: My order is late, I want a human" in lines
    assert genesys.script == [] and genesys.logins == [token]
    assert genesys.rejected == []
    # the customer writes while waiting in queue: to Genesys, not to the bot
    assert hub.message(port, "c-1", "are you there?")[0] == 202
    assert genesys.wait_inbound(2)[1][1]["text"] == "are you there?"
    # the agent answers: accepted at the bot, the message at the front
    assert genesys.agent_says(port, "c-1", "Hi Dana, I'm Sam", msg_id="g-1") == (200, {"ok": True})
    assert texts(hub.wait_messages("c-1", 4))[-1] == "Hi Dana, I'm Sam"
    assert genesys.agent_says(port, "c-1", "Hi Dana, I'm Sam", msg_id="g-1") == (200, {"ok": True, "duplicate": True})
    env.daemon.wait_line("conv.state conv=webhook:c-1 from=routing to=agent")
    # customer <-> agent both ways, the bot hears none of it
    assert hub.message(port, "c-1", "where is my order?")[0] == 202
    inbound = genesys.wait_inbound(3)
    assert inbound[2][1]["text"] == "where is my order?" and inbound[2][1]["channel"]["from"]["id"] == "c-1"
    assert len({b["channel"]["messageId"] for _, b, _ in inbound}) == 3, "every message has its own id"
    genesys.agent_says(port, "c-1", "It ships today")
    assert texts(hub.wait_messages("c-1", 5))[-1] == "It ships today"
    # the agent disconnects; Genesys posts nothing: the quiet check reads the conversation,
    # the handoff is completed at the bot, and the bot has the customer again
    genesys.agent_leaves("c-1")
    env.daemon.wait_line("conv.state conv=webhook:c-1 from=agent to=bot")
    assert "conv=webhook:c-1" in env.daemon.wait_line("genesys.conversation_ended")
    hub.message(port, "c-1", "thanks, one more question")
    assert texts(hub.wait_messages("c-1", 6))[-1] == "You said: thanks, one more question"
    assert env.statuses("c-1") == ["accepted", "completed"]
    accepted = env.daemon.wait_line("genesys.accepted")
    assert "conv=webhook:c-1" in accepted and f'agent="{AGENT["name"]}"' in accepted, \
        "the agent participant's name ..."
    assert INTEGRATION_NAME not in accepted, "... not the integration's (channel.from.nickname)"
    said = [a.get("text") for a in env.bot_received("c-1") if a["type"] == "message"]
    assert "are you there?" not in said and "where is my order?" not in said
    assert len(genesys.inbound) == 3 and hub.redelivered == [] and hub.rejected == []
    assert env.daemon.errors() == []


def test_token_renewed_before_expiry_and_after_a_401(tmp_path):
    with start(tmp_path, token_lifetime=1) as env:
        genesys = env.genesys
        genesys.login_script = [(503, None)]        # the first login fails for now: retried
        _, _, first = hand_off(env, "r-1")
        assert genesys.logins == [first] and genesys.login_script == []
        genesys.wait_token_expired(first)
        env.hub.message(env.port, "r-1", "still waiting")
        _, body, second = genesys.wait_inbound(2)[1]
        assert body["text"] == "still waiting"
        assert second != first and genesys.logins == [first, second], "renewed before use, not after a refusal"
        genesys.revoke_all()                         # revoked early: the API answers 401
        env.hub.message(env.port, "r-1", "hello?")
        _, body, third = genesys.wait_inbound(3)[2]
        assert body["text"] == "hello?" and third not in (first, second)
        assert [r[1] for r in genesys.rejected] == ["bad token"], "one refusal, then a new login"
        assert len(genesys.inbound) == 3, "each message once"
        assert env.daemon.errors() == []
        secrets = [CLIENT_SECRET, WEBHOOK_SECRET, *genesys.logins]
        assert not [l for l in env.daemon.lines if any(x in l for x in secrets)], "no secret or token in the log"


def test_bad_signature_is_401(env):
    genesys, port = env.genesys, env.port
    hand_off(env, "s-1")
    body = json.dumps(FakeGenesys.outbound("s-1", "Text", text="from a stranger", originatingEntity="Human")).encode()
    assert genesys.post(port, body, signature=sign("not-the-webhook-secret-0000", body))[0] == 401
    assert genesys.post(port, body, signature="")[0] == 401
    assert genesys.post(port, body, signature=sign(WEBHOOK_SECRET, body).replace("sha256=", "sha1="))[0] == 401
    assert genesys.post(port, body + b" ", signature=sign(WEBHOOK_SECRET, body))[0] == 401, "signs the raw body"
    assert genesys.post(port, b"[1]")[0] == 400
    unknown = json.dumps(FakeGenesys.outbound("nobody", "Text", text="hi")).encode()
    assert genesys.post(port, unknown) == (200, {"ok": True, "ignored": "unknown conversation"})
    assert env.hub.messages("s-1")[-1]["activity"]["text"].startswith("Transferring you")
    assert env.statuses("s-1") == [], "nothing reached the customer or the bot"
    assert genesys.post(port, body) == (200, {"ok": True})
    assert env.hub.wait_messages("s-1", 4)[-1]["activity"]["text"] == "from a stranger"


def test_disconnect_notice_from_a_trigger_is_checked_with_the_api(tmp_path):
    with start(tmp_path, extra=NOTICES) as env:
        notice_flow(env)


def notice_flow(env):
    genesys, port = env.genesys, env.port
    hand_off(env, "t-1")
    gid = genesys.conversation_of("t-1")
    genesys.agent_typing(port, "t-1")                # the agent is connected and typing: accepted
    env.daemon.wait_line("conv.state conv=webhook:t-1 from=routing to=agent")
    assert genesys.notice(port, gid, token="wrong-token-wrong-token-0000")[0] == 401
    assert genesys.notice(port, gid) == (200, {"ok": True, "ignored": "the conversation goes on"})
    status, answer = genesys.notice(port, "no-such-conversation")
    assert status == 200 and answer["ignored"].startswith("HTTP 404")
    genesys.script = [(503, None)]
    assert genesys.notice(port, gid)[0] == 503, "the workflow may try again"
    genesys.agent_leaves("t-1")                      # nothing on the webhook
    assert genesys.notice(port, gid) == (200, {"ok": True})
    env.daemon.wait_line("conv.state conv=webhook:t-1 from=agent to=bot")
    env.emu.ctl.wait_count(env.dl_conversation("t-1"), "received", 4, timeout=20)
    assert env.statuses("t-1") == ["accepted", "completed"]
    assert env.daemon.errors() == []


def test_the_front_ending_the_conversation_tells_the_agent(env):
    """The customer's chat ends at the front while an agent has it: one last inbound message
    in the same Genesys conversation tells the agent (Open Messaging has no call for the
    customer leaving); the front is not told its own end."""
    genesys, hub, port = env.genesys, env.hub, env.port
    hand_off(env, "x-1")
    genesys.agent_says(port, "x-1", "Hi Dana, I'm Sam")
    env.daemon.wait_line("conv.state conv=webhook:x-1 from=routing to=agent")
    n = len(genesys.inbound)
    assert hub.send(port, {"id": "end-x-1", "type": "conversation.end", "conversation": "x-1"}) == (202, {"ok": True})
    env.daemon.wait_line("conv.ended conv=webhook:x-1")
    [(query, last, _)] = genesys.inbound[n:]
    assert query == {} and last["channel"]["from"]["id"] == "x-1"
    assert last["channel"]["messageId"].startswith("h-") and last["channel"]["messageId"].endswith("-end")
    assert last["text"] == "The customer's conversation has ended. You can close this interaction."
    assert len(genesys.conversations) == 1, "no second Genesys conversation"
    assert hub.ends("x-1") == []
    assert genesys.rejected == [] and env.daemon.errors() == []


def test_an_end_genesys_decided_is_not_told_back(tmp_path):
    """return_to_bot = false: the agent's disconnect ends the conversation. Genesys gets no
    closing message; the front, which did not decide it, is told (reason handoff)."""
    with start(tmp_path, extra=QUICK_CHECK + ", return_to_bot = false") as env:
        genesys, hub, port = env.genesys, env.hub, env.port
        hand_off(env, "x-2")
        genesys.agent_says(port, "x-2", "Hi Dana, I'm Sam")
        env.daemon.wait_line("conv.state conv=webhook:x-2 from=routing to=agent")
        n = len(genesys.inbound)
        genesys.agent_leaves("x-2")
        env.daemon.wait_line("conv.ended conv=webhook:x-2")
        assert env.statuses("x-2") == ["accepted", "completed"]
        assert len(genesys.inbound) == n
        assert [e["reason"] for e in hub.ends("x-2")] == ["handoff"]
        assert genesys.rejected == [] and env.daemon.errors() == []


def test_conversation_ended_before_an_agent_took_it_fails_the_handoff(env):
    genesys, port = env.genesys, env.port
    hand_off(env, "f-1")
    assert genesys.agent_says(port, "f-1", "You are number 3 in the queue", originating="Bot")[0] == 200
    assert env.hub.wait_messages("f-1", 4)[-1]["activity"]["text"] == "You are number 3 in the queue"
    genesys.queue_gives_up("f-1")                    # nothing on the webhook: the quiet check sees it
    env.daemon.wait_line("conv.state conv=webhook:f-1 from=routing to=bot")
    env.emu.ctl.wait_count(env.dl_conversation("f-1"), "received", 3, timeout=20)
    assert env.statuses("f-1") == ["failed"], "a flow's automatic message is not an agent accepting"


def test_customer_message_after_the_agent_left_goes_to_the_bot(tmp_path):
    """The quiet check has not run yet (1 h): the customer's next message finds the Genesys
    conversation over, ends the handoff and reaches the bot instead of opening a new
    Genesys conversation."""
    with start(tmp_path, extra="quiet_check_s = 3600") as env:
        genesys, hub, port = env.genesys, env.hub, env.port
        hand_off(env, "q-1")
        genesys.agent_says(port, "q-1", "Hi, Sam here")
        env.daemon.wait_line("conv.state conv=webhook:q-1 from=routing to=agent")
        genesys.agent_says(port, "q-1", "Anything else? Bye!")
        hub.wait_messages("q-1", 5)
        genesys.agent_leaves("q-1")
        assert hub.message(port, "q-1", "thanks a lot")[0] == 202
        env.daemon.wait_line("conv.state conv=webhook:q-1 from=agent to=bot")
        assert texts(hub.wait_messages("q-1", 6))[-1] == "You said: thanks a lot"
        assert env.statuses("q-1") == ["accepted", "completed"]
        assert len(genesys.inbound) == 1 and len(genesys.conversations) == 1, "no second Genesys conversation"
        assert env.daemon.errors() == []


def test_without_the_view_permission_messages_still_flow(tmp_path):
    """The role lacks conversation:message:view: reads answer 403, which is logged, and the
    customer's and the agent's messages still go through (only the end needs the read or a
    Trigger)."""
    with start(tmp_path, extra="quiet_check_s = 3600") as env:
        genesys, hub, port = env.genesys, env.hub, env.port
        genesys.permissions.discard("conversation:message:view")
        hand_off(env, "n-1")
        assert hub.message(port, "n-1", "still there?")[0] == 202
        assert genesys.wait_inbound(2)[1][1]["text"] == "still there?"
        assert "HTTP 403" in env.daemon.wait_line("genesys.check_failed")
        assert genesys.agent_says(port, "n-1", "Hi, Sam here") == (200, {"ok": True})
        env.daemon.wait_line("conv.state conv=webhook:n-1 from=routing to=agent")
        assert "HTTP 403" in env.daemon.wait_line("genesys.agent_unknown")
        assert texts(hub.wait_messages("n-1", 4))[-1] == "Hi, Sam here"
        assert env.daemon.errors() == []


def test_presence_disconnect_event_is_honoured(env):
    """Web Messaging's Presence/Disconnect, should Genesys ever post it for Open Messaging."""
    genesys, port = env.genesys, env.port
    hand_off(env, "p-1")
    genesys.agent_says(port, "p-1", "Hello")
    env.daemon.wait_line("conv.state conv=webhook:p-1 from=routing to=agent")
    assert genesys.presence_disconnect(port, "p-1") == (200, {"ok": True})
    env.daemon.wait_line("conv.state conv=webhook:p-1 from=agent to=bot")
    env.emu.ctl.wait_count(env.dl_conversation("p-1"), "received", 4, timeout=20)
    assert env.statuses("p-1") == ["accepted", "completed"]
    # the agent's late words: the runtime refuses them (the bot has the customer again)
    assert genesys.agent_says(port, "p-1", "one more thing", msg_id="g-late") == \
        (200, {"ok": True, "ignored": "not with an agent"})
    env.hub.message(env.port, "p-1", "hello bot")
    assert texts(env.hub.wait_messages("p-1", 5))[-1] == "You said: hello bot"
    assert "one more thing" not in texts(env.hub.messages("p-1"))
    assert env.statuses("p-1") == ["accepted", "completed"]


def test_fake_refuses_what_the_spec_refuses(env):
    """The contract fake answers 400/401 as Genesys does to bodies outside the published definitions."""
    import urllib.request
    genesys = env.genesys
    hand_off(env, "v-1")
    token = genesys.logins[-1]
    def post(body, auth=f"Bearer {token}"):
        req = urllib.request.Request(
            f"{genesys.url}/api/v2/conversations/messages/{INTEGRATION_ID}/inbound/open/message",
            data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
    good = {"channel": {"messageId": "m-1", "time": "2026-12-06T10:00:00.000Z",
                        "from": {"id": "v-2", "idType": "Opaque"}}, "text": "hi"}
    assert post(good, auth="Bearer nope") == 401
    assert post(dict(good, channel=dict(good["channel"], **{"from": {"id": "v-2", "idType": "Guid"}}))) == 400
    assert post(dict(good, channel=dict(good["channel"], time="yesterday"))) == 400
    assert post(dict(good, channel=dict(good["channel"], metadata={"customAttributes": {"n": 1}}))) == 400
    assert post(dict(good, text=None)) == 400
    assert post({"text": "no channel"}) == 400
    assert post(dict(good, content=[{"contentType": "Attachment", "attachment": {"mediaType": "Sticker"}}])) == 400
    assert post(good) == 202
    assert len(genesys.rejected) == 7
