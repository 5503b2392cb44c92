"""Self-tests of the Direct Line emulator (tests/dlemu), the ground truth of the C client.

Setup: one emulator process on 127.0.0.1 (ports chosen at run time, plain and TLS, plus a
TLS listener with a certificate for another host), started with `python3 -m tests.dlemu`
and stopped by closing its stdin. Each test talks to it with aiohttp's client over real
sockets and checks the wire: status codes, error bodies, ActivitySets and watermarks.
"""
import asyncio
import json
import os
import ssl
import sys

import aiohttp
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.dlemu.control import spawn  # noqa: E402

DEADLINE = 5.0


@pytest.fixture(scope="module")
def emu():
    with spawn(wrong_tls_port=0) as e:
        yield e
    assert e.proc.returncode == 0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


class Client:
    """A minimal Direct Line client: just enough to drive the emulator from a test."""

    def __init__(self, session, info, base="http_base"):
        self.s, self.info, self.base = session, info, info[base]
        self.ssl = ssl.create_default_context(cafile=info["ca_file"])
        self.token = None

    def auth(self, credential=None):
        return {"Authorization": "Bearer " + (credential or self.token)}

    async def call(self, method, path, credential=None, base=None, **kw):
        async with self.s.request(method, (base or self.base) + path, ssl=self.ssl,
                                  headers=self.auth(credential), **kw) as r:
            return r.status, await r.json(), r.headers

    async def start(self):
        status, tok, _ = await self.call("POST", "/tokens/generate", self.info["secret"])
        assert status == 200 and tok["expires_in"] == 1800
        self.token = tok["token"]
        status, conv, _ = await self.call("POST", "/conversations")
        assert status == 201 and conv["conversationId"] == tok["conversationId"]
        return conv

    async def post(self, cid, **activity):
        activity.setdefault("type", "message")
        activity.setdefault("from", {"id": "dl_tester"})
        return await self.call("POST", "/conversations/%s/activities" % cid, json=activity)

    async def connect(self, url):
        return await self.s.ws_connect(url, ssl=self.ssl, autoping=False)


async def next_set(ws):
    """The next ActivitySet on the socket, skipping typing-only sets."""
    while True:
        msg = await ws.receive(timeout=DEADLINE)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        body = json.loads(msg.data)
        if any(a["type"] != "typing" for a in body["activities"]):
            return body


def test_conversation_streams_echo_and_replies_over_ws_then_wss(emu):
    """Start (201, then 200 with the same token), stream over ws, post a question: the echo
    keeps clientActivityID, the bot greets and answers, watermarks advance. Reconnect over
    https: a wss:// streamUrl that replays after the watermark; the old socket is closed
    with reason "collision"."""
    async def scenario():
        async with aiohttp.ClientSession() as s:
            c = Client(s, emu.info)
            conv = await c.start()
            cid = conv["conversationId"]
            assert conv["streamUrl"].startswith("ws://127.0.0.1:%d/" % emu.info["http_port"])
            assert (await c.call("POST", "/conversations"))[0] == 200
            ws = await c.connect(conv["streamUrl"])
            status, ack, _ = await c.post(cid, text="What are your opening hours?",
                                          channelData={"clientActivityID": "cli-1"})
            assert status == 200 and ack["id"] == cid + "|0000000"
            echo = await next_set(ws)
            assert echo["activities"][0]["channelData"]["clientActivityID"] == "cli-1"
            reply = await next_set(ws)
            texts = [a["text"] for a in reply["activities"]]
            assert texts[0].startswith("Hello") and "Monday to Friday" in texts[1]
            assert int(reply["watermark"]) > int(echo["watermark"]) >= 1

            status, info, _ = await c.call("GET", "/conversations/%s?watermark=%s" % (cid, echo["watermark"]),
                                           base=emu.info["https_base"])
            assert status == 200
            assert info["streamUrl"].startswith("wss://127.0.0.1:%d/" % emu.info["tls_port"])
            wss = await c.connect(info["streamUrl"])
            replay = await next_set(wss)
            assert [a["id"] for a in replay["activities"]] == [a["id"] for a in reply["activities"]]
            closed = await ws.receive(timeout=DEADLINE)
            assert (closed.type, closed.data, closed.extra) == (aiohttp.WSMsgType.CLOSE, 1000, "collision")
            await wss.close()
        assert [a["text"] for a in emu.ctl.received(cid)] == ["What are your opening hours?"]
    run(scenario())


def test_handoff_carries_the_real_transcript_and_status_is_recorded(emu):
    """"I want a human" -> one ActivitySet: the transfer message, then handoff.initiate whose
    context names this conversation and whose Transcript holds what was said. The client's
    handoff.status event reaches the bot."""
    async def scenario():
        async with aiohttp.ClientSession() as s:
            c = Client(s, emu.info)
            conv = await c.start()
            cid = conv["conversationId"]
            ws = await c.connect(conv["streamUrl"])
            await c.post(cid, type="event", name="startConversation")
            assert (await next_set(ws))["activities"][0]["name"] == "startConversation"   # echo
            assert (await next_set(ws))["activities"][0]["text"].startswith("Hello")
            await c.post(cid, text="I want to talk to a human please")
            await next_set(ws)      # echo
            acts = (await next_set(ws))["activities"]
            assert [a["type"] for a in acts] == ["message", "event"]
            event = acts[1]
            assert event["name"] == "handoff.initiate" and event["value"]["va_ConversationId"] == cid
            transcript = event["attachments"][0]
            assert transcript["name"] == "Transcript"
            said = [a.get("text") for a in transcript["content"]["activities"]]
            assert "I want to talk to a human please" in said and said[-1].startswith("Transferring")
            await c.post(cid, type="event", name="handoff.status", value={"state": "accepted"})
            await ws.close()
        emu.ctl.wait_count(cid, "received", 3)
        assert emu.ctl.received(cid)[-1]["value"] == {"state": "accepted"}
    run(scenario())


def test_token_and_stream_expiry_and_bad_credentials_are_enforced(emu):
    """With token_ttl and stream_ttl of 1 s: the token works, then POST answers 403
    TokenExpired, refresh is refused the same way, and the stale streamUrl's handshake gets
    403. A wrong secret is 403, no Authorization 401; all of them are listed."""
    emu.ctl.settings(token_ttl=1, stream_ttl=1)
    before = len(emu.ctl.auth_failures())

    async def scenario():
        async with aiohttp.ClientSession() as s:
            c = Client(s, emu.info)
            status, tok, _ = await c.call("POST", "/tokens/generate", emu.info["secret"])
            c.token = tok["token"]
            conv = (await c.call("POST", "/conversations"))[1]
            assert tok["expires_in"] == 1 and (await c.post(conv["conversationId"], text="hi"))[0] == 200
            status, body = await until_refused(c, conv["conversationId"])
            assert status == 403 and body["error"]["code"] == "TokenExpired"
            status, body, _ = await c.call("POST", "/tokens/refresh")
            assert status == 403 and body["error"]["code"] == "TokenExpired"
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await c.connect(conv["streamUrl"])
            assert e.value.status == 403
            assert (await c.call("POST", "/tokens/generate", "not-the-secret"))[0] == 403
            async with s.post(c.base + "/conversations") as r:
                assert r.status == 401
    try:
        run(scenario())
    finally:
        emu.ctl.settings(token_ttl=1800, stream_ttl=60)
    reasons = [f["reason"] for f in emu.ctl.auth_failures()[before:]]
    assert reasons.count("token expired") == 2 and "stream token expired" in reasons
    assert "invalid token or secret" in reasons and "missing or malformed Authorization" in reasons


async def until_refused(c, cid):
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while asyncio.get_running_loop().time() < deadline:
        status, body, _ = await c.post(cid, text="still there?")
        if status != 200:
            return status, body
        await asyncio.sleep(0.1)
    return 200, None


def test_faults_paging_post_502_handshake_429_and_abrupt_drop(emu):
    """F15 a 502 POST that still reached the log; control-driven bot messages seq-1..seq-5;
    F19 pages of 2 until an empty page, each once and in order; F12 a 429 handshake with
    Retry-After; F1 an abrupt drop (the client sees no close frame)."""
    async def scenario():
        async with aiohttp.ClientSession() as s:
            c = Client(s, emu.info)
            conv = await c.start()
            cid = conv["conversationId"]
            emu.ctl.settings(conversation=cid, page_size=2, bot_enabled=False)
            emu.ctl.fail("post", {"status": 502}, conversation=cid)
            status, body, _ = await c.post(cid, text="one")
            assert status == 502 and body["error"]["code"] == "BotError"
            emu.ctl.bot(cid, seq=5)
            pages, watermark = [], "0"
            while True:
                path = "/conversations/%s/activities?watermark=%s" % (cid, watermark)
                page = (await c.call("GET", path))[1]
                if not page["activities"]:
                    break
                pages.append([a.get("text") for a in page["activities"]])
                watermark = page["watermark"]
            assert pages == [["one", "seq-1"], ["seq-2", "seq-3"], ["seq-4", "seq-5"]]

            emu.ctl.fail("handshake", {"status": 429, "retry_after": 2}, conversation=cid)
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await c.connect(conv["streamUrl"])
            assert e.value.status == 429 and e.value.headers["Retry-After"] == "2"
            ws = await c.connect(conv["streamUrl"])
            assert [a.get("text") for a in (await next_set(ws))["activities"]] == ["one", "seq-1"]
            assert emu.ctl.drop(cid)["sockets"] == 1
            while True:
                msg = await ws.receive(timeout=DEADLINE)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
            assert msg.type == aiohttp.WSMsgType.CLOSED     # no CLOSE frame came first
    run(scenario())


def test_wrong_host_certificate_is_refused_by_a_verifying_client(emu):
    """The same CA signs both listeners' certificates; only the host name differs."""
    async def scenario():
        async with aiohttp.ClientSession() as s:
            c = Client(s, emu.info)
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await c.call("POST", "/tokens/generate", emu.info["secret"],
                             base=emu.info["wrong_https_base"])
            assert (await c.call("POST", "/tokens/generate", emu.info["secret"],
                                 base=emu.info["https_base"]))[0] == 200
    run(scenario())


def test_copilot_token_and_regional_base(emu):
    """F28: the Copilot token endpoint gives a conversation-bound token; regional settings
    advertise /europe/, and a conversation started there is counted under that base."""
    async def scenario():
        async with aiohttp.ClientSession() as s:
            origin = emu.info["http_origin"]
            q = "?api-version=2022-03-01-preview"
            async with s.get(origin + "/powervirtualagents/botsbyschema/cr_bot/directline/token" + q) as r:
                tok = await r.json()
                assert r.status == 200 and tok["expires_in"] == 1800 and tok["conversationId"]
            async with s.get(origin + "/powervirtualagents/regionalchannelsettings" + q) as r:
                url = (await r.json())["channelUrlsById"]["directline"]
                assert url == origin + "/europe/"
            c = Client(s, {**emu.info, "http_base": url + "v3/directline"})
            c.token = tok["token"]
            status, conv, _ = await c.call("POST", "/conversations")
            assert status == 201 and conv["conversationId"] == tok["conversationId"]
            assert "/europe/v3/directline/" in conv["streamUrl"]
    before = emu.ctl.stats()["requests_by_base"].get("/europe/v3/directline", 0)
    run(scenario())
    assert emu.ctl.stats()["requests_by_base"]["/europe/v3/directline"] == before + 1
