"""The emulator's control API under /_control/: fault injection and observation for tests.

Owns translating control requests into calls on the other parts; it holds no state of its
own. README.md documents every endpoint; control.py is the client tests use.

Every POST takes a JSON object. `conversation` names one conversation; without it (or
with "*") an action applies to every started conversation and a setting or a queued
failure applies globally.
"""
import json

from aiohttp import web

from . import frames
from .bot import check_order
from .replies import check_failure
from .settings import TABLE

OPS = ("generate", "refresh", "start", "reconnect", "get_activities", "post", "handshake",
       "copilot_token")
DEFAULT_WAIT = 5.0


class BadRequest(Exception):
    pass


class ControlApi:
    def __init__(self, emu):
        self.emu = emu

    def routes(self):
        p = "/_control"
        h = self.wrap
        return [web.get(p + "/info", h(self.info)), web.get(p + "/stats", h(self.stats)),
                web.post(p + "/stats/reset", h(self.reset_stats)),
                web.get(p + "/settings", h(self.get_settings)),
                web.post(p + "/settings", h(self.set_settings)),
                web.post(p + "/fail", h(self.fail)), web.post(p + "/drop", h(self.drop)),
                web.post(p + "/stall", h(self.stall)), web.post(p + "/frames", h(self.frames)),
                web.post(p + "/watermark_reset", h(self.watermark_reset)),
                web.post(p + "/expire", h(self.expire)), web.post(p + "/bot", h(self.bot)),
                web.post(p + "/listener", h(self.listener)), web.post(p + "/wait", h(self.wait)),
                web.get(p + "/auth_failures", h(self.auth_failures)),
                web.get(p + "/conversations", h(self.conversations)),
                web.get(p + "/conversations/{cid}", h(self.conversation)),
                web.get(p + "/conversations/{cid}/received", h(self.received)),
                web.get(p + "/conversations/{cid}/sent", h(self.sent)),
                web.get(p + "/conversations/{cid}/activities", h(self.activities))]

    @staticmethod
    def wrap(method):
        async def handler(request):
            try:
                body = await request.json() if request.method == "POST" and request.can_read_body else {}
                if not isinstance(body, dict):
                    raise BadRequest("the body is a JSON object")
                return web.json_response(await method(request, body))
            except (BadRequest, ValueError, TypeError, KeyError) as e:
                return web.json_response({"error": str(e)}, status=400)
        return handler

    # ---- helpers --------------------------------------------------------------------
    def one(self, cid):
        conv = self.emu.registry.get(cid)
        if conv is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no conversation %s" % cid}),
                                   content_type="application/json")
        return conv

    def scope(self, body):
        """The named conversation, or None for "all / global"."""
        cid = body.get("conversation")
        return None if cid in (None, "*") else self.one(cid)

    def targets(self, body):
        conv = self.scope(body)
        return [conv] if conv is not None else self.emu.registry.started()

    # ---- observation ----------------------------------------------------------------
    async def info(self, request, body):
        return self.emu.info

    async def stats(self, request, body):
        return self.emu.stats.snapshot()

    async def reset_stats(self, request, body):
        self.emu.stats.reset()
        return {"ok": True}

    async def auth_failures(self, request, body):
        return list(self.emu.stats.auth_failures)

    async def conversations(self, request, body):
        return [c.summary() for c in self.emu.registry.by_id.values()]

    async def conversation(self, request, body):
        return self.one(request.match_info["cid"]).summary()

    async def received(self, request, body):
        return self.one(request.match_info["cid"]).received()

    async def sent(self, request, body):
        return self.one(request.match_info["cid"]).sent()

    async def activities(self, request, body):
        return self.one(request.match_info["cid"]).log

    async def wait(self, request, body):
        """Long-polls until a stat (or a conversation's count) reaches at_least."""
        probe = self.probe(body)
        at_least = body.get("at_least", 1)
        timeout = min(float(body.get("timeout", DEFAULT_WAIT)), 120.0)
        await self.emu.stats.wait_for(lambda: probe() >= at_least, timeout)
        value = probe()
        return {"ok": value >= at_least, "value": value}

    def probe(self, body):
        conv = self.scope(body)
        if conv is not None:
            what = body.get("count", "received")
            counts = {"received": lambda: len(conv.received()), "sent": lambda: len(conv.sent()),
                      "activities": lambda: len(conv.log), "sockets": lambda: len(conv.sockets)}
            if what not in counts:
                raise BadRequest("count is one of %s" % sorted(counts))
            return counts[what]
        stat = body.get("stat")
        if not isinstance(stat, str):
            raise BadRequest("wait needs stat, or conversation and count")
        return lambda: self.emu.stats.value(stat)

    # ---- settings and scripted failures ---------------------------------------------
    async def get_settings(self, request, body):
        return {"values": self.emu.settings.values,
                "help": {k: v[2] for k, v in TABLE.items()}}

    async def set_settings(self, request, body):
        conv = self.scope(body)
        changes = {k: v for k, v in body.items() if k != "conversation"}
        applied = self.emu.settings.update(changes, conv)
        self.emu.streams.settings_changed()
        return {"applied": applied}

    async def fail(self, request, body):
        op = body.get("op")
        if op not in OPS:
            raise BadRequest("op is one of %s" % ", ".join(OPS))
        responses = [check_failure(r) for r in body.get("responses", [])]
        conv = self.scope(body)
        (conv or self.emu.registry.any_failures).queue_failures(op, responses)
        return {"queued": len(responses)}

    # ---- actions on sockets and conversations ---------------------------------------
    async def drop(self, request, body):
        mode = body.get("mode", "abort")
        if mode not in ("abort", "close"):
            raise BadRequest("mode is abort or close")
        n = self.emu.streams.drop(self.targets(body), mode, int(body.get("code", 1000)),
                                  str(body.get("reason", "")))
        return {"sockets": n}

    async def stall(self, request, body):
        return {"sockets": self.emu.streams.stall(self.targets(body))}

    async def frames(self, request, body):
        data = [encode_frame(spec) for spec in body.get("frames", [])]
        self.emu.streams.send_frames(self.targets(body), data)
        return {"frames": len(data)}

    async def watermark_reset(self, request, body):
        for conv in self.targets(body):
            self.emu.streams.watermark_reset(conv)
        return {"ok": True}

    async def expire(self, request, body):
        """F20: the conversation is forgotten; its sockets drop and every call about it 404s."""
        convs = self.targets(body)
        for conv in convs:
            conv.expired = True
        return {"sockets": self.emu.streams.drop(convs, "abort")}

    async def bot(self, request, body):
        spec = check_order(body)
        ids = {conv.id: self.emu.bot.order(conv, spec) for conv in self.targets(body)}
        if "conversation" in body and body["conversation"] != "*":
            return {"ids": next(iter(ids.values()))}
        return {"conversations": len(ids), "activities": sum(len(v) for v in ids.values())}

    async def listener(self, request, body):
        seconds = float(body.get("down_for", 1.0))
        await self.emu.listener_down(body.get("name", "tls"), seconds)
        return {"down_for": seconds}


def encode_frame(spec):
    """A control-API frame spec as wire bytes: {"text"|"json"|"hex": ..., "opcode": 1,
    "fragment": bytes per frame}."""
    if "text" in spec:
        payload = spec["text"].encode("utf-8")
    elif "json" in spec:
        payload = json.dumps(spec["json"], separators=(",", ":")).encode("utf-8")
    elif "hex" in spec:
        payload = bytes.fromhex(spec["hex"])
    else:
        raise BadRequest("a frame has text, json or hex")
    return frames.message(payload, int(spec.get("opcode", frames.TEXT)), int(spec.get("fragment", 0)))
