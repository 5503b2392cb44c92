"""Direct Line 3.0 REST endpoints and the two Copilot Studio endpoints (F28).

Owns authentication (Bearer secret or conversation token, expiry enforced) and operations
1-6 of directline.md section 1. Activities go to the conversation log (conversations.py),
their echoes to the stream (stream.py) and the user's activities to the bot (bot.py).
Queued failures (control API) are applied after authentication, so they hit the
conversation they were queued for.
"""
import asyncio
import json
import time

from aiohttp import web

from . import tokens
from .conversations import parse_watermark
from .replies import refuse, fail, reply

ACTIVITY_MAX_CHARS = 256 * 1024     # the service's limit on one serialized activity
SERVICE_URL = "https://directline.botframework.com/"


class Rest:
    def __init__(self, emu):
        self.emu = emu

    def routes(self, base):
        return [web.post(base + "/tokens/generate", self.generate),
                web.post(base + "/tokens/refresh", self.refresh),
                web.post(base + "/conversations", self.start),
                web.get(base + "/conversations/{cid}", self.reconnect),
                web.get(base + "/conversations/{cid}/activities", self.get_activities),
                web.post(base + "/conversations/{cid}/activities", self.post_activity)]

    def copilot_routes(self):
        root = "/powervirtualagents"
        return [web.get(root + "/botsbyschema/{schema}/directline/token", self.copilot_token),
                web.get(root + "/regionalchannelsettings", self.regional_settings)]

    # ---- authentication -------------------------------------------------------------
    def credential(self, request):
        """Returns None for the secret, or the claims of a valid conversation token."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not value:
            self.denied(request, 401, "BadArgument", "missing or malformed Authorization")
        if value == self.emu.secret:
            return None
        claims, why = self.emu.minter.check(value, tokens.CONV)
        if why == "expired":
            self.denied(request, 403, "TokenExpired", "token expired")
        if why:
            self.denied(request, 403, "BadArgument", "invalid token or secret")
        return claims

    def denied(self, request, status, code, reason):
        self.emu.stats.auth_failure(request, status, reason)
        refuse(status, code, reason[0].upper() + reason[1:])

    def conversation(self, request, claims):
        cid = request.match_info["cid"]
        if claims is not None and claims["conv"] != cid:
            self.denied(request, 403, "BadArgument", "token is for another conversation")
        return self.live(self.emu.registry.get(cid))

    def live(self, conv):
        if conv is None or conv.expired:
            refuse(404, "BadArgument", "Unknown conversation")
        return conv

    async def scripted(self, request, conv, op):
        failure = self.emu.registry.take_failure(conv, op)
        if failure and not (op == "post" and self.records(failure)):
            await fail(request, failure)
        return failure

    @staticmethod
    def records(failure):
        """F15: 502/504/dropped POSTs reach the bot; F16/F17 refusals do not (overridable)."""
        return failure.get("record", bool(failure.get("drop")) or failure.get("status") in (502, 504))

    # ---- tokens ---------------------------------------------------------------------
    async def generate(self, request):
        if self.credential(request) is not None:
            self.denied(request, 403, "BadArgument", "generate needs the secret")
        await self.scripted(request, None, "generate")
        conv = self.emu.registry.create(await user_id(request))
        self.emu.stats.bump("tokens_generated")
        return reply(self.token_body(conv))

    async def refresh(self, request):
        claims = self.credential(request)
        if claims is None:
            self.denied(request, 403, "BadArgument", "refresh needs a token, not the secret")
        conv = self.live(self.emu.registry.get(claims["conv"]))
        await self.scripted(request, conv, "refresh")
        self.emu.stats.bump("tokens_refreshed")
        return reply(self.token_body(conv))

    def token_body(self, conv):
        ttl = self.emu.settings.get(conv, "token_ttl")
        token = self.emu.minter.mint(tokens.CONV, conv.id, ttl, conv.user_id,
                                     size=self.emu.settings.get(conv, "token_size"))
        return {"conversationId": conv.id, "token": token, "expires_in": int(ttl)}

    # ---- conversations --------------------------------------------------------------
    async def start(self, request):
        """201 for a new conversation; 200 when the token's conversation already started."""
        claims = self.credential(request)
        if claims is None:
            conv = self.emu.registry.create(await user_id(request))
            body = self.token_body(conv)
        else:
            conv = self.live(self.emu.registry.get(claims["conv"]))
            body = {"conversationId": conv.id, "token": request.headers["Authorization"][7:],
                    "expires_in": max(0, int(claims["exp"] - time.time()))}
        await self.scripted(request, conv, "start")
        status = 200 if conv.started else 201
        conv.started = True
        self.emu.stats.bump("conversations_started" if status == 201 else "conversations_resumed")
        body["streamUrl"] = self.stream_url(request, conv, "-", 0)
        return reply(body, status=status)

    async def reconnect(self, request):
        """GET /conversations/{id}?watermark=W: a fresh token and streamUrl (F11, F20, F26)."""
        conv = self.conversation(request, self.credential(request))
        self.emu.gate.admit()
        self.emu.gate.started(conv)
        try:
            watermark = self.watermark(request)
            await self.scripted(request, conv, "reconnect")
            delay = self.emu.settings.get(conv, "reconnect_delay_ms")
            if delay:
                await asyncio.sleep(delay / 1000)
        except BaseException:
            self.emu.gate.ended(conv)
            raise
        self.emu.stats.bump("reconnects")
        body = self.token_body(conv)
        shown = request.query["watermark"] if "watermark" in request.query else None
        body["streamUrl"] = self.stream_url(request, conv, shown, len(conv.log) if watermark is None else 0)
        return reply(body)

    def stream_url(self, request, conv, watermark, replay_from):
        """Same listener, same base path, ws:// or wss:// to match; t= lives stream_ttl."""
        t = self.emu.minter.mint(tokens.STREAM, conv.id, self.emu.settings.get(conv, "stream_ttl"),
                                 replay_from=replay_from, size=self.emu.settings.get(conv, "token_size"))
        base = request.path[:request.path.index("/conversations")]
        query = ("watermark=%s&" % watermark if watermark is not None else "") + "t=" + t
        origin = self.emu.settings.get(conv, "stream_origin") or "%s://%s" % (
            "wss" if request.secure else "ws", request.host)
        return "%s%s/conversations/%s/stream?%s" % (origin, base, conv.id, query)

    # ---- activities -----------------------------------------------------------------
    async def get_activities(self, request):
        conv = self.conversation(request, self.credential(request))
        watermark = self.watermark(request)
        await self.scripted(request, conv, "get_activities")
        self.emu.stats.bump("get_activities")
        delay = self.emu.settings.get(conv, "get_delay_ms")
        if delay:
            await asyncio.sleep(delay / 1000)
        acts, position = conv.page(watermark or 0, max(1, self.emu.settings.get(conv, "page_size")))
        return reply({"activities": acts, "watermark": conv.reported(position)})

    async def post_activity(self, request):
        """Records one activity, echoes it on the stream, hands it to the bot, answers {id}.
        A queued 502/504/drop answers after recording, as the service does on a bot timeout."""
        conv = self.conversation(request, self.credential(request))
        activity = await self.activity_body(request)
        self.emu.stats.bump("posts")
        failure = await self.scripted(request, conv, "post")
        activity = self.record(conv, activity)
        delay = self.emu.settings.get(conv, "post_delay_ms")
        if delay:
            await asyncio.sleep(delay / 1000)
        if failure:
            await fail(request, failure)
        return reply({"id": activity["id"]})

    async def activity_body(self, request):
        if request.content_type != "application/json":
            self.emu.stats.bump("posts_without_json_content_type")
        text = await request.text()
        if len(text) > ACTIVITY_MAX_CHARS:
            refuse(413, "MessageSizeTooBig", "Activity too large")
        try:
            activity = json.loads(text)
        except ValueError:
            refuse(400, "BadArgument", "Body is not JSON")
        if not isinstance(activity, dict) or not activity.get("type") \
                or not isinstance(activity.get("from"), dict) or not activity["from"].get("id"):
            refuse(400, "MissingProperty", "An activity needs type and from.id")
        return activity

    def record(self, conv, activity):
        activity.pop("id", None)
        activity["from"].setdefault("role", "user")
        activity["recipient"] = self.emu.bot.identity
        activity["serviceUrl"] = SERVICE_URL
        activity.pop("timestamp", None)
        conv.append(activity)
        conv.started = True
        self.emu.stats.bump("activities_received")
        delay = self.emu.settings.get(conv, "echo_delay_ms")
        if delay:   # F10: the bot's answer (pushed now) overtakes this echo
            asyncio.get_running_loop().call_later(delay / 1000, self.emu.streams.push, conv, [activity])
        else:
            self.emu.streams.push(conv, [activity])
        self.emu.bot.heard(conv, activity)
        return activity

    def watermark(self, request):
        try:
            return parse_watermark(request.query.get("watermark"))
        except ValueError:
            refuse(400, "BadArgument", "Bad watermark")

    # ---- Copilot Studio (F28) -------------------------------------------------------
    async def copilot_token(self, request):
        """Unauthenticated, like the real endpoint; the token is already bound to a
        conversation that the client then starts with POST /conversations."""
        api_version(request)
        await self.scripted(request, None, "copilot_token")
        conv = self.emu.registry.create()
        self.emu.stats.bump("copilot_tokens")
        return reply(self.token_body(conv))

    async def regional_settings(self, request):
        api_version(request)
        self.emu.stats.bump("regional_lookups")
        url = self.emu.settings.values["regional_url"] or "%s://%s/%s/" % (
            request.scheme, request.host, self.emu.regional_prefix)
        return reply({"channelUrlsById": {"directline": url}})


def api_version(request):
    if not request.query.get("api-version"):
        refuse(400, "BadArgument", "api-version is required")


async def user_id(request):
    """TokenParameters {user:{id}} when a body is sent; None otherwise."""
    if not request.can_read_body:
        return None
    try:
        body = await request.json()
    except ValueError:
        refuse(400, "BadArgument", "Body is not JSON")
    user = body.get("user") if isinstance(body, dict) else None
    return user.get("id") if isinstance(user, dict) else None
