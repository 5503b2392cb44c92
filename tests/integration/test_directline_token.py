"""Direct Line credentials: token refresh across a conversation much longer than a token
lives (F13), refresh failures (F14), the three kinds of credentials (secret, fixed token,
Copilot Studio token endpoint with regional discovery, F28), certificate verification, and
no secret or token in any log line.

Setup: emulators with short token lifetimes (they enforce expiry: a token used after it
expired is refused with 403 TokenExpired and shows in the emulator's auth failures), one
dl_driver per test.
"""
import http.server
import json
import re
import threading
import urllib.request

import pytest

from dldriver import (JWT_HEADER, check_exactly_once, check_received, driver_factory, emu,  # noqa: F401
                      long_token_emu, short_emu, spawn, texts)


def refreshes(drv, key):
    return [e for e in drv.events if e["ev"] == "persist" and e["key"] == key and e.get("token")]


def next_token(drv, key, after):
    """Waits for a persisted token other than the ones in AFTER; returns the event."""
    return drv.wait_for(lambda e: e["ev"] == "persist" and e["key"] == key and e.get("token")
                        and e["token"] not in after, timeout=10)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("emulator", ["short_emu", "long_token_emu"])
def test_f13_conversation_across_many_token_lifetimes(request, driver_factory, emulator, transport):
    """F13: a conversation three token lifetimes long (six refreshes): each token is
    refreshed before it expires, sends and the receive path keep working across refreshes
    and a reconnect, and the service never sees an expired token. Also with tokens as long
    as Direct Line's (long_token_emu)."""
    dlemu = request.getfixturevalue(emulator)
    ctl = dlemu.ctl
    drv = driver_factory(emulator=dlemu, transport=transport)
    cid = drv.open("k1")
    seen = set(drv.tokens())
    if emulator == "long_token_emu":
        assert min(len(t) for t in seen) >= 1100
    sent = []
    for i in range(6):      # paced by refreshes, ~1.5 s each
        seen.add(next_token(drv, "k1", seen)["token"])
        drv.send("k1", "t%d" % i, "message %d" % i)
        sent.append("message %d" % i)
        ctl.bot(cid, seq=1, prefix="round%d-" % i)
        if i == 2 and transport == "websocket":
            ctl.drop(cid)   # the reconnect must use a refreshed token
    for i in range(6):
        assert drv.sent("t%d" % i)["err"] == 0
    check_exactly_once(drv, ctl, "k1", cid)
    check_received(ctl, cid, sent)
    assert ctl.auth_failures() == []
    assert "token_reacquired" not in drv.log()
    # A reconnect also hands out a token (adopted), so at least five came by refresh.
    assert len([l for l in drv.log().splitlines() if "directline.token_refreshed" in l]) >= 5


@pytest.fixture(scope="module")
def oversized_token_emu():
    """Tokens of about 9,000 characters: over the 8,192 bytes the client takes."""
    with spawn(settings={"token_size": 9000}) as e:
        yield e


def test_a_token_over_the_limit_is_refused_with_the_reason(driver_factory, oversized_token_emu):
    """A token longer than the client takes is not adopted, cut or sent back: the start
    fails, is retried, and the log line says why (a 200 alone would not)."""
    drv = driver_factory(emulator=oversized_token_emu)
    drv.cmd("open", "k1")
    drv.wait_log('step=generate status=200 err="no usable token in the answer (none, or over 8192 bytes)"')
    drv.wait_log('reason="start failed" attempt=2')   # the second refusal: retried, not given up
    assert not drv.tokens()
    assert "directline.started" not in drv.log()
    stats = oversized_token_emu.ctl.stats()
    assert stats.get("tokens_generated", 0) >= 2    # asked again after the first was refused
    assert stats.get("conversations_started", 0) == 0


def test_f14_refresh_fails_twice_then_succeeds(driver_factory, short_emu):
    """F14: refresh answers 500 twice, then 200: retried before expiry, nothing else
    changes, no expired token reaches the service."""
    ctl = short_emu.ctl
    drv = driver_factory(emulator=short_emu)
    cid = drv.open("k1")
    ctl.fail("refresh", {"status": 500}, {"status": 500}, conversation=cid)
    seen = set(drv.tokens())
    seen.add(next_token(drv, "k1", seen)["token"])
    next_token(drv, "k1", seen)
    log = drv.log()
    assert log.count("directline.refresh_failed") == 2
    assert "token_reacquired" not in log
    drv.send("k1", "t1", "still here")
    assert drv.sent("t1")["err"] == 0
    check_received(ctl, cid, ["still here"])
    assert ctl.auth_failures() == []


def test_f14_refresh_refused_as_expired_is_reacquired(driver_factory, short_emu):
    """F14: refresh answers 403 TokenExpired: a new token is acquired with the secret for
    the same conversation, which carries on."""
    ctl = short_emu.ctl
    drv = driver_factory(emulator=short_emu)
    cid = drv.open("k1")
    ctl.fail("refresh", {"status": 403, "code": "TokenExpired"}, conversation=cid)
    drv.wait_log("directline.token_reacquired")
    ctl.bot(cid, seq=2)
    drv.send("k1", "t1", "same conversation")
    assert drv.sent("t1")["err"] == 0
    check_received(ctl, cid, ["same conversation"])
    check_exactly_once(drv, ctl, "k1", cid)
    assert {e["conv"] for e in drv.events if e.get("conv")} == {cid}


def generate_token(emu):
    req = urllib.request.Request(emu.info["http_base"] + "/tokens/generate", data=b"{}", method="POST",
                                 headers={"Authorization": "Bearer " + emu.info["secret"],
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_fixed_token(driver_factory, emu):
    """A fixed token from the config starts its conversation and is refreshed."""
    ctl = emu.ctl
    given = generate_token(emu)
    drv = driver_factory(secret=None, token=given["token"])
    cid = drv.open("k1")
    assert cid == given["conversationId"]
    drv.send("k1", "t1", "hi")
    assert drv.sent("t1")["err"] == 0
    check_received(ctl, cid, ["hi"])
    assert given["token"] not in drv.log()


def test_f28_copilot_token_endpoint_and_regional_base(driver_factory, emu):
    """F28: a Copilot Studio token endpoint and regionalchannelsettings: every Direct Line
    call goes to the advertised regional base (the configured base is wrong on purpose)."""
    ctl = emu.ctl
    origin = emu.info["http_origin"]
    token_url = origin + "/powervirtualagents/botsbyschema/cr123_bot/directline/token?api-version=2022-03-01-preview"
    before = ctl.stats()["requests_by_base"].get("/europe/v3/directline", 0)
    drv = driver_factory(secret=None, token_url=token_url, regional_discovery=True,
                         base=origin + "/nowhere/v3/directline")
    cid = drv.open("k1")
    drv.send("k1", "t1", "regional hello")
    assert drv.sent("t1")["err"] == 0
    check_received(ctl, cid, ["regional hello"])
    stats = ctl.stats()
    assert stats["requests_by_base"]["/europe/v3/directline"] - before >= 2
    assert "/nowhere" not in stats["requests_by_base"]
    assert "base=%s/europe/v3/directline" % origin in drv.log()


@pytest.mark.parametrize("base,ca", [("wrong_https_base", True), ("https_base", False)])
def test_wrong_certificate_is_refused(driver_factory, emu, base, ca):
    """TLS verification is on: a certificate for another host, or one from a CA we were
    not told to trust, is refused and nothing is sent over it."""
    before = emu.ctl.stats()["requests_by_base"].get("/v3/directline", 0)
    drv = driver_factory(base=base, **({} if ca else {"ca_file": None}))
    drv.cmd("open", "k1")
    drv.wait_log('step=generate status=0 err="tls error"')
    assert [s for s, _ in drv.states("k1")] == []     # still connecting, never online
    assert emu.ctl.stats()["requests_by_base"].get("/v3/directline", 0) == before


class StreamElsewhere(http.server.BaseHTTPRequestHandler):
    """Plain-HTTP Direct Line REST whose streamUrl points at STREAM (a wss listener)."""
    stream = None

    def answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200 if self.command == "GET" or "generate" in self.path else 201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answer({"conversationId": "c1", "token": "tok-" + "x" * 20, "expires_in": 1800,
                     "streamUrl": self.stream})

    def do_GET(self):
        if "/activities" in self.path:
            self.answer({"activities": [], "watermark": "0"})
        else:
            self.answer({"conversationId": "c1", "token": "tok-" + "x" * 20, "streamUrl": self.stream})

    def log_message(self, *args):
        pass


def test_stream_with_a_wrong_certificate_is_refused(driver_factory, emu):
    """The stream itself verifies its certificate: REST answers from a plain listener send
    the socket to the emulator's wss listener whose certificate names another host. The
    handshake never completes, and the client keeps receiving by polling instead."""
    StreamElsewhere.stream = "wss://127.0.0.1:%d/v3/directline/conversations/c1/stream?t=abc" % \
        emu.info["wrong_tls_port"]
    rest = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StreamElsewhere)
    threading.Thread(target=rest.serve_forever, daemon=True).start()
    try:
        before = emu.ctl.stats().get("ws_handshakes", 0)
        drv = driver_factory(base="http://127.0.0.1:%d/v3/directline" % rest.server_port)
        drv.cmd("open", "k1")
        assert drv.wait_state("k1", "online")["reason"] == "polling fallback"
        refusals = [l for l in drv.log().splitlines() if "stream refused: tls" in l]
        assert refusals and all("certificate verify failed" in l for l in refusals)
        assert emu.ctl.stats().get("ws_handshakes", 0) == before
    finally:
        rest.shutdown()


def test_no_secret_or_token_in_logs(driver_factory, short_emu):
    """At debug level, through start, refreshes, a reconnect, a catch-up GET and sends: the
    log never holds the secret, a token, a streamUrl's t= value or an Authorization."""
    ctl = short_emu.ctl
    drv = driver_factory(emulator=short_emu, log_level="debug")
    cid = drv.open("k1")
    seen = set(drv.tokens())
    for i in range(3):
        seen.add(next_token(drv, "k1", seen)["token"])
        ctl.frames([{"text": "{bad"}], conversation=cid)
        mark = drv.mark()
        ctl.drop(cid)
        drv.wait_state("k1", "online", start=mark)
        drv.send("k1", "t%d" % i, "m%d" % i)
        assert drv.sent("t%d" % i)["err"] == 0
    check_exactly_once(drv, ctl, "k1", cid)
    drv.stop()
    log = drv.log()
    assert "http.done" in log and "websocket.open" in log      # debug lines were written
    assert short_emu.info["secret"] not in log
    assert len(seen) >= 4 and not [t for t in seen if t in log]
    assert JWT_HEADER not in log
    assert not re.search(r"[?&]t=(?!\*\*\*)", log)
    assert "Bearer" not in log and "Authorization" not in log


def test_resumed_token_is_refreshed(driver_factory, short_emu):
    """A token given back by the store (a restart) is refreshed before it expires, like
    one the client got itself. (Polling: no reconnect GET hands out a token meanwhile.)"""
    ctl = short_emu.ctl
    drv = driver_factory(emulator=short_emu, transport="polling")
    cid = drv.open("k1")
    drv.cmd("close", "k1")
    mark = drv.mark()
    drv.cmd("reopen", "k1")
    drv.wait_state("k1", "online", start=mark)
    seen = set(drv.tokens())
    for _ in range(2):
        seen.add(next_token(drv, "k1", seen)["token"])
    drv.send("k1", "t1", "after two refreshes")
    assert drv.sent("t1")["err"] == 0
    check_received(ctl, cid, ["after two refreshes"])
    assert ctl.auth_failures() == []
    assert "token_reacquired" not in drv.log()
