"""A scriptable HTTP server on 127.0.0.1 (aiohttp in a background thread) for tests
that need something on the other end of handoffd's outbound requests.

    srv = FakeServer(); srv.route("POST", "/x", handler); srv.start(); ...; srv.stop()

Handlers are aiohttp handlers (async def h(request) -> web.Response). Every request is
recorded in srv.requests as (method, path, headers, body) in arrival order.
post_json(url, body, headers) is the other direction: a fake hub calling handoffd.
ServedFake and QueuedWebhooks are what the contract fakes (fake_*.py) share.
"""
import asyncio
import json
import queue
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
    names it; self.cond guards the fake's records (the server thread and the test's both
    use them). handoffd_port is handoffd's port once it listens (hub_env.HubEnv sets it);
    a fake whose webhooks go to one path names it in EVENTS_PATH and posts to self.target."""

    EVENTS_PATH = None

    def __init__(self):
        self.server = FakeServer()
        self.cond = threading.Condition()
        self.handoffd_port = None

    def start(self):
        self.server.start()
        return self

    def stop(self):
        self.server.stop()

    @property
    def url(self):
        return self.server.url

    @property
    def target(self):
        """handoffd's events URL, or None before handoffd listens."""
        return f"http://127.0.0.1:{self.handoffd_port}{self.EVENTS_PATH}" if self.handoffd_port else None

    def wait(self, predicate, timeout=30, what="the expected traffic"):
        """Waits until PREDICATE(self) holds (checked whenever self.cond is notified)."""
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"timed out waiting for {what}; {self.progress()}")

    def progress(self):
        """What the fake saw so far, for a timeout's message."""
        return f"calls={self.calls} rejected={self.rejected}"


class QueuedWebhooks(ServedFake):
    """A fake that sends its webhooks one at a time from a worker thread, as a hub's job
    queue does: queue_webhook(job) from the fake's code, deliver(job) -> a record (a dict)
    in the subclass, kept in self.deliveries in delivery order; drain() waits for them all."""

    def __init__(self):
        super().__init__()
        self.deliveries = []     # the records of the webhooks delivered (or given up)
        self.queued = 0          # webhooks queued so far (deliveries catch up with it)
        self.jobs = queue.Queue()
        self.worker = threading.Thread(target=self._work, daemon=True)

    def start(self):
        self.worker.start()
        return super().start()

    def stop(self):
        self.jobs.put(None)
        self.worker.join(10)
        super().stop()

    def queue_webhook(self, job):
        """Queues JOB (the caller holds self.cond)."""
        self.queued += 1
        self.jobs.put(job)

    def _work(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            record = self.deliver(job)
            with self.cond:
                self.deliveries.append(record)
                self.cond.notify_all()

    def drain(self, timeout=30):
        """Waits until every webhook queued so far was delivered (or given up)."""
        with self.cond:
            n = self.queued
        self.wait(lambda s: len(s.deliveries) >= n, timeout, f"{n} webhooks delivered")

    def post_webhook(self, body, headers, timeout):
        """POSTs BODY to self.target; returns (status, parsed answer, error), error being
        why there was no answer (timeout, refused)."""
        try:
            return (*post_json(self.target, body, headers, timeout), None)
        except OSError as e:
            return None, None, f"no answer: {e}"


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
