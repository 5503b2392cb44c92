"""Direct Line error replies and the scripted failures the control API queues.

Owns the shape of refusals: `{"error":{"code","message"}}` bodies, Retry-After, and what
a queued failure does to a request (answer a status, or drop the TCP connection).
"""
import asyncio
import functools
import json

from aiohttp import web

# Raw UTF-8 like the service, not \u escapes: a client must cope with both anyway.
dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))

# The code the service puts in the body for each status when a failure names none.
DEFAULT_CODES = {400: "BadArgument", 401: "BadArgument", 403: "BadArgument", 404: "BadArgument",
                 409: "Conflict", 413: "MessageSizeTooBig", 429: "Throttled", 500: "ServiceError",
                 502: "BotError", 503: "ServiceUnavailable", 504: "BotError"}

FAILURE_KEYS = {"status", "code", "message", "retry_after", "drop", "record", "delay_ms"}


class Refused(Exception):
    """Raised by a handler to answer with `response`; the server middleware returns it."""

    def __init__(self, response):
        super().__init__(response.status if response is not None else "dropped")
        self.response = response    # None: the connection was reset, nothing is answered


def error(status, code=None, message=None, retry_after=None):
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = {"error": {"code": code or DEFAULT_CODES.get(status, "ServiceError"),
                      "message": message or "emulated failure"}}
    return reply(body, status, headers)


def reply(body, status=200, headers=None):
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


def refuse(status, code=None, message=None, retry_after=None):
    raise Refused(error(status, code, message, retry_after))


def check_failure(spec):
    """Validates one queued failure from the control API; returns it or raises ValueError."""
    if not isinstance(spec, dict) or set(spec) - FAILURE_KEYS:
        raise ValueError("a failure is an object with keys from %s" % sorted(FAILURE_KEYS))
    if not spec.get("drop") and not isinstance(spec.get("status"), int):
        raise ValueError("a failure needs an integer status, or drop: true")
    return spec


async def fail(request, spec):
    """Answers `request` as the queued failure says, by raising Refused: after delay_ms,
    either the status with its error body, or no answer at all (the connection is reset)."""
    if spec.get("delay_ms"):
        await asyncio.sleep(spec["delay_ms"] / 1000)
    if spec.get("drop"):
        request.transport.abort()
        raise Refused(None)
    refuse(spec["status"], spec.get("code"), spec.get("message"), spec.get("retry_after"))
