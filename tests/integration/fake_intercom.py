"""A contract fake of Intercom (REST API 2.11 and its webhooks, hubs.md section 9) on 127.0.0.1.

It plays the two sides of Intercom that handoffd, as the bot admin of a workspace, meets:
- the API: POST /conversations/{id}/reply, POST /conversations/{id}/parts (assignment,
  close) and PUT /conversations/{id}. Every request must carry `Authorization: Bearer <token>`, an
  `Intercom-Version` the spec lists (the real API falls back to the app's default version
  without one; the fake insists, since handoffd pins it) and a JSON body valid against the
  spec subset in specs/intercom (python3-jsonschema: required fields, types, enums, at most 10
  attachment URLs), naming admins, teams, conversations and conversation attributes the
  workspace has. Anything else is refused as Intercom does: 401 unauthorized, 403
  api_plan_restricted (when `plan_restricted`), 404 not_found / admin_not_found /
  team_not_found, 400 parameter_invalid, each with Intercom's error list
  {"type": "error.list", "request_id", "errors": [{"code", "message"}]} (checked against the
  spec's error schema). Accepted calls are recorded in order; `script` holds answers
  (429 with X-RateLimit-Reset, 5xx) to give first, `delays` seconds to wait first.
- the webhooks: notification_event bodies ({type, app_id, id, topic, created_at,
  delivery_status, delivery_attempts, first_sent_at, data: {type, item: the conversation}})
  whose item is the conversation as the API shows it with the new part(s) in
  conversation_parts, signed `X-Hub-Signature: sha1=<hex HMAC-SHA1(client secret, body)>`,
  sent one at a time in order, given 5 s, sent once more (delivery_attempts 2) when the
  answer is not 2xx or late. Every change makes the notification Intercom would send for a
  subscribed topic, the bot admin's own replies and assignments included.
"""
import hashlib
import hmac
import itertools
import json
import pathlib
import time
import uuid

import asyncio
import jsonschema
from aiohttp import web

from fakeserver import QueuedWebhooks

TOKEN = "dG9rOmludGVyY29tLWFjY2Vzcy10b2tlbg=="
CLIENT_SECRET = "intercom-client-secret-0123456789"
APP_ID = "ecahpwf5"
BOT = "5017690"
ADMINS = {BOT: "Handoff Bot", "991267715": "Sam", "991267716": "Kim"}
TEAMS = {"5017691": "Orders", "5017692": "VIP"}
OPERATOR = {"type": "bot", "id": "991267624", "name": "Operator", "email": "operator+ecahpwf5@intercom.io"}
TOPICS = {"conversation.user.created", "conversation.user.replied", "conversation.admin.replied",
          "conversation.admin.assigned", "conversation.admin.closed", "conversation.admin.snoozed"}
WEBHOOK_TIMEOUT = 5.0

SPECS = pathlib.Path(__file__).parent / "specs" / "intercom"
VALIDATORS = {name: jsonschema.Draft4Validator(json.loads((SPECS / f"{name}.json").read_text()),
                                               format_checker=jsonschema.FormatChecker())
              for name in ("replyConversation", "manageConversation", "updateConversation", "error", "version")}


def sign(secret, body):
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


class Refused(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_list(code, message):
    doc = {"type": "error.list", "request_id": str(uuid.uuid4()), "errors": [{"code": code, "message": message}]}
    VALIDATORS["error"].validate(doc)
    return doc


def check_schema(name, doc):
    error = jsonschema.exceptions.best_match(VALIDATORS[name].iter_errors(doc))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "body"
        raise Refused(400, "parameter_invalid", f"{where}: {error.message}"[:300])


class Conversation:
    def __init__(self, cid, contact, name, text):
        now = int(time.time())
        self.id, self.contact, self.name = cid, contact, name
        self.created_at = now
        self.state, self.admin, self.team = "open", None, None
        self.custom_attributes = {}
        self.source = {"type": "conversation", "id": str(400000000 + int(cid)), "delivered_as": "customer_initiated",
                       "subject": "", "body": f"<p>{text}</p>", "author": self.customer(), "attachments": [],
                       "url": "https://shop.example/help", "redacted": False}
        self.parts = []          # every part, in order (what the customer and the agents see)

    def customer(self):
        return {"type": "user", "id": self.contact, "name": self.name, "email": f"{self.name.lower()}@example.com"}


class FakeIntercom(QueuedWebhooks):
    """deliveries: the notifications sent, dicts with notification, status, answer, attempts, error."""

    EVENTS_PATH = "/hubs/intercom/events"

    def __init__(self, token=TOKEN, client_secret=CLIENT_SECRET, attributes=None):
        super().__init__()
        self.token, self.client_secret = token, client_secret
        # conversation data attributes of the workspace; None: any name is accepted
        self.attributes = attributes
        self.plan_restricted = False
        self.conversations = {}
        self.calls = []          # (operation, conversation id, body) of accepted API calls, in order
        self.rejected = []       # (method, path, status, code, message) of API calls refused
        self.script = {}         # operation -> [(status, headers)] answered before the normal one
        self.delays = {}         # operation -> [seconds] waited before answering
        self.cids = itertools.count(400)
        self.part_ids = itertools.count(100)
        self.server.route("POST", "/conversations/{cid}/reply", self._api("reply"))
        self.server.route("POST", "/conversations/{cid}/parts", self._api("parts"))
        self.server.route("PUT", "/conversations/{cid}", self._api("update"))

    # --- the API (handoffd -> Intercom) ----------------------------------------------

    def _api(self, op):
        async def handle(request, body):
            with self.cond:
                delays = self.delays.get(op) or []
                delay = delays.pop(0) if delays else 0
            if delay:
                await asyncio.sleep(delay)
            try:
                conv, doc = self._check(op, request, body)
                with self.cond:
                    scripted = self.script.get(op) or []
                    answer = scripted.pop(0) if scripted else None
                if answer:
                    return web.json_response(error_list("server_error" if answer[0] >= 500 else "rate_limit_exceeded",
                                                         "scripted"), status=answer[0], headers=answer[1] or {})
                with self.cond:
                    getattr(self, "_do_" + op)(conv, doc)
                    self.calls.append((op, conv.id, doc))
                    self.cond.notify_all()
                    return web.json_response(self._item(conv, conv.parts[-1:]))
            except Refused as r:
                with self.cond:
                    self.rejected.append((request.method, request.path, r.status, r.code, r.message))
                    self.cond.notify_all()
                return web.json_response(error_list(r.code, r.message), status=r.status)
        return handle

    def _check(self, op, request, body):
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise Refused(401, "unauthorized", "Access Token Invalid")
        version = request.headers.get("Intercom-Version")
        if version is None:
            raise Refused(400, "intercom_version_missing", "the fake wants the Intercom-Version header pinned")
        if not VALIDATORS["version"].is_valid(version):
            raise Refused(400, "intercom_version_invalid", f"{version} is not a valid Intercom-Version")
        if self.plan_restricted:
            raise Refused(403, "api_plan_restricted", "Active subscription needed.")
        conv = self.conversations.get(request.match_info["cid"])
        if conv is None:
            raise Refused(404, "not_found", "Resource Not Found")
        if request.content_type != "application/json":
            raise Refused(400, "parameter_invalid", "the body must be application/json")
        try:
            doc = json.loads(body)
        except ValueError:
            raise Refused(400, "parameter_invalid", "the body is not JSON")
        check_schema({"reply": "replyConversation", "parts": "manageConversation", "update": "updateConversation"}[op], doc)
        if "admin_id" in doc and doc["admin_id"] not in ADMINS:
            raise Refused(404, "admin_not_found", "Admin not found")
        return conv, doc

    def _do_reply(self, conv, doc):
        kind = doc["message_type"]
        if kind == "comment" and conv.state != "open":
            conv.state = "open"       # an admin's reply reopens a closed or snoozed conversation
        self._part(conv, kind, self._admin(doc["admin_id"]), body=doc["body"],
                   attachments=[{"type": "upload", "name": u.rsplit("/", 1)[-1], "url": u, "content_type": "image/png"}
                                for u in doc.get("attachment_urls") or []],
                   topic="conversation.admin.replied" if kind == "comment" else "conversation.admin.noted")

    def _do_parts(self, conv, doc):
        if doc["message_type"] == "close":     # close_conversation_request
            conv.state = "closed"
            self._part(conv, "close", self._admin(doc["admin_id"]), body=doc.get("body"),
                       topic="conversation.admin.closed")
            return
        assignee = doc["assignee_id"]
        if doc["type"] == "admin":
            if assignee != "0" and assignee not in ADMINS:
                raise Refused(404, "admin_not_found", "Admin for assignee_id not found")
            conv.admin = None if assignee == "0" else assignee
        else:
            if assignee != "0" and assignee not in TEAMS:
                raise Refused(404, "team_not_found", "Team not found")
            conv.team = None if assignee == "0" else assignee
        self._assigned(conv, self._admin(doc["admin_id"]), doc.get("body"))

    def _do_update(self, conv, doc):
        attrs = doc.get("custom_attributes") or {}
        unknown = sorted(set(attrs) - self.attributes) if self.attributes is not None else []
        if unknown:
            raise Refused(400, "parameter_invalid", f"Custom attribute '{unknown[0]}' does not exist")
        conv.custom_attributes.update(attrs)

    # --- the Intercom side: conversations and their parts --------------------------------

    def _admin(self, admin_id):
        return {"type": "admin", "id": admin_id, "name": ADMINS[admin_id], "email": f"admin{admin_id}@acme.example"}

    def _part(self, conv, part_type, author, body=None, attachments=None, assigned_to=None, topic=None):
        now = int(time.time())
        part = {"type": "conversation_part", "id": str(next(self.part_ids)), "part_type": part_type, "body": body,
                "created_at": now, "updated_at": now, "notified_at": now, "assigned_to": assigned_to,
                "author": author, "attachments": attachments or [], "external_id": None, "redacted": False}
        conv.parts.append(part)
        if topic:
            self._notify(topic, conv, [part])
        return part

    def _assigned(self, conv, author, body=None):
        to = ({"type": "admin", "id": conv.admin} if conv.admin else
              {"type": "team", "id": conv.team} if conv.team else {"type": "nobody_admin", "id": None})
        self._part(conv, "assignment", author, body=body, assigned_to=to, topic="conversation.admin.assigned")

    def _item(self, conv, parts):
        """The conversation as Intercom's API and webhooks show it (the 2.11 conversation model)."""
        return {
            "type": "conversation", "id": conv.id, "title": None, "created_at": conv.created_at,
            "updated_at": int(time.time()), "waiting_since": None, "snoozed_until": None,
            "open": conv.state != "closed", "state": conv.state, "read": False, "priority": "not_priority",
            "admin_assignee_id": int(conv.admin) if conv.admin else None,
            "team_assignee_id": int(conv.team) if conv.team else None,
            "tags": {"type": "tag.list", "tags": []}, "conversation_rating": None, "source": dict(conv.source),
            "contacts": {"type": "contact.list", "contacts": [{"type": "contact", "id": conv.contact, "external_id": None}]},
            "teammates": None, "custom_attributes": dict(conv.custom_attributes), "first_contact_reply": None,
            "sla_applied": None, "statistics": None, "topics": {}, "ticket": None,
            "linked_objects": {"type": "list", "data": [], "total_count": 0, "has_more": False},
            "ai_agent": None, "ai_agent_participated": False,
            "conversation_parts": {"type": "conversation_part.list", "conversation_parts": [dict(p) for p in parts],
                                   "total_count": len(parts)},
        }

    def new_conversation(self, text="hello", contact="667d60f18a68186f43bafdf4", name="Dana", workflow="after"):
        """The contact starts a conversation in the Messenger and a Workflow assigns it to the
        bot admin. workflow: "after" (conversation.user.created shows it unassigned), "before"
        (it shows the bot already), None (no Workflow: nobody is assigned)."""
        with self.cond:
            cid = str(next(self.cids))
            conv = Conversation(cid, contact, name, text)
            self.conversations[cid] = conv
            if workflow == "before":
                conv.admin = BOT
            self._notify("conversation.user.created", conv, [])
            if workflow:
                conv.admin = BOT
                self._assigned(conv, dict(OPERATOR))
        self.drain()
        return cid

    def customer(self, cid, text, attachments=None):
        """The contact replies (a closed conversation reopens); returns handoffd's answer."""
        with self.cond:
            conv = self.conversations[cid]
            part_type = "comment" if conv.state == "open" else "open"
            conv.state = "open"
            part = self._part(conv, part_type, conv.customer(), body=f"<p>{text}</p>", attachments=attachments,
                              topic="conversation.user.replied")
        return self.wait_part(part["id"])

    def admin_reply(self, cid, text, admin="991267715"):
        """A human replies in the Inbox: the customer sees it in the Messenger."""
        with self.cond:
            conv = self.conversations[cid]
            conv.state = "open"
            part = self._part(conv, "comment", self._admin(admin), body=f"<p>{text}</p>",
                              topic="conversation.admin.replied")
        return self.wait_part(part["id"])

    def assign(self, cid, admin=None, team=None, by="991267715"):
        """A human (or a rule) assigns the conversation."""
        with self.cond:
            conv = self.conversations[cid]
            if admin is not None:
                conv.admin = None if admin == "0" else admin
            if team is not None:
                conv.team = None if team == "0" else team
            self._assigned(conv, self._admin(by))
        self.drain()

    def close(self, cid, by="991267715"):
        self._set_state(cid, "closed", "close", by)

    def snooze(self, cid, by="991267715"):
        self._set_state(cid, "snoozed", "snoozed", by)

    def _set_state(self, cid, state, part_type, by):
        """An admin closes or snoozes the conversation (conversation.admin.<state>)."""
        with self.cond:
            conv = self.conversations[cid]
            conv.state = state
            self._part(conv, part_type, self._admin(by), topic=f"conversation.admin.{state}")
        self.drain()

    # --- webhooks (Intercom -> handoffd) ----------------------------------------------

    def _notify(self, topic, conv, parts):
        """Queues the notification of TOPIC (the caller holds self.cond) if subscribed and
        there is an endpoint to send it to."""
        if topic not in TOPICS or self.target is None:
            return None
        now = int(time.time())
        note = {"type": "notification_event", "app_id": APP_ID,
                "data": {"type": "notification_event_data", "item": self._item(conv, parts)},
                "links": {}, "id": f"notif_{uuid.uuid4()}", "topic": topic, "delivery_status": "pending",
                "delivery_attempts": 1, "delivered_at": 0, "first_sent_at": now, "created_at": now, "self": None}
        self.queue_webhook(note)
        return note["id"]

    def deliver(self, note):
        record = {"notification": note, "attempts": 0, "status": None, "answer": None, "error": None}
        while record["attempts"] < 2:
            record["attempts"] += 1
            note["delivery_attempts"] = record["attempts"]
            record["status"], record["answer"], record["error"] = self.post(json.dumps(note).encode())
            if record["status"] and 200 <= record["status"] < 300:
                break
        return record

    def post(self, body, secret=None, signed=True, timeout=WEBHOOK_TIMEOUT):
        """POSTs BODY to handoffd as Intercom does; returns (status, parsed answer, error)."""
        headers = {"Content-Type": "application/json", "User-Agent": "intercom-parrot-service-client/1.0"}
        if signed:
            headers["X-Hub-Signature"] = sign(secret or self.client_secret, body)
        return self.post_webhook(body, headers, timeout)

    def replay(self, notification_id):
        """Delivers a notification again (same id, one more attempt), newly signed."""
        record = next(d for d in self.deliveries if d["notification"]["id"] == notification_id)
        note = dict(record["notification"], delivery_attempts=record["attempts"] + 1)
        status, answer, _ = self.post(json.dumps(note).encode())
        return status, answer

    def send(self, note, **opts):
        """Sends a hand-made notification now, outside the queue; returns (status, answer)."""
        body = opts.pop("raw", None) or json.dumps(note).encode()
        status, answer, _ = self.post(body, **opts)
        return status, answer

    def notification_for(self, cid, topic="conversation.user.replied", text="hi", **fields):
        """A notification of conversation CID with a new customer part (not queued, not kept)."""
        with self.cond:
            conv = self.conversations[cid]
            now = int(time.time())
            part = {"type": "conversation_part", "id": str(next(self.part_ids)), "part_type": "comment",
                    "body": f"<p>{text}</p>", "created_at": now, "updated_at": now, "notified_at": now,
                    "assigned_to": None, "author": conv.customer(), "attachments": [], "external_id": None,
                    "redacted": False}
            note = {"type": "notification_event", "app_id": APP_ID,
                    "data": {"type": "notification_event_data", "item": self._item(conv, [part])},
                    "links": {}, "id": f"notif_{uuid.uuid4()}", "topic": topic, "delivery_status": "pending",
                    "delivery_attempts": 1, "delivered_at": 0, "first_sent_at": now, "created_at": now, "self": None}
        note.update(fields)
        return note

    # --- waiting and looking ------------------------------------------------------------

    def wait_part(self, part_id, timeout=30):
        """handoffd's answer (status, body) to the notification that carried part PART_ID."""
        def record(s):
            return next((d for d in s.deliveries
                         if any(p["id"] == part_id
                                for p in d["notification"]["data"]["item"]["conversation_parts"]["conversation_parts"])),
                        None)
        self.wait(lambda s: record(s) is not None, timeout, f"the notification of part {part_id}")
        with self.cond:
            d = record(self)
        return d["status"], d["answer"]

    def failed_deliveries(self):
        with self.cond:
            return [(d["notification"]["topic"], d["status"], d["error"]) for d in self.deliveries
                    if not (d["status"] and 200 <= d["status"] < 300) or d["attempts"] > 1]

    def seen_by_customer(self, cid):
        """What the customer sees in the Messenger: the admins' comments (the bot's included)."""
        with self.cond:
            return [p for p in self.conversations[cid].parts
                    if p["part_type"] in ("comment", "open") and p["author"]["type"] == "admin"]

    def bot_replies(self, cid):
        return [p for p in self.seen_by_customer(cid) if p["author"]["id"] == BOT]

    def wait_bot_replies(self, cid, n, timeout=30):
        self.wait(lambda s: len(s.bot_replies(cid)) >= n, timeout, f"{n} bot replies in {cid}")
        return self.bot_replies(cid)

    def notes(self, cid):
        with self.cond:
            return [p for p in self.conversations[cid].parts if p["part_type"] == "note"]

    def operations(self, cid):
        with self.cond:
            return [(op, b) for op, c, b in self.calls if c == cid]
