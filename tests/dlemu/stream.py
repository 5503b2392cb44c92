"""The Direct Line WebSocket stream: handshake checks, replay, pushes, and socket faults.

Owns every open socket. The handshake is aiohttp's; after it, frames the emulator pushes
are written to the transport synchronously (frames.py), so pushing to thousands of sockets
takes one loop turn and no socket has a task of its own besides aiohttp's reader. Closing
a socket cleanly uses aiohttp's close handshake.

Socket faults: abrupt drop (F1, F26), clean close with code and reason (F2, F3), silent
stall (F4), arbitrary frames (F5, F21, F22), watermark reset (F8), collision (F3).
"""
import asyncio
import time

from aiohttp import web, WSMsgType

from . import frames, tokens
from .conversations import parse_watermark
from .replies import dumps, refuse, fail

CLIENT_MSG_MAX = 64 * 1024          # clients only send keep-alives up the socket
KEEPALIVE_TICK = 0.1                # seconds between keep-alive scans while any is configured


class Socket:
    __slots__ = ("ws", "transport", "conv", "stalled", "closing", "next_keepalive", "replay_due")

    def __init__(self, ws, transport, conv):
        self.ws = ws
        self.transport = transport
        self.conv = conv
        self.stalled = False        # F4: no pushes, no pongs
        self.closing = None         # the aiohttp close task once a clean close began
        self.next_keepalive = 0.0
        self.replay_due = False     # replay_delay_ms: not replayed yet, so nothing is pushed


class Streams:
    def __init__(self, emu):
        self.emu = emu
        self.open = set()
        self.ticker = None

    # ---- handshake ------------------------------------------------------------------
    async def handle(self, request):
        """GET .../conversations/{cid}/stream?watermark=W&t=T: checks, then serves a socket."""
        stats = self.emu.stats
        stats.bump("ws_handshakes")
        stats.gauge("handshakes_in_flight", 1)
        conv = self.emu.registry.get(request.match_info["cid"])
        try:
            start = await self.admit(request, conv)
            ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=CLIENT_MSG_MAX)
            await ws.prepare(request)
            stats.by_status[101] += 1
        except BaseException:
            stats.bump("ws_rejected")
            raise
        finally:
            stats.gauge("handshakes_in_flight", -1)
            if conv is not None:
                self.emu.gate.ended(conv)
        return await self.serve(ws, Socket(ws, request.transport, conv), start)

    async def admit(self, request, conv):
        """Every reason the service refuses a handshake; returns the replay start position."""
        if conv is None or conv.expired:
            refuse(404, "BadArgument", "Unknown conversation")
        self.emu.gate.admit()
        failure = self.emu.registry.take_failure(conv, "handshake")
        if failure:
            await fail(request, failure)
        claims = self.stream_claims(request, conv)
        delay = self.emu.settings.get(conv, "handshake_delay_ms")
        if delay:
            await asyncio.sleep(delay / 1000)
        return self.replay_start(request, conv, claims)

    def stream_claims(self, request, conv):
        claims, why = self.emu.minter.check(request.query.get("t", ""), tokens.STREAM)
        if why is None and claims["conv"] != conv.id:
            why = "stream token for another conversation"
        if why:
            self.emu.stats.auth_failure(request, 403, "stream token " + why)
            refuse(403, "TokenExpired" if why == "expired" else "BadArgument",
                   "Stream token " + why)
        return claims

    def replay_start(self, request, conv, claims):
        if self.emu.settings.get(conv, "replay_full_history"):
            return 0
        if "watermark" not in request.query:
            return claims.get("w", 0)   # "from the reconnect call on", set when it was issued
        try:
            return parse_watermark(request.query["watermark"]) or 0
        except ValueError:
            refuse(400, "BadArgument", "Bad watermark")

    # ---- one socket's life ----------------------------------------------------------
    async def serve(self, ws, sock, start):
        self.attach(sock, start)
        try:
            async for msg in ws:
                await self.from_client(sock, msg)
        finally:
            self.detach(sock)
        if sock.closing is not None:
            await sock.closing
        return ws

    async def from_client(self, sock, msg):
        """Direct Line ignores whatever a client sends up the socket; pings get a pong
        unless the socket is stalled (F4)."""
        if msg.type == WSMsgType.PING:
            self.emu.stats.bump("ws_pings")
            if not sock.stalled and not sock.closing:
                await sock.ws.pong(msg.data)
        elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            self.emu.stats.bump("ws_client_frames")

    def attach(self, sock, start):
        conv = sock.conv
        stats = self.emu.stats
        policy = self.emu.settings.get(conv, "collision")
        alive = [s for s in conv.sockets if not s.stalled]     # a stalled one is dead to the service
        if alive and policy != "none":
            stats.bump("collisions")
            victims = alive if policy == "old" else [sock]
            for victim in victims:
                self.close(victim, 1000, "collision")
        conv.sockets.append(sock)
        self.open.add(sock)
        stats.bump("ws_accepted")
        stats.gauge("ws_open", 1)
        delay = self.emu.settings.get(conv, "replay_delay_ms")
        if not sock.closing and delay:
            sock.replay_due = True
            asyncio.get_running_loop().call_later(delay / 1000, self.late_replay, sock, start)
        elif not sock.closing:
            self.replay(sock, start)

    def late_replay(self, sock, start):
        """A slow service: the replay comes late, and covers what was pushed meanwhile."""
        sock.replay_due = False
        if sock in self.open:
            self.replay(sock, start)

    def detach(self, sock):
        if sock in self.open:
            self.open.discard(sock)
            sock.conv.sockets.remove(sock)
            self.emu.stats.bump("ws_closed")
            self.emu.stats.gauge("ws_open", -1)

    def replay(self, sock, position):
        conv = sock.conv
        size = max(1, self.emu.settings.get(conv, "page_size"))
        while True:
            acts, position = conv.page(position, size)
            if not acts:
                return
            self.write(sock, self.encode_set(conv, acts, conv.reported(position)))

    # ---- pushing --------------------------------------------------------------------
    def push(self, conv, activities):
        """One ActivitySet to every socket of the conversation, carrying the stream position.
        With the `push` setting off the service loses them on the socket (they stay in the
        log for GET), as the real one has been seen to."""
        if conv.sockets and self.emu.settings.get(conv, "push"):
            data = self.encode_set(conv, activities, conv.reported())
            for sock in conv.sockets:
                if not sock.replay_due:
                    self.write(sock, data)

    def encode_set(self, conv, activities, watermark):
        body = {"activities": activities}
        mode = self.emu.settings.get(conv, "watermark_mode")
        if mode != "omit":
            body["watermark"] = watermark if mode == "normal" else None
        payload = dumps(body).encode("utf-8")
        return frames.message(payload, frames.TEXT, self.emu.settings.get(conv, "fragment_size"))

    def write(self, sock, data):
        transport = sock.transport
        if sock.stalled or sock.closing or transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.emu.settings.values["max_write_buffer"]:
            self.emu.stats.bump("slow_consumers_dropped")
            transport.abort()
            return
        transport.write(data)
        self.emu.stats.bump("ws_frames_sent")

    def send_frames(self, convs, specs):
        """F5/F21/F22: frames given by the control API, as they are, to every socket."""
        for conv in convs:
            for sock in list(conv.sockets):
                for data in specs:
                    self.write(sock, data)

    def watermark_reset(self, conv):
        """F8: from now on the stream reports watermarks counted from here, starting at "0"."""
        conv.wm_base = len(conv.log)
        self.push(conv, [])

    # ---- faults on open sockets -----------------------------------------------------
    def drop(self, convs, mode="abort", code=1000, reason=""):
        n = 0
        for conv in convs:
            for sock in list(conv.sockets):
                n += 1
                if mode == "abort":
                    sock.transport.abort()      # F1/F26: no close frame, no FIN handshake
                else:
                    self.close(sock, code, reason)
        self.emu.stats.bump("sockets_dropped", n)
        return n

    def close(self, sock, code, reason):
        if sock.closing is None:
            sock.closing = asyncio.ensure_future(sock.ws.close(code=code, message=reason.encode()))

    def stall(self, convs):
        n = 0
        for conv in convs:
            for sock in conv.sockets:
                sock.stalled = True
                n += 1
        return n

    def abort_all(self):
        for sock in list(self.open):
            sock.transport.abort()

    def stop(self):
        if self.ticker is not None:
            self.ticker.cancel()
            self.ticker = None
        self.abort_all()

    # ---- keep-alives (F5) -----------------------------------------------------------
    def settings_changed(self):
        """Starts the keep-alive scan once any conversation wants keep-alives."""
        if self.ticker is None and self.keepalives_wanted():
            self.ticker = asyncio.get_running_loop().call_later(KEEPALIVE_TICK, self.tick)

    def keepalives_wanted(self):
        return self.emu.settings.values["keepalive_interval"] > 0 or any(
            c.overrides and c.overrides.get("keepalive_interval")
            for c in self.emu.registry.by_id.values())

    def tick(self):
        now = time.monotonic()
        get = self.emu.settings.get
        for sock in list(self.open):
            interval = get(sock.conv, "keepalive_interval")
            if interval and now >= sock.next_keepalive:
                sock.next_keepalive = now + interval
                self.write(sock, frames.frame(frames.TEXT, get(sock.conv, "keepalive_frame").encode()))
        self.ticker = None
        self.settings_changed()

