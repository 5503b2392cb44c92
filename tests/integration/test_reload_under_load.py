"""Hot reload under a steady load: nothing lost, nothing duplicated.

Setup: a fake sink server and a daemon whose hub (scripts/forwardhub.lua) forwards each
message posted to its webhook to the sink. Input: 500 messages per second for 4
seconds while the config is rewritten and SIGHUP sent every 0.25 s. Expected: every
message answered 202 and received by the sink exactly once; several generations
served; the daemon's log has no errors.
"""
import asyncio
import signal
import threading

import aiohttp
import pytest
from aiohttp import web

from conftest import SOURCE_DIR
from fakeserver import FakeServer

SCRIPTS = SOURCE_DIR / "tests/integration/scripts"
RATE, SECONDS = 500, 4


async def sink(request, body):
    return web.Response(status=200)


def config(sink_url, version):
    return f"""return {{
  listen = "127.0.0.1:0",
  script_path = "{SCRIPTS}/?.lua",
  directline = {{ secret = "test-secret-0123456789" }},
  hub = {{ module = "forwardhub", sink = "{sink_url}", version = "{version}" }},
}}
"""


async def send_steadily(port):
    answers = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
        async def one(seq):
            async with s.post(f"http://127.0.0.1:{port}/f/msg", data=str(seq)) as r:
                answers[seq] = (r.status, await r.text())
        tasks = []
        start = asyncio.get_running_loop().time()
        for seq in range(RATE * SECONDS):
            # pace to RATE per second against the clock, not with fixed sleeps per message
            due = start + seq / RATE
            now = asyncio.get_running_loop().time()
            if due > now:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(one(seq)))
        await asyncio.gather(*tasks)
    return answers


def test_reload_loses_and_duplicates_nothing(daemon, tmp_path):
    srv = FakeServer().route("POST", "/sink", sink).start()
    try:
        d = daemon(config(srv.url, "v0"))
        done = threading.Event()
        reloads = []

        def reloader():
            n = 0
            while not done.wait(0.25):
                n += 1
                (tmp_path / "config.lua").write_text(config(srv.url, f"v{n}"))
                d.signal(signal.SIGHUP)
                reloads.append(n)

        t = threading.Thread(target=reloader)
        t.start()
        try:
            answers = asyncio.run(send_steadily(d.port))
        finally:
            done.set()
            t.join()
        assert len(answers) == RATE * SECONDS
        bad = {k: v for k, v in answers.items() if v[0] != 202}
        assert not bad, f"{len(bad)} messages not accepted, e.g. {list(bad.items())[:3]}"
        received = srv.wait_requests(RATE * SECONDS)
        seqs = [int(body) for _, _, _, body in received]
        assert sorted(seqs) == list(range(RATE * SECONDS)), "each message reached the sink exactly once"
        versions = {h["X-Version"] for _, _, h, _ in received}
        assert len(versions) >= 5, f"reloads happened during the load: {sorted(versions)}"
        d.wait_line(f"reload.ok generation={len(reloads) + 1}")
        assert d.error_lines() == []
    finally:
        srv.stop()
