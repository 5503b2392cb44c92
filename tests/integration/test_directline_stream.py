"""Direct Line receive path over the WebSocket stream: the faults F1-F12 of
shared/directline.md section 8 that hit the socket, injected by the emulator.

Setup: one emulator per module (plain ws, wss, and a wss listener with a wrong certificate);
one dl_driver per test running runtime/directline/directline.c with fast reconnect settings.
Each test opens a conversation, makes the bot talk, injects its fault, makes the bot talk
again, and then checks on the wire what every scenario must keep: each bot activity
dispatched exactly once and in order, our messages received by the bot once and in order.
"""
from dldriver import check_exactly_once, check_received, driver_factory, emu, texts  # noqa: F401


def talk(ctl, cid, prefix, n=3):
    ctl.bot(cid, seq=n, prefix=prefix)


def test_plain_exchange(driver_factory, emu):
    """Greeting, a message each way, the bot's answer; our echo is never dispatched."""
    ctl = emu.ctl
    drv = driver_factory(greeting=True)
    cid = drv.open("k1")
    drv.send("k1", "t1", "what are your opening hours")
    assert drv.sent("t1")["err"] == 0
    ctl.wait_count(cid, "activities", 6)        # echo, typing, greeting, echo, typing, answer
    check_exactly_once(drv, ctl, "k1", cid)
    assert any("Monday to Friday" in t for t in texts(drv, "k1"))
    check_received(ctl, cid, ["what are your opening hours"])
    events = [a for a in ctl.received(cid) if a["type"] == "event"]
    assert [e["name"] for e in events] == ["startConversation"]


def test_f1_abrupt_close_mid_stream(driver_factory, emu):
    """F1: TCP reset without a close frame; what the bot says meanwhile is replayed once."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    talk(ctl, cid, "before-")
    check_exactly_once(drv, ctl, "k1", cid)
    mark = drv.mark()
    ctl.drop(cid)
    talk(ctl, cid, "during-")
    drv.wait_state("k1", "reconnecting", start=mark)
    drv.wait_state("k1", "online", start=mark)
    talk(ctl, cid, "after-")
    check_exactly_once(drv, ctl, "k1", cid)
    assert texts(drv, "k1") == ["before-%d" % i for i in (1, 2, 3)] + \
        ["during-%d" % i for i in (1, 2, 3)] + ["after-%d" % i for i in (1, 2, 3)]


def test_f1_over_wss(driver_factory, emu):
    """F1 on a verified TLS stream (wss with the emulator's test CA)."""
    ctl = emu.ctl
    drv = driver_factory(base="https_base")
    cid = drv.open("k1")
    talk(ctl, cid, "a-")
    mark = drv.mark()
    ctl.drop(cid)
    talk(ctl, cid, "b-")
    drv.wait_state("k1", "online", start=mark)
    check_exactly_once(drv, ctl, "k1", cid)
    assert len(texts(drv, "k1")) == 6
    drv.send("k1", "t1", "over tls")
    assert drv.sent("t1")["err"] == 0
    check_received(ctl, cid, ["over tls"])


def test_f2_clean_closes_with_codes(driver_factory, emu):
    """F2: close frames 1000, 1001, 1011 with reasons; each time a reconnect, no loss."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    for code, reason in ((1000, "bye"), (1001, "going away"), (1011, "internal error")):
        mark = drv.mark()
        ctl.close(cid, code=code, reason=reason)
        talk(ctl, cid, "c%d-" % code, 2)
        drv.wait_state("k1", "online", start=mark)
        check_exactly_once(drv, ctl, "k1", cid)
    assert len(texts(drv, "k1")) == 6
    assert drv.log().count("directline.stream_lost") == 3


def test_f3_collision_is_not_fought(driver_factory, emu):
    """F3: close reason `collision`: counted, and the reconnect waits at least half the
    backoff cap instead of looping."""
    ctl = emu.ctl
    drv = driver_factory(reconnect_cap=2)
    cid = drv.open("k1")
    mark = drv.mark()
    ctl.close(cid, code=1000, reason="collision")
    assert drv.wait_state("k1", "reconnecting", start=mark)["reason"] == "collision"
    retry = [l for l in drv.log().splitlines() if "directline.retry" in l and "collision" in l]
    assert retry and int(retry[0].rsplit("delay_ms=", 1)[1]) >= 1000
    talk(ctl, cid, "x-", 2)
    drv.wait_state("k1", "online", start=mark)
    check_exactly_once(drv, ctl, "k1", cid)
    assert drv.metric("handoffd_directline_collisions_total") == 1


def test_f4_silent_stall_detected(driver_factory, emu):
    """F4: the socket stays open but nothing comes and pings go unanswered: declared dead
    by the liveness window, reconnected, nothing lost."""
    ctl = emu.ctl
    drv = driver_factory(liveness=1)
    cid = drv.open("k1")
    mark = drv.mark()
    ctl.stall(cid)
    talk(ctl, cid, "stalled-")
    drv.wait_state("k1", "reconnecting", start=mark)
    drv.wait_state("k1", "online", start=mark)
    check_exactly_once(drv, ctl, "k1", cid)
    assert texts(drv, "k1") == ["stalled-1", "stalled-2", "stalled-3"]
    assert "end=dead" in drv.log()


def test_idle_stream_is_reconciled_by_get(driver_factory, emu):
    """directline.md 7.11: a socket that stays open but delivers nothing (pings still
    answered, so the liveness check is content) is caught up by a GET after idle_sync."""
    ctl = emu.ctl
    drv = driver_factory(liveness=60, idle_sync=1)
    cid = drv.open("k1")
    mark = drv.mark()
    ctl.settings(conversation=cid, push=False)
    talk(ctl, cid, "quiet-")
    check_exactly_once(drv, ctl, "k1", cid)
    assert texts(drv, "k1") == ["quiet-1", "quiet-2", "quiet-3"]
    assert drv.states("k1", start=mark) == [], "no reconnect was needed"


def test_f5_keepalives_and_unknown_frames_ignored(driver_factory, emu):
    """F5: empty and whitespace keep-alives and an unknown root change nothing."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    mark = drv.mark()
    ctl.settings(conversation=cid, keepalive_interval=0.1, keepalive_frame=" \n")
    ctl.frames([{"text": ""}, {"text": "   "}, {"json": {"foo": 1}}, {"text": "\t\r\n"}], conversation=cid)
    talk(ctl, cid, "k-")
    check_exactly_once(drv, ctl, "k1", cid)
    ctl.settings(conversation=cid, keepalive_interval=0)
    assert drv.states("k1", start=mark) == []
    assert "warn" not in drv.log()


def test_f6_null_or_missing_watermark_keeps_the_old_one(driver_factory, emu):
    """F6: sets without a watermark are dispatched; the stored watermark does not move."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    talk(ctl, cid, "a-", 1)
    check_exactly_once(drv, ctl, "k1", cid)
    persisted = [e for e in drv.events if e["ev"] == "persist"][-1]["watermark"]
    mark = drv.mark()
    for mode in ("null", "omit"):
        ctl.settings(conversation=cid, watermark_mode=mode)
        talk(ctl, cid, mode + "-", 2)
        check_exactly_once(drv, ctl, "k1", cid)
    assert [e for e in drv.events[mark:] if e["ev"] == "persist"] == []
    ctl.settings(conversation=cid, watermark_mode="normal")
    mark = drv.mark()
    ctl.drop(cid)       # the reconnect replays from the old watermark: all duplicates
    drv.wait_state("k1", "online", start=mark)
    talk(ctl, cid, "b-", 1)
    check_exactly_once(drv, ctl, "k1", cid)
    assert persisted is not None


def test_f7_replay_of_full_history_is_deduplicated(driver_factory, emu):
    """F7: a new stream that ignores the watermark resends everything: no repeats."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    talk(ctl, cid, "a-", 4)
    check_exactly_once(drv, ctl, "k1", cid)
    ctl.settings(conversation=cid, replay_full_history=True)
    mark = drv.mark()
    ctl.drop(cid)
    drv.wait_state("k1", "online", start=mark)
    talk(ctl, cid, "b-", 2)
    check_exactly_once(drv, ctl, "k1", cid)
    assert drv.stats()["duplicates"] >= 4


def test_f8_watermark_reset_mid_conversation(driver_factory, emu):
    """F8: the service starts reporting watermarks from "0" again: warned, no loss, no
    duplicates across the next reconnect (which replays from the reset number)."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    talk(ctl, cid, "a-", 4)
    check_exactly_once(drv, ctl, "k1", cid)
    ctl.watermark_reset(cid)
    talk(ctl, cid, "b-", 2)
    check_exactly_once(drv, ctl, "k1", cid)
    drv.wait_log("directline.watermark_back")
    mark = drv.mark()
    ctl.drop(cid)
    talk(ctl, cid, "c-", 2)
    drv.wait_state("k1", "online", start=mark)
    check_exactly_once(drv, ctl, "k1", cid)
    assert len(texts(drv, "k1")) == 8


def test_f9_same_activity_by_stream_and_get(driver_factory, emu):
    """F9: a malformed frame makes the client reconcile by GET while the stream delivers
    the same activities: each is dispatched once. (The stream omits watermarks meanwhile,
    so the GET starts before what the stream already delivered.)"""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    ctl.settings(conversation=cid, watermark_mode="omit")
    talk(ctl, cid, "a-", 5)
    check_exactly_once(drv, ctl, "k1", cid)
    ctl.frames([{"text": "{\"activities\": [ not json"}], conversation=cid)
    talk(ctl, cid, "b-", 2)
    drv.wait_log("directline.bad_payload")
    check_exactly_once(drv, ctl, "k1", cid)
    assert drv.stats()["duplicates"] >= 5      # the catch-up GET brought them again


def test_f11_expired_stream_url_gets_a_fresh_one(driver_factory, emu):
    """F11: the handshake is refused with 403 (streamUrl expired): a new one is fetched."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    ctl.fail("handshake", {"status": 403, "code": "TokenExpired"}, conversation=cid)
    before = ctl.stats().get("reconnects", 0)
    mark = drv.mark()
    ctl.drop(cid)
    talk(ctl, cid, "x-", 2)
    drv.wait_state("k1", "online", start=mark)
    check_exactly_once(drv, ctl, "k1", cid)
    assert ctl.stats()["reconnects"] - before >= 2
    assert "stream refused: http 403" in drv.log()


def test_f12_throttled_failed_and_refused_handshakes(driver_factory, emu):
    """F12 over wss: a 429 with Retry-After 2 is honoured, a 500 is backed off, a refused
    TCP connection is retried; then the stream comes back with nothing lost."""
    ctl = emu.ctl
    drv = driver_factory(base="https_base")
    cid = drv.open("k1")
    ctl.fail("handshake", {"status": 429, "retry_after": 2}, {"status": 500}, conversation=cid)
    mark = drv.mark()
    ctl.drop(cid)
    talk(ctl, cid, "a-", 2)
    drv.wait_state("k1", "online", start=mark)
    waits = [l for l in drv.log().splitlines() if "directline.retry" in l and "http 429" in l]
    assert waits and int(waits[0].rsplit("delay_ms=", 1)[1]) >= 2000
    assert "stream refused: http 500" in drv.log()
    mark = drv.mark()
    ctl.listener_down("tls", 1.0)
    ctl.drop(cid)
    talk(ctl, cid, "b-", 2)
    drv.wait_state("k1", "online", start=mark)
    assert "connection refused" in drv.log().lower()
    check_exactly_once(drv, ctl, "k1", cid)
    assert len(texts(drv, "k1")) == 4


def test_socket_refused_repeatedly_falls_back_to_polling(driver_factory, emu):
    """A socket that cannot be opened (an upgrade-refusing proxy): after four failures the
    conversation polls instead, and still gets everything."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    ctl.fail("handshake", *([{"status": 400}] * 4), conversation=cid)
    mark = drv.mark()
    ctl.drop(cid)
    talk(ctl, cid, "a-", 3)
    assert drv.wait_state("k1", "online", start=mark)["reason"] == "polling fallback"
    check_exactly_once(drv, ctl, "k1", cid)
    drv.send("k1", "t1", "still there?")
    assert drv.sent("t1")["err"] == 0
    check_exactly_once(drv, ctl, "k1", cid)
    assert drv.metric("handoffd_directline_polling_fallbacks_total") == 1
