"""How Direct Line conversations end, and how they come back: the conversation expired
(F20), endOfConversation from the bot (F25), ending it ourselves, and resuming from what
on_persist handed out (a restart of the process, without the process).

Setup: an emulator with 3-second tokens (so a refresh would come within ~1.5 s), one
dl_driver per test, over the stream and over polling.
"""
import pytest

from dldriver import check_exactly_once, check_received, driver_factory, emu, spawn, texts  # noqa: F401

TRANSPORTS = ["websocket", "polling"]


@pytest.fixture(scope="module")
def short_emu():
    with spawn(token_ttl=3) as e:
        yield e


def lines_about(drv, key, after):
    """Log lines about KEY written after the first line holding AFTER."""
    lines = [l for l in drv.log().splitlines() if 'key="%s"' % key in l]
    start = next(i for i, l in enumerate(lines) if after in l)
    return lines[start + 1:]


def quiet_after_end(drv, key, ended_line):
    """Proves nothing happened for KEY after it ended: a second conversation opened then
    lives long enough to refresh its token (which KEY would have done too)."""
    drv.open("witness")
    first = {e["token"] for e in drv.events if e["ev"] == "persist" and e["key"] == "witness" and e.get("token")}
    drv.wait_for(lambda e: e["ev"] == "persist" and e["key"] == "witness" and e.get("token")
                 and e["token"] not in first, timeout=10)
    assert lines_about(drv, key, ended_line) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_f20_expired_conversation_ends(driver_factory, short_emu, transport):
    """F20: the service forgot the conversation (404 on reconnect or poll): state ended,
    no more reconnects or refreshes, sends refused."""
    ctl = short_emu.ctl
    drv = driver_factory(emulator=short_emu, transport=transport)
    cid = drv.open("k1")
    ctl.bot(cid, seq=2)
    check_exactly_once(drv, ctl, "k1", cid)
    ctl.expire(cid)
    assert drv.wait_state("k1", "ended")["reason"] == "not found"
    drv.send("k1", "t1", "anyone?")
    assert drv.sent("t1")["ev"] == "refused"
    quiet_after_end(drv, "k1", "state=ended")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_f25_end_of_conversation_from_the_bot(driver_factory, short_emu, transport):
    """F25: the bot says goodbye and sends endOfConversation: both dispatched, in order,
    then the conversation is over: no reconnects, no refreshes."""
    ctl = short_emu.ctl
    drv = driver_factory(emulator=short_emu, transport=transport)
    cid = drv.open("k1")
    drv.send("k1", "t1", "bye")
    assert drv.wait_state("k1", "ended")["reason"] == "endOfConversation"
    check_exactly_once(drv, ctl, "k1", cid)
    types = [a["type"] for a in drv.activities("k1") if a["type"] != "typing"]
    assert types[-2:] == ["message", "endOfConversation"]
    assert texts(drv, "k1")[-1].startswith("Goodbye")
    quiet_after_end(drv, "k1", "state=ended")
    ctl.bot(cid, seq=1)     # the service may still push; nobody listens any more
    assert [e for e in drv.activities("k1") if e["raw"].get("text") == "seq-1"] == []


def test_close_with_end_tells_the_bot(driver_factory, emu):
    """Closing with end: after what was queued, the bot receives our endOfConversation."""
    ctl = emu.ctl
    drv = driver_factory()
    cid = drv.open("k1")
    drv.send("k1", "t1", "last words")
    assert drv.sent("t1")["err"] == 0
    drv.cmd("close", "k1", "end")
    ctl.wait_count(cid, "received", 2)
    kinds = [a["type"] for a in ctl.received(cid)]
    assert kinds == ["message", "endOfConversation"]
    assert ctl.conversation(cid)["ended"]
    drv.wait_log("directline.goodbye")


@pytest.mark.parametrize("transport,how", [("websocket", ""), ("polling", ""), ("websocket", "expired"),
                                           ("websocket", "unplaced")])
def test_resume_from_persisted_state(driver_factory, emu, transport, how):
    """A restart: the conversation is closed and opened again from its last on_persist
    (id, token, watermark, seen ids), its token possibly expired meanwhile (then a new one
    comes from the secret), or its watermark never stored (unplaced: a cluster member left
    before committing the bot's last activities; a socket opened without a watermark gives
    only what comes after the reconnect, so what came before is read by GET first, and the
    socket cannot overtake it even when that GET is slow). What the bot said meanwhile
    arrives once, in order; nothing from before is repeated."""
    ctl = emu.ctl
    drv = driver_factory(transport=transport)
    cid = drv.open("k1")
    ctl.bot(cid, seq=3, prefix="before-")
    check_exactly_once(drv, ctl, "k1", cid)
    drv.cmd("close", "k1")
    drv.wait_log('directline.close key="k1"')
    ctl.bot(cid, seq=2, prefix="meanwhile-")
    if how == "unplaced":
        ctl.settings(cid, get_delay_ms=500)
    mark = drv.mark()
    drv.cmd("reopen", "k1", how)
    drv.wait_state("k1", "online", start=mark)
    ctl.bot(cid, seq=1, prefix="after-")
    drv.send("k1", "t1", "back again")
    assert drv.sent("t1")["err"] == 0
    check_exactly_once(drv, ctl, "k1", cid)
    assert [t for t in texts(drv, "k1") if "-" in t and " " not in t] == \
        ["before-1", "before-2", "before-3", "meanwhile-1", "meanwhile-2", "after-1"]
    check_received(ctl, cid, ["back again"])
    assert "resume=yes" in drv.log()
    assert ("directline.token_reacquired" in drv.log()) == (how == "expired")
    assert {e["conv"] for e in drv.events if e.get("conv")} == {cid}
