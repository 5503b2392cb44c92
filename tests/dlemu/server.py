"""The emulator as an object: builds the parts, owns the listeners, starts and stops.

Owns wiring and sockets that accept connections: a plain listener, a TLS one whose
certificate names 127.0.0.1/localhost, and optionally a TLS one whose certificate names
another host. Listeners can be taken down for a while (F12: connection refused). The
protocol lives in rest.py and stream.py, the bot in bot.py, faults in control_api.py.

    emu = Emulator(secret="s", token_ttl=6)
    info = await emu.start()     # the same dict the CLI prints
    ...
    await emu.stop()
"""
import asyncio
import os
import shutil
import socket
import tempfile

from aiohttp import web

from . import tlscerts
from .bot import Bot
from .control_api import ControlApi
from .conversations import Registry
from .reconnects import ConnectGate
from .replies import Refused
from .rest import Rest
from .settings import Settings
from .stats import Stats
from .stream import Streams
from .tokens import Minter

BASE = "/v3/directline"
BACKLOG = 4096                      # a reconnect storm of 10,000 sockets must not overflow it
CLIENT_BODY_MAX = 4 << 20           # above the service's activity limit, so rest.py answers 413


class Listener:
    """One accepting socket; closing it while existing connections live on gives F12's
    "connection refused" without disturbing other conversations' sockets."""

    def __init__(self, name, host, port, ssl_context):
        self.name, self.host, self.port, self.ssl = name, host, port, ssl_context
        self.server = None

    async def open(self, factory):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.server = await asyncio.get_running_loop().create_server(
            factory, sock=sock, ssl=self.ssl, backlog=BACKLOG)

    def close(self):
        if self.server is not None:
            self.server.close()
            self.server = None


class Emulator:
    def __init__(self, host="127.0.0.1", port=0, tls_port=0, wrong_tls_port=None,
                 secret="dlemu-secret", regional_prefix="europe", cert_dir=None, **settings):
        """tls_port / wrong_tls_port None: that listener is off. Other keywords are
        settings (settings.py), e.g. token_ttl=6, stream_ttl=2, page_size=2."""
        self.host = host
        self.ports = {"http": port, "tls": tls_port, "wrong_tls": wrong_tls_port}
        self.secret = secret
        self.regional_prefix = regional_prefix
        self.cert_dir, self.own_cert_dir = cert_dir, cert_dir is None
        self.settings = Settings(**settings)
        self.stats = Stats()
        self.registry = Registry()
        self.minter = Minter()
        self.gate = ConnectGate(self.settings, self.stats)
        self.streams = Streams(self)
        self.bot = Bot(self)
        self.listeners = {}
        self.reopening = set()
        self.runner = None
        self.info = None

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.stop()

    def app(self):
        app = web.Application(middlewares=[self.middleware], client_max_size=CLIENT_BODY_MAX)
        rest = Rest(self)
        for base in (BASE, "/" + self.regional_prefix + BASE):
            app.add_routes(rest.routes(base))
            app.add_routes([web.get(base + "/conversations/{cid}/stream", self.streams.handle)])
        app.add_routes(rest.copilot_routes())
        app.add_routes(ControlApi(self).routes())
        app.on_shutdown.append(self.on_shutdown)
        return app

    async def on_shutdown(self, app):
        self.streams.abort_all()    # else cleanup waits for every client to close

    @web.middleware
    async def middleware(self, request, handler):
        """Turns Refused into its response and counts what the client asked and was answered."""
        counted = not request.path.startswith("/_control")
        if counted:
            self.stats.by_base[self.base_of(request.path)] += 1
        try:
            response = await handler(request)
        except Refused as refused:
            response = refused.response
        except web.HTTPException as e:
            response = e
        if response is None:
            self.stats.bump("requests_dropped")
            return web.Response()   # the transport is gone; nothing is written
        if counted and not isinstance(response, web.WebSocketResponse):  # stream.py counts 101s
            self.stats.by_status[response.status] += 1
        if isinstance(response, web.HTTPException):
            raise response
        return response

    def base_of(self, path):
        """The Direct Line base a request used (F28 checks the regional one), else its
        first path segment."""
        for base in ("/" + self.regional_prefix + BASE, BASE):
            if path.startswith(base + "/"):
                return base
        return "/" + path.split("/")[1]

    async def start(self):
        certs = self.certificates()
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        contexts = {"http": None}
        if certs:
            contexts["tls"] = tlscerts.server_context(certs["server"], certs["server_key"])
            contexts["wrong_tls"] = tlscerts.server_context(certs["wrong"], certs["wrong_key"])
        for name, port in self.ports.items():
            if port is not None:
                self.listeners[name] = Listener(name, self.host, port, contexts[name])
                await self.listeners[name].open(self.runner.server)
        self.info = self.describe(certs)
        return self.info

    def certificates(self):
        if self.ports["tls"] is None and self.ports["wrong_tls"] is None:
            return None
        if self.cert_dir is None:
            self.cert_dir = tempfile.mkdtemp(prefix="dlemu-")
        os.makedirs(self.cert_dir, exist_ok=True)
        return tlscerts.make(self.cert_dir)

    def describe(self, certs):
        info = {"pid": os.getpid(), "host": self.host, "secret": self.secret,
                "regional_prefix": self.regional_prefix,
                "ca_file": certs["ca"] if certs else None,
                "cert_file": certs["server"] if certs else None}
        labels = {"http": ("http", "http"), "tls": ("https", "https"),
                  "wrong_tls": ("https", "wrong_https")}
        for name, listener in self.listeners.items():
            scheme, label = labels[name]
            origin = "%s://%s:%d" % (scheme, self.host, listener.port)
            info[name + "_port"] = listener.port
            info[label + "_origin"] = origin
            info[label + "_base"] = origin + BASE
        info["control"] = info["http_origin"] + "/_control"
        return info

    async def listener_down(self, name, seconds):
        """F12: the listener refuses connections for `seconds`, then accepts again."""
        listener = self.listeners[name]
        listener.close()
        self.stats.bump("listener_downs")
        task = asyncio.ensure_future(self.reopen(listener, seconds))
        self.reopening.add(task)
        task.add_done_callback(self.reopening.discard)

    async def reopen(self, listener, seconds):
        await asyncio.sleep(seconds)
        await listener.open(self.runner.server)

    async def stop(self):
        for task in list(self.reopening):
            task.cancel()
        self.streams.stop()
        for listener in self.listeners.values():
            listener.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.own_cert_dir and self.cert_dir:
            shutil.rmtree(self.cert_dir, ignore_errors=True)
