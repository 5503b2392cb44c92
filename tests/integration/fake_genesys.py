"""A contract fake of Genesys Cloud Open Messaging (hubs.md section 5) on 127.0.0.1.

What handoffd calls, checked as Genesys checks it:
  POST /oauth/token      client credentials: HTTP Basic client id and secret, a form body
                         grant_type=client_credentials; answers {access_token, token_type,
                         expires_in} with a short lifetime so tests see renewals.
  POST /api/v2/conversations/messages/{integrationId}/inbound/open/message
                         needs a Bearer token that is issued, unexpired and not revoked (else
                         401); the body needs channel.from {id, idType}, channel.messageId,
                         channel.time (ISO 8601), text or content, and custom attributes
                         that are strings. The first message from a from.id opens a Genesys
                         conversation (its custom attributes become the customer
                         participant's attributes); ?prefetchConversationId=true puts its id
                         in the answer (202).
  GET  /api/v2/conversations/messages/{conversationId}
                         the conversation's participants: the customer (with the attributes)
                         and, once an agent has taken it, the agent with its state.
Both API routes and the login answer self.script / self.login_script first: (status,
headers) pairs such as 429 with Retry-After or 503.

What Genesys sends handoffd (the integration's outbound webhook), signed
X-Hub-Signature-256: sha256=<base64 HMAC-SHA256(secret, raw body)>: the agent's text
(normalized message type Text), typing and the disconnect (type Event, Typing /
Presence Disconnect). A Trigger's disconnect notice goes to /hubs/genesys/disconnected.
"""
import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
import uuid

from aiohttp import web

from fakeserver import ServedFake, post_json

CLIENT_ID = "c1a7e0f2-0000-4000-8000-0123456789ab"
CLIENT_SECRET = "genesys-client-secret/with:odd&chars"
INTEGRATION_ID = "9e7b5c1d-1111-4222-8333-444455556666"
WEBHOOK_SECRET = "genesys-webhook-secret-0123456789"
NOTICE_TOKEN = "genesys-notice-token-0123456789"


def sign(secret, body):
    return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def iso_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeGenesys(ServedFake):
    def __init__(self, token_lifetime=3600):
        self.token_lifetime = token_lifetime
        self.tokens = {}            # token -> expiry (epoch seconds)
        self.revoked = set()
        self.logins = []            # tokens issued, in order
        self.inbound = []           # (query, body, token) of accepted inbound messages, in order
        self.rejected = []          # (path, reason)
        self.script, self.login_script = [], []
        self.conversations = {}     # id -> {"from", "attributes", "agent", "open"}
        self.open_by_customer = {}  # from.id -> conversation id
        self.cond = threading.Condition()
        super().__init__()
        self.server.route("POST", "/oauth/token", self._login)
        self.server.route("POST", "/api/v2/conversations/messages/{integration}/inbound/open/message", self._message)
        self.server.route("GET", "/api/v2/conversations/messages/{conversation}", self._conversation)

    # --- handoffd -> Genesys -----------------------------------------------------------

    def _reject(self, request, status, reason):
        with self.cond:
            self.rejected.append((request.path, reason))
            self.cond.notify_all()
        return web.json_response({"message": reason}, status=status)

    def _scripted(self, script):
        with self.cond:
            if script:
                status, headers = script.pop(0)
                return web.json_response({"message": "scripted"}, status=status, headers=headers or {})
        return None

    def _login_error(self, request, body):
        want = base64.b64encode(f"{urllib.parse.quote(CLIENT_ID, safe='')}:"
                                f"{urllib.parse.quote(CLIENT_SECRET, safe='')}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {want}":
            return "bad client credentials"
        if request.headers.get("Content-Type") != "application/x-www-form-urlencoded":
            return "not a form"
        if urllib.parse.parse_qs(body.decode()).get("grant_type") != ["client_credentials"]:
            return "bad grant"
        return None

    async def _login(self, request, body):
        why = self._login_error(request, body)
        if why:
            return self._reject(request, 401, why)
        scripted = self._scripted(self.login_script)
        if scripted is not None:
            return scripted
        token = f"tok-{len(self.logins) + 1}-{uuid.uuid4().hex[:8]}"
        with self.cond:
            self.tokens[token] = time.time() + self.token_lifetime
            self.logins.append(token)
            self.cond.notify_all()
        asyncio.get_running_loop().call_later(self.token_lifetime + 0.05, self._notify)   # for wait_token_expired
        return web.json_response({"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime})

    def _token_error(self, request):
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token not in self.tokens or token in self.revoked:
            return None, "bad token"
        if time.time() >= self.tokens[token]:
            return None, "expired token"
        return token, None

    @staticmethod
    def _body_error(doc):
        ch = doc.get("channel") if isinstance(doc, dict) else None
        if not isinstance(ch, dict) or not isinstance(ch.get("from"), dict):
            return "channel.from is required"
        if not isinstance(ch["from"].get("id"), str) or ch["from"].get("idType") not in ("Opaque", "Email", "Phone"):
            return "channel.from needs id and idType"
        if not isinstance(ch.get("messageId"), str) or not ch["messageId"]:
            return "channel.messageId is required"
        try:
            datetime.datetime.fromisoformat(ch.get("time", "").replace("Z", "+00:00"))
        except ValueError:
            return "channel.time must be ISO 8601"
        if not doc.get("text") and not doc.get("content"):
            return "text or content is required"
        attrs = (ch.get("metadata") or {}).get("customAttributes", {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()):
            return "custom attributes must be strings"
        return None

    def _open_conversation(self, doc):
        frm = doc["channel"]["from"]["id"]
        cid = self.open_by_customer.get(frm)
        if cid is None:
            cid = str(uuid.uuid4())
            attrs = dict((doc["channel"].get("metadata") or {}).get("customAttributes", {}))
            self.conversations[cid] = {"from": frm, "attributes": attrs, "agent": None}
            self.open_by_customer[frm] = cid
        return cid

    async def _message(self, request, body):
        token, why = self._token_error(request)
        if why:
            return self._reject(request, 401, why)
        if request.match_info["integration"] != INTEGRATION_ID:
            return self._reject(request, 404, "unknown integration")
        if request.headers.get("Content-Type") != "application/json":
            return self._reject(request, 415, "not json")
        scripted = self._scripted(self.script)
        if scripted is not None:
            return scripted
        try:
            doc = json.loads(body)
        except ValueError:
            return self._reject(request, 400, "bad json")
        why = self._body_error(doc)
        if why:
            return self._reject(request, 400, why)
        with self.cond:
            cid = self._open_conversation(doc)
            self.inbound.append((dict(request.query), doc, token))
            self.cond.notify_all()
        answer = {"id": uuid.uuid4().hex, "channel": doc["channel"], "text": doc.get("text"), "direction": "Inbound"}
        if request.query.get("prefetchConversationId") == "true":
            answer["conversationId"] = cid
        return web.json_response(answer, status=202)

    async def _conversation(self, request, body):
        _, why = self._token_error(request)
        if why:
            return self._reject(request, 401, why)
        scripted = self._scripted(self.script)
        if scripted is not None:
            return scripted
        with self.cond:
            conv = self.conversations.get(request.match_info["conversation"])
            if conv is None:
                return web.json_response({"message": "not found"}, status=404)
            parts = [{"id": "p-customer", "purpose": "customer", "state": "connected",
                      "attributes": conv["attributes"]}]
            if conv["agent"]:
                parts.append({"id": "p-agent", "purpose": "agent", "state": conv["agent"], "userId": "a-1"})
        return web.json_response({"id": request.match_info["conversation"], "participants": parts})

    # --- what the tests read -------------------------------------------------------------

    def wait_inbound(self, n, timeout=30):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.inbound) >= n, timeout):
                raise AssertionError(f"wanted {n} inbound messages, got {len(self.inbound)}: {self.inbound}")
            return list(self.inbound)

    def texts(self):
        with self.cond:
            return [b.get("text") for _, b, _ in self.inbound]

    def conversation_of(self, customer):
        with self.cond:
            return self.open_by_customer.get(customer)

    def _notify(self):
        with self.cond:
            self.cond.notify_all()

    def wait_token_expired(self, token, timeout=30):
        """Waits until TOKEN's lifetime is over (the fake wakes its waiters at each expiry)."""
        with self.cond:
            if not self.cond.wait_for(lambda: time.time() >= self.tokens[token], timeout):
                raise AssertionError(f"{token} did not expire")

    def revoke_all(self):
        with self.cond:
            self.revoked.update(self.tokens)

    # --- Genesys -> handoffd -------------------------------------------------------------

    def post(self, port, body, signature=None, path="/hubs/genesys/messages", headers=None):
        """POSTs BODY (bytes) to handoffd; returns (status, parsed body)."""
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if path == "/hubs/genesys/messages":
            hdrs["X-Hub-Signature-256"] = signature if signature is not None else sign(WEBHOOK_SECRET, body)
        return post_json(f"http://127.0.0.1:{port}{path}", body, hdrs)

    @staticmethod
    def outbound(customer, mtype, msg_id=None, **fields):
        """A normalized outbound message as Genesys posts it to the webhook."""
        msg_id = msg_id or uuid.uuid4().hex
        return {"id": msg_id,
                "channel": {"id": INTEGRATION_ID, "platform": "Open", "type": "Private", "to": {"id": customer},
                            "from": {"nickname": "Sam", "id": INTEGRATION_ID, "idType": "Opaque"},
                            "time": iso_now(), "messageId": msg_id},
                "type": mtype, "direction": "Outbound", **fields}

    def _agent_joined(self, customer):
        with self.cond:
            conv = self.conversations[self.open_by_customer[customer]]
            conv["agent"] = conv["agent"] or "connected"

    def agent_says(self, port, customer, text, msg_id=None, originating="Human"):
        if originating == "Human":
            self._agent_joined(customer)
        body = self.outbound(customer, "Text", msg_id, text=text, originatingEntity=originating)
        return self.post(port, json.dumps(body).encode())

    def agent_typing(self, port, customer):
        self._agent_joined(customer)
        body = self.outbound(customer, "Event", events=[{"eventType": "Typing", "typing": {"type": "On", "duration": 5000}}])
        return self.post(port, json.dumps(body).encode())

    def agent_leaves(self, customer):
        """The agent disconnects in Genesys; the conversation ends."""
        with self.cond:
            cid = self.open_by_customer.pop(customer)
            self.conversations[cid]["agent"] = "disconnected"
            return cid

    def disconnect(self, port, customer):
        """The agent disconnects, and Genesys posts the Presence Disconnect event."""
        self.agent_leaves(customer)
        body = self.outbound(customer, "Event", events=[{"eventType": "Presence", "presence": {"type": "Disconnect"}}])
        return self.post(port, json.dumps(body).encode())

    def notice(self, port, conversation_id, token=NOTICE_TOKEN):
        """What a Trigger's workflow data action posts when the agent's session ends."""
        return self.post(port, json.dumps({"conversationId": conversation_id}).encode(), path="/hubs/genesys/disconnected",
                         headers={"Authorization": f"Bearer {token}"})
