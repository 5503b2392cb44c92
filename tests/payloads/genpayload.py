#!/usr/bin/env python3
"""Makes Direct Line payloads shaped like what a Copilot Studio / PVA bot sends.

The tests and benchmarks build their inputs here instead of reading ../shared, so the
suite runs from a clean checkout. The shape follows the service's handoff.initiate:
context in `value`, the bot-user transcript in an attachment named "Transcript".

    genpayload.py N                      ActivitySet with one handoff.initiate, N transcript entries
    genpayload.py N --value-as-string    `value` sent as a JSON string (Composer does this)
    genpayload.py N --content-as-string  attachment `content` sent as a JSON string
    genpayload.py N --name transcript    attachment name in another case
    genpayload.py N --no-transcript      no attachment at all
    genpayload.py N --content-url        transcript given by reference only
    genpayload.py N --mixed              a "transferring you" message before the event
    genpayload.py N --vars K             K extra custom variables in `value`
    genpayload.py N --language En-US     `va_Language` in another spelling
    genpayload.py N --ascii              non-ASCII text as \\u escapes (surrogate pairs for emoji)
    genpayload.py N --card-first         an adaptive card attachment before the transcript
    genpayload.py N --nulls              nulls where strings are expected (text, names, locale)
    genpayload.py N --escape-all         every letter of every string and key as a \\u escape

handoff_event_for() builds the same event around a transcript the caller already has
(the Direct Line emulator passes a conversation's real activities).

Sizes: N=2 is about 2.7 KB, 20 about 18 KB, 200 about 160 KB, 2000 about 1.6 MB.
"""
import argparse
import datetime
import json
import re
import sys

CONV = "Kx7Qb2ZrT9w1LmN4aP8sVd-us"
USER = {"id": "dl_user_5c1e0b7a", "name": "Dana Customer", "role": "user"}
BOT = {"id": "bot-0a1b2c3d", "name": "Support Bot", "role": "bot"}
T0 = datetime.datetime(2026, 11, 20, 9, 15, tzinfo=datetime.timezone.utc)
SERVICE_URL = "https://directline.example.invalid/"


def stamp(i):
    t = T0 + datetime.timedelta(milliseconds=4100 * i)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def activity_id(conv, i):
    return "%s|%07d" % (conv, i)


def user_turn(conv, i):
    return {
        "type": "message", "id": activity_id(conv, i), "timestamp": stamp(i),
        "serviceUrl": SERVICE_URL, "channelId": "directline", "from": USER,
        "conversation": {"id": conv}, "recipient": BOT, "textFormat": "plain", "locale": "en-US",
        "text": "My order #%d has not arrived, it was due on Tuesday \u2014 \u00fcn\u00efc\u00f8d\u00e9 "
                "\u2713 \U0001F600 %d" % (10000 + i, i),
        "entities": [{"type": "ClientCapabilities", "requiresBotState": True,
                      "supportsListening": True, "supportsTts": True}],
        "channelData": {"clientActivityID": "1700000000%d.abc" % i, "traceHistory": None,
                        "enableDiagnostics": True},
    }


def bot_turn(conv, i):
    return {
        "type": "message", "id": activity_id(conv, i), "timestamp": stamp(i),
        "serviceUrl": SERVICE_URL, "channelId": "directline", "from": BOT,
        "conversation": {"id": conv}, "recipient": USER, "textFormat": "markdown", "locale": "en-US",
        "text": "I'm sorry to hear that. Let me check order #%d for you. "
                "Could you confirm the postcode?" % (10000 + i - 1),
        "entities": [], "replyToId": activity_id(conv, i - 1),
        "channelData": {
            "DialogTraceDetail": {"DialogTraces": [{"DialogId": "d-%d" % i, "NodeId": "n-%d" % i}]},
            "ConversationUnderstandingDetail": {
                "NormalizedQuery": "order late", "RawQuery": "order late",
                "RankedIntents": [{"IntentId": "i-%d" % i, "Score": 0.93,
                                   "MatchedTriggerQuery": "Where is my order"}]},
            "VariableDetail": {"Variables": {}}},
    }


def transcript(conv, n):
    return [user_turn(conv, i) if i % 2 == 0 else bot_turn(conv, i) for i in range(n)]


def is_user(activity):
    return activity.get("from", {}).get("role") == "user"


def context(conv, acts, extra_vars, bot=BOT, language="en-US"):
    phrases = [a.get("text", "") for a in acts if is_user(a)][-10:]
    value = {
        "va_Scope": "bot", "va_LastTopic": "Order status", "va_Topics": ["Greeting", "Order status"],
        "va_LastPhrase": "talk to a person", "va_Phrases": phrases, "va_ConversationId": conv,
        "va_AgentMessage": "Customer asked for a human", "va_BotId": bot["id"],
        "va_BotName": bot["name"], "va_Language": language,
        "Global.CustomerTier": "gold", "Global.OrderNumber": 10042,
    }
    for k in range(extra_vars):
        value["Global.Custom%d" % k] = "value %d" % k
    return value


CARD = {"contentType": "application/vnd.microsoft.card.adaptive", "name": "summary",
        "content": {"type": "AdaptiveCard", "version": "1.5",
                    "body": [{"type": "TextBlock", "text": "Order #10042", "wrap": True}]}}


def with_nulls(acts, value):
    """Nulls where a reader expects strings, as some channels send them."""
    for i, a in enumerate(acts):
        if i % 3 == 1:
            a["text"] = None
        if i % 3 == 2:
            a["from"] = dict(a["from"], name=None)
            a["locale"] = None
    value["va_LastTopic"] = None
    value["Global.Nothing"] = None


def handoff_event(n, conv=CONV, **variant):
    """handoff.initiate with a made-up transcript of n activities; variant as handoff_event_for."""
    return handoff_event_for(conv, transcript(conv, n), activity_id(conv, n), stamp(n), **variant)


def handoff_event_for(conv, acts, event_id, timestamp, user=USER, bot=BOT,
                      value_as_string=False, content_as_string=False, name="Transcript",
                      no_transcript=False, content_url=False, extra_vars=0, language="en-US",
                      card_first=False, nulls=False):
    """handoff.initiate carrying `acts` as its transcript. The variants are the shapes seen
    in the wild: `value` or `content` as JSON strings, another attachment name case, no
    transcript, a transcript by reference only, extra custom variables, `va_Language` spelling."""
    value = context(conv, acts, extra_vars, bot, language)
    if nulls:
        acts = [dict(a) for a in acts]
        with_nulls(acts, value)
    event = {
        "type": "event", "id": event_id, "timestamp": timestamp,
        "channelId": "directline", "from": bot, "conversation": {"id": conv},
        "attachments": [], "entities": [], "name": "handoff.initiate",
        "value": json.dumps(value) if value_as_string else value,
        "relatesTo": {"activityId": acts[0]["id"] if acts else "", "user": user, "bot": bot,
                      "conversation": {"id": conv}, "channelId": "directline",
                      "serviceUrl": SERVICE_URL},
    }
    if acts:
        event["replyToId"] = acts[-1]["id"]
    if card_first:
        event["attachments"].append(CARD)
    if content_url:
        event["attachments"].append({"contentType": "application/json", "name": name,
                                     "contentUrl": "https://files.example.invalid/transcript.json"})
    elif not no_transcript:
        content = {"activities": acts}
        event["attachments"].append({"contentType": "application/json", "name": name,
                                     "content": json.dumps(content) if content_as_string else content})
    return event


def transfer_message(conv, i):
    return {"type": "message", "id": activity_id(conv, i), "timestamp": stamp(i),
            "channelId": "directline", "from": BOT, "conversation": {"id": conv},
            "text": "Transferring you to an agent\u2026"}


def activity_set(n, mixed=False, **kw):
    event = handoff_event(n, **kw)
    acts = [event]
    if mixed:
        event["id"] = activity_id(kw.get("conv", CONV), n + 1)
        acts.insert(0, transfer_message(kw.get("conv", CONV), n))
    return {"activities": acts, "watermark": str(n + len(acts))}


JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
LETTER_OR_ESCAPE = re.compile(r'(\\u[0-9a-fA-F]{4}|\\.)|([A-Za-z])')


def escape_all(text):
    """TEXT with every letter inside its strings (keys included) written as a \\u escape,
    so that a parser has to unescape every string instead of pointing into the input."""
    def letters(m):
        return m.group(1) or "\\u%04x" % ord(m.group(2))
    return JSON_STRING.sub(lambda m: '"' + LETTER_OR_ESCAPE.sub(letters, m.group(1)) + '"', text)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("n", type=int, nargs="?", default=20)
    p.add_argument("--value-as-string", action="store_true")
    p.add_argument("--content-as-string", action="store_true")
    p.add_argument("--name", default="Transcript")
    p.add_argument("--no-transcript", action="store_true")
    p.add_argument("--content-url", action="store_true")
    p.add_argument("--mixed", action="store_true")
    p.add_argument("--vars", type=int, default=0)
    p.add_argument("--language", default="en-US")
    p.add_argument("--ascii", action="store_true")
    p.add_argument("--card-first", action="store_true")
    p.add_argument("--nulls", action="store_true")
    p.add_argument("--escape-all", action="store_true")
    a = p.parse_args(argv)
    out = activity_set(a.n, mixed=a.mixed, value_as_string=a.value_as_string,
                       content_as_string=a.content_as_string, name=a.name,
                       no_transcript=a.no_transcript, content_url=a.content_url, extra_vars=a.vars,
                       language=a.language, card_first=a.card_first, nulls=a.nulls)
    text = json.dumps(out, ensure_ascii=a.ascii, separators=(",", ":"))
    sys.stdout.write(escape_all(text) if a.escape_all else text)


if __name__ == "__main__":
    main(sys.argv[1:])
