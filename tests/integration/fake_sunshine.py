"""A contract fake of Sunshine Conversations API v2 with the Switchboard (hubs.md section 4)
on 127.0.0.1, following the published OpenAPI shapes.

It plays the hub's two sides:
- the API handoffd calls: POST /v2/apps/{app}/conversations/{conv}/messages, /activity,
  /passControl and /releaseControl (no body). Each request must carry `Authorization: Basic key_id:key_secret` and a JSON
  body valid against the spec (jsonschema with the OpenAPI excerpts in specs/sunshine:
  required fields, types, enums, text up to 4,096 characters, altText up to 128; metadata
  flat and at most 4 KB as JSON), about a conversation the fake knows; anything else is
  refused (400/401/404) as Sunshine does and listed in `rejected`. Accepted calls are
  recorded in order; `script` holds answers (429, 5xx) to give before the normal one, to any
  call, to one operation, or to the bodies a predicate picks. A passControl moves the
  conversation's active switchboard integration and, as Sunshine does, notifies handoffd
  with a switchboard:passControl event; a releaseControl leaves no integration active and
  is notified as switchboard:releaseControl.
- the webhooks Sunshine sends: bodies `{app, webhook, events: [...]}` with `X-API-Key`,
  shaped like the spec's webhook examples (a reply button's answer is a text message with
  the button's `payload`, textMessage.payload in the spec), built from the fake's own view
  of each conversation (its active integration, message ids), so tests can send several
  events per body, replay them, and send failures.
"""
import asyncio
import base64
import datetime
import itertools
import json
import pathlib
import uuid

import jsonschema

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

SPECS = pathlib.Path(__file__).parent / "specs" / "sunshine"
# One validator per operation, from the OpenAPI excerpts kept in specs/sunshine (OpenAPI 3.0
# schema objects are JSON Schema draft 4 with extensions, hence Draft4Validator).
VALIDATORS = {op: jsonschema.Draft4Validator(json.loads((SPECS / f"{name}.json").read_text()),
                                             format_checker=jsonschema.FormatChecker())
              for op, name in (("messages", "messagePost"), ("activity", "activityPost"),
                               ("passControl", "passControlBody"), ("releaseControl", "releaseControl"))}


def new_id():
    return uuid.uuid4().hex[:24]


class Refused(Exception):
    def __init__(self, status, why):
        super().__init__(why)
        self.status, self.why = status, why


def check_schema(op, doc):
    """400 with the first schema violation, as Sunshine answers a body its spec refuses."""
    error = jsonschema.exceptions.best_match(VALIDATORS[op].iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "body"
        raise Refused(400, f"{where}: {error.message}"[:300])


def check_metadata_size(meta):
    """The spec's 4KB limit on metadata (prose, not schema): its compact JSON in bytes."""
    if isinstance(meta, dict):
        size = len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode())
        if size > METADATA_MAX:
            raise Refused(400, f"metadata is {size} bytes, over 4 KB")


class FakeSunshine(ServedFake):
    def __init__(self):
        super().__init__()
        self.auth = "Basic " + base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()
        self.active = {}          # conversation -> active switchboard integration (None: none)
        self.known = set()        # conversations that exist
        self.history = {}         # conversation -> messages as Sunshine stores them, in order
        self.calls = []           # (op, conversation, body) accepted, in arrival order
        self.rejected = []        # (op, reason)
        self.script = []          # (status, headers[, op]) answered before the normal one
        self.notified = []        # answers handoffd gave to those echoes
        self.clock = itertools.count()
        for op in ("messages", "activity", "passControl", "releaseControl"):
            self.server.route("POST", f"/v2/apps/{APP_ID}/conversations/{{conv}}/{op}", self._handle)

    # --- handoffd -> Sunshine -------------------------------------------------------------

    def _check(self, request, body, conv, op):
        if request.headers.get("Authorization") != self.auth:
            raise Refused(401, "bad Basic credentials")
        if body and request.headers.get("Content-Type") != "application/json":
            raise Refused(400, "not application/json")
        if not body and op != "releaseControl":
            raise Refused(400, "a body is required")
        if len(body) > BODY_MAX:
            raise Refused(413, "body over 100 KB")
        if conv not in self.known:
            raise Refused(404, f"unknown conversation {conv}")
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            raise Refused(400, "body is not JSON")
        if not isinstance(doc, dict):
            raise Refused(400, "body must be an object")
        getattr(self, "_check_" + op.lower())(doc)
        return doc

    def _check_messages(self, doc):
        check_schema("messages", doc)
        if doc["author"]["type"] != "business":
            raise Refused(400, "an integration writes as author.type business")
        check_metadata_size(doc.get("metadata"))

    def _check_activity(self, doc):
        check_schema("activity", doc)

    def _check_passcontrol(self, doc):
        check_schema("passControl", doc)
        if self.integration(doc["switchboardIntegration"]) is None and doc["switchboardIntegration"] != "next":
            raise Refused(400, f"no switchboard integration {doc['switchboardIntegration']!r}")
        check_metadata_size(doc.get("metadata"))

    def _check_releasecontrol(self, doc):
        check_schema("releaseControl", doc)

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
            scripted = self._scripted(op, doc)
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
            elif op == "releaseControl":
                self.active[conv] = None      # "nullifying its switchboard state"
                echo = self.switchboard_event(conv, "switchboard:releaseControl")
            self.cond.notify_all()
        if op in ("passControl", "releaseControl") and self.handoffd_port:   # echoed as a webhook
            asyncio.get_running_loop().run_in_executor(None, self._notify, echo)
        return web.json_response(answer, status=status)

    def _scripted(self, op, doc):
        # Typing is best effort (never retried), so scripted failures are for the others. An
        # item's optional 4th element picks the body it answers.
        for i, item in enumerate(self.script):
            if op != "activity" and (len(item) < 3 or item[2] == op) and (len(item) < 4 or item[3](doc)):
                return self.script.pop(i)[:2]
        return None

    def _notify(self, event):
        answer = self.post_events(self.handoffd_port, [event])
        with self.cond:
            self.notified.append(answer)
            self.cond.notify_all()

    def wait(self, predicate, timeout=30, what="the expected calls"):
        """Waits until PREDICATE(the calls so far); returns them."""
        super().wait(lambda s: predicate(s.calls), timeout, what)
        with self.cond:
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

    def user_message(self, conv, text, user="2650", name="Dana", payload=None):
        """A conversation:message event of a user's text (the message joins the history);
        PAYLOAD: the user tapped a reply button, TEXT is then the button's text."""
        with self.cond:
            if self.active.get(conv, US) is None:   # after releaseControl: the default integration
                self.active[conv] = US
        ev = self.event("conversation:message", conv)
        msg = {"id": new_id(), "received": ev["createdAt"], "source": {"type": "web"},
               "author": {"type": "user", "userId": user, "displayName": name},
               "content": {"type": "text", "text": text}}
        if payload is not None:
            msg["content"]["payload"] = payload
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
