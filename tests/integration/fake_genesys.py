"""A contract fake of Genesys Cloud Open Messaging (hubs.md section 5) on 127.0.0.1.

What handoffd calls, checked as Genesys checks it:
  POST /oauth/token      client credentials: HTTP Basic client id and secret, a form body
                         grant_type=client_credentials; answers {access_token, token_type,
                         expires_in} with a short lifetime so tests see renewals.
  POST /api/v2/conversations/messages/{integrationId}/inbound/open/message
                         needs a Bearer token that is issued, unexpired and not revoked (else
                         401); the body is validated with jsonschema against the published
                         definitions (specs/genesys/openInboundNormalizedMessage.json:
                         channel.from {id, idType enum}, channel.time date-time, string custom
                         attributes, attachment media types) and needs text or content; 400
                         bad.request otherwise. The first message from a from.id opens a Genesys
                         conversation (its custom attributes become the customer
                         participant's attributes); ?prefetchConversationId=true puts its id
                         in the answer (202).
  GET  /api/v2/conversations/messages/{conversationId}
                         the MessageConversation: participants (MessageMediaParticipant) the
                         customer (with the attributes), the ACD leg while it waits, then the
                         agent (name, user.id, state); when the agent disconnects every leg
                         ends (state disconnected, endTime).
Both API routes and the login answer self.script / self.login_script first: (status,
headers) pairs such as 429 with Retry-After or 503.

What Genesys sends handoffd (the integration's outbound webhook), signed
X-Hub-Signature-256: sha256=<base64 HMAC-SHA256(secret, raw body)>, shaped like the
documented outbound normalized messages (channel.from is the integration): the agent's text
(type Text) and typing (type Event, Typing). Nothing is posted when the agent disconnects;
presence_disconnect() sends the Web Messaging Presence/Disconnect event on demand. A
Trigger's disconnect notice goes to /hubs/genesys/disconnected.
"""
import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import pathlib
import time
import urllib.parse
import uuid

import jsonschema
from aiohttp import web

from fakeserver import ServedFake, post_json

CLIENT_ID = "c1a7e0f2-0000-4000-8000-0123456789ab"
CLIENT_SECRET = "genesys-client-secret/with:odd&chars"
INTEGRATION_ID = "9e7b5c1d-1111-4222-8333-444455556666"
WEBHOOK_SECRET = "genesys-webhook-secret-0123456789"
NOTICE_TOKEN = "genesys-notice-token-0123456789"
INTEGRATION_NAME = "Acme Open Messaging"      # what outbound messages carry as channel.from.nickname
AGENT = {"id": "6a1d2f3e-4b5c-4d6e-8f70-8192a3b4c5d6", "name": "Sam Agent"}
SPEC = pathlib.Path(__file__).parent / "specs" / "genesys" / "openInboundNormalizedMessage.json"
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value):
    """ISO 8601 date-time (jsonschema checks it only with an extra package Debian lacks here)."""
    return not isinstance(value, str) or bool(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")))


# The Swagger 2.0 definitions of the inbound open message (JSON Schema draft 4 subsets).
INBOUND = jsonschema.Draft4Validator(json.loads(SPEC.read_text()), format_checker=FORMATS)


def sign(secret, body):
    return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def iso_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeGenesys(ServedFake):
    def __init__(self, token_lifetime=3600):
        super().__init__()
        self.token_lifetime = token_lifetime
        self.tokens = {}            # token -> expiry (epoch seconds)
        self.revoked = set()
        self.logins = []            # tokens issued, in order
        self.inbound = []           # (query, body, token) of accepted inbound messages, in order
        self.rejected = []          # (path, reason)
        self.script, self.login_script = [], []
        self.conversations = {}     # id -> {"from", "attributes", "agent", "open"}
        self.open_by_customer = {}  # from.id -> conversation id
        self.reads = 0              # GETs of a conversation (the agent's name, whether it ended)
        self.permissions = {"conversation:message:receive", "conversation:message:view"}   # the OAuth client's role
        self.server.route("POST", "/oauth/token", self._login)
        self.server.route("POST", "/api/v2/conversations/messages/{integration}/inbound/open/message", self._message)
        self.server.route("GET", "/api/v2/conversations/messages/{conversation}", self._conversation)

    # --- handoffd -> Genesys -----------------------------------------------------------

    def _reject(self, request, status, reason):
        with self.cond:
            self.rejected.append((request.path, reason))
            self.cond.notify_all()
        code = {400: "bad.request", 401: "authentication.required", 403: "missing.permissions"}.get(status, "not.found")
        return web.json_response({"message": reason, "code": code, "status": status}, status=status)

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
        """The first way DOC breaks the published schema (Genesys answers 400 bad.request)."""
        error = jsonschema.exceptions.best_match(INBOUND.iter_errors(doc))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "body"
            return f"{where}: {error.message}"[:300]
        if not doc.get("text") and not doc.get("content"):
            return "text or content is required"
        return None

    def _open_conversation(self, doc):
        frm = doc["channel"]["from"]["id"]
        cid = self.open_by_customer.get(frm)
        if cid is None:
            cid = str(uuid.uuid4())
            attrs = dict((doc["channel"].get("metadata") or {}).get("customAttributes", {}))
            # MessageMediaParticipant shapes: the customer, and the ACD leg while it waits in queue
            self.conversations[cid] = {"from": frm, "participants": [
                {"id": str(uuid.uuid4()), "purpose": "customer", "state": "connected", "direction": "inbound",
                 "name": doc["channel"]["from"].get("nickname"), "startTime": iso_now(), "attributes": attrs},
                {"id": str(uuid.uuid4()), "purpose": "acd", "state": "connected", "name": "orders",
                 "startTime": iso_now(), "queue": {"id": "q-orders"}}]}
            self.open_by_customer[frm] = cid
        return cid

    async def _message(self, request, body):
        token, why = self._token_error(request)
        if why:
            return self._reject(request, 401, why)
        if "conversation:message:receive" not in self.permissions:
            return self._reject(request, 403, "missing permission conversation:message:receive")
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
        if "conversation:message:view" not in self.permissions:
            return self._reject(request, 403, "missing permission conversation:message:view")
        scripted = self._scripted(self.script)
        if scripted is not None:
            return scripted
        with self.cond:
            self.reads += 1
            self.cond.notify_all()
            conv = self.conversations.get(request.match_info["conversation"])
            if conv is None:
                return web.json_response({"message": "not found", "code": "not.found", "status": 404}, status=404)
            parts = [dict(p) for p in conv["participants"]]
        return web.json_response({"id": request.match_info["conversation"], "participants": parts,
                                  "selfUri": request.path})

    # --- what the tests read -------------------------------------------------------------

    def progress(self):
        return f"inbound={self.inbound} reads={self.reads} rejected={self.rejected}"

    def wait_inbound(self, n, timeout=30):
        self.wait(lambda s: len(s.inbound) >= n, timeout, f"{n} inbound messages")
        with self.cond:
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
        self.wait(lambda s: time.time() >= s.tokens[token], timeout, f"{token} to expire")

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
        """A normalized outbound message as Genesys posts it to the webhook: channel.from is
        the integration (its name as nickname), not the agent."""
        msg_id = msg_id or uuid.uuid4().hex
        return {"id": msg_id,
                "channel": {"id": INTEGRATION_ID, "platform": "Open", "type": "Private",
                            "to": {"id": customer, "idType": "Opaque"},
                            "from": {"nickname": INTEGRATION_NAME, "id": INTEGRATION_ID, "idType": "Opaque"},
                            "time": iso_now(), "messageId": msg_id},
                "type": mtype, "direction": "Outbound", **fields}

    def _conv(self, customer):
        return self.conversations[self.open_by_customer[customer]]

    def _agent_joined(self, customer):
        """ACD hands the conversation to the agent: the ACD leg ends, the agent's connects."""
        with self.cond:
            parts = self._conv(customer)["participants"]
            if any(p["purpose"] == "agent" for p in parts):
                return
            for p in parts:
                if p["purpose"] == "acd":
                    p.update(state="disconnected", endTime=iso_now())
            parts.append({"id": str(uuid.uuid4()), "purpose": "agent", "state": "connected", "name": AGENT["name"],
                          "user": {"id": AGENT["id"]}, "startTime": iso_now(), "connectedTime": iso_now()})

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
        """The agent disconnects the interaction: every participant's leg ends, and nothing is
        posted to the webhook (Open Messaging documents no such event). Returns its id."""
        with self.cond:
            cid = self.open_by_customer.pop(customer)
            for p in self.conversations[cid]["participants"]:
                if p["state"] != "disconnected":
                    p.update(state="disconnected", endTime=iso_now())
            return cid

    def queue_gives_up(self, customer):
        """The flow ends the conversation while it waits in queue (no agent ever connected)."""
        return self.agent_leaves(customer)

    def wait_reads(self, n, timeout=30):
        self.wait(lambda s: s.reads >= n, timeout, f"{n} conversation reads")

    def presence_disconnect(self, port, customer):
        """A Presence/Disconnect event, which Web Messaging has and Open Messaging does not
        document: kept to show handoffd honours it should Genesys ever send it."""
        body = self.outbound(customer, "Event", events=[{"eventType": "Presence", "presence": {"type": "Disconnect"}}])
        return self.post(port, json.dumps(body).encode())

    def notice(self, port, conversation_id, token=NOTICE_TOKEN):
        """What a Trigger's workflow data action posts when the agent's session ends."""
        return self.post(port, json.dumps({"conversationId": conversation_id}).encode(), path="/hubs/genesys/disconnected",
                         headers={"Authorization": f"Bearer {token}"})
