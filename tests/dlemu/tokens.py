"""JWT-shaped Direct Line tokens: minting and checking.

Owns the token format only. Which token an endpoint accepts, and what it answers when a
token is refused, is decided in rest.py and stream.py.

A token is three base64url parts like a JWT (HS256 over a per-process key), so a client
that decodes `exp` or `conv` the way DirectLineJS does finds them. Two kinds exist:
"conv" tokens (REST, bound to one conversation) and "stream" tokens (the `t=` of a
streamUrl, valid for stream_ttl seconds and carrying the replay start point).
"""
import base64
import hashlib
import hmac
import json
import math
import os
import time

CONV = "conv"
STREAM = "stream"


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Minter:
    """Mints and verifies tokens with a key that lives as long as the process."""

    def __init__(self):
        self._key = os.urandom(32)
        self._header = b64url(b'{"alg":"HS256","typ":"JWT"}')

    def mint(self, kind, conv_id, ttl, user_id=None, replay_from=None, size=0):
        """A token; SIZE > 0 pads it with a claim to about SIZE characters, the length of
        a real Direct Line token (the short ones would hide a header or URL buffer that
        is too small)."""
        token = self._mint(kind, conv_id, ttl, user_id, replay_from, "")
        if size > len(token):
            token = self._mint(kind, conv_id, ttl, user_id, replay_from, "x" * ((size - len(token)) * 3 // 4))
        return token

    def _mint(self, kind, conv_id, ttl, user_id, replay_from, pad):
        now = time.time()
        # Whole seconds like a real JWT; rounding up keeps the lifetime at least `ttl`.
        claims = {"iss": "dlemu", "kind": kind, "conv": conv_id, "iat": int(now),
                  "nbf": int(now), "exp": int(math.ceil(now + ttl)), "jti": b64url(os.urandom(9))}
        if pad:
            claims["pad"] = pad
        if user_id:
            claims["user"] = user_id
        if replay_from is not None:
            claims["w"] = replay_from
        body = self._header + "." + b64url(json.dumps(claims, separators=(",", ":")).encode())
        return body + "." + self._sign(body)

    def check(self, token, kind):
        """Returns (claims, None) for a good token, else (claims or None, reason) where
        reason is "expired" (signature fine, lifetime over) or "invalid"."""
        claims = self._claims(token)
        if claims is None or claims.get("kind") != kind:
            return None, "invalid"
        if time.time() >= claims["exp"]:
            return claims, "expired"
        return claims, None

    def _claims(self, token):
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != self._header:
            return None
        if not hmac.compare_digest(parts[2], self._sign(parts[0] + "." + parts[1])):
            return None
        try:
            return json.loads(unb64url(parts[1]))
        except ValueError:
            return None

    def _sign(self, body):
        return b64url(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())
