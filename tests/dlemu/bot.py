"""The scripted fake bot behind the emulated Direct Line, and what the control API makes it say.

Owns the bot's side of a conversation: greeting, canned answers, the hand-off (a
"Transferring you" message and a handoff.initiate built by genpayload.py from the
conversation's real transcript), goodbye with endOfConversation, and the activities tests
order it to send (numbered messages, hand-off variants F21/F23, re-sends F24, end F25).
Storing activities is conversations.py's job and delivering them is stream.py's.

Every reply is preceded by a typing activity in its own ActivitySet; the reply follows
after bot_delay_ms (a timer, not a task).
"""
import asyncio
import re

from ..payloads import genpayload

GREETING = "Hello, I'm Support Bot. Ask me about our opening hours, or ask for a human agent."
HOURS = "We are open Monday to Friday, 9:00 to 17:00, and Saturday 10:00 to 14:00."
TRANSFER = "Transferring you to an agent\u2026"
GOODBYE = "Goodbye, and thanks for chatting with us."

HANDOFF_OPTIONS = {"transcript", "value_as_string", "content_as_string", "name", "no_transcript",
                   "content_url", "extra_vars", "language"}
WANTS_HUMAN = re.compile(r"\b(human|agent)s?\b", re.I)
SAYS_BYE = re.compile(r"\bbye\b", re.I)


class Bot:
    def __init__(self, emu):
        self.emu = emu
        self.identity = dict(genpayload.BOT)

    # ---- hearing the user -----------------------------------------------------------
    def heard(self, conv, activity):
        """Called once per recorded user activity, after its echo was pushed."""
        kind, name = activity.get("type"), activity.get("name")
        if kind == "endOfConversation":
            conv.ended = True
        elif kind == "event" and name == "handoff.status":
            self.emu.stats.bump("handoff_status_received")
        if conv.ended or not self.emu.settings.get(conv, "bot_enabled"):
            return
        if kind == "event" and name == "startConversation":
            self.answer(conv, activity, self.greeting(conv))
        elif kind == "message":
            self.answer(conv, activity, self.greeting(conv) + self.reply_to(conv, activity))

    def greeting(self, conv):
        if conv.greeted:
            return []
        conv.greeted = True
        return [self.message(conv, GREETING)]

    def reply_to(self, conv, activity):
        text = activity.get("text") or ""
        if WANTS_HUMAN.search(text):
            return [self.message(conv, TRANSFER), HandoffLater(activity.get("id"), {})]
        if SAYS_BYE.search(text):
            return [self.message(conv, GOODBYE), {"type": "endOfConversation", "from": self.identity}]
        if "opening hours" in text.lower():
            return [self.message(conv, HOURS)]
        return [self.message(conv, "You said: " + text)]

    def answer(self, conv, trigger, replies):
        if not replies:
            return
        self.send(conv, [{"type": "typing", "from": self.identity}])
        for reply in replies:
            if isinstance(reply, dict):
                reply["replyToId"] = trigger.get("id")
        delay = self.emu.settings.get(conv, "bot_delay_ms")
        if delay:
            asyncio.get_running_loop().call_later(delay / 1000, self.send, conv, replies)
        else:
            self.send(conv, replies)

    # ---- speaking -------------------------------------------------------------------
    def message(self, conv, text):
        return {"type": "message", "from": self.identity, "text": text, "textFormat": "markdown",
                "locale": "en-US", "recipient": {"id": conv.user_id, "role": "user"}}

    def send(self, conv, activities):
        """Files the activities in order and pushes them as one ActivitySet. A HandoffLater
        becomes its event here, so its transcript holds everything filed before it."""
        if conv.expired:
            return []
        out = []
        for act in activities:
            if isinstance(act, HandoffLater):
                act = self.handoff(conv, act.trigger_id, act.options)
            conv.append(act)
            out.append(act)
            if act.get("type") == "endOfConversation":
                conv.ended = True
        self.emu.stats.bump("bot_activities", len(out))
        self.emu.streams.push(conv, out)
        return out

    def handoff(self, conv, trigger_id, options):
        """handoff.initiate through genpayload: the real transcript (messages so far) unless
        options["transcript"] asks for N made-up activities (F21 sizes)."""
        options = dict(options)
        synthetic = options.pop("transcript", "real")
        if synthetic == "real":
            acts = [a for a in conv.log if a.get("type") == "message"]
        else:
            acts = genpayload.transcript(conv.id, int(synthetic))
        user = {"id": conv.user_id, "role": "user"}
        event = genpayload.handoff_event_for(conv.id, acts, "", None, user=user, bot=self.identity,
                                             **options)
        del event["timestamp"]      # conv.append stamps id and time
        if trigger_id:
            event["replyToId"] = trigger_id
        return event

    # ---- orders from the control API ------------------------------------------------
    def order(self, conv, spec):
        """Sends what `spec` asks for, in this order: typing, texts, seq, activities,
        handoff, end, resend. One ActivitySet each, or one for all with one_set."""
        acts = []
        if spec.get("typing"):
            acts.append({"type": "typing", "from": self.identity})
        acts += [self.message(conv, t) for t in spec.get("texts", [])]
        prefix = spec.get("prefix", "seq-")
        acts += [self.message(conv, "%s%d" % (prefix, i)) for i in range(1, spec.get("seq", 0) + 1)]
        acts += [dict({"type": "message", "from": self.identity}, **a) for a in spec.get("activities", [])]
        if "handoff" in spec:
            acts.append(HandoffLater(None, spec["handoff"] or {}))
        if spec.get("end"):
            acts.append({"type": "endOfConversation", "from": self.identity})
        if spec.get("one_set"):
            sent = self.send(conv, acts) if acts else []
        else:
            sent = [a for act in acts for a in self.send(conv, [act])]
        if spec.get("resend"):
            sent += self.resend(conv, spec["resend"])
        return [a["id"] for a in sent]

    def resend(self, conv, which):
        """F24: pushes an activity already sent, as it was (same id), without filing it again."""
        if which == "last_handoff":
            found = [a for a in conv.log if a.get("name") == "handoff.initiate"][-1:]
        else:
            found = [a for a in conv.log if a["id"] == which]
        if found:
            self.emu.streams.push(conv, found)
        return found


class HandoffLater:
    """A handoff.initiate to build when it is filed (see Bot.send)."""
    __slots__ = ("trigger_id", "options")

    def __init__(self, trigger_id, options):
        self.trigger_id = trigger_id
        self.options = options


def check_order(spec):
    """Validates a control API bot order; raises ValueError."""
    known = {"conversation", "typing", "texts", "seq", "prefix", "activities", "handoff", "end",
             "one_set", "resend"}
    if set(spec) - known:
        raise ValueError("unknown keys %s; known: %s" % (sorted(set(spec) - known), sorted(known)))
    if set(spec.get("handoff") or {}) - HANDOFF_OPTIONS:
        raise ValueError("handoff options are %s" % sorted(HANDOFF_OPTIONS))
    if not isinstance(spec.get("seq", 0), int) or not isinstance(spec.get("texts", []), list):
        raise ValueError("seq is an integer, texts a list of strings")
    return spec
