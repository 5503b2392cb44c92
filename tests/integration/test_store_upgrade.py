"""A state written by the previous handoffd is upgraded once at start, and what it queued
is delivered.

Setup: a state.db made here with the first layout (schema version 0: hub items were an
envelope {"role","fn","<member>":RAW} in the outbox payload), holding a bot reply queued
for the customer of c-old, a message queued for the bot, and the escalation of c-up
(state routing) whose handoff.initiate event was never delivered. Then handoffd starts on
it (relay_env.Environment). Expected: the log says store.migrated; the customer gets the
reply, the bot the message (its answer comes back), the desk the handoff (parsed from the stored event, routed by
the rules; the log's handoff.parse_stored names it), and a handoff arriving afterwards
escalates on its dispatch-time parse (no handoff.parse_stored); the database is at
version 2: role and fn as columns, and the outbox without AUTOINCREMENT, its ids reserved
in outbox_ids above every id the old daemon handed out.
"""
import json
import sqlite3
import subprocess
import time

from conftest import BIN, SOURCE_DIR
from relay_env import Environment

GEN = SOURCE_DIR / "tests/payloads/genpayload.py"

OLD_SCHEMA = """
CREATE TABLE conversations (
  key TEXT PRIMARY KEY, state TEXT NOT NULL, user_json TEXT, dl_conversation_id TEXT,
  dl_token TEXT, dl_token_expiry INTEGER, watermark TEXT, dl_seen BLOB, hub_data TEXT,
  handoff_id TEXT, updated_at INTEGER NOT NULL);
CREATE TABLE events (id TEXT PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, queue TEXT NOT NULL,
  payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0,
  created INTEGER NOT NULL DEFAULT 0);
CREATE INDEX outbox_by_queue ON outbox (key, queue, id);
"""


def handoff_event():
    out = subprocess.run(["/usr/bin/python3", str(GEN), "3"], capture_output=True, check=True).stdout
    return next(a for a in json.loads(out)["activities"] if a.get("name") == "handoff.initiate")


def old_state(path, event):
    """The state an old daemon left: envelopes written the way it wrote them."""
    now = int(time.time())
    reply = {"type": "message", "id": "r-1", "from": {"id": "bot", "role": "bot"}, "text": "queued by the old daemon"}
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.executemany("INSERT INTO conversations (key, state, user_json, handoff_id, updated_at) VALUES (?, ?, ?, ?, ?)",
                   [("webhook:c-old", "bot", '{"id":"u-1","name":"Ann"}', None, now),
                    ("webhook:c-up", "routing", '{"id":"u-2","name":"Bo"}', "h-00000000000000aa", now)])
    items = [("webhook:c-old", "to_hub", '{"role":"front","fn":"to_user","activity":' + json.dumps(reply) + "}"),
             ("webhook:c-old", "to_bot", json.dumps({"type": "message", "from": {"id": "u-1"},
                                                     "text": "sent before the upgrade"})),
             ("webhook:c-up", "to_hub", '{"role":"desk","fn":"escalate","handoff":' + json.dumps(event) + "}")]
    db.executemany("INSERT INTO outbox (key, queue, payload, created) VALUES (?, ?, ?, ?)",
                   [(k, q, p.encode(), now * 1000) for k, q, p in items])
    db.commit()
    db.close()


def test_an_upgraded_daemon_delivers_what_the_old_one_queued(tmp_path):
    event = handoff_event()
    old_state(tmp_path / "state.db", event)
    env = Environment(BIN, tmp_path)
    try:
        env.daemon.wait_line("store.migrated")
        reply = env.hub.wait_messages("c-old", 1)[0]
        assert reply["activity"]["text"] == "queued by the old daemon"
        handoff = env.hub.wait_handoff("c-up")
        assert handoff["handoff_id"] == "h-00000000000000aa"
        assert handoff["context"]["conversation_id"] == event["conversation"]["id"]
        assert len(handoff["transcript"]) == 3
        assert handoff["routing"]["queue"] in ("orders", "vip", "general")
        env.daemon.wait_line("handoff.routed conv=webhook:c-up")
        # the bot got the queued message: its echo of it reaches the customer
        said = [m["activity"]["text"] for m in env.hub.wait_messages("c-old", 3)]
        assert said[0] == "queued by the old daemon" and said[-1] == "You said: sent before the upgrade"
        assert env.bot_received("c-old")[0]["text"] == "sent before the upgrade"
        # a handoff that arrives now escalates on the parse made at dispatch: only the
        # stored one was parsed from its bytes
        env.hub.message(env.port, "c-old", "I want a human")
        env.hub.wait_handoff("c-old")
        env.daemon.wait_line("handoff.routed conv=webhook:c-old")
        assert [l.split(" conv=")[1].split()[0] for l in env.daemon.lines if "handoff.parse_stored" in l] == [
            "webhook:c-up"]
        assert env.daemon.errors() == []
    finally:
        assert env.close() == 0
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        columns = [row[1] for row in db.execute("PRAGMA table_info(outbox)")]
        assert "role" in columns and "fn" in columns
        table = db.execute("SELECT sql FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
        assert "AUTOINCREMENT" not in table
        assert db.execute("SELECT reserved FROM outbox_ids").fetchone()[0] > 3  # the old daemon's 3 items
    finally:
        db.close()


def test_a_newer_state_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript(OLD_SCHEMA + "PRAGMA user_version = 9;")
    db.close()
    (tmp_path / "config.lua").write_text('return { state = "sqlite:state.db", directline = { secret = "s-0123456789" },'
                                         ' hub = { module = "hubs.webhook", url = "http://127.0.0.1:9/",'
                                         ' secret = "0123456789abcdef0123" }, listen = "127.0.0.1:0" }')
    out = subprocess.run([BIN, "-c", "config.lua"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "schema version 9" in out.stderr
