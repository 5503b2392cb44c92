"""Direct Line over https never moves to clear text on the server's word: while the
configured base is https, a regional discovery answer naming an http:// base and a
ws:// streamUrl are refused and logged, so the token never travels unencrypted. (With an
http base, as in the other tests, both are used as before.)

Setup: one emulator per test (the settings used here are global), one dl_driver per test
whose base is the emulator's https listener.
"""
import pytest

from dldriver import check_received, driver_factory, spawn  # noqa: F401


@pytest.fixture
def emu():
    with spawn() as e:
        yield e


def test_plaintext_stream_url_is_refused_and_the_conversation_polls(driver_factory, emu):
    """The emulator's streamUrl names its plain ws:// listener: no handshake is made; after
    the usual failed opens the conversation polls over https, and messages still flow."""
    ctl = emu.ctl
    ctl.settings(stream_origin="ws://127.0.0.1:%d" % emu.info["http_port"])
    drv = driver_factory(emulator=emu, base="https_base")
    drv.cmd("open", "k1")
    online = drv.wait_state("k1", "online")
    assert online["reason"] == "polling fallback"
    assert 'directline.downgrade_refused key="k1"' in drv.log()
    assert "plaintext stream url refused" in drv.log()
    assert ctl.stats().get("ws_handshakes", 0) == 0
    cid = online["conv"]
    drv.send("k1", "t1", "still private")
    assert drv.sent("t1")["err"] == 0
    check_received(ctl, cid, ["still private"])


def test_plaintext_regional_base_is_refused(driver_factory, emu):
    """Copilot Studio's regionalchannelsettings (over https) advertises an http:// base:
    the client keeps asking and never sends anything to that base."""
    ctl = emu.ctl
    ctl.settings(regional_url=emu.info["http_origin"] + "/europe/")
    token_url = emu.info["https_origin"] + \
        "/powervirtualagents/botsbyschema/cr123_bot/directline/token?api-version=2022-03-01-preview"
    drv = driver_factory(emulator=emu, secret=None, token_url=token_url, regional_discovery=True,
                         base="https_base")
    drv.cmd("open", "k1")
    drv.wait_log('reason="plaintext base refused: the configured base is https"')
    assert "directline.discovery_failed" in drv.log()
    assert "/europe/v3/directline" not in ctl.stats()["requests_by_base"]
    assert drv.states("k1") == [] or all(s != "online" for s, _ in drv.states("k1"))
