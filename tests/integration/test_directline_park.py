"""Parking (directline.park_after, directline.parked_sync): a conversation whose stream
carries nothing gives its socket back and keeps its id, watermark and token; what the bot
says meanwhile comes by GET from the watermark; a send (or directline_wake) reopens the
stream at once from the watermark, so nothing is lost or repeated.

Setup: the module's emulator (plain ws), or one with 3-second tokens; one dl_driver per
test. Waits are on events, log lines and the emulator's counters, never on fixed times.
"""
import pytest

from dldriver import check_exactly_once, check_received, driver_factory, emu, short_emu, texts  # noqa: F401


def said(drv, key):
    """What the bot said, without the greeting it gives on the first message."""
    return [t for t in texts(drv, key) if not t.startswith("Hello, I'm")]


def parked(drv):
    return drv.stats()["parked"]


def test_idle_stream_parks_and_a_send_wakes_it(driver_factory, emu):
    """After park_after without traffic the socket closes; a send reopens the stream at once:
    the bot's answer comes on it although the next parked GET is a minute away."""
    ctl = emu.ctl
    drv = driver_factory(park_after=1, parked_sync=60)
    cid = drv.open("k1")
    closed = ctl.stats().get("ws_closed", 0)
    drv.wait_log('directline.park key="k1"')
    ctl.wait_stat("ws_closed", closed + 1)
    assert parked(drv) == 1
    assert drv.metric("handoffd_directline_parks_total") == 1
    opened = ctl.stats()["ws_accepted"]
    drv.send("k1", "t1", "hello after a nap")
    assert drv.sent("t1")["err"] == 0
    drv.wait_for(lambda e: e["ev"] == "activity" and e["raw"].get("text") == "You said: hello after a nap")
    ctl.wait_stat("ws_accepted", opened + 1)    # the stream was reopened
    assert ctl.stats()["ws_accepted"] == opened + 1
    assert parked(drv) == 0
    check_exactly_once(drv, ctl, "k1", cid)
    check_received(ctl, cid, ["hello after a nap"])
    assert "directline.wake" in drv.log() and 'reason="send"' in drv.log()


def test_proactive_message_while_parked_arrives_once(driver_factory, emu):
    """What the bot says on its own while parked comes by the parked GET; the stream that
    reopens later replays from the stored watermark and repeats none of it."""
    ctl = emu.ctl
    drv = driver_factory(park_after=1, parked_sync=0.5)
    cid = drv.open("k1")
    drv.wait_log('directline.park key="k1"')
    gets = ctl.stats().get("get_activities", 0)
    ctl.bot(cid, texts=["are you still there?"], seq=2, prefix="proactive-")
    check_exactly_once(drv, ctl, "k1", cid)
    assert ctl.stats()["get_activities"] > gets, "it came by GET"
    assert parked(drv) == 1, "a proactive message does not wake the conversation"
    drv.send("k1", "t1", "yes")
    assert drv.sent("t1")["err"] == 0
    drv.wait_for(lambda e: e["ev"] == "activity" and e["raw"].get("text") == "You said: yes")
    check_exactly_once(drv, ctl, "k1", cid)
    assert said(drv, "k1") == ["are you still there?", "proactive-1", "proactive-2", "You said: yes"]


def test_held_park_sends_without_waking_and_wakes_on_demand(driver_factory, emu):
    """directline_park (an agent has the conversation): sends still go out (status events)
    without reopening the stream; directline_wake reopens it and catches up from the
    watermark."""
    ctl = emu.ctl
    drv = driver_factory(park_after=0, parked_sync=60)
    cid = drv.open("k1")
    drv.cmd("park", "k1")
    drv.wait_log('directline.park key="k1" conv=%s reason="held"' % cid)
    opened = ctl.stats()["ws_accepted"]
    drv.send_json("k1", "s1", {"type": "event", "name": "handoff.status", "value": {"state": "accepted"}})
    assert drv.sent("s1")["err"] == 0
    ctl.bot(cid, texts=["said while an agent had it"])
    ctl.wait_count(cid, "received", 1)
    assert parked(drv) == 1 and ctl.stats()["ws_accepted"] == opened, "a held park stays parked"
    drv.cmd("wake", "k1")
    held = drv.wait_for(lambda e: e["ev"] == "activity" and e["raw"].get("text") == "said while an agent had it")
    assert held["held"], "what came while held is dispatched as held (the relay keeps it from the customer)"
    drv.wait_log('directline.wake key="k1"')
    ctl.wait_stat("ws_accepted", opened + 1)
    ctl.bot(cid, texts=["back on the stream"])
    check_exactly_once(drv, ctl, "k1", cid)
    assert texts(drv, "k1") == ["said while an agent had it", "back on the stream"]
    assert not drv.activities("k1")[-1]["held"]
    assert "directline.resend" not in drv.log()


def test_parked_then_restarted_loses_and_repeats_nothing(driver_factory, emu):
    """A parked conversation resumed from its last on_persist (as after kill -9): what the
    bot said before, while parked, and while down arrives exactly once."""
    ctl = emu.ctl
    drv = driver_factory(park_after=1, parked_sync=0.5)
    cid = drv.open("k1")
    ctl.bot(cid, seq=2, prefix="before-")
    check_exactly_once(drv, ctl, "k1", cid)
    drv.wait_log('directline.park key="k1"')
    ctl.bot(cid, seq=2, prefix="parked-")
    check_exactly_once(drv, ctl, "k1", cid)
    drv.cmd("close", "k1")
    ctl.bot(cid, seq=2, prefix="down-")
    drv.cmd("reopen", "k1")
    check_exactly_once(drv, ctl, "k1", cid)
    drv.send("k1", "t1", "back")
    drv.wait_for(lambda e: e["ev"] == "activity" and e["raw"].get("text") == "You said: back")
    check_exactly_once(drv, ctl, "k1", cid)
    assert said(drv, "k1") == ["before-1", "before-2", "parked-1", "parked-2", "down-1", "down-2",
                                "You said: back"]


@pytest.mark.parametrize("credential", ["token_url", "secret"])
def test_parked_longer_than_a_token_lives(driver_factory, short_emu, credential):
    """Parked across several 3-second token lifetimes: a token from the token endpoint
    (which cannot be re-acquired) is refreshed while parked; with a secret no refresh is
    made and the wake re-acquires one. Either way the conversation resumes, the service
    never sees an expired token, and nothing is lost."""
    ctl = short_emu.ctl
    settings = dict(park_after=0.5, parked_sync=0.5)
    if credential == "token_url":
        settings.update(secret=None, token_url=short_emu.info["http_origin"] +
                        "/powervirtualagents/botsbyschema/cr1_bot/directline/token?api-version=2022-03-01-preview")
    drv = driver_factory(emulator=short_emu, **settings)
    cid = drv.open("k1")
    drv.wait_log('directline.park key="k1"')
    ctl.bot(cid, texts=["while parked"])
    check_exactly_once(drv, ctl, "k1", cid)
    mark = drv.mark()
    refreshed = drv.log().count("directline.token_refreshed")
    # More than two token lifetimes pass while parked, paced by the parked GETs.
    ctl.reset_stats()
    ctl.wait_stat("get_activities", 14, timeout=30)
    if credential == "token_url":
        assert drv.log().count("directline.token_refreshed") >= refreshed + 3
    else:
        assert drv.log().count("directline.token_refreshed") == refreshed, "no refresh while parked"
    drv.send("k1", "t1", "still here")
    assert drv.sent("t1")["err"] == 0
    drv.wait_for(lambda e: e["ev"] == "activity" and e["raw"].get("text") == "You said: still here")
    check_exactly_once(drv, ctl, "k1", cid)
    check_received(ctl, cid, ["still here"])
    assert ctl.auth_failures() == [], "no expired token reached the service"
    assert [s for s, _ in drv.states("k1", start=mark)] in ([], ["online"]), drv.states("k1", start=mark)
    assert "token_lost" not in drv.log()
    if credential == "secret":
        assert "directline.token_reacquired" in drv.log()
