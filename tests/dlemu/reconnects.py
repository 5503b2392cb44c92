"""What the emulated service does about reconnect storms (F26).

Owns the connect-rate limit shared by reconnect GETs and WebSocket handshakes, and the
count of reconnects in flight: a conversation is "reconnecting" from its
GET /conversations/{id} until the handshake that follows ends, either way.
"""
import asyncio
import time

from .replies import refuse


class ConnectGate:
    def __init__(self, settings, stats):
        self.settings = settings
        self.stats = stats
        self.window = 0         # the whole second being counted
        self.count = 0

    def admit(self):
        """Refuses with 429 when this second's connects exceed connect_rate_limit."""
        limit = self.settings.values["connect_rate_limit"]
        if not limit:
            return
        second = int(time.monotonic())
        if second != self.window:
            self.window, self.count = second, 0
        self.count += 1
        if self.count > limit:
            self.stats.bump("rate_limited")
            refuse(429, "Throttled", "too many connections",
                   self.settings.values["rate_limit_retry_after"])

    def started(self, conv):
        """A reconnect GET arrived. If no handshake follows before its streamUrl expires,
        the attempt is over anyway."""
        if conv.reconnecting is None:
            self.stats.gauge("reconnects_in_flight", 1)
        else:
            conv.reconnecting.cancel()
        conv.reconnecting = asyncio.get_running_loop().call_later(
            self.settings.get(conv, "stream_ttl"), self.ended, conv)

    def ended(self, conv):
        if conv.reconnecting is not None:
            conv.reconnecting.cancel()
            conv.reconnecting = None
            self.stats.gauge("reconnects_in_flight", -1)
