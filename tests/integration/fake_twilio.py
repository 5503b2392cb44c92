"""A contract fake of Twilio Conversations, Flex Interactions and TaskRouter on 127.0.0.1
for scripts/hubs/twilio_flex.lua, checked against the published OpenAPI descriptions
(our minimal subsets in specs/twilio/*.json, validated with jsonschema).

It plays Twilio's two sides:
- the REST calls handoffd makes, all on this one server (the hub's conversations_url,
  flex_url and taskrouter_url point here):
    POST/GET /v1/Services/{IS}/Conversations/{CH}/Messages   bot messages, the unclear-retry check
    POST     /v1/Services/{IS}/Conversations/{CH}            update: State (closing it)
    POST     /v1/Interactions                                the handoff (also makes the task)
    GET      /v1/Workspaces/{WS}/Tasks?EvaluateTaskAttributes the unclear-retry check of a handoff
  Each needs HTTP Basic with the account SID and auth token or an API key (else 401, code
  20003); RESTRICTED_KEY may use Conversations but not Flex or TaskRouter (403, 20403). A
  body or query outside the schema is 400 (20001), an unknown conversation 404 (20404); every
  error body is Twilio's {code, message, more_info, status}. Refusals are listed in
  `rejected`, accepted calls in `calls`. `script` holds answers given before the normal one:
  (status, headers[, op[, commit]]) where commit=True makes the resource first and then
  fails, like an answer lost on the way back.
  A message posted without `X-Twilio-Webhook-Enabled: false` is echoed as onMessageAdded, a
  state change as onConversationStateUpdated; a closed conversation stays closed (400).
- the webhooks a Conversations Service sends: form-encoded post-event webhooks with
  X-Twilio-Signature (base64 HMAC-SHA1 of the URL Twilio was given and the sorted
  parameters) and I-Twilio-Idempotency-Token, posted with Twilio's 5 s timeout
  (`timeouts` counts webhooks that did not answer in time).
"""
import asyncio
import base64
import datetime
import hashlib
import hmac
import itertools
import json
import pathlib
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request

import jsonschema
from aiohttp import web

from fakeserver import ServedFake

SPECS = pathlib.Path(__file__).resolve().parent / "specs" / "twilio"
CONVERSATIONS = json.loads((SPECS / "conversations_v1.json").read_text())
FLEX = json.loads((SPECS / "flex_v1.json").read_text())
TASKROUTER = json.loads((SPECS / "taskrouter_v1.json").read_text())
ERROR = json.loads((SPECS / "error.json").read_text())


def sid(prefix):
    return prefix + secrets.token_hex(16)


ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "twilio-auth-token-0123456789abcdef"
API_KEY_SID = "SK" + "2" * 32
API_KEY_SECRET = "twilio-api-key-secret-0123456789"
RESTRICTED_KEY_SID = "SK" + "3" * 32
RESTRICTED_KEY_SECRET = "twilio-restricted-secret-012345"
CHAT_SERVICE_SID = "IS" + "4" * 32
WORKSPACE_SID = "WS" + "5" * 32
WORKFLOW_SID = "WW" + "6" * 32
WEBHOOK_URL = "https://handoffd.example.test/hubs/twilio/events"   # what the Console was given
WEBHOOK_TIMEOUT_S = 5
KEYS = {ACCOUNT_SID: AUTH_TOKEN, API_KEY_SID: API_KEY_SECRET, RESTRICTED_KEY_SID: RESTRICTED_KEY_SECRET}


class Refused(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(status, code, message):
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}
    jsonschema.validate(body, ERROR)
    return body


def validate(doc, schema, what):
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as e:
        raise Refused(400, 20001, f"{what}: {e.message}")


def typed(fields, schema):
    """Form and query values are strings: integer parameters become numbers to validate."""
    out = {}
    for k, v in fields.items():
        kind = schema.get("properties", {}).get(k, {}).get("type")
        out[k] = int(v) if kind == "integer" and v.lstrip("-").isdigit() else v
    return out


def single(pairs, what):
    fields = {}
    for k, v in pairs:
        if k in fields:
            raise Refused(400, 20001, f"{what}: {k} given twice")
        fields[k] = v
    return fields


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(url, params, token=AUTH_TOKEN):
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class FakeTwilio(ServedFake):
    def __init__(self):
        super().__init__()
        self.conversations = {}   # CH -> {"messages": [...], "participants": {identity: MB}, "state": ...}
        self.interactions = []    # (KD, channel, routing) in creation order
        self.tasks = []           # {"sid", "attributes"} made by interactions
        self.calls = []           # (op, conversation or None, fields) accepted, in arrival order
        self.rejected = []        # (op, status, message)
        self.script = []          # (status, headers[, op[, commit]])
        self.delays = {}          # op -> [seconds, ...]: the next calls of op answer that late
        self.answers = []         # every webhook answer handoffd gave: (event, status, body)
        self.timeouts = []        # webhooks handoffd did not answer within Twilio's timeout
        self.clock = itertools.count(1)
        base = "/v1/Services/{service}/Conversations/{conv}/Messages"
        self.server.route("POST", base, self._create_message)
        self.server.route("GET", base, self._list_messages)
        self.server.route("POST", "/v1/Services/{service}/Conversations/{conv}", self._update_conversation)
        self.server.route("POST", "/v1/Interactions", self._create_interaction)
        self.server.route("GET", "/v1/Workspaces/{ws}/Tasks", self._list_tasks)

    # --- handoffd -> Twilio ---------------------------------------------------------------

    def _auth(self, request, op):
        header = request.headers.get("Authorization", "")
        try:
            user, _, secret = base64.b64decode(header.removeprefix("Basic "), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user, secret = "", None
        if not header.startswith("Basic ") or KEYS.get(user) != secret:
            raise Refused(401, 20003, "Authenticate")
        if user == RESTRICTED_KEY_SID and op in ("interaction", "tasks"):
            raise Refused(403, 20403, "Forbidden: this API key may not use this API")

    def _form(self, request, body, what):
        if request.headers.get("Content-Type", "").split(";")[0] != "application/x-www-form-urlencoded":
            raise Refused(400, 20001, f"{what}: the body must be application/x-www-form-urlencoded")
        try:
            pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, 20001, f"{what}: not a form body")
        return single(pairs, what)

    def _conversation(self, request):
        validate(request.match_info["service"], CONVERSATIONS["chat_service_sid"], "ChatServiceSid")
        conv = request.match_info["conv"]
        if request.match_info["service"] != CHAT_SERVICE_SID or conv not in self.conversations:
            raise Refused(404, 20404, f"The requested resource {request.path} was not found")
        return conv

    async def _serve(self, op, request, body, check, effect):
        """Checks the call; gives a scripted answer if one is due; else records it and
        answers with EFFECT's result (status, body)."""
        with self.cond:
            try:
                self._auth(request, op)
                conv, fields = check(request, body)
            except Refused as r:
                self.rejected.append((op, r.status, r.message))
                self.cond.notify_all()
                return web.json_response(error_body(r.status, r.code, r.message), status=r.status)
            scripted = self._scripted(op)
            if scripted and scripted[2]:
                effect(conv, fields, request)        # made, but the answer is lost
            if scripted:
                status, headers = scripted[:2]
                self.cond.notify_all()
                return web.json_response(error_body(status, 20000 + status, "scripted failure"),
                                         status=status, headers=headers or {})
            self.calls.append((op, conv, fields))
            status, answer = effect(conv, fields, request)
            self.cond.notify_all()
            delay = self.delays.get(op, []).pop(0) if self.delays.get(op) else 0
        if delay:
            await asyncio.sleep(delay)
        return web.json_response(answer, status=status)

    def _scripted(self, op):
        for i, item in enumerate(self.script):
            if len(item) < 3 or item[2] in (None, op):
                status, headers, _, commit = (tuple(self.script.pop(i)) + (None, None))[:4]
                return status, headers, bool(commit)
        return None

    def _conversation_form(self, request, body, operation, schema):
        """The conversation and the form of a POST to one, checked against SCHEMA (and the
        optional X-Twilio-Webhook-Enabled header)."""
        conv = self._conversation(request)
        fields = self._form(request, body, operation)
        validate(fields, CONVERSATIONS[schema], operation)
        hook = request.headers.get("X-Twilio-Webhook-Enabled")
        if hook is not None:
            validate(hook, CONVERSATIONS["webhook_enabled_header"], "X-Twilio-Webhook-Enabled")
        return conv, fields

    # messages

    def _check_create_message(self, request, body):
        conv, fields = self._conversation_form(request, body, "CreateServiceConversationMessage", "create_message")
        if "Attributes" in fields:
            try:
                json.loads(fields["Attributes"])
            except ValueError:
                raise Refused(400, 20001, "Attributes must contain structurally valid JSON")
        if not fields.get("Body") and not fields.get("MediaSid"):
            raise Refused(400, 20001, "a message needs a Body or a MediaSid")
        return conv, fields

    def _store_message(self, conv, author, body, attributes="{}", participant=None, media=None):
        c = self.conversations[conv]
        msg = {"sid": sid("IM"), "index": len(c["messages"]), "author": author, "body": body,
               "attributes": attributes, "participant_sid": participant, "media": media,
               "date_created": now(), "conversation_sid": conv, "account_sid": ACCOUNT_SID,
               "chat_service_sid": CHAT_SERVICE_SID}
        c["messages"].append(msg)
        return msg

    def _do_create_message(self, conv, fields, request):
        msg = self._store_message(conv, fields.get("Author", "system"), fields.get("Body", ""),
                                  fields.get("Attributes", "{}"))
        if request.headers.get("X-Twilio-Webhook-Enabled") != "false" and self.handoffd_port:   # the echo
            threading.Thread(target=self.post_event, args=(self.handoffd_port, self._message_params(msg, "API")),
                             daemon=True).start()
        return 201, msg

    async def _create_message(self, request, body):
        return await self._serve("messages", request, body, self._check_create_message, self._do_create_message)

    def _check_list_messages(self, request, body):
        conv = self._conversation(request)
        what, schema = "ListServiceConversationMessage", CONVERSATIONS["list_messages_query"]
        query = single(urllib.parse.parse_qsl(request.query_string, keep_blank_values=True), what)
        validate(typed(query, schema), schema, what)
        return conv, query

    def _do_list_messages(self, conv, query, request):
        msgs = list(self.conversations[conv]["messages"])
        if query.get("Order") == "desc":
            msgs.reverse()
        msgs = msgs[:int(query.get("PageSize", 50))]
        return 200, {"messages": msgs, "meta": {"page": 0, "page_size": len(msgs), "key": "messages"}}

    async def _list_messages(self, request, body):
        return await self._serve("list_messages", request, body, self._check_list_messages, self._do_list_messages)

    # conversations

    def _check_update_conversation(self, request, body):
        conv, fields = self._conversation_form(request, body, "UpdateServiceConversation", "update_conversation")
        before = self.conversations[conv]["state"]
        if before == "closed" and fields.get("State", "closed") != "closed":
            raise Refused(400, 50434, "a closed conversation cannot change its state")
        return conv, fields

    def _do_update_conversation(self, conv, fields, request):
        c = self.conversations[conv]
        state = fields.get("State", c["state"])
        if state != c["state"]:
            params = self.state_event(conv, state)
            if request.headers.get("X-Twilio-Webhook-Enabled") != "false" and self.handoffd_port:   # the echo
                threading.Thread(target=self.post_event, args=(self.handoffd_port, params), daemon=True).start()
        return 200, {"sid": conv, "chat_service_sid": CHAT_SERVICE_SID, "account_sid": ACCOUNT_SID,
                     "state": c["state"], "date_updated": now()}

    async def _update_conversation(self, request, body):
        return await self._serve("update_conversation", request, body, self._check_update_conversation,
                                 self._do_update_conversation)

    # interactions and tasks

    def _check_interaction(self, request, body):
        fields = self._form(request, body, "CreateInteraction")
        validate(fields, FLEX["create_interaction"], "CreateInteraction")
        try:
            channel, routing = json.loads(fields["Channel"]), json.loads(fields["Routing"])
        except ValueError:
            raise Refused(400, 20001, "Channel and Routing must be JSON")
        validate(channel, FLEX["channel"], "Channel")
        validate(routing, FLEX["routing"], "Routing")
        props = routing["properties"]
        conv = channel["properties"]["media_channel_sid"]
        if conv not in self.conversations:
            raise Refused(400, 20001, f"media_channel_sid {conv} is not a conversation of this account")
        if props["workspace_sid"] != WORKSPACE_SID or props["workflow_sid"] != WORKFLOW_SID:
            raise Refused(400, 20001, "unknown workspace or workflow")
        return conv, {"Channel": channel, "Routing": routing}

    def _do_interaction(self, conv, fields, request):
        kd = sid("KD")
        attributes = dict(fields["Routing"]["properties"]["attributes"], conversationSid=conv)
        self.interactions.append((kd, fields["Channel"], fields["Routing"]))
        self.tasks.append({"sid": sid("WT"), "attributes": attributes})
        return 201, {"sid": kd, "channel": dict(fields["Channel"], sid=sid("UO")), "routing": fields["Routing"],
                     "url": f"https://flex-api.twilio.com/v1/Interactions/{kd}", "links": {}}

    async def _create_interaction(self, request, body):
        return await self._serve("interaction", request, body, self._check_interaction, self._do_interaction)

    def _check_tasks(self, request, body):
        validate(request.match_info["ws"], TASKROUTER["workspace_sid"], "WorkspaceSid")
        if request.match_info["ws"] != WORKSPACE_SID:
            raise Refused(404, 20404, f"The requested resource {request.path} was not found")
        query = single(urllib.parse.parse_qsl(request.query_string, keep_blank_values=True), "ListTask")
        validate(typed(query, TASKROUTER["list_tasks_query"]), TASKROUTER["list_tasks_query"], "ListTask")
        return None, query

    def _do_tasks(self, _, query, request):
        tasks = list(self.tasks)
        expr = query.get("EvaluateTaskAttributes")
        if expr is not None:
            name, op, value = (expr.split(" ", 2) + ["", ""])[:3]
            if op != "==" or not (value.startswith('"') and value.endswith('"')):
                return 400, error_body(400, 20001, "the fake evaluates only name == \"value\"")
            tasks = [t for t in tasks if str(t["attributes"].get(name)) == value[1:-1]]
        tasks = tasks[:int(query.get("PageSize", 50))]
        return 200, {"tasks": [{"sid": t["sid"], "attributes": None} for t in tasks],
                     "meta": {"page": 0, "page_size": len(tasks), "key": "tasks"}}

    async def _list_tasks(self, request, body):
        return await self._serve("tasks", request, body, self._check_tasks, self._do_tasks)

    # views for the tests

    def of(self, op, conv=None):
        with self.cond:
            return [f for o, c, f in self.calls if o == op and (conv is None or c == conv)]

    def bot_messages(self, conv):
        with self.cond:
            return [m for m in self.conversations[conv]["messages"] if m["author"] == "handoffd-bot"]

    def texts(self, conv):
        return [m["body"] for m in self.bot_messages(conv)]

    def wait_texts(self, conv, n, timeout=30):
        self.wait(lambda f: len(f.bot_messages(conv)) >= n, timeout, f"{n} bot messages in {conv}")
        return self.texts(conv)

    def wait_interaction(self, conv, timeout=30):
        self.wait(lambda f: any(ch["properties"]["media_channel_sid"] == conv for _, ch, _ in f.interactions),
                  timeout, f"an interaction for {conv}")
        with self.cond:
            return [(ch, ro) for _, ch, ro in self.interactions if ch["properties"]["media_channel_sid"] == conv]

    # --- Twilio -> handoffd -----------------------------------------------------------------

    def conversation(self, conv=None):
        """A new conversation of the service (or CONV, made if needed); returns its SID."""
        conv = conv or sid("CH")
        with self.cond:
            self.conversations.setdefault(conv, {"messages": [], "participants": {}, "state": "active"})
        return conv

    def participant(self, conv, identity):
        with self.cond:
            return self.conversations[conv]["participants"].setdefault(identity, sid("MB"))

    def _base(self, conv, event):
        return [("AccountSid", ACCOUNT_SID), ("ChatServiceSid", CHAT_SERVICE_SID), ("ConversationSid", conv),
                ("EventType", event), ("RetryCount", "0")]

    def _message_params(self, msg, source):
        params = self._base(msg["conversation_sid"], "onMessageAdded") + [
            ("MessageSid", msg["sid"]), ("Index", str(msg["index"])), ("Author", msg["author"]),
            ("Body", msg["body"]), ("Attributes", msg["attributes"]), ("DateCreated", msg["date_created"]),
            ("Source", source)]
        if msg["participant_sid"]:
            params.append(("ParticipantSid", msg["participant_sid"]))
        if msg["media"]:
            params.append(("Media", json.dumps(msg["media"])))
        return params

    def message_event(self, conv, body, author="Dana", media=None, source="SDK"):
        """onMessageAdded of a message AUTHOR wrote (it joins the conversation's history)."""
        self.conversation(conv)
        with self.cond:
            msg = self._store_message(conv, author, body, participant=self.participant(conv, author), media=media)
        return self._message_params(msg, source)

    def participant_event(self, conv, identity, event):
        """onParticipantAdded / onParticipantRemoved of IDENTITY (a chat participant)."""
        params = self._base(conv, event) + [("ParticipantSid", self.participant(conv, identity)),
                                            ("Identity", identity), ("Attributes", "{}"),
                                            ("DateCreated", now()), ("Source", "API")]
        if event == "onParticipantRemoved":
            with self.cond:
                self.conversations[conv]["participants"].pop(identity, None)
        return params

    def state_event(self, conv, state_to, reason="API"):
        with self.cond:
            state_from, self.conversations[conv]["state"] = self.conversations[conv]["state"], state_to
        return self._base(conv, "onConversationStateUpdated") + [
            ("StateFrom", state_from), ("StateTo", state_to), ("Reason", reason), ("DateUpdated", now()),
            ("Source", "API")]

    def post_event(self, port, params, signature=None, token=None, url=WEBHOOK_URL):
        """POSTs one signed webhook to handoffd, with Twilio's 5 s timeout. Returns (status,
        parsed answer, (body, headers) sent), status None when it timed out."""
        body = urllib.parse.urlencode(params).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
                   "X-Twilio-Signature": sign(url, params) if signature is None else signature,
                   "I-Twilio-Idempotency-Token": token or secrets.token_hex(16),
                   "User-Agent": "TwilioProxy/1.1"}
        return self.post_raw(port, body, headers, dict(params).get("EventType"))

    def post_raw(self, port, body, headers, event=None):
        """POSTs BODY with HEADERS (a replay keeps both); returns (status, answer, headers)."""
        req = urllib.request.Request(f"http://127.0.0.1:{port}/hubs/twilio/events", data=body,
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT_S) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        except (TimeoutError, urllib.error.URLError) as e:
            with self.cond:
                self.timeouts.append((event, str(e)))
            return None, str(e), (body, headers)
        try:
            answer = json.loads(text or b"null")
        except ValueError:
            answer = text.decode(errors="replace")
        with self.cond:
            self.answers.append((event, status, answer))
            self.cond.notify_all()
        return status, answer, (body, headers)
