"""Counters, gauges and the notes tests read back, plus waking whoever waits on them.

Owns observation only: the other modules call bump()/gauge() where things happen, and the
control API reads snapshot() or waits for a change with wait_for().
"""
import asyncio
import collections
import time

AUTH_FAILURES_KEPT = 1000


class Stats:
    def __init__(self):
        self.counters = collections.Counter()
        self.gauges = {}        # name -> [current, max]
        self.by_status = collections.Counter()
        self.by_base = collections.Counter()
        self.auth_failures = collections.deque(maxlen=AUTH_FAILURES_KEPT)
        self._changed = None    # an asyncio.Event only while someone waits

    def bump(self, name, n=1):
        self.counters[name] += n
        self.notify()

    def gauge(self, name, delta):
        g = self.gauges.setdefault(name, [0, 0])
        g[0] += delta
        g[1] = max(g[1], g[0])
        self.notify()

    def auth_failure(self, request, status, reason):
        # The path only: the query may hold a stream token.
        self.auth_failures.append({"time": time.time(), "method": request.method,
                                   "path": request.path, "status": status, "reason": reason})
        self.bump("auth_failures")

    def reset(self):
        """Zeroes counters and maxima; current gauge values stay (sockets are still open)."""
        self.counters.clear()
        self.by_status.clear()
        self.by_base.clear()
        self.auth_failures.clear()
        for g in self.gauges.values():
            g[1] = g[0]
        self.notify()

    def value(self, name):
        if name in self.gauges:
            return self.gauges[name][0]
        if name.endswith("_max") and name[:-4] in self.gauges:
            return self.gauges[name[:-4]][1]
        return self.counters.get(name, 0)

    def snapshot(self):
        out = dict(self.counters)
        for name, (current, peak) in self.gauges.items():
            out[name] = current
            out[name + "_max"] = peak
        out["http_status"] = {str(k): v for k, v in sorted(self.by_status.items())}
        out["requests_by_base"] = dict(self.by_base)
        return out

    def notify(self):
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_for(self, predicate, timeout):
        """Waits until predicate() is true or timeout seconds pass; returns its last value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            left = deadline - loop.time()
            if value or left <= 0:
                return value
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass
