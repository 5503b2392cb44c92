"""Direct Line polling transport: the same guarantees as the stream (parity). Paging (F19),
watermark resets (F8), errors survived with backoff, one extra poll right after a send.

Setup: one emulator per module, one dl_driver per test with transport = "polling" and a
short poll interval. Typing never comes by GET, so only the other activities are checked.
"""
from dldriver import check_exactly_once, check_received, driver_factory, emu, texts  # noqa: F401


def polling_driver(driver_factory, **settings):
    return driver_factory(transport="polling", **settings)


def test_polling_exchange_with_greeting(driver_factory, emu):
    ctl = emu.ctl
    drv = polling_driver(driver_factory, greeting=True)
    cid = drv.open("k1")
    assert drv.states("k1") == [("online", "polling")]
    drv.send("k1", "t1", "what are your opening hours")
    assert drv.sent("t1")["err"] == 0
    ctl.wait_count(cid, "activities", 6)
    check_exactly_once(drv, ctl, "k1", cid)
    assert texts(drv, "k1")[-1].startswith("We are open")
    check_received(ctl, cid, ["what are your opening hours"])


def test_f19_pages_followed_until_empty(driver_factory, emu):
    """F19: the service answers pages of 2 with advancing watermarks: the client reads on
    until a page is empty, in order, without waiting a poll interval between pages."""
    ctl = emu.ctl
    drv = polling_driver(driver_factory, poll_interval=30)
    cid = drv.open("k1")
    ctl.settings(conversation=cid, page_size=2)
    before = ctl.stats().get("get_activities", 0)
    drv.send("k1", "t1", "page me")        # the extra poll after a send starts the reading
    assert drv.sent("t1")["err"] == 0
    ctl.bot(cid, seq=7, one_set=True)
    drv.send("k1", "t2", "again")
    assert drv.sent("t2")["err"] == 0
    check_exactly_once(drv, ctl, "k1", cid)
    assert [t for t in texts(drv, "k1") if t.startswith("seq-")] == ["seq-%d" % i for i in range(1, 8)]
    assert ctl.stats()["get_activities"] - before >= 5


def test_f8_watermark_reset_while_polling(driver_factory, emu):
    """F8 by GET: the service's watermarks restart from "0" while it still reads ours from
    the old numbering, so pages repeat what was delivered: nothing lost or repeated."""
    ctl = emu.ctl
    drv = polling_driver(driver_factory)
    cid = drv.open("k1")
    ctl.bot(cid, seq=3, prefix="a-")
    check_exactly_once(drv, ctl, "k1", cid)
    ctl.watermark_reset(cid)
    ctl.bot(cid, seq=3, prefix="b-")
    check_exactly_once(drv, ctl, "k1", cid)
    ctl.bot(cid, seq=2, prefix="c-")
    check_exactly_once(drv, ctl, "k1", cid)
    assert len(texts(drv, "k1")) == 8
    assert drv.wait_stat("duplicates", 3)


def test_poll_errors_survived_with_backoff(driver_factory, emu):
    """A poller that stops on errors loses conversations (DirectLineJS#154): 500, 429 with
    Retry-After and a reset connection are each retried, and polling goes on."""
    ctl = emu.ctl
    drv = polling_driver(driver_factory)
    cid = drv.open("k1")
    mark = drv.mark()
    ctl.fail("get_activities", {"status": 500}, {"status": 429, "retry_after": 1}, {"drop": True},
             conversation=cid)
    ctl.bot(cid, seq=3)
    check_exactly_once(drv, ctl, "k1", cid)
    assert ("reconnecting", "poll failed: 500") in drv.states("k1", start=mark)
    assert drv.states("k1", start=mark)[-1] == ("online", "polling")
    waits = [l for l in drv.log().splitlines() if "directline.retry" in l and "429" in l]
    assert waits and int(waits[0].rsplit("delay_ms=", 1)[1]) >= 1000


def test_expired_token_while_polling_is_reacquired(driver_factory, emu):
    """403 TokenExpired on a poll: a new token for the same conversation, polling goes on."""
    ctl = emu.ctl
    drv = polling_driver(driver_factory)
    cid = drv.open("k1")
    ctl.fail("get_activities", {"status": 403, "code": "TokenExpired"}, conversation=cid)
    ctl.bot(cid, seq=2)
    check_exactly_once(drv, ctl, "k1", cid)
    assert "directline.token_reacquired" in drv.log()
