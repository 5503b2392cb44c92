"""`handoffd parse FILE|-`: the output contract other tools depend on, checked field by
field against the payload the project's generator built, for every variation it makes;
and the failure contract: exit 65 with nothing on stdout and one stderr line naming the
reason and the byte offset, 1 for I/O errors, 2 for usage errors.
"""
import json
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import BIN, SOURCE_DIR

sys.path.insert(0, str(SOURCE_DIR / "tests" / "payloads"))
import genpayload  # noqa: E402

FIELDS = [("scope", "va_Scope"), ("last_topic", "va_LastTopic"), ("topics", "va_Topics"),
          ("last_phrase", "va_LastPhrase"), ("phrases", "va_Phrases"),
          ("agent_message", "va_AgentMessage"), ("bot_id", "va_BotId"), ("bot_name", "va_BotName"),
          ("language", "va_Language"), ("conversation_id", "va_ConversationId")]


def parse(path, stdin=None):
    return subprocess.run([BIN, "parse", str(path)], input=stdin, capture_output=True, timeout=20)


def party(p):
    return {"id": p.get("id"), "name": p.get("name"), "role": p.get("role")}


def entry(a):
    frm = a.get("from") or {}
    return {"id": a.get("id"), "type": a.get("type"), "role": frm.get("role"), "name": frm.get("name"),
            "text": a.get("text"), "timestamp": a.get("timestamp")}


def expected_transcript(ev):
    att = next((a for a in ev["attachments"] if a.get("name", "").lower() == "transcript"), None)
    if att is None:
        return {"count": 0, "error": "missing", "entries": []}
    if "content" not in att:
        return {"count": 0, "error": "content url only", "entries": []}
    content = att["content"]
    acts = (json.loads(content) if isinstance(content, str) else content)["activities"]
    return {"count": len(acts), "error": None, "entries": [entry(a) for a in acts]}


def expected(payload):
    """What the contract says `handoffd parse` prints for a generated payload."""
    acts = payload["activities"]
    ev = next((a for a in acts if a["type"] == "event" and a["name"] == "handoff.initiate"), None)
    out = {"watermark": payload.get("watermark"), "activities": len(acts), "handoff": ev is not None,
           "handoff_event": None}
    if ev is None:
        return out
    value = json.loads(ev["value"]) if isinstance(ev["value"], str) else ev["value"]
    context = {name: value.get(key) for name, key in FIELDS}
    context["vars"] = value
    out["handoff_event"] = {
        "id": ev["id"], "conversation_id": ev["conversation"]["id"],
        "user": party(ev["relatesTo"]["user"]), "bot": party(ev["relatesTo"]["bot"]),
        "context": context, "transcript": expected_transcript(ev)}
    return out


VARIANTS = [
    ["5"], ["0"], ["20", "--vars", "3"], ["3", "--value-as-string"], ["3", "--content-as-string"],
    ["3", "--value-as-string", "--content-as-string", "--ascii"], ["3", "--name", "transcript"],
    ["3", "--name", "TRANSCRIPT"], ["3", "--card-first"], ["3", "--no-transcript"],
    ["3", "--content-url"], ["3", "--mixed"], ["3", "--ascii"], ["4", "--nulls"],
]


@pytest.mark.parametrize("args", VARIANTS, ids=lambda a: " ".join(a))
def test_output_matches_the_payload(tmp_path, args):
    text = subprocess.run([sys.executable, SOURCE_DIR / "tests/payloads/genpayload.py", *args],
                          capture_output=True, check=True).stdout
    path = tmp_path / "payload.json"
    path.write_bytes(text)
    r = parse(path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    assert r.stdout.count(b"\n") == 1 and r.stdout.endswith(b"\n"), "one JSON object on one line"
    got = json.loads(r.stdout)
    assert got == expected(json.loads(text))
    assert list(got) == ["watermark", "activities", "handoff", "handoff_event"]


def test_stdin_gives_the_same_output(tmp_path):
    text = json.dumps(genpayload.activity_set(4, mixed=True), ensure_ascii=False).encode()
    path = tmp_path / "p.json"
    path.write_bytes(text)
    from_file, from_stdin = parse(path), parse("-", stdin=text)
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == from_file.stdout


def test_set_without_handoff_and_single_activity(tmp_path):
    r = parse("-", stdin=b'{"activities":[{"type":"message","id":"a"},{"type":"typing"}],"watermark":null}')
    assert json.loads(r.stdout) == {"watermark": None, "activities": 2, "handoff": False,
                                    "handoff_event": None}
    r = parse("-", stdin=json.dumps(genpayload.handoff_event(2)).encode())
    got = json.loads(r.stdout)
    assert got["watermark"] is None and got["activities"] == 1 and got["handoff"] is True
    assert got["handoff_event"]["transcript"]["count"] == 2


BAD = [
    (b'{"activities":[{"type":"message"}]', "malformed JSON: unexpected end of input", 34),
    (b'{"activities":[{"type":"message",}]}', "malformed JSON: expected a member, ',' or '}'", 33),
    (b'{"activities":[],"watermark":"1"} trailing', "malformed JSON: trailing content", 34),
    (b'{"activities":[{"channelData":{"a":[1,2,]}}]}', "malformed JSON: expected a value", 40),
    (b'{"activities":[{"text":"caf\xc3"}]}', "invalid UTF-8", 27),
    (b'{"activities":{}}', "wrong shape: activities is not an array", 14),
    (b'{"activities":[7]}', "wrong shape: activity 0: not an object", 15),
    (b'[]', "wrong shape: the payload is not a JSON object", 0),
    (b'{"activities":[{"x":' + b"[" * 100 + b"]" * 100 + b"}]}", "nesting deeper than 64", 81),
    (b"", "empty payload", 0),
]


@pytest.mark.parametrize("text,reason,offset", BAD, ids=[b[1] for b in BAD])
def test_malformed_input_exits_65(tmp_path, text, reason, offset):
    path = tmp_path / "bad.json"
    path.write_bytes(text)
    r = parse(path)
    assert r.returncode == 65
    assert r.stdout == b""
    assert r.stderr.decode() == f"handoffd: {path}: {reason} at byte {offset}\n"


def test_oversized_stdin_is_refused_at_the_limit():
    limit = 4 << 20
    text = b'{"activities":[],"watermark":"' + b"x" * limit + b'"}'
    r = parse("-", stdin=text)
    assert r.returncode == 65 and r.stdout == b""
    assert re.fullmatch(rb"handoffd: -: payload too large: \d+ bytes, limit 4194304 at byte 4194304\n",
                        r.stderr), r.stderr


def test_io_and_usage_errors(tmp_path):
    r = parse(tmp_path / "missing.json")
    assert r.returncode == 1 and r.stdout == b""
    assert r.stderr.decode() == f"handoffd: {tmp_path / 'missing.json'}: No such file or directory\n"
    r = parse(tmp_path)
    assert r.returncode == 1 and b"Is a directory" in r.stderr
    for args in ([], ["a.json", "b.json"], ["--pretty"]):
        r = subprocess.run([BIN, "parse", *args], capture_output=True, timeout=20)
        assert r.returncode == 2, args
        assert r.stdout == b"" and r.stderr.startswith(b"usage: handoffd parse")
