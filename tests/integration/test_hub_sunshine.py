"""End to end through the Sunshine Conversations hub (scripts/hubs/sunshine.lua).

Setup: the Direct Line emulator and its scripted bot, the contract fake of Sunshine
Conversations v2 (fake_sunshine.py: checks Basic auth and body shapes, keeps each
conversation's active switchboard integration, sends webhooks with X-API-Key) and handoffd
between them with hubs.sunshine; routing rules send "order" talk to queue orders. Each
test states its input (webhook bodies, bot activities) and the traffic it expects on both
wires: API calls at the fake, activities at the bot.
"""
import json

import pytest

from hub_env import HubEnv, running
import fake_sunshine as fs


def hub_lines(hub):
    return f"""hub = {{ module = "hubs.sunshine", url = "{hub.url}", app_id = "{fs.APP_ID}",
          key_id = "{fs.KEY_ID}", key_secret = "{fs.KEY_SECRET}", webhook_secret = "{fs.WEBHOOK_SECRET}",
          switchboard_integration = "{fs.US['name']}", pass_to = "{fs.AGENT_WORKSPACE['name']}" }},"""


class Env(HubEnv):
    """HubEnv with fake Sunshine, and what its tests do often."""

    def __init__(self, workdir, extra_config=""):
        super().__init__(workdir, fs.FakeSunshine(), "sunshine", hub_lines, extra_config=extra_config)

    def says(self, conv, text):
        assert self.hub.customer_says(self.port, conv, text) == (200, {"ok": True})

    def send(self, *events, **kw):
        return self.hub.post_events(self.port, list(events), **kw)

    def hand_off(self, conv):
        """The customer asks for a human: passControl reaches the fake, the bot hears accepted."""
        self.says(conv, "hello")
        self.hub.wait_texts(conv, 2)
        self.says(conv, "I need an agent")
        call = self.hub.wait_pass_control(conv)
        self.wait_statuses(conv, ["accepted"])
        return call


@pytest.fixture
def env(tmp_path):
    yield from running(Env(tmp_path))


def test_full_flow(env):
    hub = env.hub
    # greeting and a question the bot answers, with typing before each answer
    env.says("c-1", "hello")
    assert hub.wait_texts("c-1", 2)[1] == "You said: hello"
    env.says("c-1", "What are your opening hours?")
    assert "open Monday to Friday" in hub.wait_texts("c-1", 3)[2]
    message = hub.of("messages", "c-1")[0]
    assert message["author"] == {"type": "business", "displayName": "Support Bot"}
    assert message["metadata"]["handoffd_activity_id"]
    hub.wait(lambda calls: any(o == "activity" for o, _, _ in calls), what="typing")
    assert hub.of("activity", "c-1")[0] == {"author": {"type": "business"}, "type": "typing:start"}
    # the customer asks for a human: the bot's last words, then passControl with context
    env.says("c-1", "My order is late, I want a human")
    call = hub.wait_pass_control("c-1")
    assert hub.texts("c-1")[-1].startswith("Transferring you")
    assert call["switchboardIntegration"] == "zd:agentWorkspace"
    meta = call["metadata"]
    assert meta["first_message_id"] == hub.first_message_id("c-1"), "the agent sees the whole conversation"
    assert meta["handoffd_handoff_id"].startswith("h-")
    assert meta["handoffd_queue"] == "orders" and meta["handoffd_skill"] == "late-delivery"
    assert meta["handoffd_var.Global.CustomerTier"] == "gold"
    assert meta["handoffd_conversation_id"] == env.dl("c-1")
    assert "handoffd_truncated" not in meta
    env.wait_statuses("c-1", ["accepted"])
    # Sunshine echoes the passControl as a webhook: no second effect
    hub.wait(lambda _: hub.notified, what="the passControl echo")
    assert hub.notified == [(200, {"ok": True})]
    # while the agent has the customer: their talk and the bot's stay apart
    before = len(env.bot_received("c-1"))
    agent_line = hub.event("conversation:message", "c-1", message={
        "id": fs.new_id(), "author": {"type": "business", "displayName": "Sam"},
        "content": {"type": "text", "text": "Hi, Sam here"}})
    assert env.send(hub.user_message("c-1", "hi Sam, where is it?"), agent_line) == (200, {"ok": True})
    env.emu.ctl.bot(env.dl("c-1"), texts=["the bot still talking"])
    # control comes back with the ticket closed: completed, and the bot has the customer again
    assert env.send(hub.pass_control_to_us("c-1")) == (200, {"ok": True})
    env.wait_statuses("c-1", ["accepted", "completed"])
    env.says("c-1", "thanks, one more question")
    texts = hub.wait_texts("c-1", 5)
    assert texts[-1] == "You said: thanks, one more question"
    assert "the bot still talking" not in texts, "nothing the bot says during the handoff reaches the customer"
    assert env.bot_heard("c-1")[before:] == ["completed", "thanks, one more question"]
    assert hub.rejected == [], "every call handoffd made had the documented shape and credentials"
    assert env.daemon.errors() == []


def test_buttons_and_media_both_ways(env):
    hub = env.hub
    env.says("c-9", "hello")
    hub.wait_texts("c-9", 2)
    # the bot's suggested actions become reply buttons; a linked image becomes an image message
    env.emu.ctl.bot(env.dl("c-9"), activities=[
        {"type": "message", "text": "Which one?", "suggestedActions": {"actions": [
            {"type": "imBack", "title": "Track my order", "value": "track"},
            {"type": "imBack", "title": "Refund", "value": "refund"}]}},
        {"type": "message", "attachments": [{"contentType": "image/png", "name": "map",
                                             "contentUrl": "https://cdn.example/map.png"}]}])
    hub.wait_texts("c-9", 4)
    buttons, image = [m["content"] for m in hub.of("messages", "c-9")[2:]]
    assert buttons == {"type": "text", "text": "Which one?", "actions": [
        {"type": "reply", "text": "Track my order", "payload": "track"},
        {"type": "reply", "text": "Refund", "payload": "refund"}]}
    assert image == {"type": "image", "mediaUrl": "https://cdn.example/map.png", "altText": "map"}
    # a customer's photo reaches the bot as an attachment
    photo = hub.event("conversation:message", "c-9", message={
        "id": fs.new_id(), "author": {"type": "user", "userId": "2650", "displayName": "Dana"},
        "content": {"type": "image", "mediaUrl": "https://media.example/p.jpg", "mediaType": "image/jpeg"}})
    assert env.send(photo) == (200, {"ok": True})
    env.wait_bot("c-9", lambda heard: len(heard) >= 2)
    assert env.bot_received("c-9")[1]["attachments"] == [
        {"contentType": "image/jpeg", "contentUrl": "https://media.example/p.jpg"}]
    assert hub.rejected == [] and env.daemon.errors() == []


def test_reply_button_answer_sends_its_payload(env):
    hub = env.hub
    env.says("c-8", "hello")
    hub.wait_texts("c-8", 2)
    # the customer taps the reply button "Track my order" whose payload is "track": Sunshine
    # sends the button's text as text and its payload as textMessage.payload
    tap = hub.user_message("c-8", "Track my order", payload="track")
    assert env.send(tap) == (200, {"ok": True})
    assert env.wait_bot("c-8", lambda heard: len(heard) >= 2)[1] == "track", "the payload, not the title"
    assert hub.wait_texts("c-8", 3)[2] == "You said: track"
    assert hub.rejected == [] and env.daemon.errors() == []


def test_long_text_split_and_alt_text_cut_to_the_spec_limits(env):
    hub = env.hub
    env.says("c-7", "hello")
    hub.wait_texts("c-7", 2)
    # 9,000 characters (multi-byte ones among them, so bytes and characters differ), with
    # buttons; an image whose name is far over altText's 128 characters
    words = ("Grüße été " * 900).strip()
    long_name = "a-very-long-file-name-" * 10
    env.emu.ctl.bot(env.dl("c-7"), activities=[
        {"type": "message", "text": words, "suggestedActions": {"actions": [
            {"type": "imBack", "title": "OK", "value": "ok"}]}},
        {"type": "message", "attachments": [{"contentType": "image/png", "name": long_name,
                                             "contentUrl": "https://cdn.example/big.png"}]}])
    hub.wait(lambda calls: any(o == "messages" and c == "c-7" and b["content"]["type"] == "image"
                               for o, c, b in calls), what="the image after the long text")
    sent = [m["content"] for m in hub.of("messages", "c-7")[2:]]
    parts, image = sent[:-1], sent[-1]
    assert len(parts) == 3 and all(len(p["text"]) <= 4096 for p in parts), [len(p["text"]) for p in parts]
    assert "".join(p["text"] for p in parts) == words, "nothing lost, nothing added"
    assert all(p["text"].endswith(" ") for p in parts[:-1]), "split between words"
    assert [p.get("actions") for p in parts] == [None, None, [{"type": "reply", "text": "OK", "payload": "ok"}]]
    assert image["altText"] == long_name[:128]
    assert hub.rejected == [] and env.daemon.errors() == []


def test_a_failed_piece_is_retried_without_resending_the_others(env):
    hub = env.hub
    env.says("c-5", "hello")
    hub.wait_texts("c-5", 2)
    words = "word " * 1500                           # 7,500 characters: two pieces
    hub.script = [(503, None, "messages", lambda doc: (doc.get("metadata") or {}).get("handoffd_part") == 2)]
    env.emu.ctl.bot(env.dl("c-5"), activities=[{"type": "message", "text": words}])
    parts = hub.wait_texts("c-5", 4)[2:]
    assert hub.script == [], "the second piece failed once"
    assert len(parts) == 2 and "".join(parts) == words, "each piece once, in order"
    assert [m["metadata"]["handoffd_part"] for m in hub.of("messages", "c-5")[2:]] == [1, 2]
    assert hub.rejected == [] and env.daemon.errors() == []


def test_fake_refuses_what_the_spec_refuses(env):
    """The contract fake answers 400 to bodies outside the OpenAPI excerpts, as Sunshine does."""
    import urllib.request
    hub = env.hub
    hub.conversation("c-6")
    def post(op, body):
        req = urllib.request.Request(f"{hub.server.url}/v2/apps/{fs.APP_ID}/conversations/c-6/{op}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": hub.auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
    author = {"type": "business"}
    assert post("messages", {"author": author, "content": {"type": "text", "text": "x" * 4097}}) == 400
    assert post("messages", {"author": author, "content": {"type": "image", "mediaUrl": "https://x.example/a.png",
                                                           "altText": "a" * 129}}) == 400
    assert post("messages", {"author": author, "content": {"type": "text", "text": "hi", "actions": [
        {"type": "reply", "text": "no payload"}]}}) == 400
    assert post("messages", {"content": {"type": "text", "text": "no author"}}) == 400
    assert post("activity", {"author": author, "type": "typing:maybe"}) == 400
    assert post("passControl", {"metadata": {"a": "b"}}) == 400
    assert post("passControl", {"switchboardIntegration": "next", "metadata": {"nested": {"no": 1}}}) == 400
    assert post("releaseControl", {"reason": "ticketClosed"}) == 400, "releaseControl takes no body"
    assert post("messages", {"author": author, "content": {"type": "text", "text": "x" * 4096}}) == 201
    assert len(hub.rejected) == 8


def test_metadata_truncated_at_4kb_first_message_kept(env):
    hub = env.hub
    env.says("c-2", "hello")
    hub.wait_texts("c-2", 2)
    env.restart()   # first_message_id is kept durably with the conversation
    env.emu.ctl.bot(env.dl("c-2"), handoff={"extra_vars": 300})
    meta = hub.wait_pass_control("c-2")["metadata"]
    size = len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode())
    assert 4096 - 200 < size <= 4096, f"metadata fills the 4 KB and stays within it ({size} bytes)"
    assert meta["first_message_id"] == hub.first_message_id("c-2")
    assert meta["handoffd_handoff_id"].startswith("h-") and meta["handoffd_queue"] == "vip"
    custom = [k for k in meta if k.startswith("handoffd_var.Global.Custom")]
    assert 0 < len(custom) < 300
    assert int(meta["handoffd_truncated"]) >= 300 - len(custom)
    line = env.daemon.wait_line("sunshine.metadata_truncated")
    assert "conv=c-2" in line and f"dropped={meta['handoffd_truncated']}" in line
    env.wait_statuses("c-2", ["accepted"])
    assert hub.rejected == []


def test_release_control_completes(env):
    env.hand_off("c-3")
    assert env.send(env.hub.release_control("c-3")) == (200, {"ok": True})
    env.wait_statuses("c-3", ["accepted", "completed"])
    env.daemon.wait_line("conv.state conv=sunshine:c-3 from=agent to=bot")
    env.says("c-3", "hello again")
    assert env.hub.wait_texts("c-3", 4)[-1] == "You said: hello again"
    assert env.daemon.errors() == []


def test_failure_event_fails_the_handoff(env):
    env.hand_off("c-4")
    assert env.send(env.hub.failure("c-4", active=fs.US)) == (200, {"ok": True})
    env.wait_statuses("c-4", ["accepted", "failed"])
    line = env.daemon.wait_line("sunshine.control_failure")   # fields come in any order
    assert "conv=c-4" in line and "event=switchboard:passControl:failure" in line
    env.daemon.wait_line("conv.state conv=sunshine:c-4 from=agent to=bot")
    env.says("c-4", "are you there?")
    assert env.hub.wait_texts("c-4", 4)[-1] == "You said: are you there?", "the bot has the customer again"
    assert env.hub.rejected == []


def test_events_while_not_the_active_integration_are_ignored(env):
    hub = env.hub
    # another bot has the conversation: the customer's message is not ours
    hub.set_active("c-5", fs.ANSWER_BOT)
    env.says("c-5", "hello")
    assert not env.known("c-5"), "no conversation was opened for a message we do not own"
    # control is passed to us: from now on messages reach the bot
    assert env.send(hub.pass_control_to_us("c-5", reason=None)) == (200, {"ok": True})
    env.says("c-5", "hi again")
    hub.wait_texts("c-5", 2)
    # another integration takes over without a handoff of ours: the bot's lines stay back
    assert env.send(hub.switchboard_event("c-5", "switchboard:passControl", to=fs.ANSWER_BOT)) == (200, {"ok": True})
    env.emu.ctl.bot(env.dl("c-5"), texts=["a proactive line"])
    assert "conv=c-5" in env.daemon.wait_line("sunshine.standby")
    env.says("c-5", "anyone?")
    # and back to us: no handoff was under way, so no status for the bot
    assert env.send(hub.pass_control_to_us("c-5")) == (200, {"ok": True})
    env.says("c-5", "back")
    texts = hub.wait_texts("c-5", 3)
    assert texts[-1] == "You said: back" and "a proactive line" not in texts
    assert env.bot_heard("c-5") == ["hi again", "back"]
    assert env.statuses("c-5") == []
    assert hub.rejected == [] and env.daemon.errors() == []


def test_the_bot_ending_the_conversation_releases_control(env):
    """The bot's endOfConversation: its goodbye reaches the customer, then handoffd gives up
    its switchboard control (releaseControl), once; the customer's next message starts a
    new conversation with the bot."""
    hub = env.hub
    env.says("e-1", "bye")
    env.daemon.wait_line("conv.ended conv=sunshine:e-1")
    assert hub.texts("e-1")[-1].startswith("Goodbye")
    assert hub.of("releaseControl", "e-1") == [{}]
    assert [o for o, c, _ in hub.calls if c == "e-1"][-1] == "releaseControl", "the goodbye went first"
    hub.wait(lambda _: hub.notified, what="the releaseControl echo")
    assert hub.notified == [(200, {"ok": True})], "the echo of our own release changes nothing"
    first = env.dl_conversation("e-1")
    assert env.bot_heard("e-1") == ["bye"], "the bot is not told its own end"
    env.says("e-1", "hello again")
    assert hub.wait_texts("e-1", 4)[-1] == "You said: hello again"
    assert env.dl_conversation("e-1") != first
    assert hub.of("releaseControl", "e-1") == [{}]
    assert hub.rejected == [] and env.daemon.errors() == []


def test_an_end_sunshine_decided_is_not_released_back(env):
    """The agents release control to another integration: the handoff completes without
    return to the bot and the conversation ends; Sunshine is not told back."""
    hub = env.hub
    env.hand_off("e-2")
    assert env.send(hub.switchboard_event("e-2", "switchboard:releaseControl", to=fs.ANSWER_BOT)) == (200, {"ok": True})
    env.daemon.wait_line("conv.ended conv=sunshine:e-2")
    assert env.statuses("e-2") == ["accepted", "completed"]
    assert hub.of("releaseControl", "e-2") == []
    assert hub.rejected == [] and env.daemon.errors() == []


def test_idle_while_the_agents_have_control_releases_nothing(tmp_path):
    """limits.idle_timeout while Agent Workspace has the customer: releaseControl would take
    control from the agents (an app-scoped key may), so handoffd leaves it be."""
    with Env(tmp_path, extra_config="limits = { idle_timeout = 2 },") as e:
        e.hand_off("e-3")
        e.daemon.wait_line("conv.idle conv=sunshine:e-3")
        e.daemon.wait_line("conv.ended conv=sunshine:e-3")
        assert "conv=e-3" in e.daemon.wait_line("sunshine.end_not_ours")
        assert e.hub.of("releaseControl", "e-3") == []
        assert e.hub.rejected == [] and e.daemon.errors() == []


def test_bad_api_key_and_bad_bodies(env):
    hub = env.hub
    ev = hub.user_message("c-6", "hello")
    assert env.send(ev, api_key="wrong-key-wrong-key-wrong")[0] == 401
    assert env.send(ev, api_key=None)[0] == 401
    assert env.send(ev, api_key="")[0] == 401
    assert not env.known("c-6"), "an unauthenticated body has no effect"
    assert env.send(raw=b"{not json")[0] == 400
    assert env.send(raw=json.dumps({"app": {"id": "another-app"}, "events": [ev]}).encode())[0] == 400
    assert not env.known("c-6")
    assert env.send(ev) == (200, {"ok": True})
    assert hub.wait_texts("c-6", 2)[1] == "You said: hello"


def test_duplicate_event_ids_take_effect_once(env):
    hub = env.hub
    m1, m2, m3 = (hub.user_message("c-7", t) for t in ("m1", "m2", "m3"))
    assert env.send(m1, m2, m1) == (200, {"ok": True}), "several events per body; a repeat inside it"
    assert env.send(m1, m2, m3) == (200, {"ok": True}), "Sunshine's retry of a body, with one new event"
    assert env.send(m3) == (200, {"ok": True})
    env.says("c-7", "m4")
    assert hub.wait_texts("c-7", 5)[1:] == ["You said: m1", "You said: m2", "You said: m3", "You said: m4"]
    assert env.bot_heard("c-7") == ["m1", "m2", "m3", "m4"], "each event once, in order"
    # a replayed failure or control event does not act twice either
    env.says("c-7", "agent please")
    hub.wait_pass_control("c-7")
    env.wait_statuses("c-7", ["accepted"])
    back = hub.release_control("c-7")
    assert env.send(back, back) == (200, {"ok": True})
    env.wait_statuses("c-7", ["accepted", "completed"])
    assert env.send(back) == (200, {"ok": True})
    env.says("c-7", "m5")
    env.wait_bot("c-7", lambda heard: "m5" in heard)
    assert env.statuses("c-7") == ["accepted", "completed"]


def test_api_errors_are_retried(env):
    hub = env.hub
    hub.script = [(429, {"Retry-After": "0"}), (500, None), (503, None)]
    for t in ("m1", "m2"):
        env.says("c-8", t)
    texts = hub.wait_texts("c-8", 3)
    assert texts[1:] == ["You said: m1", "You said: m2"], "each bot message once, in order"
    assert hub.script == []
    env.daemon.wait_line("relay.to_hub_retry")
    before = len(hub.of("messages", "c-8"))
    hub.script = [(502, None, "passControl"), (429, {"Retry-After": "0"}, "passControl")]
    env.says("c-8", "agent please")
    hub.wait_pass_control("c-8")
    env.wait_statuses("c-8", ["accepted"])
    assert len(hub.of("passControl", "c-8")) == 1 and hub.script == []
    assert len(hub.of("messages", "c-8")) == before + 1 and hub.rejected == []


def test_overload_answers_503_and_the_retry_skips_what_was_done(tmp_path):
    with Env(tmp_path, extra_config="limits = { conversations = 2 },") as e:
        hub = e.hub
        body = [hub.user_message("o-1", "first"), hub.user_message("o-2", "second"),
                hub.user_message("o-3", "third")]
        status, answer = e.send(*body)
        assert (status, answer) == (503, {"error": "overloaded"}), "Sunshine retries the body"
        assert e.known("o-1") and e.known("o-2") and not e.known("o-3")
        assert e.send(*body)[0] == 503, "still no room for o-3"
        for conv, text in (("o-1", "first"), ("o-2", "second")):
            hub.wait_texts(conv, 2)
            assert e.bot_heard(conv) == [text], "the retried body did not relay done events again"
