#!/usr/bin/python3
"""Checks that one emulator process holds N concurrent conversations on loopback.

    /usr/bin/python3 -m tests.dlemu.scale_check [--conversations 10000] [--tls]

Starts the emulator as its own process, starts N conversations, opens N sockets from this
process (aiohttp client), has the bot send one message to every conversation and times
until every socket has it, then drops every socket at once (F26) and times until every
client has seen it. Prints figures and the emulator's memory; asserts delivery only.
"""
import argparse
import asyncio
import json
import os
import resource
import ssl
import sys
import time

import aiohttp

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "tests.dlemu"

from .control import spawn      # noqa: E402

CONCURRENCY = 400


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def bounded(n, make):
    """Runs make(i) for i in range(n), CONCURRENCY at a time; returns the results in order."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i):
        async with sem:
            return await make(i)
    return await asyncio.gather(*(one(i) for i in range(n)))


class Reader:
    """One socket's reader: counts the ActivitySets it sees and notes when it closes."""

    def __init__(self, ws):
        self.ws = ws
        self.sets = 0
        self.closed = asyncio.get_running_loop().create_future()
        self.got = asyncio.Event()

    async def run(self):
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["activities"]:
                self.sets += 1
                self.got.set()
        self.closed.set_result(time.monotonic())


async def load(emu, n, use_tls):
    info = emu.info
    base = info["https_base" if use_tls else "http_base"]
    ctx = ssl.create_default_context(cafile=info["ca_file"]) if use_tls else None
    auth = {"Authorization": "Bearer " + info["secret"]}
    conn = aiohttp.TCPConnector(limit=0, ssl=ctx)  # open sockets hold a slot each
    async with aiohttp.ClientSession(connector=conn) as s:
        async def start(_):
            async with s.post(base + "/conversations", headers=auth) as r:
                return await r.json()
        t = time.monotonic()
        convs = await bounded(n, start)
        figure("conversations started", n, time.monotonic() - t)

        async def connect(i):
            return await s.ws_connect(convs[i]["streamUrl"], ssl=ctx, autoping=False)
        t = time.monotonic()
        sockets = await bounded(n, connect)
        figure("sockets opened", n, time.monotonic() - t)
        readers = [Reader(ws) for ws in sockets]
        tasks = [asyncio.ensure_future(r.run()) for r in readers]
        print("emulator RSS with %d sockets: %.0f MiB (%.1f KiB per conversation)"
              % (n, rss_mib(emu.proc.pid), rss_mib(emu.proc.pid) * 1024 / n))

        t = time.monotonic()
        reply = await asyncio.to_thread(emu.ctl.bot, texts=["to everyone"])
        pushed = time.monotonic() - t
        await asyncio.gather(*(r.got.wait() for r in readers))
        figure("push to all (control call %.3f s)" % pushed, n, time.monotonic() - t)
        assert reply["conversations"] == n and all(r.sets == 1 for r in readers)

        t = time.monotonic()
        dropped = await asyncio.to_thread(emu.ctl.drop)
        ends = await asyncio.gather(*(r.closed for r in readers))
        figure("drop all (F26), seen closed by clients", dropped["sockets"], max(ends) - t)
        await asyncio.gather(*tasks)
        stats = emu.ctl.stats()
        print("emulator stats: ws_open_max=%s ws_open=%s handshakes=%s"
              % (stats["ws_open_max"], stats["ws_open"], stats["ws_handshakes"]))


def figure(what, n, seconds):
    print("%-48s %6d in %7.3f s  (%.0f/s)" % (what, n, seconds, n / seconds if seconds else 0))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--conversations", type=int, default=10000)
    p.add_argument("--tls", action="store_true", help="https and wss instead of http and ws")
    a = p.parse_args()
    need = a.conversations + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    with spawn(settings={"bot_enabled": False}) as emu:
        asyncio.run(load(emu, a.conversations, a.tls))


if __name__ == "__main__":
    main()
