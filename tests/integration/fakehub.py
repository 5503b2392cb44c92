"""A contract fake of the generic webhook hub (hubs.md section 2) on 127.0.0.1.

It plays the hub's two sides: it receives handoffd's signed POSTs to /messages, /typing
and /handoffs (checking the signature and the bearer token, recording each in order,
answering as scripted), and it sends signed events to handoffd's
/hubs/webhook/events as a real hub would.
"""
import hashlib
import hmac
import json
import time
import uuid

from aiohttp import web

from fakeserver import ServedFake, post_json

SECRET = "hub-secret-0123456789abcdef"
TOKEN = "hub-token-abc"


def sign(secret, ts, body):
    return "v1=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


class FakeHub(ServedFake):
    def __init__(self, secret=SECRET, token=TOKEN):
        self.secret, self.token = secret, token
        self.received = []           # (path, json body) in arrival order, accepted ones only
        self.redelivered = []        # retries of something already received (same id): dropped,
                                     # as the contract asks a hub to
        self.seen = set()            # (path, id) of what was received
        self.arrivals = {}           # (conversation, text) -> arrival time, for benchmarks
        self.rejected = []           # (path, reason)
        self.script = []             # answers to give before the normal one: (status, headers)
        self.accept_handoffs = False  # answer {"accepted": true} to /handoffs
        self.handoff_status = None    # answer every /handoffs with this status (an outage)
        self.handoff_attempts = []    # routing of every /handoffs attempt, failed ones too
        super().__init__()
        for path in ("/messages", "/typing", "/handoffs", "/end"):
            self.server.route("POST", path, self._handle)

    # --- handoffd -> hub -------------------------------------------------------------

    def _verify(self, request, body):
        ts = request.headers.get("X-Handoffd-Timestamp", "")
        if not ts.isdigit() or abs(time.time() - int(ts)) > 300:
            return "bad timestamp"
        if not request.headers.get("X-Handoffd-Delivery"):
            return "no delivery id"
        if not hmac.compare_digest(request.headers.get("X-Handoffd-Signature", ""), sign(self.secret, ts, body)):
            return "bad signature"
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return "bad token"
        if request.headers.get("Content-Type") != "application/json":
            return "not json"
        return None

    async def _handle(self, request, body):
        why = self._verify(request, body)
        if why:
            with self.cond:
                self.rejected.append((request.path, why))
            return web.json_response({"error": why}, status=401)
        with self.cond:
            if request.path == "/handoffs":
                self.handoff_attempts.append(json.loads(body)["routing"])
                if self.handoff_status:
                    return web.json_response({"error": "down"}, status=self.handoff_status)
            if self.script and request.path != "/typing":
                status, headers = self.script.pop(0)
                return web.Response(status=status, headers=headers or {})
            doc = json.loads(body)
            key = doc.get("id") or doc.get("handoff_id")
            if key and (request.path, key) in self.seen:
                self.redelivered.append((request.path, doc))
            else:
                self.seen.add((request.path, key))
                self.received.append((request.path, doc))
                if request.path == "/messages":
                    self.arrivals[(doc["conversation"], doc["activity"].get("text"))] = time.monotonic()
            self.cond.notify_all()
        if request.path == "/handoffs" and self.accept_handoffs:
            return web.json_response({"accepted": True})
        return web.json_response({"ok": True})

    def wait(self, predicate, timeout=30, what="the expected traffic"):
        """Waits until PREDICATE(what was received so far); returns it."""
        super().wait(lambda s: predicate(s.received), timeout, what)
        with self.cond:
            return list(self.received)

    def progress(self):
        return f"got {self.received}"

    def messages(self, conversation=None):
        with self.cond:
            return [b for p, b in self.received if p == "/messages"
                    and (conversation is None or b["conversation"] == conversation)]

    def handoffs(self, conversation=None):
        with self.cond:
            return [b for p, b in self.received if p == "/handoffs"
                    and (conversation is None or b["conversation"] == conversation)]

    def ends(self, conversation=None):
        with self.cond:
            return [b for p, b in self.received if p == "/end"
                    and (conversation is None or b["conversation"] == conversation)]

    def wait_messages(self, conversation, n, timeout=30):
        self.wait(lambda r: len([b for p, b in r if p == "/messages" and b["conversation"] == conversation]) >= n,
                  timeout, f"{n} messages in {conversation}")
        return self.messages(conversation)

    def wait_handoff(self, conversation, timeout=30):
        self.wait(lambda r: any(p == "/handoffs" and b["conversation"] == conversation for p, b in r),
                  timeout, f"a handoff of {conversation}")
        return self.handoffs(conversation)[0]

    # --- hub -> handoffd ---------------------------------------------------------------

    def send(self, port, event, secret=None, ts=None, raw=None):
        """POSTs EVENT (signed) to handoffd; returns (status, parsed body)."""
        body = raw if raw is not None else json.dumps(event).encode()
        ts = str(int(time.time()) if ts is None else ts)
        headers = {"Content-Type": "application/json", "X-Handoffd-Timestamp": ts,
                   "X-Handoffd-Delivery": str(uuid.uuid4()),
                   "X-Handoffd-Signature": sign(secret or self.secret, ts, body)}
        return post_json(f"http://127.0.0.1:{port}/hubs/webhook/events", body, headers)

    def message(self, port, conversation, text, user="u-7", name="Dana", event_id=None):
        return self.send(port, {"id": event_id or str(uuid.uuid4()), "type": "message",
                                "conversation": conversation, "user": {"id": user, "name": name},
                                "text": text, "locale": "en-US"})
