"""End to end through hubs.chatwoot: handoffd as Chatwoot's Agent Bot (model A).

Setup: the Direct Line emulator and its scripted bot (it greets, answers, hands off on
"human"/"agent"), the contract fake of Chatwoot (fake_chatwoot.py: its API, its signed Agent
Bot webhooks, its fallback of opening a pending conversation when the bot fails or is late),
and handoffd between them. Routing: "order" talk goes to queue orders (team 3), "manager" to
agent sam (user 12), the rest to general (no team mapped). Each test states its input
(Chatwoot webhooks, bot activities) and the traffic it expects on both wires.
"""
import json
import time
import urllib.request

import pytest

from conftest import BIN
from fake_chatwoot import ACCOUNT, FakeChatwoot
from relay_env import Handoffd
from tests.dlemu.control import spawn

ROUTES = """local route = require "handoff.route"
local queue = route.queue
return {
  route.phrase({ "refund", "order" }, queue("orders", { skill = "late-delivery", priority = 2 })),
  route.phrase("manager",             queue("escalations", { agent = "sam" })),
  route.always(                       queue("general")),
}
"""


def config_text(emu, cw, state_dir, secret=True):
    return f"""return {{
  listen = "127.0.0.1:0",
  state = "sqlite:{state_dir}/state.db",
  directline = {{ base = "{emu.info['http_base']}", secret = "{emu.info['secret']}", echo_grace = 1 }},
  hub = {{ module = "hubs.chatwoot", url = "{cw.url}", account_id = {ACCOUNT}, token = "{cw.token}",
          {f'secret = "{cw.secret}",' if secret else ''} teams = {{ orders = 3, vip = 4 }}, agents = {{ sam = 12 }} }},
  routes = "routes.lua",
  retry = {{ base = 0.05, max_delay = 0.5, give_up_after = 60 }},
}}
"""


class Env:
    """Emulator + fake Chatwoot + handoffd, started and stopped together."""

    def __init__(self, workdir, secret=True):
        self.workdir = workdir
        self.cw = FakeChatwoot().start()
        self.emu_ctx = spawn()
        self.emu = self.emu_ctx.__enter__()
        (workdir / "routes.lua").write_text(ROUTES)
        (workdir / "config.lua").write_text(config_text(self.emu, self.cw, workdir, secret))
        self.daemon = Handoffd(BIN, workdir).start()
        self.cw.target = f"http://127.0.0.1:{self.daemon.port}/hubs/chatwoot/events"

    def dl_conversation(self, cid):
        """The Direct Line conversation handoffd talks to for CID now (its latest start)."""
        needle = f'directline.started key="chatwoot:{cid}" conv='
        self.daemon.wait_line(needle)
        with self.daemon.cond:
            line = [l for l in self.daemon.lines if needle in l][-1]
        return line.split(needle, 1)[1].split()[0]

    def bot_received(self, cid):
        return self.emu.ctl.received(self.dl_conversation(cid))

    def bot_heard(self, cid):
        """What reached the bot: texts, handoff.status states, other activity types."""
        return [a.get("text") if a.get("type") == "message" else
                a["value"]["state"] if a.get("name") == "handoff.status" else a.get("type")
                for a in self.bot_received(cid)]

    def wait_bot_heard(self, cid, n, timeout=20):
        self.emu.ctl.wait_count(self.dl_conversation(cid), "received", n, timeout=timeout)
        return self.bot_heard(cid)

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.daemon.port}/metrics", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return next(float(l.rsplit(" ", 1)[1]) for l in lines if l.startswith(name + " "))

    def close(self):
        code = self.daemon.stop()
        self.emu_ctx.__exit__(None, None, None)
        self.cw.stop()
        return code


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    assert e.close() == 0, "handoffd stops cleanly"


def texts(messages):
    return [m["content"] for m in messages]


def handoff_calls(cw, cid):
    return [(a, b) for a, b in cw.actions(cid) if not (a == "messages" and not b.get("private"))]


def test_full_flow(env):
    cw = env.cw
    cid = cw.new_conversation(contact_id=55, name="Dana")
    # the customer and the bot, through Chatwoot's webhooks and API
    assert cw.customer(cid, "hello") == (200, {"ok": True})
    assert texts(cw.wait_bot_messages(cid, 2))[1] == "You said: hello"
    assert cw.customer(cid, "What are your opening hours?")[0] == 200
    assert "open Monday to Friday" in texts(cw.wait_bot_messages(cid, 3))[2]
    # (the first answer's typing may come before the stream is up: Direct Line never replays typing)
    assert ("toggle_typing_status", cid, {"typing_status": "on"}) in cw.calls, "the bot's typing reaches the conversation"
    # the handoff: private note, attributes, team, open, in this order
    assert cw.customer(cid, "My order is late, I want a human")[0] == 200
    cw.wait(lambda s: s.status(cid) == "open", what="the conversation opened")
    assert texts(cw.bot_messages(cid))[-1].startswith("Transferring you")
    steps = handoff_calls(cw, cid)
    assert [a for a, _ in steps] == ["messages", "custom_attributes", "assignments", "toggle_status"]
    note = steps[0][1]["content"]
    assert steps[0][1]["private"] is True and steps[0][1]["message_type"] == "outgoing"
    assert "Queue: orders" in note and "Skill: late-delivery" in note and "Customer: Dana" in note
    assert "Dana: hello\n" in note and "You said: hello" in note and "Dana: My order is late, I want a human" in note
    attrs = cw.conversations[cid].custom_attributes
    assert attrs["handoff_queue"] == "orders" and attrs["handoff_priority"] == "2"
    assert attrs["handoff_var_global_customertier"] == "gold"
    assert attrs["handoff_conversation_id"] == env.dl_conversation(cid)
    assert steps[1][1]["merge"] is True
    assert steps[2][1] == {"team_id": 3} and cw.conversations[cid].team_id == 3
    assert steps[3][1] == {"status": "open"}
    cw.drain()     # the note's echo, the status and assignment events: none of them reach the bot
    heard = env.bot_heard(cid)
    assert heard == ["hello", "What are your opening hours?", "My order is late, I want a human"]
    # with the agents: nothing reaches the bot, nothing the bot says reaches the customer
    assert cw.customer(cid, "hello? anyone?") == (200, {"ok": True, "ignored": "not for the bot"})
    env.emu.ctl.bot(env.dl_conversation(cid), texts=["the bot still talking"])
    assert cw.agent_reply(cid, "note to self", private=True)[0] == 200
    assert env.metric('handoffd_handoffs_total{result="accepted"}') == 0, "a private note is no answer to the customer"
    assert cw.agent_reply(cid, "Hi Dana, I'm Sam")[0] == 200
    assert env.wait_bot_heard(cid, 4)[3] == "accepted", "the first human reply is the acceptance"
    # resolved: the handoff is complete at the bot
    cw.set_status(cid, "resolved")
    assert env.wait_bot_heard(cid, 5)[4] == "completed"
    assert "the bot still talking" not in texts(cw.bot_messages(cid))
    # the customer comes back: Chatwoot reopens the conversation as pending, the bot answers
    assert cw.customer(cid, "one more question")[0] == 200
    cw.wait(lambda s: texts(s.bot_messages(cid))[-1] == "You said: one more question", what="the bot's answer")
    assert cw.rejected == [] and cw.bot_failures == []
    assert env.daemon.errors() == []


def test_back_to_pending_returns_to_the_bot(env):
    cw = env.cw
    cid = cw.new_conversation()
    cw.customer(cid, "agent please")
    cw.wait(lambda s: s.status(cid) == "open", what="the handoff")
    cw.assign(cid, 13)                             # an admin gives it to Kim: accepted
    assert env.wait_bot_heard(cid, 2)[-1] == "accepted"
    cw.agent_reply(cid, "Kim here", agent_id=13)
    cw.set_status(cid, "pending")                  # Kim hands it back to the bot
    assert env.wait_bot_heard(cid, 3)[-1] == "completed"
    n = len(cw.bot_messages(cid))
    assert cw.customer(cid, "thanks, what about refunds?")[0] == 200
    assert texts(cw.wait_bot_messages(cid, n + 1))[-1] == "You said: thanks, what about refunds?"
    assert env.bot_heard(cid) == ["agent please", "accepted", "completed", "thanks, what about refunds?"]
    assert cw.bot_failures == [] and env.daemon.errors() == []


def test_signature_and_stale_timestamp_rejected(env):
    cw = env.cw
    cid = cw.new_conversation()
    ev = cw.event_for(cid, content="forged")
    body = json.dumps(ev).encode()
    assert cw.send(ev, signed=False)[0] == 401
    assert cw.send(ev, secret="not-the-bot-secret-at-all")[0] == 401
    assert cw.send(ev, ts=int(time.time()) - 301)[0] == 401, "older than 300 s"
    assert cw.send(ev, ts=int(time.time()) + 301)[0] == 401, "from the future"
    assert cw.send(None, raw=body.replace(b"forged", b"F0rged"))[0] == 200, "control: the same body signed is fine"
    assert cw.send(None, raw=b"{not json")[0] == 400
    assert env.wait_bot_heard(cid, 1) == ["F0rged"], "only the signed, fresh event reached the bot"


def test_echoes_private_and_outgoing_never_reach_the_bot(env):
    cw = env.cw
    cid = cw.new_conversation()
    assert cw.customer(cid, "hello")[0] == 200
    cw.wait_bot_messages(cid, 2)
    cw.drain()
    echoes = [d for d in cw.deliveries if d["event"]["event"] == "message_created"
              and d["event"]["message_type"] == "outgoing"]
    assert len(echoes) == 2 and all(d["answer"]["ignored"] == "not for the bot" for d in echoes)
    ignored = [
        cw.event_for(cid, message_type="outgoing", sender={"id": 1, "name": "handoffd", "type": "agent_bot"}),
        cw.event_for(cid, private=True, content="private incoming"),
        cw.event_for(cid, message_type="template", content="How did we do?"),
        dict(cw.event_for(cid), conversation=dict(cw.event_for(cid)["conversation"], status="open")),
        dict(cw.event_for(cid), account={"id": ACCOUNT + 1, "name": "Other"}),
        dict(cw.event_for(cid), event="webwidget_triggered"),
    ]
    for ev in ignored:
        assert cw.send(ev)[0] == 200
    # a replayed delivery (Chatwoot's retry keeps X-Chatwoot-Delivery) has no second effect
    first = next(d for d in cw.deliveries if d["event"].get("content") == "hello")
    assert cw.replay(first["delivery"]) == (200, {"ok": True, "duplicate": True})
    assert cw.customer(cid, "again")[0] == 200
    assert env.wait_bot_heard(cid, 2) == ["hello", "again"]
    # resolved while the bot has it: the bot's conversation ends
    cw.set_status(cid, "resolved")
    env.daemon.wait_line(f"conv.state conv=chatwoot:{cid} from=bot to=ending")
    assert env.wait_bot_heard(cid, 3)[-1] == "endOfConversation"
    assert cw.bot_failures == [] and env.daemon.errors() == []


def test_retries_on_429_and_5xx_without_duplicates(env):
    cw = env.cw
    cid = cw.new_conversation()
    cw.script["messages"] = [(500, None), (429, {"Retry-After": "0"}), (503, None)]
    assert cw.customer(cid, "hello")[0] == 200
    assert texts(cw.wait_bot_messages(cid, 2))[1] == "You said: hello"
    cw.script["custom_attributes"] = [(502, None), (429, {"Retry-After": "0"})]
    cw.script["toggle_status"] = [(500, None)]
    cw.customer(cid, "I want a human")
    cw.wait(lambda s: s.status(cid) == "open", what="the handoff after the failures")
    assert [a for a, _ in handoff_calls(cw, cid)] == ["messages", "custom_attributes", "toggle_status"], \
        "each step once: the note is not posted again when a later step is retried"
    assert cw.script == {"messages": [], "custom_attributes": [], "toggle_status": []}
    env.daemon.wait_line("relay.to_hub_retry")
    assert cw.rejected == [] and cw.bot_failures == []


def test_webhooks_answer_within_chatwoot_timeout(env):
    cw = env.cw
    cid = cw.new_conversation()
    cw.delays["messages"] = [6.0]                 # Chatwoot is slow to take the bot's first reply
    assert cw.customer(cid, "hello")[0] == 200
    assert cw.customer(cid, "are you there?")[0] == 200, "answered while the reply is still on its way"
    assert texts(cw.wait_bot_messages(cid, 3))[1:] == ["You said: hello", "You said: are you there?"]
    assert cw.bot_failures == [] and cw.status(cid) == "pending", \
        "no webhook hit Chatwoot's 5 s timeout, so Chatwoot never opened the conversation itself"


def test_rich_messages_choices_and_an_agent_route(env):
    cw = env.cw
    cid = cw.new_conversation()
    cw.customer(cid, "hi")
    cw.wait_bot_messages(cid, 2)
    # a hero card with buttons becomes a Chatwoot card; one without, and a file, markdown
    env.emu.ctl.bot(env.dl_conversation(cid), activities=[{"attachments": [
        {"contentType": "application/vnd.microsoft.card.hero", "content": {
            "title": "Order 1234", "text": "Shipped Monday", "images": [{"url": "https://img.example/1.png"}],
            "buttons": [{"type": "openUrl", "title": "Track", "value": "https://track.example/1234"},
                        {"type": "imBack", "title": "Where is it?", "value": "where is my order"}]}},
        {"contentType": "application/vnd.microsoft.card.hero", "content": {"title": "Plain", "text": "no buttons"}},
        {"contentType": "application/pdf", "contentUrl": "https://files.example/invoice.pdf", "name": "invoice.pdf"}]}])
    shown = cw.wait_bot_messages(cid, 3)[2]
    assert shown["content_type"] == "cards"
    assert shown["content_attributes"]["items"] == [{
        "title": "Order 1234", "description": "Shipped Monday", "media_url": "https://img.example/1.png",
        "actions": [{"type": "link", "text": "Track", "uri": "https://track.example/1234"},
                    {"type": "postback", "text": "Where is it?", "payload": "where is my order"}]}]
    assert shown["content"] == "**Plain**\nno buttons\n\n[invoice.pdf](https://files.example/invoice.pdf)"
    # the bot offers choices: an input_select; the customer's pick goes to the bot
    env.emu.ctl.bot(env.dl_conversation(cid), activities=[{
        "text": "Pick one", "suggestedActions": {"actions": [
            {"type": "imBack", "title": "Opening hours", "value": "opening hours"},
            {"type": "imBack", "title": "Talk to a manager", "value": "manager agent"}]}}])
    offer = cw.wait_bot_messages(cid, 4)[3]
    assert offer["content_type"] == "input_select"
    assert offer["content_attributes"]["items"][1] == {"title": "Talk to a manager", "value": "manager agent"}
    assert cw.choose(cid, offer["id"], 1) == (200, {"ok": True})
    cw.wait(lambda s: s.status(cid) == "open", what="the handoff to sam")
    steps = handoff_calls(cw, cid)
    assert [a for a, _ in steps] == ["messages", "custom_attributes", "assignments", "toggle_status"], \
        "no team for an unmapped queue: the agent, then open"
    assert steps[2][1] == {"assignee_id": 12}
    assert cw.conversations[cid].assignee_id == 12
    assert env.wait_bot_heard(cid, 3)[1:] == ["manager agent", "accepted"], "a named agent accepts at once"
    env.daemon.wait_line("chatwoot.unmapped_queue")
    assert cw.rejected == [] and cw.bot_failures == []


def test_without_a_secret_unsigned_webhooks_are_accepted(tmp_path):
    """Chatwoot before the signed Agent Bot webhooks (spring 2026): no secret configured."""
    env = Env(tmp_path, secret=False)
    try:
        env.daemon.wait_line("chatwoot.unsigned")
        cid = env.cw.new_conversation()
        assert env.cw.send(env.cw.event_for(cid, content="unsigned hello"), signed=False)[0] == 200
        assert env.wait_bot_heard(cid, 1) == ["unsigned hello"]
    finally:
        assert env.close() == 0
