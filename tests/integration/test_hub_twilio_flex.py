"""End to end through the Twilio Flex hub (scripts/hubs/twilio_flex.lua).

Setup: the Direct Line emulator and its scripted bot, the contract fake of Twilio
Conversations, Flex Interactions and TaskRouter (fake_twilio.py: checks Basic auth and
the requests against the OpenAPI subsets in specs/twilio/, answers Twilio's error bodies,
sends form-encoded webhooks signed with X-Twilio-Signature) and handoffd between them with
hubs.twilio_flex; routing rules send "order" talk to queue orders. Each test states its
input (webhooks, bot activities) and the traffic it expects on both wires: REST calls at the
fake, activities at the bot.
"""
import base64
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from hub_env import HubEnv, running
import fake_twilio as ft

BOT = "handoffd-bot"


def hub_config(fake, key=None):
    auth = f'api_key_sid = "{key[0]}", api_key_secret = "{key[1]}",' if key else ""
    return f"""hub = {{ module = "hubs.twilio_flex", account_sid = "{ft.ACCOUNT_SID}", auth_token = "{ft.AUTH_TOKEN}",
          {auth} chat_service_sid = "{ft.CHAT_SERVICE_SID}", webhook_url = "{ft.WEBHOOK_URL}",
          workspace_sid = "{ft.WORKSPACE_SID}", workflow_sid = "{ft.WORKFLOW_SID}", task_channel = "chat",
          bot_identity = "{BOT}", conversations_url = "{fake.url}", flex_url = "{fake.url}",
          taskrouter_url = "{fake.url}", timeout_ms = 10000 }},"""


class Env(HubEnv):
    """HubEnv with fake Twilio, and what its tests do often."""

    def __init__(self, workdir, key=None, extra=""):
        super().__init__(workdir, ft.FakeTwilio(), "twilio_flex", lambda fake: hub_config(fake, key), extra_config=extra)

    def send(self, params, **kw):
        status, answer, _ = self.hub.post_event(self.port, params, **kw)
        return status, answer

    def says(self, conv, text, author="Dana"):
        assert self.send(self.hub.message_event(conv, text, author=author)) == (200, {"ok": True})

    def hand_off(self, conv, agent="sam"):
        """The customer asks for a human, Flex gets the interaction and an agent joins."""
        self.says(conv, "hello")
        self.hub.wait_texts(conv, 2)
        self.says(conv, "I need an agent")
        self.hub.wait_interaction(conv)
        assert self.send(self.hub.participant_event(conv, agent, "onParticipantAdded")) == (200, {"ok": True})
        self.wait_statuses(conv, ["accepted"])


@pytest.fixture
def env(tmp_path):
    yield from running(Env(tmp_path))


def test_full_flow(env):
    hub = env.hub
    conv = hub.conversation()
    # greeting and a question the bot answers, as messages of the bot identity
    env.says(conv, "hello")
    assert hub.wait_texts(conv, 2)[1] == "You said: hello"
    env.says(conv, "What are your opening hours?")
    assert "open Monday to Friday" in hub.wait_texts(conv, 3)[2]
    first = hub.of("messages", conv)[0]
    assert first["Author"] == BOT and json.loads(first["Attributes"])["handoffd_activity_id"]
    posts = [h for m, p, h, _ in hub.server.requests if m == "POST" and p.endswith("/Messages")]
    assert posts and all(h.get("X-Twilio-Webhook-Enabled") == "false" for h in posts), \
        "the bot's messages do not fire the service's webhooks back at us"
    # the customer asks for a human: the bot's last words, then one interaction with the routing;
    # Flex is slow to answer, so the agent joins while handoffd still waits for it
    hub.delays["interaction"] = [1.0]
    env.says(conv, "My order is late, I want a human")
    [(channel, routing)] = hub.wait_interaction(conv)
    assert hub.texts(conv)[-1].startswith("Transferring you")
    assert channel == {"type": "web", "initiated_by": "customer", "properties": {"media_channel_sid": conv}}
    props = routing["properties"]
    assert (props["workspace_sid"], props["workflow_sid"], props["task_channel_unique_name"]) == \
        (ft.WORKSPACE_SID, ft.WORKFLOW_SID, "chat")
    attrs = props["attributes"]
    assert (attrs["queue"], attrs["skill"], attrs["priority"]) == ("orders", "late-delivery", 2)
    assert attrs["handoffd_handoff_id"].startswith("h-") and attrs["from"] == "Dana"
    assert attrs["customerName"] == "Dana"
    assert attrs["handoffd"]["context"]["var.Global.CustomerTier"] == "gold"
    assert attrs["handoffd"]["context"]["conversation_id"] == env.dl(conv)
    lines = attrs["handoffd"]["transcript"].splitlines()
    assert "Dana: hello" in lines and "Dana: My order is late, I want a human" in lines
    assert any(l.endswith(": You said: hello") for l in lines), "the bot's lines are in the transcript"
    # an agent joins through Flex: accepted; while the agent has it, the bot stays silent
    assert env.send(hub.participant_event(conv, "sam", "onParticipantAdded")) == (200, {"ok": True})
    env.wait_statuses(conv, ["accepted"])
    env.daemon.wait_line(f"handoff.delivered conv=twilio_flex:{conv}")   # Flex answered at last
    before = len(env.bot_received(conv))
    env.says(conv, "hi Sam, where is it?")
    assert env.send(hub.message_event(conv, "Hi, Sam here", author="sam"))[0] == 200
    env.emu.ctl.bot(env.dl(conv), texts=["the bot still talking"])
    # the agent wraps up and leaves the conversation: completed, the bot has the customer again
    assert env.send(hub.participant_event(conv, "sam", "onParticipantRemoved")) == (200, {"ok": True})
    env.wait_statuses(conv, ["accepted", "completed"])
    env.says(conv, "thanks, one more question")
    texts = hub.wait_texts(conv, 5)
    assert texts[-1] == "You said: thanks, one more question"
    assert "the bot still talking" not in texts, "nothing the bot says during the handoff reaches the customer"
    assert env.bot_heard(conv)[before:] == ["completed", "thanks, one more question"]
    assert len(hub.interactions) == 1 and hub.rejected == [] and hub.timeouts == []
    assert env.daemon.errors() == []


def test_closing_the_conversation_completes_or_ends(env):
    hub = env.hub
    conv = hub.conversation()
    env.hand_off(conv)
    assert env.send(hub.state_event(conv, "inactive", reason="TIMER"))[1]["ignored"] == "not a close"
    assert env.send(hub.state_event(conv, "closed")) == (200, {"ok": True})
    env.wait_statuses(conv, ["accepted", "completed"])
    env.daemon.wait_line(f"conv.state conv=twilio_flex:{conv} from=agent to=ending")
    # a conversation the bot has, closed in Twilio: the bot is told the conversation ended
    other = hub.conversation()
    env.says(other, "hello")
    hub.wait_texts(other, 2)
    assert env.send(hub.state_event(other, "closed")) == (200, {"ok": True})
    env.wait_bot(other, lambda heard: "endOfConversation" in heard, what="endOfConversation")
    # Twilio closed both itself: neither is closed back
    env.daemon.wait_line(f"conv.ended conv=twilio_flex:{conv}")
    env.daemon.wait_line(f"conv.ended conv=twilio_flex:{other}")
    assert hub.of("update_conversation", conv) == [] and hub.of("update_conversation", other) == []
    assert hub.rejected == [] and env.daemon.errors() == []


def test_the_bot_ending_the_conversation_closes_it(env):
    """The bot's endOfConversation: its goodbye reaches the customer, then handoffd closes the
    conversation (State=closed, webhooks on so Flex and Studio hear of it), once; the
    onConversationStateUpdated that comes back changes nothing."""
    hub = env.hub
    conv = hub.conversation()
    env.says(conv, "bye")
    env.daemon.wait_line(f"conv.ended conv=twilio_flex:{conv}")
    assert hub.texts(conv)[-1].startswith("Goodbye")
    assert hub.of("update_conversation", conv) == [{"State": "closed"}]
    assert [op for op, c, _ in hub.calls if c == conv][-1] == "update_conversation", "the goodbye went first"
    assert hub.conversations[conv]["state"] == "closed"
    hub.wait(lambda s: any(e == "onConversationStateUpdated" for e, _, _ in s.answers), what="the close's webhook")
    [(_, status, answer)] = [a for a in hub.answers if a[0] == "onConversationStateUpdated"]
    assert status == 200 and answer.get("ignored"), "our own close is no news"
    assert env.bot_heard(conv) == ["bye"], "the bot is not told its own end"
    assert hub.of("update_conversation", conv) == [{"State": "closed"}]
    assert hub.rejected == [] and env.daemon.errors() == []


def test_a_transfer_keeps_the_conversation_with_flex(env):
    hub = env.hub
    conv = hub.conversation()
    env.hand_off(conv, agent="sam")
    # a warm transfer: kim joins, then sam wraps up and leaves
    assert env.send(hub.participant_event(conv, "kim", "onParticipantAdded")) == (200, {"ok": True})
    assert env.send(hub.participant_event(conv, "sam", "onParticipantRemoved")) == (200, {"ok": True})
    assert "agent=sam" in env.daemon.wait_line("twilio.agent_left")
    env.says(conv, "hello kim")
    assert env.send(hub.participant_event(conv, "kim", "onParticipantRemoved")) == (200, {"ok": True})
    env.wait_statuses(conv, ["accepted", "completed"])
    assert "hello kim" not in env.bot_heard(conv), "the customer talked to kim, not to the bot"
    assert hub.rejected == [] and env.daemon.errors() == []


def test_signature_and_replays(env):
    hub = env.hub
    conv = hub.conversation()
    params = hub.message_event(conv, "hello")
    assert env.send(params, signature="bm90IGEgc2lnbmF0dXJl")[0] == 403
    assert env.send(params, signature="")[0] == 403
    assert env.send(params, url="https://elsewhere.example/hubs/twilio/events")[0] == 403, \
        "the signature covers the URL Twilio was given"
    tampered = [(k, "hello!" if k == "Body" else v) for k, v in params]
    assert env.send(tampered, signature=ft.sign(ft.WEBHOOK_URL, params))[0] == 403, "and every parameter"
    assert env.dl(conv) is None, "no signed event, no effect"
    # the signed event works once; Twilio's retry (same body and token) and the same
    # MessageSid under a new token have no second effect
    status, answer, (body, headers) = hub.post_event(env.port, params)
    assert (status, answer) == (200, {"ok": True})
    assert hub.post_raw(env.port, body, headers)[:2] == (200, {"ok": True, "duplicate": True})
    assert env.send(params) == (200, {"ok": True, "duplicate": True})
    # the bot's own messages, should the service send them, never reach the bot
    assert env.send(hub.message_event(conv, "You said: hello", author=BOT))[1]["ignored"] == "our own message"
    assert env.send(hub.message_event(conv, "Chat transferred", author="system"))[1]["ignored"] == "a system message"
    env.says(conv, "second")
    hub.wait_texts(conv, 3)
    env.wait_bot(conv, lambda heard: heard == ["hello", "second"], what="each message once")
    # a replayed participant event takes effect once too
    env.says(conv, "agent please")
    hub.wait_interaction(conv)
    _, _, (body, headers) = hub.post_event(env.port, hub.participant_event(conv, "sam", "onParticipantAdded"))
    env.wait_statuses(conv, ["accepted"])
    assert hub.post_raw(env.port, body, headers)[:2] == (200, {"ok": True, "duplicate": True})
    # the token may also come as X-Twilio-Idempotency-Token
    params = hub.participant_event(conv, "kim", "onParticipantAdded")
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Idempotency-Token": "tok-kim-1",
               "X-Twilio-Signature": ft.sign(ft.WEBHOOK_URL, params)}
    body = urllib.parse.urlencode(params).encode()
    assert hub.post_raw(env.port, body, headers)[:2] == (200, {"ok": True})
    assert hub.post_raw(env.port, body, headers)[:2] == (200, {"ok": True, "duplicate": True})
    assert hub.rejected == [] and env.daemon.errors() == []


def test_retries_on_429_and_5xx_without_duplicates(env):
    hub = env.hub
    conv = hub.conversation()
    # plain failures: 429 with Retry-After and a 500 that made nothing
    hub.script = [(429, {"Retry-After": "0"}, "messages"), (500, None, "messages")]
    env.says(conv, "m1")
    assert hub.wait_texts(conv, 2)[1] == "You said: m1"
    env.daemon.wait_line("relay.to_hub_retry")
    # a 502 after the message was made (the answer was lost): the retry finds it and stops
    hub.script = [(502, None, "messages", True)]
    env.says(conv, "m2")
    hub.wait(lambda f: len(f.of("list_messages", conv)) == 1, what="the check of the unclear post")
    texts = hub.wait_texts(conv, 3)
    env.says(conv, "m3")
    texts = hub.wait_texts(conv, 4)
    assert texts[1:] == ["You said: m1", "You said: m2", "You said: m3"], "each bot message once, in order"
    # the handoff: a 429 (nothing made), then a 503 after the interaction was made: the
    # retry finds the task by its handoff id and makes no second one
    hub.script = [(429, {"Retry-After": "0"}, "interaction"), (503, None, "interaction", True)]
    env.says(conv, "agent please")
    hub.wait(lambda f: len(f.of("tasks")) == 1, what="the task lookup")
    hub.wait_interaction(conv)
    assert env.send(hub.participant_event(conv, "sam", "onParticipantAdded")) == (200, {"ok": True})
    env.wait_statuses(conv, ["accepted"])
    assert len(hub.interactions) == 1 and len(hub.tasks) == 1 and hub.script == []
    assert hub.rejected == []


def test_webhooks_answer_within_twilio_timeout(env):
    hub = env.hub
    conv = hub.conversation()
    hub.delays["messages"] = [6.0]               # Twilio is slow to take the bot's greeting
    env.says(conv, "hello")
    env.says(conv, "are you there?")             # answered while the greeting is on its way
    texts = hub.wait_texts(conv, 3)
    assert texts[1:] == ["You said: hello", "You said: are you there?"]
    assert hub.timeouts == [], "no webhook ran into Twilio's 5 s timeout"


def test_rich_messages_and_media(env):
    hub = env.hub
    conv = hub.conversation()
    env.says(conv, "hello")
    hub.wait_texts(conv, 2)
    env.emu.ctl.bot(env.dl(conv), activities=[
        {"type": "message", "text": "Which one?", "suggestedActions": {"actions": [
            {"type": "imBack", "title": "Track my order", "value": "track"},
            {"type": "imBack", "title": "Refund", "value": "refund"}]}},
        {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.hero", "content": {
            "title": "Order 1234", "subtitle": "On its way", "images": [{"url": "https://cdn.example/box.png"}],
            "buttons": [{"type": "openUrl", "title": "Track", "value": "https://track.example/1234"},
                        {"type": "imBack", "title": "Cancel", "value": "cancel"}]}}]},
        {"type": "message", "attachments": [{"contentType": "application/pdf", "name": "invoice.pdf",
                                             "contentUrl": "https://cdn.example/invoice.pdf"}]},
        {"type": "typing"},
        {"type": "message", "text": "\u00e9" * 2000}])
    texts = hub.wait_texts(conv, 6)
    assert texts[5] == "\u00e9" * 1597 + "...", "cut to Twilio's 1,600 characters, not bytes"
    assert f"conv={conv}" in env.daemon.wait_line("twilio.message_cut")
    assert texts[2] == "Which one?\n- Track my order\n- Refund"
    assert json.loads(hub.bot_messages(conv)[2]["attributes"])["actions"] == [
        {"title": "Track my order", "value": "track"}, {"title": "Refund", "value": "refund"}]
    assert texts[3] == ("*Order 1234*\nOn its way\nhttps://cdn.example/box.png\n"
                        "- Track: https://track.example/1234\n- Cancel")
    assert texts[4] == "invoice.pdf: https://cdn.example/invoice.pdf"
    # the customer's photo: the bot learns of it in the text (its media URL needs our credentials)
    photo = hub.message_event(conv, "here", media=[{"Sid": ft.sid("ME"), "ContentType": "image/jpeg",
                                                    "Filename": "parcel.jpg", "Size": 2048}])
    assert env.send(photo) == (200, {"ok": True})
    env.wait_bot(conv, lambda heard: len(heard) >= 2)
    assert env.bot_heard(conv)[1] == "here\n[file: parcel.jpg (image/jpeg)]"
    assert set(o for o, _, _ in hub.calls) == {"messages"}, "typing has no REST call: nothing was sent for it"
    assert hub.rejected == [] and env.daemon.errors() == []


def test_a_key_without_flex_rights_fails_the_handoff(tmp_path):
    with Env(tmp_path, key=(ft.RESTRICTED_KEY_SID, ft.RESTRICTED_KEY_SECRET)) as e:
        hub = e.hub
        conv = hub.conversation()
        e.says(conv, "hello")
        hub.wait_texts(conv, 2)                    # the key may write messages
        e.says(conv, "I want a human")
        e.wait_statuses(conv, ["failed"])          # 403 is final: the bot has the customer again
        e.daemon.wait_line(f"handoff.fallback conv=twilio_flex:{conv}")
        assert [(op, status) for op, status, _ in hub.rejected] == [("interaction", 403)] * 2, \
            "the route, then the fallback route, each refused once and never retried"
        assert "20403" in e.daemon.wait_line("relay.to_hub_failed")
        e.says(conv, "still there?")
        assert hub.wait_texts(conv, 4)[-1] == "You said: still there?"


def test_the_fake_refuses_what_twilio_refuses():
    """The fake's own contract: what the specs forbid is refused with Twilio's error body."""
    hub = ft.FakeTwilio().start()
    try:
        conv = hub.conversation()
        messages = f"{hub.url}/v1/Services/{ft.CHAT_SERVICE_SID}/Conversations/{conv}/Messages"

        def post(url, fields, user=ft.API_KEY_SID, secret=ft.API_KEY_SECRET):
            auth = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
            req = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST", headers={
                "Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        channel = json.dumps({"type": "web", "initiated_by": "customer", "properties": {"media_channel_sid": conv}})
        routing = json.dumps({"properties": {"workspace_sid": ft.WORKSPACE_SID, "workflow_sid": ft.WORKFLOW_SID,
                                             "task_channel_unique_name": "chat", "attributes": {}}})
        status, body = post(messages, {"Body": "hi"}, secret="wrong")
        assert status == 401 and body == {"code": 20003, "message": "Authenticate", "status": 401,
                                          "more_info": "https://www.twilio.com/docs/errors/20003"}
        assert post(messages, {"Body": "hi", "Colour": "red"})[0] == 400, "unknown parameter"
        assert post(messages, {"Body": "x" * 1601})[0] == 400, "Body over 1,600 characters"
        assert post(messages, {"Body": "hi", "Attributes": "{not json"})[0] == 400
        assert post(f"{hub.url}/v1/Interactions", {"Channel": channel})[0] == 400, "Routing is required"
        bad_type = channel.replace('"web"', '"pigeon"')
        assert post(f"{hub.url}/v1/Interactions", {"Channel": bad_type, "Routing": routing})[0] == 400
        status, body = post(f"{hub.url}/v1/Interactions", {"Channel": channel, "Routing": routing},
                            user=ft.RESTRICTED_KEY_SID, secret=ft.RESTRICTED_KEY_SECRET)
        assert (status, body["code"]) == (403, 20403)
        assert post(messages.replace(conv, ft.sid("CH")), {"Body": "hi"})[0] == 404
        update = messages.removesuffix("/Messages")
        assert post(update, {"State": "finished"})[0] == 400, "State is conversation_enum_state"
        assert post(update, {"Status": "closed"})[0] == 400, "unknown parameter"
        assert post(messages, {"Body": "hi"}, user=ft.ACCOUNT_SID, secret=ft.AUTH_TOKEN)[0] == 201
        assert post(f"{hub.url}/v1/Interactions", {"Channel": channel, "Routing": routing})[0] == 201
        assert post(update, {"State": "closed"})[0] == 200
        assert post(update, {"State": "active"})[0] == 400, "a closed conversation stays closed"
        assert len(hub.rejected) == 11 and len(hub.calls) == 3
    finally:
        hub.stop()


def test_overload_answers_429_and_the_retry_is_not_a_duplicate(tmp_path):
    with Env(tmp_path, extra="limits = { conversations = 1 },") as e:
        hub = e.hub
        first, second = hub.conversation(), hub.conversation()
        e.says(first, "hello")
        status, answer, (body, headers) = hub.post_event(e.port, hub.message_event(second, "me too"))
        assert (status, answer) == (429, {"error": "overloaded"}), "Twilio may try again later"
        assert e.dl(second) is None
        # the same webhook again: still no room, and not taken for a duplicate of the refused one
        assert hub.post_raw(e.port, body, headers)[:2] == (429, {"error": "overloaded"})
        assert hub.wait_texts(first, 2)[1] == "You said: hello"
        assert e.bot_heard(first) == ["hello"]
