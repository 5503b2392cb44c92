"""A contract fake of Sunshine Conversations API v2 with the Switchboard (hubs.md section 4)
on 127.0.0.1, following the published OpenAPI shapes.

It plays the hub's two sides:
- the API handoffd calls: POST /v2/apps/{app}/conversations/{conv}/messages, /activity and
  /passControl. Each request must carry `Authorization: Basic key_id:key_secret` and a JSON
  body of the documented shape (passControl metadata flat and at most 4 KB as JSON), about
  a conversation the fake knows; anything else is refused (400/401/404) and listed in
  `rejected`. Accepted calls are recorded in order; `script` holds answers (429, 5xx) to
  give before the normal one, to any call or to one operation. A passControl moves the conversation's active switchboard
  integration and, as Sunshine does, notifies handoffd with a switchboard:passControl event.
- the webhooks Sunshine sends: bodies `{app, webhook, events: [...]}` with `X-API-Key`,
  built from the fake's own view of each conversation (its active integration, message
  ids), so tests can send several events per body, replay them, and send failures.
"""
import asyncio
import base64
import datetime
import itertools
import json
import threading
import uuid

from aiohttp import web

from fakeserver import ServedFake, post_json

APP_ID = "5ebee0975ac5a1b2c3d4e5f6"
KEY_ID = "app_5f1c0a9e8d7c6b5a"
KEY_SECRET = "sunco-key-secret-0123456789abcdef"
WEBHOOK_SECRET = "sunco-webhook-secret-0123456789"
US = {"id": "5eecde2d1f0e", "name": "handoffd", "integrationId": "5eecde001a2b", "integrationType": "custom"}
AGENT_WORKSPACE = {"id": "5eecde99aa01", "name": "zd:agentWorkspace", "integrationId": "5eecde99bb02",
                   "integrationType": "zd:agentWorkspace"}
ANSWER_BOT = {"id": "5eecde77cc03", "name": "zd:answerBot", "integrationId": "5eecde77dd04",
              "integrationType": "zd:answerBot"}
INTEGRATIONS = (US, AGENT_WORKSPACE, ANSWER_BOT)
METADATA_MAX = 4096
BODY_MAX = 100 * 1024

MESSAGE_KEYS = {"author", "content", "destination", "metadata", "override", "schema"}
AUTHOR_KEYS = {"type", "userId", "userExternalId", "displayName", "avatarUrl"}
ACTIVITY_TYPES = {"conversation:read", "typing:start", "typing:stop"}


def new_id():
    return uuid.uuid4().hex[:24]


class Refused(Exception):
    def __init__(self, status, why):
        super().__init__(why)
        self.status, self.why = status, why


def check_metadata(meta, where):
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise Refused(400, f"{where} must be an object")
    for k, v in meta.items():
        if not isinstance(v, (str, int, float, bool)):
            raise Refused(400, f"{where}.{k} is not a string, number or boolean")
    size = len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode())
    if size > METADATA_MAX:
        raise Refused(400, f"{where} is {size} bytes, over 4 KB")


def check_author(author):
    if not isinstance(author, dict) or set(author) - AUTHOR_KEYS:
        raise Refused(400, "author must be an object with documented keys")
    if author.get("type") != "business":
        raise Refused(400, "an integration writes as author.type business")
    for k in ("displayName", "avatarUrl"):
        if k in author and not isinstance(author[k], str):
            raise Refused(400, f"author.{k} must be a string")


def check_action(a):
    if not isinstance(a, dict) or a.get("type") != "reply":
        raise Refused(400, "actions: only reply actions are expected from handoffd")
    if not isinstance(a.get("text"), str) or not a["text"] or not isinstance(a.get("payload"), str):
        raise Refused(400, "a reply action needs text and payload strings")


def check_content(c):
    if not isinstance(c, dict):
        raise Refused(400, "content must be an object")
    if c.get("type") == "text":
        if not isinstance(c.get("text"), str) or not c["text"]:
            raise Refused(400, "text content needs text")
        actions = c.get("actions", [])
        if not isinstance(actions, list):
            raise Refused(400, "actions must be an array")
        for a in actions:
            check_action(a)
    elif c.get("type") in ("image", "file"):
        if not isinstance(c.get("mediaUrl"), str) or not c["mediaUrl"].startswith(("http://", "https://")):
            raise Refused(400, f"{c['type']} content needs mediaUrl")
    else:
        raise Refused(400, f"unexpected content type {c.get('type')!r}")


class FakeSunshine(ServedFake):
    def __init__(self):
        self.auth = "Basic " + base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()
        self.active = {}          # conversation -> active switchboard integration (None: none)
        self.known = set()        # conversations that exist
        self.history = {}         # conversation -> messages as Sunshine stores them, in order
        self.calls = []           # (op, conversation, body) accepted, in arrival order
        self.rejected = []        # (op, reason)
        self.script = []          # (status, headers[, op]) answered before the normal one
        self.notify_port = None   # handoffd's port: passControl is echoed as a webhook
        self.notified = []        # answers handoffd gave to those echoes
        self.clock = itertools.count()
        self.cond = threading.Condition()
        super().__init__()
        for op in ("messages", "activity", "passControl"):
            self.server.route("POST", f"/v2/apps/{APP_ID}/conversations/{{conv}}/{op}", self._handle)

    # --- handoffd -> Sunshine -------------------------------------------------------------

    def _check(self, request, body, conv, op):
        if request.headers.get("Authorization") != self.auth:
            raise Refused(401, "bad Basic credentials")
        if request.headers.get("Content-Type") != "application/json":
            raise Refused(400, "not application/json")
        if len(body) > BODY_MAX:
            raise Refused(413, "body over 100 KB")
        if conv not in self.known:
            raise Refused(404, f"unknown conversation {conv}")
        try:
            doc = json.loads(body)
        except ValueError:
            raise Refused(400, "body is not JSON")
        if not isinstance(doc, dict):
            raise Refused(400, "body must be an object")
        getattr(self, "_check_" + op.lower())(doc)
        return doc

    def _check_messages(self, doc):
        if set(doc) - MESSAGE_KEYS:
            raise Refused(400, f"unknown keys {sorted(set(doc) - MESSAGE_KEYS)}")
        check_author(doc.get("author"))
        check_content(doc.get("content"))
        check_metadata(doc.get("metadata"), "metadata")

    def _check_activity(self, doc):
        if set(doc) - {"author", "type"}:
            raise Refused(400, "activity takes author and type")
        check_author(doc.get("author"))
        if doc.get("type") not in ACTIVITY_TYPES:
            raise Refused(400, f"unknown activity type {doc.get('type')!r}")

    def _check_passcontrol(self, doc):
        if set(doc) - {"switchboardIntegration", "metadata"}:
            raise Refused(400, "passControl takes switchboardIntegration and metadata")
        if self.integration(doc.get("switchboardIntegration")) is None:
            raise Refused(400, f"no switchboard integration {doc.get('switchboardIntegration')!r}")
        check_metadata(doc.get("metadata"), "metadata")

    @staticmethod
    def integration(name_or_id):
        return next((i for i in INTEGRATIONS if name_or_id in (i["id"], i["name"])), None)

    async def _handle(self, request, body):
        conv, op = request.match_info["conv"], request.path.rsplit("/", 1)[1]
        with self.cond:
            try:
                doc = self._check(request, body, conv, op)
            except Refused as r:
                self.rejected.append((op, r.why))
                return web.json_response({"errors": [{"code": "bad_request", "title": r.why}]}, status=r.status)
            scripted = self._scripted(op)
            if scripted:
                status, headers = scripted
                return web.json_response({"errors": [{"code": "scripted", "title": "try again"}]},
                                         status=status, headers=headers or {})
            self.calls.append((op, conv, doc))
            answer, status = {}, 200
            if op == "messages":
                msg = dict(doc, id=new_id(), received=self.now())
                self.history[conv].append(msg)
                answer, status = {"messages": [msg]}, 201
            elif op == "passControl":
                self.active[conv] = self.integration(doc["switchboardIntegration"])
                # made now: what the test does next must not leak into the echo
                echo = self.switchboard_event(conv, "switchboard:passControl", metadata=doc.get("metadata"))
            self.cond.notify_all()
        if op == "passControl" and self.notify_port:
            asyncio.get_running_loop().run_in_executor(None, self._notify, echo)
        return web.json_response(answer, status=status)

    def _scripted(self, op):
        # Typing is best effort (never retried), so scripted failures are for the others.
        for i, item in enumerate(self.script):
            if op != "activity" and (len(item) < 3 or item[2] == op):
                return self.script.pop(i)[:2]
        return None

    def _notify(self, event):
        answer = self.post_events(self.notify_port, [event])
        with self.cond:
            self.notified.append(answer)
            self.cond.notify_all()

    def wait(self, predicate, timeout=30, what="the expected calls"):
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self.calls), timeout):
                raise AssertionError(f"timed out waiting for {what}; got {self.calls}")
            return list(self.calls)

    def of(self, op, conv):
        with self.cond:
            return [b for o, c, b in self.calls if o == op and c == conv]

    def texts(self, conv):
        return [m["content"].get("text") for m in self.of("messages", conv)]

    def wait_texts(self, conv, n, timeout=30):
        self.wait(lambda calls: len([1 for o, c, _ in calls if o == "messages" and c == conv]) >= n,
                  timeout, f"{n} messages in {conv}")
        return self.texts(conv)

    def wait_pass_control(self, conv, timeout=30):
        self.wait(lambda calls: any(o == "passControl" and c == conv for o, c, _ in calls),
                  timeout, f"passControl of {conv}")
        return self.of("passControl", conv)[0]

    # --- Sunshine -> handoffd ----------------------------------------------------------------

    def now(self):
        # Strictly increasing, in Sunshine's format, so events order as they were made.
        t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(milliseconds=next(self.clock))
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

    def conversation(self, conv):
        with self.cond:
            self.known.add(conv)
            self.history.setdefault(conv, [])
            active = self.active.setdefault(conv, US)
        out = {"id": conv, "type": "personal"}
        if active:
            out["activeSwitchboardIntegration"] = dict(active)
        return out

    def set_active(self, conv, integration):
        """Gives the conversation to INTEGRATION without telling anyone (no event)."""
        self.conversation(conv)
        with self.cond:
            self.active[conv] = integration

    def event(self, type_, conv, **payload):
        return {"id": new_id(), "type": type_, "createdAt": self.now(),
                "payload": {"conversation": self.conversation(conv), **payload}}

    def user_message(self, conv, text, user="2650", name="Dana"):
        """A conversation:message event of a user's text (the message joins the history)."""
        ev = self.event("conversation:message", conv)
        msg = {"id": new_id(), "received": ev["createdAt"], "source": {"type": "web"},
               "author": {"type": "user", "userId": user, "displayName": name},
               "content": {"type": "text", "text": text}}
        with self.cond:
            self.history[conv].append(msg)
        ev["payload"]["message"] = msg
        return ev

    def switchboard_event(self, conv, type_, to=None, **payload):
        """A switchboard event; TO (an integration) becomes active first when given."""
        if to is not None:
            with self.cond:
                self.active[conv] = to
        return self.event(type_, conv, **{k: v for k, v in payload.items() if v is not None})

    def release_control(self, conv, reason="ticketClosed"):
        """The agents give control up: the default integration (us) is active again."""
        return self.switchboard_event(conv, "switchboard:releaseControl", to=US, reason=reason)

    def pass_control_to_us(self, conv, reason="ticketClosed"):
        return self.switchboard_event(conv, "switchboard:passControl", to=US, reason=reason)

    def failure(self, conv, type_="switchboard:passControl:failure", message="Agent Workspace is unavailable",
                active=None):
        """A failed control change; ACTIVE: who has the conversation after it (None: unchanged)."""
        return self.switchboard_event(conv, type_, to=active, error={"code": "unavailable", "message": message})

    def first_message_id(self, conv):
        with self.cond:
            return next(m["id"] for m in self.history[conv] if m["author"]["type"] == "user")

    def post_events(self, port, events, api_key=WEBHOOK_SECRET, raw=None):
        """POSTs one webhook body with EVENTS to handoffd; returns (status, parsed body)."""
        body = raw if raw is not None else json.dumps(
            {"app": {"id": APP_ID}, "webhook": {"id": "5f4eaef8b1c2", "version": "v2"}, "events": events}).encode()
        headers = {"Content-Type": "application/json"}
        if api_key is not None:
            headers["X-API-Key"] = api_key
        return post_json(f"http://127.0.0.1:{port}/hubs/sunshine/events", body, headers)

    def customer_says(self, port, conv, text, **user):
        return self.post_events(port, [self.user_message(conv, text, **user)])
