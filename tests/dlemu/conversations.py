"""Conversations: identity, the activity log with its watermarks, and queued failures.

Owns what the emulated service remembers about each conversation. Delivering activities
to sockets is stream.py's job, answering them is bot.py's, and HTTP is rest.py's.

A watermark is the number of activities it covers, as a decimal string: activity
"<conv>|0000007" is covered from watermark "8" on, and a client holding W gets the
activities numbered W and above. F8 shifts the numbers the stream reports without
changing how a client's watermark is read back, as the real service did when it reset.
"""
import collections
import datetime
import os

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def new_conversation_id():
    # Shaped like the service's ids: 22 base62 characters and a region suffix.
    return "".join(ALPHABET[b % 62] for b in os.urandom(22)) + "-us"


def now_stamp():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_watermark(text):
    """None for "start of the conversation" (absent, "" or "-"); else a non-negative int.
    Raises ValueError for anything else so the caller can answer 400."""
    if text is None or text in ("", "-"):
        return None
    value = int(text)
    if value < 0:
        raise ValueError("negative watermark")
    return value


def is_from_user(activity):
    return activity.get("from", {}).get("role") != "bot"


class Conversation:
    __slots__ = ("id", "user_id", "started", "ended", "expired", "log", "sockets", "overrides",
                 "failures", "greeted", "wm_base", "reconnecting")

    def __init__(self, conv_id, user_id):
        self.id = conv_id
        self.user_id = user_id
        self.started = False
        self.ended = False          # endOfConversation seen, either side
        self.expired = False        # F20: every call about it answers 404
        self.log = []               # activity dicts; index == sequence number
        self.sockets = []           # stream.Socket objects; normally one
        self.overrides = None       # sparse per-conversation settings
        self.failures = None        # op -> deque of scripted failures
        self.greeted = False
        self.wm_base = 0            # F8: subtracted from reported watermarks
        self.reconnecting = None    # timer while between a reconnect GET and its handshake (F26)

    def append(self, activity):
        """Stamps the service fields and files the activity; returns it."""
        seq = len(self.log)
        activity["id"] = "%s|%07d" % (self.id, seq)
        activity.setdefault("timestamp", now_stamp())
        activity["channelId"] = "directline"
        activity["conversation"] = {"id": self.id}
        self.log.append(activity)
        return activity

    def reported(self, position=None):
        """The watermark string the service reports after `position` activities
        (default: all of them)."""
        position = len(self.log) if position is None else position
        return str(max(position - self.wm_base, 0))

    def page(self, position, size):
        """Up to `size` activities from `position` on, except typing, which Direct Line never
        returns from GET or replays; returns (activities, position after the last one read)."""
        out = []
        while position < len(self.log) and len(out) < size:
            if self.log[position].get("type") != "typing":
                out.append(self.log[position])
            position += 1
        return out, position

    def received(self):
        """What the bot received, in order: every activity posted by the client."""
        return [a for a in self.log if is_from_user(a)]

    def sent(self):
        return [a for a in self.log if not is_from_user(a)]

    def queue_failures(self, op, responses):
        if self.failures is None:
            self.failures = {}
        self.failures.setdefault(op, collections.deque()).extend(responses)

    def take_failure(self, op):
        queue = self.failures.get(op) if self.failures else None
        return queue.popleft() if queue else None

    def summary(self):
        return {"id": self.id, "user": self.user_id, "started": self.started, "ended": self.ended,
                "expired": self.expired, "activities": len(self.log),
                "received": sum(1 for a in self.log if is_from_user(a)),
                "sockets": len(self.sockets), "watermark": self.reported(),
                "settings": dict(self.overrides or {})}


class Registry:
    """All conversations by id, plus the failures queued for any conversation."""

    def __init__(self):
        self.by_id = {}
        self.any_failures = Conversation("*", None)

    def create(self, user_id=None):
        conv = Conversation(new_conversation_id(), user_id or "dl_" + os.urandom(6).hex())
        self.by_id[conv.id] = conv
        return conv

    def get(self, conv_id):
        return self.by_id.get(conv_id)

    def take_failure(self, conv, op):
        """The next scripted failure for this operation: the conversation's own queue first."""
        failure = conv.take_failure(op) if conv is not None else None
        return failure or self.any_failures.take_failure(op)

    def started(self):
        return [c for c in self.by_id.values() if c.started and not c.expired]
