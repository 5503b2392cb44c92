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

from fake_chatwoot import ACCOUNT, FakeChatwoot
from hub_env import AGENT_ROUTES, HubEnv, running


def hub_lines(secret=True):
    def lines(cw):
        return f"""hub = {{ module = "hubs.chatwoot", url = "{cw.url}", account_id = {ACCOUNT}, token = "{cw.token}",
          {f'secret = "{cw.secret}",' if secret else ''} teams = {{ orders = 3, vip = 4 }}, agents = {{ sam = 12 }} }},"""
    return lines


def start(workdir, secret=True, version="current"):
    env = HubEnv(workdir, FakeChatwoot(version=version), "chatwoot", hub_lines(secret), AGENT_ROUTES)
    env.cw = env.hub
    return env


@pytest.fixture
def env(tmp_path):
    yield from running(start(tmp_path))


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
    # A minute beyond the 300 s window either way: one second (the margin this had) is
    # eaten by a loaded machine between stamping and checking, and by whole seconds.
    assert cw.send(ev, ts=int(time.time()) - 360)[0] == 401, "older than 300 s"
    assert cw.send(ev, ts=int(time.time()) + 360)[0] == 401, "from the future"
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
    with start(tmp_path, secret=False) as env:
        env.daemon.wait_line("chatwoot.unsigned")
        cid = env.cw.new_conversation()
        assert env.cw.send(env.cw.event_for(cid, content="unsigned hello"), signed=False)[0] == 200
        assert env.wait_bot_heard(cid, 1) == ["unsigned hello"]


def test_conversation_events_without_account(tmp_path):
    """Chatwoot 2026 before June: conversation_* events carry no `account` (#11753, fixed by
    #14673); assignment, hand-back and resolution must still reach the bot."""
    with start(tmp_path, version="2026-05") as env:
        cw = env.cw
        cid = cw.new_conversation()
        cw.customer(cid, "agent please")
        cw.wait(lambda s: s.status(cid) == "open", what="the handoff")
        cw.assign(cid, 13)                                   # conversation_updated: accepted
        assert env.wait_bot_heard(cid, 2)[-1] == "accepted"
        cw.set_status(cid, "pending")                        # conversation_status_changed: back to the bot
        assert env.wait_bot_heard(cid, 3)[-1] == "completed"
        cw.customer(cid, "and now?")
        cw.wait(lambda s: texts(s.bot_messages(cid))[-1] == "You said: and now?", what="the bot again")
        cw.set_status(cid, "resolved")                       # resolved while the bot has it
        assert env.wait_bot_heard(cid, 5)[4] == "endOfConversation"
        events = [d for d in cw.deliveries if d["event"]["event"].startswith("conversation_")]
        assert events and all("account" not in d["event"] for d in events), "the older payload shape"
        assert not [d for d in cw.deliveries if (d["answer"] or {}).get("ignored") == "another account"]
        # an event whose embedded last message names another account is still not ours
        other = dict(cw.event_for(cid), event="conversation_resolved", id=cid,
                     messages=[{"id": 1, "account_id": ACCOUNT + 1}])
        other.pop("account")
        assert cw.send(other) == (200, {"ok": True, "ignored": "another account"})
        assert cw.bot_failures == [] and env.daemon.errors() == []


def test_chatwoot_2025_refuses_the_bot_on_custom_attributes(tmp_path):
    """Chatwoot before mid-2025 answers 401 to a bot token on custom_attributes (allowed by
    #11447): the attributes are skipped (logged), the handoff goes on."""
    with start(tmp_path, version="2025-05") as env:
        cw = env.cw
        cid = cw.new_conversation()
        assert cw.customer(cid, "My order is late, I want a human")[0] == 200
        cw.wait(lambda s: s.status(cid) == "open", what="the handoff despite the refused attributes")
        assert [a for a, _ in handoff_calls(cw, cid)] == ["messages", "assignments", "toggle_status"]
        assert (f"/api/v1/accounts/{ACCOUNT}/conversations/{cid}/custom_attributes",
                "Access to this endpoint is not authorized for bots") in cw.rejected
        env.daemon.wait_line("chatwoot.attributes_skipped")
        assert cw.agent_reply(cid, "Hi, Sam here")[0] == 200
        assert env.wait_bot_heard(cid, 2)[1] == "accepted"
        cw.set_status(cid, "resolved")      # conversation_resolved without `account`: completed
        assert env.wait_bot_heard(cid, 3)[2] == "completed"
        assert cw.bot_failures == [] and env.daemon.errors() == []


def resolutions(cw, cid):
    return [b for a, b in cw.actions(cid) if a == "toggle_status" and b.get("status") == "resolved"]


def test_the_bot_ending_the_conversation_resolves_it(env):
    """The bot's endOfConversation: its goodbye reaches the customer, then handoffd resolves
    the conversation in Chatwoot, once; the event of that resolution changes nothing."""
    cw = env.cw
    cid = cw.new_conversation()
    assert cw.customer(cid, "bye")[0] == 200
    env.daemon.wait_line(f"conv.ended conv=chatwoot:{cid}")
    assert texts(cw.bot_messages(cid))[-1].startswith("Goodbye")
    assert resolutions(cw, cid) == [{"status": "resolved"}] and cw.status(cid) == "resolved"
    assert [a for a, _ in cw.actions(cid)][-1] == "toggle_status", "the goodbye went first"
    cw.drain()
    echoes = [d for d in cw.deliveries if d["event"]["event"] in ("conversation_status_changed", "conversation_resolved")]
    assert echoes and all(d["status"] == 200 and d["answer"].get("ignored") for d in echoes)
    assert env.bot_heard(cid) == ["bye"], "the bot is not told its own end"
    assert resolutions(cw, cid) == [{"status": "resolved"}]
    assert cw.rejected == [] and cw.bot_failures == [] and env.daemon.errors() == []


def test_a_conversation_chatwoot_resolved_is_not_resolved_back(env):
    cw = env.cw
    cid = cw.new_conversation()
    assert cw.customer(cid, "hello")[0] == 200
    cw.wait_bot_messages(cid, 2)
    cw.set_status(cid, "resolved")                 # Chatwoot ends it: the bot is told, Chatwoot not
    env.daemon.wait_line(f"conv.ended conv=chatwoot:{cid}")
    assert env.bot_heard(cid)[-1] == "endOfConversation"
    assert [a for a, _ in cw.actions(cid) if a == "toggle_status"] == []
    assert cw.rejected == [] and env.daemon.errors() == []


def test_the_resolve_is_retried_and_a_refusal_dropped(env):
    """A transient failure of the resolve is retried (it is made once); a final refusal (404:
    the conversation was deleted) is logged and dropped, and the conversation leaves anyway."""
    cw = env.cw
    cw.script["toggle_status"] = [(503, None), (429, {"Retry-After": "0"})]
    cid = cw.new_conversation()
    assert cw.customer(cid, "bye")[0] == 200
    env.daemon.wait_line(f"conv.ended conv=chatwoot:{cid}")
    assert resolutions(cw, cid) == [{"status": "resolved"}] and cw.script["toggle_status"] == []
    cw.script["toggle_status"] = [(404, None)]
    other = cw.new_conversation(contact_id=56)
    assert cw.customer(other, "bye")[0] == 200
    env.daemon.wait_line(f"conv.ended conv=chatwoot:{other}")
    line = env.daemon.wait_line("chatwoot.end_refused")
    assert f"conv={other}" in line and "reason=bot" in line and "HTTP 404" in line
    assert resolutions(cw, other) == [] and cw.status(other) == "pending"
    assert env.daemon.errors() == []


def test_idle_while_an_agent_has_it_resolves_it(tmp_path):
    """limits.idle_timeout with an agent: the bot gets endOfConversation, Chatwoot's
    conversation is resolved (reason idle) rather than left open in the inbox."""
    with HubEnv(tmp_path, FakeChatwoot(), "chatwoot", hub_lines(), AGENT_ROUTES,
                extra_config="limits = { idle_timeout = 2 },") as env:
        cw = env.hub
        cid = cw.new_conversation()
        cw.customer(cid, "agent please")
        cw.wait(lambda s: s.status(cid) == "open", what="the handoff")
        assert cw.agent_reply(cid, "Hi, Sam here")[0] == 200
        env.daemon.wait_line(f"conv.state conv=chatwoot:{cid} from=routing to=agent")
        env.daemon.wait_line(f"conv.idle conv=chatwoot:{cid}")
        env.daemon.wait_line(f"conv.ended conv=chatwoot:{cid}")
        assert resolutions(cw, cid) == [{"status": "resolved"}] and cw.status(cid) == "resolved"
        assert env.bot_heard(cid)[-1] == "endOfConversation"
        assert cw.rejected == [] and env.daemon.errors() == []


def test_fake_refuses_what_the_swagger_refuses(env):
    """The contract fake answers 401/422 as Chatwoot does to calls outside its API description."""
    cw = env.cw
    cid = cw.new_conversation()
    def post(action, body, token=None):
        req = urllib.request.Request(f"{cw.server.url}/api/v1/accounts/{ACCOUNT}/conversations/{cid}/{action}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"api_access_token": token or cw.token,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
    assert post("messages", {"content": "hi"}, token="wrong") == 401
    assert post("messages", {"message_type": "outgoing"}) == 422, "content is required"
    assert post("messages", {"content": "x", "message_type": "activity"}) == 422
    assert post("messages", {"content": "x", "content_type": "cards", "content_attributes": {
        "items": [{"title": "no actions"}]}}) == 422
    assert post("messages", {"content": "x", "content_type": "input_select", "content_attributes": {
        "items": [{"title": "a", "value": "a", "extra": 1}]}}) == 422
    assert post("toggle_status", {"status": "closed"}) == 422
    assert post("custom_attributes", {"merge": True}) == 422
    assert post("toggle_typing_status", {}) == 422
    assert post("toggle_status", {"status": "open"}) == 200
    assert len(cw.rejected) == 8
