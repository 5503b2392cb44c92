"""Direct Line send path: faults F10 and F15-F18 of shared/directline.md section 8, each
over the WebSocket stream and over polling (parity).

Setup: one emulator per module, one dl_driver per test. The emulator's control API queues
a failure for the conversation's next POST; the test then checks what the bot received
(exactly once, in our order) and what the driver reported for each send.
"""
import json
import urllib.request

import pytest

from dldriver import check_exactly_once, check_received, driver_factory, emu, settle, texts  # noqa: F401

TRANSPORTS = ["websocket", "polling"]


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


def test_f10_reply_before_echo(driver_factory, emu, transport):
    """F10: the bot's answer overtakes the echo of our message by 500 ms: the answer is
    dispatched at once, the late echo is recognised as ours and dropped."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    ctl.settings(conversation=cid, echo_delay_ms=500)
    drv.send("k1", "t1", "hello bot")
    assert drv.sent("t1")["err"] == 0
    ctl.wait_count(cid, "activities", 3)
    check_exactly_once(drv, ctl, "k1", cid)
    assert texts(drv, "k1")[-1] == "You said: hello bot"      # after the greeting
    if transport == "websocket":
        drv.wait_stat("echoes", 1)      # the late echo came over the stream and was dropped
    check_received(ctl, cid, ["hello bot"])


@pytest.mark.parametrize("failure", [
    {"status": 502, "code": "BotError"},
    {"status": 504},
    {"drop": True},
])
def test_f15_unknown_outcome_echo_found(driver_factory, emu, transport, failure):
    """F15: the POST reached the bot, then 502/504 or a reset connection: the echo proves
    it arrived, so nothing is sent twice and the send succeeds."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport, echo_grace=1)
    cid = drv.open("k1")
    ctl.fail("post", failure, conversation=cid)
    drv.send("k1", "t1", "first")
    drv.send("k1", "t2", "second")
    assert drv.sent("t1")["err"] == 0
    assert drv.sent("t2")["err"] == 0
    check_received(ctl, cid, ["first", "second"])
    check_exactly_once(drv, ctl, "k1", cid)


def test_f15_unknown_outcome_echo_absent_resends_once(driver_factory, emu, transport):
    """F15: 502 and the activity did not reach the bot: no echo within the grace period,
    a catch-up GET finds none, one resend."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    ctl.fail("post", {"status": 502, "record": False}, conversation=cid)
    drv.send("k1", "t1", "lost once")
    drv.send("k1", "t2", "after it")
    assert drv.sent("t1")["err"] == 0
    assert drv.sent("t2")["err"] == 0
    check_received(ctl, cid, ["lost once", "after it"])
    assert drv.metric("handoffd_directline_resends_total") == 1
    assert drv.metric("handoffd_directline_echo_timeouts_total") == 1


def test_f15_unconfirmed_twice_is_reported(driver_factory, emu, transport):
    """F15: both the POST and its single resend end unknown and unseen: reported as
    "unconfirmed", never sent a third time; the queue goes on."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    ctl.fail("post", {"status": 504, "record": False}, {"status": 504, "record": False}, conversation=cid)
    drv.send("k1", "t1", "doomed")
    drv.send("k1", "t2", "fine")
    e = drv.sent("t1")
    assert (e["err"], e["reason"]) == (-110, "unconfirmed")
    assert drv.sent("t2")["err"] == 0
    check_received(ctl, cid, ["fine"])


def test_f16_throttled_post_waits_and_keeps_order(driver_factory, emu, transport):
    """F16: 429 with Retry-After 1 on the first POST: it waits at least that long, sends
    once, and the activities queued behind it keep their order."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    ctl.fail("post", {"status": 429, "retry_after": 1}, conversation=cid)
    for i in range(1, 5):
        drv.send("k1", "t%d" % i, "m%d" % i)
    outcomes = [drv.sent("t%d" % i) for i in range(1, 5)]
    assert [o["err"] for o in outcomes] == [0, 0, 0, 0]
    assert [e["tag"] for e in drv.events if e["ev"] == "sent"] == ["t1", "t2", "t3", "t4"]
    check_received(ctl, cid, ["m1", "m2", "m3", "m4"])
    assert drv.metric('handoffd_directline_http_errors_total{code="429"}') == 1


def test_f16_server_error_and_pre_send_failure_retried(driver_factory, emu, transport):
    """500 is retried with backoff; so is a request that never reached the service."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    ctl.fail("post", {"status": 500}, {"status": 500}, conversation=cid)
    drv.send("k1", "t1", "eventually")
    assert drv.sent("t1")["err"] == 0
    check_received(ctl, cid, ["eventually"])


@pytest.mark.parametrize("status,reason,err", [
    (400, "bad request", -22),
    (403, "forbidden", -1),
])
def test_f17_refusals_are_not_retried(driver_factory, emu, transport, status, reason, err):
    """F17: 400 and a 403 that is not about expiry: reported at once, not retried, and the
    next activity goes through."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    before = ctl.stats().get("posts", 0)
    ctl.fail("post", {"status": status}, conversation=cid)
    drv.send("k1", "t1", "refused")
    drv.send("k1", "t2", "accepted")
    e = drv.sent("t1")
    assert (e["err"], e["reason"]) == (err, reason)
    assert drv.sent("t2")["err"] == 0
    assert ctl.stats()["posts"] - before == 2
    check_received(ctl, cid, ["accepted"])


def test_f17_not_found_ends_the_conversation(driver_factory, emu, transport):
    """F17: 404 on a POST: reported, the conversation ends, later sends are refused."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    ctl.fail("post", {"status": 404}, conversation=cid)
    drv.batch(("send", "k1", "t1", "nobody home"), ("send", "k1", "t2", "queued behind"))
    assert (drv.sent("t1")["reason"], drv.sent("t2")["reason"]) == ("not found", "ended")
    assert drv.wait_state("k1", "ended")["reason"] == "not found"
    drv.send("k1", "t3", "too late")
    assert drv.sent("t3")["ev"] == "refused"
    check_received(ctl, cid, [])


def test_f17_expired_token_on_post_is_reacquired(driver_factory, emu, transport):
    """403 TokenExpired on a POST is not the activity's fault: a new token, then the same
    activity once."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    ctl.fail("post", {"status": 403, "code": "TokenExpired"}, conversation=cid)
    drv.send("k1", "t1", "with a new token")
    assert drv.sent("t1")["err"] == 0
    check_received(ctl, cid, ["with a new token"])
    assert "directline.token_reacquired" in drv.log()


def test_f18_slow_bot_ack_within_post_timeout(driver_factory, emu):
    """F18: the bot takes 14 s to acknowledge; our POST timeout (20 s by default, above the
    service's 15 s) waits for it: one POST, success, no resend."""
    ctl = emu.ctl
    drv = driver_factory(post_timeout=20)
    cid = drv.open("k1")
    ctl.settings(conversation=cid, post_delay_ms=14000)
    before = ctl.stats().get("posts", 0)
    drv.send("k1", "t1", "take your time")
    assert drv.sent("t1", timeout=30)["err"] == 0
    assert ctl.stats()["posts"] - before == 1
    check_received(ctl, cid, ["take your time"])
    check_exactly_once(drv, ctl, "k1", cid)


def test_outbound_activities_get_our_from_and_client_id(driver_factory, emu):
    """Whatever the caller's activity holds, the bot sees our user in `from` and a fresh
    clientActivityID, with the caller's other channelData kept; what is not an activity
    object is refused before anything is sent."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    drv.send_json("k1", "a", {"type": "message", "text": "a", "from": {"id": "spoof", "name": "n"},
                              "channelData": {"foo": {"bar": [1, 2]}, "clientActivityID": "theirs"}})
    drv.send_json("k1", "b", {"channelData": {}, "text": "b", "type": "message"})
    drv.send_json("k1", "c", {"type": "message", "text": "c", "channelData": "not an object"})
    drv.send_json("k1", "d", {"type": "event", "name": "custom", "value": {"x": "\u00e9\"\\"}})
    drv.send_json("k1", "e", {"channelData": {"k": 1}, "from": {"id": "x"}, "type": "message", "text": "e"})
    for tag in "abcde":
        assert drv.sent(tag)["err"] == 0
    got = ctl.received(cid)
    assert [a.get("text") for a in got] == ["a", "b", "c", None, "e"]
    assert got[4]["channelData"]["k"] == 1
    assert len({a["from"]["id"] for a in got}) == 1 and got[0]["from"]["id"].startswith("dl_handoffd-")
    assert got[0]["channelData"]["foo"] == {"bar": [1, 2]}
    assert all(a["channelData"]["clientActivityID"].startswith("hd1.") for a in got)
    assert got[3]["value"] == {"x": "\u00e9\"\\"}
    for tag, text in (("r1", '{"text":"no type"}'), ("r2", "[1,2]"), ("r3", '{"type":'), ("r4", '{"type":3}')):
        drv.cmd("sendjson", "k1", tag, text)
        assert drv.sent(tag) == {**drv.sent(tag), "ev": "refused", "err": -22}
    check_exactly_once(drv, ctl, "k1", cid)


def message(text, **fields):
    return json.dumps({"type": "message", "text": text, **fields}, separators=(",", ":"))


def send_cut_by_restart(drv, ctl, cid):
    """Item 7 is posted and reaches the bot, then the process 'restarts' (reopen from the
    last on_persist) before the POST is answered; the item is queued again as maybe sent,
    in the same loop turn as the reopen, as the relay does. Returns the POSTs before it."""
    drv.send("k1", "t0", "hello")
    assert drv.sent("t0")["err"] == 0
    settle(drv, ctl, "k1", cid)         # the stored position is past the greeting and answer
    ctl.settings(conversation=cid, post_delay_ms=30000)
    drv.cmd("senditem", "k1", "t1", 7, 1000, 0, message("only once"))
    ctl.wait_count(cid, "received", 2)
    ctl.settings(conversation=cid, post_delay_ms=0, replay_delay_ms=3000)
    posts = ctl.stats()["posts"]
    drv.batch(("reopen", "k1"), ("senditem", "k1", "t2", 7, 1000, 1, message("only once")))
    assert drv.sent("t1")["reason"] == "closed"
    return posts


def test_maybe_sent_found_in_history_is_not_posted(driver_factory, emu, transport):
    """A send that may have left before a restart is looked for from the stored watermark
    (the stream replays too late here, so over websocket a GET finds it): found, it
    succeeds with the activity's id and no POST."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    posts = send_cut_by_restart(drv, ctl, cid)
    e = drv.sent("t2")
    assert e["err"] == 0 and e["id"] == ctl.received(cid)[1]["id"]
    assert ctl.stats()["posts"] == posts, "no POST for what the bot has"
    drv.wait_log("directline.send_reconciled")
    if transport == "websocket":
        assert "found=history" in drv.log()
    check_received(ctl, cid, ["hello", "only once"])
    assert ctl.received(cid)[1]["channelData"]["clientActivityID"] == "hd1.o7.3e8"


def test_maybe_sent_absent_is_posted_once(driver_factory, emu, transport):
    """A maybe-sent item the history does not hold is posted, once; a GET that fails on
    the way is retried, never taken for an answer."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    posts = send_cut_by_restart(drv, ctl, cid)
    assert drv.sent("t2")["err"] == 0
    ctl.fail("get_activities", {"status": 500}, {"status": 503}, conversation=cid)
    drv.cmd("senditem", "k1", "t3", 8, 2000, 1, message("never sent"))
    assert drv.sent("t3")["err"] == 0
    assert ctl.stats()["posts"] == posts + 1
    drv.wait_log("directline.send_resent")
    check_received(ctl, cid, ["hello", "only once", "never sent"])
    check_exactly_once(drv, ctl, "k1", cid)


def test_maybe_sent_by_an_older_version_found_by_its_marker(driver_factory, emu):
    """An outbox item stored by a version before the reconciliation moved here carries
    channelData.handoffd, and its POST had a clientActivityID of that process: the echo
    carrying the same marker settles it, no POST."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    drv.send("k1", "t0", "hello")
    assert drv.sent("t0")["err"] == 0
    settle(drv, ctl, "k1", cid)
    drv.cmd("close", "k1")          # the older process dies ...
    older = {"channelData": {"handoffd": "m00000000000000aa", "clientActivityID": "hd1.00000000000000aa.3"}}
    req = urllib.request.Request("%s/conversations/%s/activities" % (emu.info["http_base"], cid),
                                 data=message("from before", **older, **{"from": {"id": "dl_old"}}).encode(),
                                 headers={"Authorization": "Bearer " + emu.info["secret"],
                                          "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()     # ... after its POST reached the bot
    posts = ctl.stats()["posts"]
    drv.batch(("reopen", "k1"), ("senditem", "k1", "t1", 5, 900, 1,
                                 message("from before", channelData={"handoffd": "m00000000000000aa"})))
    assert drv.sent("t1")["err"] == 0
    assert ctl.stats()["posts"] == posts
    drv.wait_log("directline.send_reconciled")
    check_received(ctl, cid, ["hello", "from before"])
