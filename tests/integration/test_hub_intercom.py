"""End to end through hubs.intercom: handoffd's bot as an admin of an Intercom workspace (model A).

Setup: the Direct Line emulator and its scripted bot (it greets, answers, hands off on
"human"/"agent"), the contract fake of Intercom (fake_intercom.py: the 2.11 API checked against
the spec, signed notifications, one re-delivery of a failed or late one), and handoffd between
them. Routing: "order" talk goes to queue orders (team 5017691), "manager" to agent sam (admin
991267715), the rest to general (no team mapped). Each test states its input (Intercom
notifications, bot activities) and the traffic it expects on both wires.
"""
import json
import time
import urllib.error
import urllib.request

import pytest

from conftest import run, write_config
from fake_intercom import BOT, TOKEN, VALIDATORS, Conversation, FakeIntercom
from hub_env import AGENT_ROUTES, HubEnv, running

SAM, KIM, ORDERS = "991267715", "991267716", "5017691"


def hub_lines(extra=""):
    def lines(ic):
        return f"""hub = {{ module = "hubs.intercom", url = "{ic.url}", token = "{ic.token}",
          client_secret = "{ic.client_secret}", bot_admin_id = "{BOT}",
          teams = {{ orders = "{ORDERS}", vip = "5017692" }}, admins = {{ sam = "{SAM}" }}, {extra} }},"""
    return lines


def start(workdir, extra="", **fake):
    env = HubEnv(workdir, FakeIntercom(**fake), "intercom", hub_lines(extra), AGENT_ROUTES)
    env.ic = env.hub
    return env


@pytest.fixture
def env(tmp_path):
    yield from running(start(tmp_path))


def bodies(parts):
    return [p["body"] for p in parts]


def handoff_calls(ic, cid):
    """The API calls of a handoff: everything but the bot's comments."""
    return [(op, b) for op, b in ic.operations(cid) if not (op == "reply" and b["message_type"] == "comment")]


def test_full_flow(env):
    ic = env.ic
    # a Workflow assigns the new conversation to the bot admin: its first message reaches the bot
    cid = ic.new_conversation("hello", name="Dana")
    assert bodies(ic.wait_bot_replies(cid, 2))[1] == "<p>You said: hello</p>"
    comment = next(b for op, b in ic.operations(cid) if op == "reply")
    assert comment["type"] == "admin" and comment["admin_id"] == BOT and comment["message_type"] == "comment"
    assert ic.customer(cid, "What are your opening hours?") == (200, {"ok": True})
    assert "open Monday to Friday" in ic.wait_bot_replies(cid, 3)[2]["body"]
    # the handoff: note, attributes, the bot lets go, the team; in this order
    assert ic.customer(cid, "My order is late, I want a human")[0] == 200
    ic.wait(lambda s: s.conversations[cid].team == ORDERS, what="the team assignment")
    assert "Transferring you" in ic.bot_replies(cid)[-1]["body"]
    steps = handoff_calls(ic, cid)
    assert [op for op, _ in steps] == ["reply", "update", "parts", "parts"]
    note = steps[0][1]
    assert note["message_type"] == "note" and note["admin_id"] == BOT
    assert "Queue: orders" in note["body"] and "Skill: late-delivery" in note["body"] and "Customer: Dana" in note["body"]
    assert "Dana: hello<br>" in note["body"] and "Dana: My order is late, I want a human" in note["body"]
    attrs = ic.conversations[cid].custom_attributes
    assert attrs["handoff_queue"] == "orders" and attrs["handoff_priority"] == "2"
    assert attrs["handoff_var_global_customertier"] == "gold"
    assert attrs["handoff_conversation_id"] == env.dl_conversation(cid)
    assert steps[2][1] == {"message_type": "assignment", "type": "admin", "admin_id": BOT, "assignee_id": "0"}
    assert steps[3][1] == {"message_type": "assignment", "type": "team", "admin_id": BOT, "assignee_id": ORDERS}
    assert ic.conversations[cid].admin is None
    ic.drain()     # the bot's own replies and assignments come back as notifications: ignored
    assert env.bot_heard(cid) == ["hello", "What are your opening hours?", "My order is late, I want a human"]
    # with the humans: nothing reaches the bot, nothing the bot says reaches the customer
    assert ic.customer(cid, "hello? anyone?") == (200, {"ok": True, "ignored": "the humans have it"})
    env.emu.ctl.bot(env.dl_conversation(cid), texts=["the bot still talking"])
    assert env.metric('handoffd_handoffs_total{result="accepted"}') == 0, "the team's inbox has it, nobody took it yet"
    assert ic.admin_reply(cid, "Hi Dana, I'm Sam", admin=SAM)[0] == 200
    assert "<p>Hi Dana, I'm Sam</p>" in bodies(ic.seen_by_customer(cid)), "the agent's reply is in the Messenger"
    assert env.wait_bot_heard(cid, 4)[3] == "accepted", "the first human reply is the acceptance"
    assert ic.admin_reply(cid, "Let me check", admin=SAM)[0] == 200
    # closed: the handoff is complete; the customer's next message is the bot's again
    ic.close(cid, by=SAM)
    assert env.wait_bot_heard(cid, 5)[4] == "completed"
    assert not any("the bot still talking" in b for b in bodies(ic.bot_replies(cid)))
    assert env.bot_heard(cid).count("Let me check") == 0
    before = len(ic.operations(cid))
    assert ic.customer(cid, "one more question")[0] == 200
    ic.wait(lambda s: s.bot_replies(cid)[-1]["body"] == "<p>You said: one more question</p>", what="the bot's answer")
    taken_back = [(op, b) for op, b in ic.operations(cid)[before:] if op == "parts"]
    assert taken_back == [("parts", {"message_type": "assignment", "type": "admin", "admin_id": BOT,
                                     "assignee_id": BOT})], "the bot takes the reopened conversation back, once"
    assert ic.conversations[cid].admin == BOT
    assert ic.rejected == [] and ic.failed_deliveries() == []
    assert env.daemon.errors() == []


def test_assigning_back_to_the_bot_returns_it(env):
    ic = env.ic
    cid = ic.new_conversation("agent please")
    ic.wait(lambda s: any(op == "parts" for op, _ in s.operations(cid)), what="the handoff")
    ic.assign(cid, admin=KIM, by=KIM)                # Kim takes it from the unassigned inbox: accepted
    assert env.wait_bot_heard(cid, 2)[-1] == "accepted"
    ic.admin_reply(cid, "Kim here", admin=KIM)
    ic.snooze(cid, by=KIM)                           # snoozed: Kim keeps it
    ic.assign(cid, admin=BOT, by=KIM)                # Kim hands it back to the bot
    assert env.wait_bot_heard(cid, 3)[-1] == "completed"
    n = len(ic.bot_replies(cid))
    assert ic.customer(cid, "thanks, what about refunds?")[0] == 200
    assert ic.wait_bot_replies(cid, n + 1)[-1]["body"] == "<p>You said: thanks, what about refunds?</p>"
    assert env.bot_heard(cid) == ["agent please", "accepted", "completed", "thanks, what about refunds?"]
    assert ic.rejected == [] and ic.failed_deliveries() == [] and env.daemon.errors() == []


def test_a_human_taking_over_silences_the_bot(env):
    ic = env.ic
    cid = ic.new_conversation("hello")
    ic.wait_bot_replies(cid, 2)
    assert ic.admin_reply(cid, "Sam here, I'll take this one", admin=SAM)[0] == 200
    assert env.wait_bot_heard(cid, 2)[-1] == "accepted", "a human's reply while the bot has it: taken over"
    assert ic.customer(cid, "thanks Sam") == (200, {"ok": True, "ignored": "the humans have it"})
    photo = {"type": "upload", "name": "receipt.png", "url": "https://files.example/receipt.png",
             "content_type": "image/png", "filesize": 1024, "width": 10, "height": 10}
    ic.assign(cid, admin=BOT, by=SAM)
    assert env.wait_bot_heard(cid, 3)[-1] == "completed"
    assert ic.customer(cid, "here is my receipt", attachments=[photo])[0] == 200
    env.emu.ctl.wait_count(env.dl_conversation(cid), "received", 4, timeout=20)
    received = env.emu.ctl.received(env.dl_conversation(cid))
    assert received[-1]["text"] == "here is my receipt"
    assert received[-1]["attachments"] == [{"contentType": "image/png", "contentUrl": "https://files.example/receipt.png",
                                            "name": "receipt.png"}]
    assert ic.rejected == [] and ic.failed_deliveries() == [] and env.daemon.errors() == []


def test_signature_replay_and_what_is_not_the_bots(env):
    ic = env.ic
    cid = ic.new_conversation("hello", workflow="before")    # created already assigned, then assigned again
    ic.wait_bot_replies(cid, 2)
    note = ic.notification_for(cid, text="forged")
    body = json.dumps(note).encode()
    assert ic.send(note, signed=False)[0] == 401
    assert ic.send(note, secret="not-the-client-secret-at-all")[0] == 401
    assert ic.send(None, raw=body, secret=None)[0] == 200, "control: the same body, signed, is taken"
    tampered = body.replace(b"forged", b"F0rged")
    assert ic.post(tampered, signed=False)[0] == 401
    assert ic.send(None, raw=b"{not json")[0] == 400
    assert ic.send({"type": "notification_event", "topic": "ping", "data": {"item": {"type": "ping"}}}) == \
        (200, {"ok": True, "ignored": "ping"})
    # Intercom's re-delivery keeps the notification id (and the part id): no second effect
    assert ic.send(note) == (200, {"ok": True, "duplicate": True})
    first = [d for d in ic.deliveries if d["notification"]["topic"] in
             ("conversation.user.created", "conversation.admin.assigned")]
    assert [d["answer"] for d in first][:2] == [{"ok": True}, {"ok": True, "ignored": "the bot has it already"}], \
        "the first message comes with the creation and with the assignment: the bot hears it once"
    assert ic.replay(first[0]["notification"]["id"]) == (200, {"ok": True, "duplicate": True})
    # a conversation nobody assigned to the bot is not the bot's
    other = ic.new_conversation("not for the bot", workflow=None)
    assert ic.customer(other, "still not")[1] == {"ok": True, "ignored": "not assigned to the bot"}
    assert not any(f'key="intercom:{other}"' in l for l in env.daemon.lines)
    assert ic.customer(cid, "again")[0] == 200
    assert env.wait_bot_heard(cid, 3) == ["hello", "forged", "again"]
    # closed while the bot has it: the bot's conversation ends
    ic.close(cid)
    env.daemon.wait_line(f"conv.state conv=intercom:{cid} from=bot to=ending")
    assert env.wait_bot_heard(cid, 4)[-1] == "endOfConversation"
    assert ic.rejected == [] and env.daemon.errors() == []


def closes(ic, cid):
    return [b for op, b in ic.operations(cid) if op == "parts" and b["message_type"] == "close"]


def test_the_bot_ending_the_conversation_closes_it(env):
    """The bot's endOfConversation: its goodbye reaches the customer, then the bot admin
    closes the conversation, once; Intercom's notification of that close is the bot's own."""
    ic = env.ic
    cid = ic.new_conversation("bye")
    env.daemon.wait_line(f"conv.ended conv=intercom:{cid}")
    assert bodies(ic.bot_replies(cid))[-1].startswith("<p>Goodbye")
    assert closes(ic, cid) == [{"message_type": "close", "type": "admin", "admin_id": BOT}]
    assert ic.operations(cid)[-1][0] == "parts", "the goodbye went first"
    assert ic.conversations[cid].state == "closed"
    ic.drain()
    closed = [d for d in ic.deliveries if d["notification"]["topic"] == "conversation.admin.closed"]
    assert [d["answer"] for d in closed] == [{"ok": True, "ignored": "the bot's own action"}]
    assert env.bot_heard(cid) == ["bye"], "the bot is not told its own end"
    assert ic.rejected == [] and ic.failed_deliveries() == [] and env.daemon.errors() == []


def test_a_conversation_intercom_closed_is_not_closed_back(env):
    ic = env.ic
    cid = ic.new_conversation("hello")
    ic.wait_bot_replies(cid, 2)
    ic.close(cid, by=SAM)                         # a human closes it while the bot has it
    env.daemon.wait_line(f"conv.ended conv=intercom:{cid}")
    assert env.bot_heard(cid)[-1] == "endOfConversation"
    assert closes(ic, cid) == []
    assert ic.rejected == [] and env.daemon.errors() == []


def test_idle_after_the_humans_closed_it_leaves_it_closed(tmp_path):
    """The humans close the conversation (handoff completed, the bot has it again) and
    nobody writes: limits.idle_timeout ends it in handoffd without a second close."""
    with HubEnv(tmp_path, FakeIntercom(), "intercom", hub_lines(), AGENT_ROUTES,
                extra_config="limits = { idle_timeout = 2 },") as env:
        ic = env.hub
        cid = ic.new_conversation("agent please")
        ic.wait(lambda s: any(op == "parts" for op, _ in s.operations(cid)), what="the handoff")
        assert ic.admin_reply(cid, "Sam here", admin=SAM)[0] == 200
        ic.close(cid, by=SAM)
        env.daemon.wait_line(f"conv.idle conv=intercom:{cid}")
        env.daemon.wait_line(f"conv.ended conv=intercom:{cid}")
        assert "conv=" + cid in env.daemon.wait_line("intercom.end_left_closed")
        assert closes(ic, cid) == [] and ic.conversations[cid].state == "closed"
        assert ic.rejected == [] and env.daemon.errors() == []


def test_retries_on_429_and_5xx_without_duplicates(env):
    ic = env.ic
    reset = str(int(time.time()))
    ic.script["reply"] = [(500, None), (429, {"X-RateLimit-Reset": reset}), (503, None)]
    cid = ic.new_conversation("hello")
    assert bodies(ic.wait_bot_replies(cid, 2))[1] == "<p>You said: hello</p>"
    ic.script["update"] = [(502, None), (429, {"X-RateLimit-Reset": reset})]
    ic.script["parts"] = [(500, None)]
    ic.customer(cid, "I want a human")
    ic.wait(lambda s: sum(op == "parts" for op, _ in s.operations(cid)) == 1, what="the handoff after the failures")
    ic.drain()
    assert [op for op, _ in handoff_calls(ic, cid)] == ["reply", "update", "parts"], \
        "each step once: the note is not posted again when a later step is retried"
    assert len(ic.notes(cid)) == 1
    assert ic.script == {"reply": [], "update": [], "parts": []}
    assert bodies(ic.bot_replies(cid)).count("<p>You said: hello</p>") == 1
    env.daemon.wait_line("relay.to_hub_retry")
    assert ic.rejected == [] and ic.failed_deliveries() == []


def test_notifications_answered_within_intercom_timeout(env):
    ic = env.ic
    ic.delays["reply"] = [6.0]                     # Intercom is slow to take the bot's first reply
    cid = ic.new_conversation("hello")
    assert ic.customer(cid, "are you there?")[0] == 200, "answered while the reply is still on its way"
    replies = ic.wait_bot_replies(cid, 3, timeout=40)
    assert bodies(replies)[1:] == ["<p>You said: hello</p>", "<p>You said: are you there?</p>"]
    assert ic.failed_deliveries() == [], "no notification hit Intercom's 5 s limit, none was sent twice"


def test_rich_messages_and_an_agent_route(env):
    ic = env.ic
    cid = ic.new_conversation("hi")
    ic.wait_bot_replies(cid, 2)
    # a hero card: title, text, buttons (a link and a choice), its image as an attachment URL
    env.emu.ctl.bot(env.dl_conversation(cid), activities=[{"text": "Your order & more", "attachments": [
        {"contentType": "application/vnd.microsoft.card.hero", "content": {
            "title": "Order <1234>", "text": "Shipped Monday", "images": [{"url": "https://img.example/1.png"}],
            "buttons": [{"type": "openUrl", "title": "Track", "value": "https://track.example/1234?a=1&b=2"},
                        {"type": "imBack", "title": "Where is it?", "value": "where is my order"}]}},
        {"contentType": "application/pdf", "contentUrl": "https://files.example/invoice.pdf", "name": "invoice.pdf"}]}])
    ic.wait_bot_replies(cid, 3)
    shown = [b for op, b in ic.operations(cid) if op == "reply"][-1]
    assert shown["body"] == ("<p>Your order &amp; more</p><p><b>Order &lt;1234&gt;</b></p><p>Shipped Monday</p>"
                             '<ul><li><a href="https://track.example/1234?a=1&amp;b=2">Track</a></li>'
                             "<li>Where is it?</li></ul>"
                             '<p><a href="https://files.example/invoice.pdf">invoice.pdf</a></p>')
    assert shown["attachment_urls"] == ["https://img.example/1.png"]
    # suggested actions: a list under the text; the customer types a choice
    env.emu.ctl.bot(env.dl_conversation(cid), activities=[{
        "text": "Pick one\nor ask me", "suggestedActions": {"actions": [
            {"type": "imBack", "title": "Opening hours", "value": "opening hours"},
            {"type": "imBack", "title": "Talk to a manager", "value": "manager agent"}]}}])
    assert ic.wait_bot_replies(cid, 4)[3]["body"] == \
        "<p>Pick one<br>or ask me</p><ul><li>Opening hours</li><li>Talk to a manager</li></ul>"
    assert ic.customer(cid, "<b>manager</b> agent &amp; now")[0] == 200
    ic.wait(lambda s: s.conversations[cid].admin == SAM, what="the handoff to sam")
    steps = handoff_calls(ic, cid)
    assert [op for op, _ in steps] == ["reply", "update", "parts"], "no team for an unmapped queue"
    assert steps[2][1]["assignee_id"] == SAM and steps[2][1]["type"] == "admin"
    assert env.wait_bot_heard(cid, 3)[1:] == ["manager agent & now", "accepted"], \
        "the customer's HTML as text; a named agent accepts at once"
    env.daemon.wait_line("intercom.unmapped_queue")
    assert ic.rejected == [] and ic.failed_deliveries() == []


def test_missing_attributes_and_final_errors(tmp_path):
    """A workspace without the handoff attributes; an API answering 403 (plan restricted)."""
    with start(tmp_path, attributes={"handoff_queue"}) as env:
        ic = env.ic
        cid = ic.new_conversation("I need a human about my order")
        ic.wait(lambda s: s.conversations[cid].team == ORDERS, what="the handoff despite the attributes")
        env.daemon.wait_line("intercom.attributes_refused")
        assert [(r[2], r[3]) for r in ic.rejected] == [(400, "parameter_invalid")]
        assert ic.conversations[cid].custom_attributes == {}
        # 403 is final: the bot's reply fails once, without retries
        other = ic.new_conversation("hello")
        env.dl_conversation(other)
        with ic.cond:
            ic.plan_restricted = True
        env.emu.ctl.bot(env.dl_conversation(other), texts=["a reply Intercom refuses"])
        env.daemon.wait_line(f"relay.to_hub_failed conv=intercom:{other}")
        assert [r[3] for r in ic.rejected].count("api_plan_restricted") >= 1
        assert not any(f"relay.to_hub_retry conv=intercom:{other}" in l for l in env.daemon.lines)


def test_attributes_named_in_the_config(tmp_path):
    """Only the attributes the workspace defined are sent, so Intercom takes the update."""
    with start(tmp_path, extra='attributes = { "handoff_queue", "handoff_skill" },',
               attributes={"handoff_queue", "handoff_skill", "handoff_priority"}) as env:
        ic = env.ic
        cid = ic.new_conversation("I need a human about my order")
        ic.wait(lambda s: s.conversations[cid].team == ORDERS, what="the handoff")
        update = next(b for op, b in ic.operations(cid) if op == "update")
        assert update == {"custom_attributes": {"handoff_queue": "orders", "handoff_skill": "late-delivery"}}
        assert ic.conversations[cid].custom_attributes == update["custom_attributes"]
        assert ic.rejected == [] and env.daemon.errors() == []


@pytest.mark.parametrize("hub, message", [
    ('token = "t", bot_admin_id = "12"', "client_secret is required"),
    ('token = "t", client_secret = "0123456789abcdef0"', "bot_admin_id is required"),
    ('token = "t", client_secret = "0123456789abcdef0", bot_admin_id = "12", teams = { orders = "x" }',
     "teams.orders must be an Intercom id"),
    ('token = "t", client_secret = "0123456789abcdef0", bot_admin_id = "12", attributes = { 3 }',
     "attributes must list attribute names"),
])
def test_settings_are_checked_at_load(tmp_path, hub, message):
    write_config(tmp_path, f"""return {{
  listen = "127.0.0.1:0",
  directline = {{ secret = "test-secret-0123456789" }},
  hub = {{ module = "hubs.intercom", {hub} }},
}}
""")
    done = run(["-t", "-c", "config.lua"], cwd=tmp_path)
    assert done.returncode != 0 and message in done.stderr, done.stderr


def call(fake, method, path, body, token=TOKEN, version="2.11", content_type="application/json"):
    """One request to the fake's API as a client would make it: (status, parsed answer)."""
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if version is not None:
        headers["Intercom-Version"] = version
    req = urllib.request.Request(fake.url + path, data=json.dumps(body).encode(), headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_fake_refuses_what_intercom_refuses():
    """The contract fake's own contract: what the spec refuses, answered with Intercom's error list."""
    fake = FakeIntercom().start()
    try:
        cid = "400"
        with fake.cond:
            fake.conversations[cid] = Conversation(cid, "667d60f18a68186f43bafdf4", "Dana", "hi")
        good = {"message_type": "comment", "type": "admin", "admin_id": BOT, "body": "<p>hi</p>"}
        cases = [
            (call(fake, "POST", f"/conversations/{cid}/reply", good, token="wrong"), 401, "unauthorized"),
            (call(fake, "POST", f"/conversations/{cid}/reply", good, token=None), 401, "unauthorized"),
            (call(fake, "POST", f"/conversations/{cid}/reply", good, version="3.7"), 400, "intercom_version_invalid"),
            (call(fake, "POST", f"/conversations/{cid}/reply", good, version=None), 400, "intercom_version_missing"),
            (call(fake, "POST", "/conversations/999/reply", good), 404, "not_found"),
            (call(fake, "POST", f"/conversations/{cid}/reply", dict(good, admin_id=int(BOT))), 400, "parameter_invalid"),
            (call(fake, "POST", f"/conversations/{cid}/reply", dict(good, message_type="quick_reply")), 400,
             "parameter_invalid"),
            (call(fake, "POST", f"/conversations/{cid}/reply", {k: v for k, v in good.items() if k != "body"}), 400,
             "parameter_invalid"),
            (call(fake, "POST", f"/conversations/{cid}/reply", dict(good, attachment_urls=["u"] * 11)), 400,
             "parameter_invalid"),
            (call(fake, "POST", f"/conversations/{cid}/reply", dict(good, admin_id="1")), 404, "admin_not_found"),
            (call(fake, "POST", f"/conversations/{cid}/parts",
                  {"message_type": "assignment", "type": "group", "admin_id": BOT, "assignee_id": "1"}), 400,
             "parameter_invalid"),
            (call(fake, "POST", f"/conversations/{cid}/parts",
                  {"message_type": "assignment", "type": "team", "admin_id": BOT, "assignee_id": "1"}), 404,
             "team_not_found"),
            (call(fake, "POST", f"/conversations/{cid}/parts",
                  {"message_type": "close", "type": "team", "admin_id": BOT}), 400, "parameter_invalid"),
            (call(fake, "POST", f"/conversations/{cid}/parts", {"message_type": "close", "type": "admin"}), 400,
             "parameter_invalid"),
            (call(fake, "PUT", f"/conversations/{cid}", {"custom_attributes": {"a": ["x"]}}), 400, "parameter_invalid"),
        ]
        for (status, answer), want_status, want_code in cases:
            assert (status, answer["errors"][0]["code"]) == (want_status, want_code), answer
            assert VALIDATORS["error"].is_valid(answer) and answer["type"] == "error.list" and answer["request_id"]
        with fake.cond:
            fake.plan_restricted = True
        status, answer = call(fake, "POST", f"/conversations/{cid}/reply", good)
        assert (status, answer["errors"][0]["code"]) == (403, "api_plan_restricted")
        with fake.cond:
            fake.plan_restricted = False
        status, answer = call(fake, "POST", f"/conversations/{cid}/reply", good)
        assert status == 200 and answer["type"] == "conversation" and answer["id"] == cid
        assert [op for op, _, _ in fake.calls] == ["reply"], "only the valid call was taken"
    finally:
        fake.stop()
