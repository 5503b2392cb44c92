"""A contract fake of Chatwoot's Agent Bot side (hubs.md section 3) on 127.0.0.1.

It plays the parts of Chatwoot that handoffd, as an Agent Bot, talks to:
- the API under /api/v1/accounts/{account}/conversations/{id}/ (messages, toggle_status,
  toggle_typing_status, assignments, custom_attributes), checking the api_access_token header,
  which endpoints a bot token may call in the release played (401 otherwise), and the bodies
  against the swagger excerpts in specs/chatwoot with jsonschema (422 otherwise, as Chatwoot's
  validations answer); assignee_id wins over team_id; custom_attributes replaced unless merge
  is true. It records every accepted call in order and answers scripted 429/5xx or delays first;
- the Agent Bot webhooks, sent one at a time in the order Chatwoot would queue them:
  message_created for every incoming and outgoing message (the bot's own echoes and private
  notes included, as Chatwoot sends them), message_updated for a submitted choice,
  conversation_status_changed with changed_attributes plus the older conversation_opened /
  conversation_resolved, conversation_updated on an assignment, in the payload shapes of the
  release played (VERSIONS: `account` or not, conversation_status_changed or not). Each is
  signed as Chatwoot 4.x signs (X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, ts "." body)>,
  X-Chatwoot-Timestamp, X-Chatwoot-Delivery kept across retries), retried at once on 429 and
  500, and given 5 s: a failed or late message event opens the pending conversation
  (Chatwoot's fallback when its bot does not answer), which the tests can see.
"""
import asyncio
import hashlib
import hmac
import itertools
import json
import pathlib
import time
import uuid

import jsonschema
from aiohttp import web

from fakeserver import QueuedWebhooks

ACCOUNT = 1
TOKEN = "bot-token-0123456789"
SECRET = "bot-secret-0123456789abcdef"
TEAMS = {3: "Orders", 4: "VIP"}
AGENTS = {12: "Sam", 13: "Kim"}
INBOX = {"id": 7, "name": "Website"}
WEBHOOK_TIMEOUT = 5.0          # Chatwoot's default WEBHOOK_TIMEOUT
RETRIED = (429, 500)           # Webhooks::Trigger RETRYABLE_AGENT_BOT_STATUSES
ACTIONS = ("messages", "toggle_status", "toggle_typing_status", "assignments", "custom_attributes")
SPECS = pathlib.Path(__file__).parent / "specs" / "chatwoot"
# One validator per endpoint, from the swagger excerpts in specs/chatwoot (OpenAPI 3.0 schema
# objects: JSON Schema draft 4 with extensions).
VALIDATORS = {a: jsonschema.Draft4Validator(json.loads((SPECS / f"{a}.json").read_text())) for a in ACTIONS}
# What each Chatwoot release the fake can play sends and allows:
#   bot_endpoints   what an Agent Bot token may call (AccessTokenAuthHelper::BOT_ACCESSIBLE_ENDPOINTS);
#                   anything else answers 401 "Access to this endpoint is not authorized for bots"
#   account         whether conversation_* payloads carry `account` (#14673, June 2026; before,
#                   only the embedded last message's account_id, #11753)
#   status_changed  whether Agent Bots get conversation_status_changed (#14002, April 2026)
VERSIONS = {
    "current": {"bot_endpoints": set(ACTIONS), "account": True, "status_changed": True},
    "2026-05": {"bot_endpoints": set(ACTIONS), "account": False, "status_changed": True},
    # before mid-2025: custom_attributes for bots came with #11447, typing later still
    "2025-05": {"bot_endpoints": {"messages", "toggle_status", "assignments"}, "account": False,
                "status_changed": False},
}

def sign(secret, ts, body):
    return "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


class Conversation:
    def __init__(self, cid, contact_id, name):
        self.id, self.contact = cid, {"id": contact_id, "name": name, "type": "contact"}
        self.status, self.team_id, self.assignee_id = "pending", None, None
        self.custom_attributes = {}
        self.messages = []       # webhook_data of every message, in order


class FakeChatwoot(QueuedWebhooks):
    """VERSION: a key of VERSIONS, the Chatwoot release whose payloads and refusals it plays.
    deliveries: the webhooks sent, dicts with event, delivery, status, attempts, error."""

    EVENTS_PATH = "/hubs/chatwoot/events"

    def __init__(self, account_id=ACCOUNT, token=TOKEN, secret=SECRET, version="current"):
        super().__init__()
        self.account_id, self.token, self.secret = account_id, token, secret
        self.version = VERSIONS[version]
        self.conversations = {}
        self.calls = []          # (action, conversation id, body) of accepted API calls, in order
        self.rejected = []       # (path, reason) of API calls refused
        self.script = {}         # action -> [(status, headers)] answered before the normal one
        self.delays = {}         # action -> [seconds] waited before answering
        self.bot_failures = []   # (event, reason) where Chatwoot gave up on its bot
        self.ids = itertools.count(100)
        self.cids = itertools.count(1)
        for action in ACTIONS:
            self.server.route("POST", "/api/v1/accounts/{account}/conversations/{cid}/" + action, self._api(action))

    # --- the API (handoffd -> Chatwoot) ----------------------------------------------

    def _api(self, action):
        async def handle(request, body):
            why, status, doc = self._check(request, body, action)
            if why:
                with self.cond:
                    self.rejected.append((request.path, why))
                    self.cond.notify_all()
                return web.json_response({"error": why}, status=status)
            with self.cond:
                delays = self.delays.get(action) or []
                delay = delays.pop(0) if delays else 0
                scripted = self.script.get(action) or []
                answer = scripted.pop(0) if scripted else None
            if delay:
                await asyncio.sleep(delay)
            if answer:
                return web.Response(status=answer[0], headers=answer[1] or {})
            conv = self.conversations[int(request.match_info["cid"])]
            with self.cond:
                result = getattr(self, "_do_" + action)(conv, doc)
                if isinstance(result, tuple):
                    return web.json_response({"error": result[1]}, status=result[0])
                self.calls.append((action, conv.id, doc))
                self.cond.notify_all()
            return web.json_response(result)
        return handle

    def _check(self, request, body, action):
        if request.headers.get("api_access_token") != self.token:
            return "Invalid Access Token", 401, None
        if action not in self.version["bot_endpoints"]:
            return "Access to this endpoint is not authorized for bots", 401, None
        if request.match_info["account"] != str(self.account_id):
            return "account not found", 404, None
        if not request.match_info["cid"].isdigit() or int(request.match_info["cid"]) not in self.conversations:
            return "conversation not found", 404, None
        try:
            doc = json.loads(body)
        except ValueError:
            return "body is not JSON", 400, None
        if not isinstance(doc, dict) or request.content_type != "application/json":
            return "body is not a JSON object", 400, None
        error = jsonschema.exceptions.best_match(VALIDATORS[action].iter_errors(doc))
        if error is not None:      # Chatwoot answers 422 to a body its validations refuse
            where = "/".join(str(p) for p in error.absolute_path) or "body"
            return f"{where}: {error.message}"[:300], 422, None
        return None, 200, doc

    def _do_messages(self, conv, doc):
        ctype = doc.get("content_type", "text")
        msg = self._message(conv, doc.get("content", ""), "outgoing", {"id": 1, "name": "handoffd", "type": "agent_bot"},
                            private=bool(doc.get("private")), content_type=ctype,
                            content_attributes=doc.get("content_attributes") or {})
        return msg

    def _do_toggle_status(self, conv, doc):
        self._set_status(conv, doc["status"])
        return {"payload": {"success": True, "current_status": conv.status, "conversation_id": conv.id}}

    def _do_toggle_typing_status(self, conv, doc):
        return {}

    def _do_assignments(self, conv, doc):
        if "assignee_id" in doc:        # Chatwoot looks at assignee_id first, team_id only without it
            conv.assignee_id = doc["assignee_id"] if doc["assignee_id"] in AGENTS else None
        elif "team_id" in doc:
            conv.team_id = doc["team_id"] if doc["team_id"] in TEAMS else None
        else:
            return None
        self._queue_conversation_event(conv, "conversation_updated", [{k: {"previous_value": None, "current_value": v}}
                                                                      for k, v in doc.items()])
        return {"id": doc.get("assignee_id") or doc.get("team_id")}

    def _do_custom_attributes(self, conv, doc):
        attrs = doc["custom_attributes"]
        conv.custom_attributes = dict(conv.custom_attributes, **attrs) if doc.get("merge") is True else dict(attrs)
        return {}

    # --- the Chatwoot side: conversations, messages, statuses --------------------------

    def new_conversation(self, contact_id=55, name="Dana"):
        """A conversation in the bot's inbox: it starts pending."""
        with self.cond:
            conv = Conversation(next(self.cids), contact_id, name)
            self.conversations[conv.id] = conv
        return conv.id

    def _message(self, conv, content, mtype, sender, private=False, content_type="text", content_attributes=None):
        msg = {"id": next(self.ids), "content": content, "message_type": mtype, "content_type": content_type,
               "content_attributes": content_attributes or {}, "private": private, "source_id": None,
               "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "additional_attributes": {},
               "sender": sender}
        conv.messages.append(msg)
        self._queue(self._message_event("message_created", conv, msg))
        return msg

    def _message_event(self, event, conv, msg):
        return dict(msg, event=event, conversation=self._conversation_data(conv), account=self._account(),
                    inbox=dict(INBOX))

    def _account(self):
        return {"id": self.account_id, "name": "Acme"}

    def _conversation_data(self, conv):
        agent = {"id": conv.assignee_id, "name": AGENTS[conv.assignee_id], "type": "user"} if conv.assignee_id else None
        team = {"id": conv.team_id, "name": TEAMS[conv.team_id]} if conv.team_id else None
        return {"id": conv.id, "inbox_id": INBOX["id"], "status": conv.status, "channel": "Channel::WebWidget",
                "custom_attributes": dict(conv.custom_attributes), "additional_attributes": {}, "labels": [],
                "meta": {"sender": dict(conv.contact), "assignee": agent, "team": team, "hmac_verified": False},
                "messages": [], "can_reply": True, "account": self._account(), "timestamp": int(time.time())}

    def _set_status(self, conv, status):
        before, conv.status = conv.status, status
        if before == status:
            return
        changes = [{"status": {"previous_value": before, "current_value": status}}]
        if self.version["status_changed"]:
            self._queue_conversation_event(conv, "conversation_status_changed", changes)
        if status in ("open", "resolved"):      # the older events, still sent
            self._queue_conversation_event(conv, "conversation_" + ("opened" if status == "open" else "resolved"), None)

    def _queue_conversation_event(self, conv, event, changes):
        ev = dict(self._conversation_data(conv), event=event)
        if not self.version["account"]:    # before #14673: account only inside the last message
            del ev["account"]
            ev["messages"] = [dict(m, account_id=self.account_id) for m in conv.messages[-1:]]
        if changes is not None:
            ev["changed_attributes"] = changes
        self._queue(ev)

    def customer(self, cid, text, attachments=None):
        """The contact writes; returns handoffd's answer (status, body) to the webhook. A
        resolved conversation in a bot inbox is reopened as pending, as Chatwoot does."""
        with self.cond:
            conv = self.conversations[cid]
            if conv.status == "resolved":
                self._set_status(conv, "pending")
            msg = self._message(conv, text, "incoming", dict(conv.contact))
            if attachments:
                msg["attachments"] = attachments
        return self.wait_delivered(msg["id"])

    def agent_reply(self, cid, text, agent_id=12, private=False):
        """An agent writes; a public reply opens a pending conversation, as in Chatwoot."""
        with self.cond:
            conv = self.conversations[cid]
            if not private and conv.status == "pending":
                self._set_status(conv, "open")
            msg = self._message(conv, text, "outgoing", {"id": agent_id, "name": AGENTS[agent_id], "type": "user"},
                                private=private)
        return self.wait_delivered(msg["id"])

    def set_status(self, cid, status):
        """An agent changes the status (resolve, back to pending, open)."""
        with self.cond:
            self._set_status(self.conversations[cid], status)
        self.drain()

    def assign(self, cid, agent_id):
        """An admin assigns the conversation to an agent (conversation_updated)."""
        with self.cond:
            conv = self.conversations[cid]
            before, conv.assignee_id = conv.assignee_id, agent_id
            self._queue_conversation_event(conv, "conversation_updated",
                                           [{"assignee_id": {"previous_value": before, "current_value": agent_id}}])
        self.drain()

    def choose(self, cid, message_id, index=0):
        """The contact picks an input_select option of a bot message (message_updated)."""
        with self.cond:
            conv = self.conversations[cid]
            msg = next(m for m in conv.messages if m["id"] == message_id)
            item = msg["content_attributes"]["items"][index]
            msg["content_attributes"] = dict(msg["content_attributes"], submitted_values=[item])
            delivery = self._queue(self._message_event("message_updated", conv, msg))
        d = self.wait_delivery(delivery)
        return d["status"], d["answer"]

    # --- webhooks (Chatwoot -> handoffd) ----------------------------------------------

    def _queue(self, event):
        """Queues a webhook (the caller holds self.cond); returns its delivery id."""
        delivery = str(uuid.uuid4())
        self.queue_webhook((event, delivery))
        return delivery

    def deliver(self, job):
        event, delivery = job
        record = {"event": event, "delivery": delivery, "attempts": 0, "status": None, "answer": None,
                  "error": None}
        body = json.dumps(record["event"]).encode()
        while record["attempts"] < 4:
            record["attempts"] += 1
            record["status"], record["answer"], record["error"] = self.post(body, record["delivery"])
            if record["status"] not in RETRIED:
                break
        if not (record["status"] and 200 <= record["status"] < 300):
            self._bot_failed(record)
        return record

    def _bot_failed(self, record):
        """Webhooks::Trigger's fallback: a message event that failed opens a pending conversation."""
        ev = record["event"]
        with self.cond:
            self.bot_failures.append((ev["event"], record["error"] or record["status"]))
            if ev["event"] in ("message_created", "message_updated"):
                conv = self.conversations.get(ev["conversation"]["id"])
                if conv and conv.status == "pending":
                    self._set_status(conv, "open")

    def post(self, body, delivery=None, secret=None, ts=None, signed=True, timeout=WEBHOOK_TIMEOUT):
        """POSTs BODY to handoffd as Chatwoot does; returns (status, parsed answer, error)."""
        ts = str(int(time.time()) if ts is None else ts)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if delivery:
            headers["X-Chatwoot-Delivery"] = delivery
        if signed:
            headers["X-Chatwoot-Timestamp"] = ts
            headers["X-Chatwoot-Signature"] = sign(secret or self.secret, ts, body)
        return self.post_webhook(body, headers, timeout)

    def replay(self, delivery):
        """Sends an event again with its delivery id, newly signed (a Sidekiq retry)."""
        record = next(d for d in self.deliveries if d["delivery"] == delivery)
        status, answer, _ = self.post(json.dumps(record["event"]).encode(), delivery)
        return status, answer

    def send(self, event, **opts):
        """Sends a hand-made event now, outside the queue; returns (status, answer)."""
        body = opts.pop("raw", None) or json.dumps(event).encode()
        status, answer, _ = self.post(body, opts.pop("delivery", str(uuid.uuid4())), **opts)
        return status, answer

    def event_for(self, cid, **fields):
        """A message_created payload of conversation CID with FIELDS changed (not queued)."""
        with self.cond:
            conv = self.conversations[cid]
            msg = {"id": next(self.ids), "content": "hi", "message_type": "incoming", "content_type": "text",
                   "content_attributes": {}, "private": False, "sender": dict(conv.contact)}
            ev = self._message_event("message_created", conv, msg)
        ev.update(fields)
        return ev

    # --- waiting and looking ------------------------------------------------------------

    def wait_delivered(self, message_id, timeout=30):
        def found(_):
            return any(d["event"].get("id") == message_id and d["event"]["event"] == "message_created"
                       for d in self.deliveries)
        self.wait(found, timeout, f"the webhook of message {message_id}")
        with self.cond:
            d = next(d for d in self.deliveries if d["event"].get("id") == message_id)
        return d["status"], d["answer"]

    def wait_delivery(self, delivery, timeout=30):
        self.wait(lambda s: any(d["delivery"] == delivery for d in s.deliveries), timeout, f"delivery {delivery}")
        with self.cond:
            return next(d for d in self.deliveries if d["delivery"] == delivery)

    def bot_messages(self, cid, private=False):
        with self.cond:
            return [m for m in self.conversations[cid].messages
                    if m["sender"]["type"] == "agent_bot" and m["private"] == private]

    def wait_bot_messages(self, cid, n, private=False, timeout=30):
        self.wait(lambda s: len(s.bot_messages(cid, private)) >= n, timeout, f"{n} bot messages in {cid}")
        return self.bot_messages(cid, private)

    def actions(self, cid):
        with self.cond:
            return [(a, b) for a, c, b in self.calls if c == cid and a != "toggle_typing_status"]

    def status(self, cid):
        with self.cond:
            return self.conversations[cid].status
