"""A scriptable HTTP server on 127.0.0.1 (aiohttp in a background thread) for tests
that need something on the other end of handoffd's outbound requests.

    srv = FakeServer(); srv.route("POST", "/x", handler); srv.start(); ...; srv.stop()

Handlers are aiohttp handlers (async def h(request) -> web.Response). Every request is
recorded in srv.requests as (method, path, headers, body) in arrival order.
post_json(url, body, headers) is the other direction: a fake hub calling handoffd.
"""
import asyncio
import json
import threading
import urllib.error
import urllib.request

from aiohttp import web


class FakeServer:
    def __init__(self):
        self.app = web.Application(client_max_size=16 << 20)
        self.requests = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = None
        self.port = None
        self.cond = threading.Condition()

    def route(self, method, path, handler):
        async def recorded(request):
            body = await request.read()
            with self.cond:
                self.requests.append((request.method, request.path_qs, dict(request.headers), body))
                self.cond.notify_all()
            return await handler(request, body)
        self.app.router.add_route(method, path, recorded)
        return self

    def start(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self):
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def wait_requests(self, n, timeout=20):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f"wanted {n} requests, got {len(self.requests)}")
            return list(self.requests)

    def stop(self):
        if self.runner:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class ServedFake:
    """Base of the contract fakes: owns self.server, a FakeServer, and starts, stops and
    names it."""

    def __init__(self):
        self.server = FakeServer()

    def start(self):
        self.server.start()
        return self

    def stop(self):
        self.server.stop()

    @property
    def url(self):
        return self.server.url


def post_json(url, body, headers, timeout=30):
    """POSTs BODY (bytes) to URL; returns (status, the answer parsed as JSON, or its text)."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text or b"null")
        except ValueError:
            return e.code, text.decode(errors="replace")
