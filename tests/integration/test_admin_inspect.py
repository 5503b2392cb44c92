"""The operator's view of live conversations: GET /admin/conversations (paged, by state),
GET /admin/conversations/{key} (handoff, route decision, hub data keys, recent events),
POST .../end and .../return-to-bot, and `handoffd ctl` doing the same over the API.
Message text never shows unless admin.show_content is set.

Setup (relay_env.Environment): the Direct Line emulator and its scripted bot, the generic
webhook hub's fake, handoffd between them with an admin token.
"""
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import BIN
from relay_env import Environment, close_cleanly

TOKEN = "inspect-token-0123456789"
ADMIN = f'admin = {{ token = "{TOKEN}" }},'


@pytest.fixture
def env(tmp_path):
    e = Environment(BIN, tmp_path, extra_config=ADMIN)
    yield e
    close_cleanly(e)


def admin(port, method, path, token=TOKEN):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def conv_path(key, suffix=""):
    return "/admin/conversations/" + urllib.parse.quote(key, safe="") + suffix


def ctl(env, *args):
    return subprocess.run([BIN, "ctl", "-c", "config.lua", "--url", f"http://127.0.0.1:{env.port}", *args],
                          cwd=env.workdir, capture_output=True, text=True, timeout=30)


def start_handoff(env, cid):
    env.hub.message(env.port, cid, "hello")
    env.hub.wait_messages(cid, 2)
    env.hub.message(env.port, cid, "My order is late, I want a human")
    env.hub.wait_handoff(cid)
    env.daemon.wait_line(f"handoff.delivered conv=webhook:{cid}")


def test_list_and_detail_without_message_text(env):
    start_handoff(env, "c-1")
    env.hub.message(env.port, "c-2", "just a question")
    env.hub.wait_messages("c-2", 2)
    assert admin(env.port, "GET", "/admin/conversations", token=None)[0] == 401
    assert admin(env.port, "GET", "/admin/conversations", token="wrong-token-0123456789")[0] == 401

    status, body = admin(env.port, "GET", "/admin/conversations")
    assert status == 200
    listed = json.loads(body)
    assert listed["total"] == 2 and listed["next"] is None
    rows = {c["key"]: c for c in listed["conversations"]}
    assert [c["key"] for c in listed["conversations"]] == ["webhook:c-1", "webhook:c-2"]
    assert rows["webhook:c-1"]["state"] == "routing" and rows["webhook:c-2"]["state"] == "bot"
    assert rows["webhook:c-1"]["stream"] in ("streaming", "parked")
    assert rows["webhook:c-1"]["queued"] == {"to_bot": 0, "to_hub": 0}
    assert rows["webhook:c-1"]["age"] >= 0 and rows["webhook:c-1"]["last_to_hub"] > 0
    assert rows["webhook:c-1"]["last_to_bot"] > 0

    # by state, and a page at a time
    routing = json.loads(admin(env.port, "GET", "/admin/conversations?state=routing")[1])
    assert [c["key"] for c in routing["conversations"]] == ["webhook:c-1"]
    assert admin(env.port, "GET", "/admin/conversations?state=nonsense")[0] == 400
    page = json.loads(admin(env.port, "GET", "/admin/conversations?limit=1")[1])
    assert [c["key"] for c in page["conversations"]] == ["webhook:c-1"] and page["next"] == "webhook:c-1"
    page = json.loads(admin(env.port, "GET", "/admin/conversations?limit=1&after=webhook%3Ac-1")[1])
    assert [c["key"] for c in page["conversations"]] == ["webhook:c-2"] and page["next"] is None

    status, body = admin(env.port, "GET", conv_path("webhook:c-1"))
    assert status == 200
    detail = json.loads(body)
    assert detail["handoff_id"].startswith("h-")
    assert detail["route"]["queue"] == "orders" and detail["route"]["rule"] == 1 and not detail["route"]["fallback"]
    assert isinstance(detail["data_keys"], list) and "data" not in detail and "user" not in detail
    kinds = [e["event"] for e in detail["events"]]
    assert kinds[0] == "opened"
    assert kinds.index("handoff") < kinds.index("routed") < kinds.index("escalated")
    assert next(e for e in detail["events"] if e["event"] == "routed")["detail"] == "queue=orders: rule 1 matched"
    assert "My order is late" not in body and "hello" not in body, "no message text"
    assert admin(env.port, "GET", conv_path("webhook:nope"))[0] == 404


def test_operator_unsticks_conversations(env):
    start_handoff(env, "c-3")
    # the desk never answers: the operator gives the customer back to the bot
    assert admin(env.port, "POST", conv_path("webhook:c-3", "/return-to-bot"))[0] == 200
    env.daemon.wait_line("conv.state conv=webhook:c-3 from=routing to=bot")
    assert admin(env.port, "POST", conv_path("webhook:c-3", "/return-to-bot"))[0] == 409, "no handoff now"
    detail = json.loads(admin(env.port, "GET", conv_path("webhook:c-3"))[1])
    assert detail["state"] == "bot" and detail["events"][-1]["event"] in ("state", "completed")
    assert admin(env.port, "POST", conv_path("webhook:c-3", "/end"))[0] == 200
    env.daemon.wait_line("conv.state conv=webhook:c-3 from=bot to=ending")
    assert admin(env.port, "POST", conv_path("webhook:c-3", "/nonsense"))[0] == 404
    assert admin(env.port, "POST", conv_path("webhook:none", "/end"))[0] == 404
    env.emu.ctl.wait_count(env.dl_conversation("c-3"), "received", 3, timeout=20)
    received = [a["value"]["state"] if a.get("name") == "handoff.status" else a["type"]
                for a in env.bot_received("c-3")]
    assert "completed" in received, "the bot is told the handoff is over"


def test_ctl_talks_to_the_daemon(env):
    start_handoff(env, "c-4")
    out = ctl(env, "conversations", "--state", "routing")
    assert out.returncode == 0, out.stderr
    assert [c["key"] for c in json.loads(out.stdout)["conversations"]] == ["webhook:c-4"]
    out = ctl(env, "show", "webhook:c-4")
    assert out.returncode == 0 and json.loads(out.stdout)["route"]["queue"] == "orders"
    out = ctl(env, "show", "webhook:unknown")
    assert out.returncode == 1 and "no such conversation" in out.stderr
    assert ctl(env, "return-to-bot", "webhook:c-4").returncode == 0
    env.daemon.wait_line("conv.state conv=webhook:c-4 from=routing to=bot")
    assert ctl(env, "end", "webhook:c-4").returncode == 0
    env.daemon.wait_line("conv.state conv=webhook:c-4 from=bot to=ending")
    out = ctl(env, "reload")
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True
    assert ctl(env, "frobnicate").returncode == 2
    # without --url, a config listening on port 0 cannot say where the daemon is
    out = subprocess.run([BIN, "ctl", "-c", "config.lua", "reload"], cwd=env.workdir, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and "--url" in out.stderr


def test_show_content_adds_the_customer_and_data(tmp_path):
    env = Environment(BIN, tmp_path, extra_config=f'admin = {{ token = "{TOKEN}", show_content = true }},')
    try:
        env.hub.message(env.port, "c-5", "hello", name="Dana")
        env.hub.wait_messages("c-5", 2)
        detail = json.loads(admin(env.port, "GET", conv_path("webhook:c-5"))[1])
        assert detail["user"]["name"] == "Dana" and "data" in detail
    finally:
        assert env.close() == 0


def test_hub_data_shows_its_keys_only(tmp_path):
    """Chatwoot's hub keeps its steps in conv.data: the detail names them, no values."""
    from fake_chatwoot import ACCOUNT, FakeChatwoot
    from hub_env import AGENT_ROUTES, HubEnv

    def lines(cw):
        return (f'hub = {{ module = "hubs.chatwoot", url = "{cw.url}", account_id = {ACCOUNT}, '
                f'token = "{cw.token}", secret = "{cw.secret}", teams = {{ orders = 3 }} }},')
    env = HubEnv(tmp_path, FakeChatwoot(), "chatwoot", lines, AGENT_ROUTES, extra_config=ADMIN)
    try:
        cw = env.hub
        cid = cw.new_conversation(contact_id=55, name="Dana")
        assert cw.customer(cid, "My order is late, I want a human")[0] == 200
        cw.wait(lambda s: s.status(cid) == "open", what="the conversation opened")
        env.daemon.wait_line("handoff.delivered")
        status, body = admin(env.port, "GET", conv_path(f"chatwoot:{cid}"))
        assert status == 200
        detail = json.loads(body)
        assert set(detail["data_keys"]) >= {"handoff", "done"}
        assert detail["handoff_id"] not in json.dumps(detail["data_keys"]), "names only, not values"
        assert "data" not in detail
    finally:
        assert env.close() == 0
