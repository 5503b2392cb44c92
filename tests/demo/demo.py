#!/usr/bin/python3
"""The README's demo: one conversation from greeting to agent and back, end to end.

Starts the Direct Line emulator (a scripted bot), a small agent desk that speaks the
generic webhook contract, and handoffd on scripts/examples/config.lua between them;
plays a customer's conversation, prints what each side sees, stops everything, exits 0.

    /usr/bin/python3 tests/demo/demo.py [path/to/handoffd]
"""
import os
import pathlib
import sys
import tempfile
import textwrap
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from fakehub import FakeHub  # noqa: E402
from relay_env import Handoffd  # noqa: E402
from tests.dlemu.control import spawn  # noqa: E402

WIDTH = 100


def say(who, text):
    lines = textwrap.wrap(text, WIDTH - 14) or [""]
    print(f"  {who:<11} {lines[0]}")
    for line in lines[1:]:
        print(f"  {'':<11} {line}")


def section(title):
    print(f"\n--- {title} " + "-" * max(0, WIDTH - len(title) - 5))


class Story:
    def __init__(self, hub, daemon, emu, state_db):
        self.hub, self.daemon, self.emu, self.state_db = hub, daemon, emu, state_db
        self.shown = 0

    def customer(self, text):
        say("customer", text)
        status, _ = self.hub.message(self.daemon.port, "chat-1", text, user="u-dana", name="Dana")
        if status != 202:
            raise SystemExit(f"handoffd answered {status} to the customer's message")

    def bot_replies(self, n):
        msgs = self.hub.wait_messages("chat-1", self.shown + n, timeout=30)
        for m in msgs[self.shown:]:
            say("bot", m["activity"]["text"])
        self.shown = len(msgs)

    def bot_received(self, n):
        cid = self.daemon_conversation()
        self.emu.ctl.wait_count(cid, "received", n, timeout=30)
        return self.emu.ctl.received(cid)

    def daemon_conversation(self):
        import sqlite3
        db = sqlite3.connect(self.state_db)
        try:
            return db.execute("SELECT dl_conversation_id FROM conversations").fetchone()[0]
        finally:
            db.close()


def show_handoff(h):
    r = h["routing"]
    say("desk", f"new conversation {h['conversation']} for queue '{r['queue']}'"
        + (f", skill {r['skill']}" if r.get("skill") else "")
        + (f", priority {r['priority']}" if r.get("priority") is not None else "")
        + (f" ({r['reason']})" if r.get("reason") else ""))
    ctx = h["context"]
    say("", f"customer {h['user'].get('name')} ({h['user']['id']}), language {ctx.get('language')}, "
        f"last topic '{ctx.get('last_topic')}', tier {ctx['vars'].get('Global.CustomerTier')}")
    say("", f"note from the bot: {ctx.get('agent_message')}")
    say("", f"transcript, {len(h['transcript'])} lines:")
    for e in h["transcript"]:
        say("", f"  {e['role']:>4}: {e['text']}")


def play(story, hub, port):
    section("the customer talks to the bot")
    story.customer("Hello!")
    story.bot_replies(2)
    story.customer("What are your opening hours?")
    story.bot_replies(1)
    story.customer("My order #10042 is late, I want to talk to a human")
    story.bot_replies(1)
    section("the bot asks for a human: handoffd routes the conversation to the agent desk")
    show_handoff(hub.wait_handoff("chat-1"))
    section("an agent takes over")
    hub.send(port, {"id": "desk-1", "type": "handoff.accepted", "conversation": "chat-1",
                    "handoff_id": hub.handoffs("chat-1")[0]["handoff_id"], "agent": {"id": "a-7", "name": "Sam"}})
    status = [a for a in story.bot_received(4) if a.get("name") == "handoff.status"]
    say("desk", "Sam accepts the conversation")
    say("bot sees", f"handoff.status {status[-1]['value']['state']}")
    say("agent", "Hi Dana, I'm Sam. Your parcel left the depot this morning; it arrives tomorrow.")
    story.customer("Great, thank you Sam!")
    say("", "(the desk carries this part of the chat; the bot hears nothing of it)")
    section("the agent finishes and hands the conversation back to the bot")
    hub.send(port, {"id": "desk-2", "type": "handoff.completed", "conversation": "chat-1",
                    "handoff_id": hub.handoffs("chat-1")[0]["handoff_id"], "return_to_bot": True})
    status = [a for a in story.bot_received(5) if a.get("name") == "handoff.status"]
    say("bot sees", f"handoff.status {status[-1]['value']['state']}")
    story.customer("One more thing: are you open on Saturday?")
    story.bot_replies(1)


def main():
    binary = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else str(ROOT / "build" / "handoffd")
    print("handoffd demo: a customer, a bot over Direct Line, an agent desk, and handoffd between them")
    with tempfile.TemporaryDirectory(prefix="handoffd-demo-") as tmp:
        work = pathlib.Path(tmp)
        (work / "state").mkdir()
        hub = FakeHub().start()
        try:
            with spawn() as emu:
                os.environ.update(HANDOFFD_LISTEN="127.0.0.1:0", HANDOFFD_STATE_DIR=str(work / "state"),
                                  DIRECTLINE_BASE=emu.info["http_base"], DIRECTLINE_SECRET=emu.info["secret"],
                                  HUB_URL=hub.url, HUB_SECRET=hub.secret, HUB_TOKEN=hub.token)
                daemon = Handoffd(binary, ROOT / "scripts" / "examples").start()
                print(f"  bot: {emu.info['http_base']} (emulated Direct Line 3.0, scripted bot)")
                print(f"  agent desk: {hub.url} (generic webhook contract)")
                print(f"  handoffd: 127.0.0.1:{daemon.port}, config scripts/examples/config.lua")
                try:
                    play(Story(hub, daemon, emu, work / "state" / "state.db"), hub, daemon.port)
                finally:
                    code = daemon.stop()
                errors = daemon.errors()
        finally:
            hub.stop()
    section("done")
    print(f"  handoffd stopped with exit code {code}; {len(errors)} error lines in its log")
    return 0 if code == 0 and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
