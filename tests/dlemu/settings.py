"""Emulator knobs: their defaults, their checking, and per-conversation overrides.

Owns the table of settings only. Each knob is read where it acts (rest.py, stream.py,
bot.py) through Settings.get(conv, key), which prefers the conversation's override.
"""

# name: (default, per-conversation override allowed, meaning)
TABLE = {
    "token_ttl": (1800, True, "expires_in of conversation tokens, seconds; enforced"),
    "token_size": (0, True, "pad conversation and stream tokens to about this many characters "
                            "(Direct Line's are about 1,000); 0 = as short as they come"),
    "stream_ttl": (60, True, "lifetime of a streamUrl's t= token, seconds; enforced at handshake"),
    "page_size": (100, True, "max activities per GET page and per replayed ActivitySet (F19)"),
    "keepalive_interval": (0.0, True, "seconds between keep-alive frames on each socket; 0 = none (F5)"),
    "keepalive_frame": ("", True, "text of the keep-alive frame (F5: '' or whitespace)"),
    "watermark_mode": ("normal", True, "stream ActivitySets: normal | omit | null (F6)"),
    "replay_full_history": (False, True, "new streams replay everything, ignoring the watermark (F7)"),
    "echo_delay_ms": (0, True, "delay the stream echo of a user activity; the bot reply goes first (F10)"),
    "replay_delay_ms": (0, True, "a new socket's replay comes this late after the handshake (a slow "
                                 "service); what happens meanwhile comes with it"),
    "post_delay_ms": (0, True, "delay before POST /activities answers; the activity is recorded first (F18)"),
    "bot_delay_ms": (0, True, "delay between the bot's typing and its reply"),
    "fragment_size": (0, True, "split stream messages into frames of this many bytes; 0 = whole (F21)"),
    "collision": ("old", True, "second socket on a conversation: close the old or the new one "
                               "with reason 'collision', or none"),
    "handshake_delay_ms": (0, True, "hold each WebSocket handshake this long before answering (F26)"),
    "reconnect_delay_ms": (0, True, "hold each GET /conversations/{id} this long before answering (F26)"),
    "get_delay_ms": (0, True, "hold each GET /activities this long, then answer with what is there then"),
    "bot_enabled": (True, True, "the scripted bot answers user activities"),
    "push": (True, True, "push new activities to open sockets; off = lost on the socket, still in GET"),
    "connect_rate_limit": (0, False, "reconnect GETs + handshakes allowed per second, more get 429 "
                                     "(F26); 0 = no limit"),
    "rate_limit_retry_after": (1, False, "Retry-After seconds sent with connect-rate 429s"),
    "regional_url": ("", False, "channelUrlsById.directline of regionalchannelsettings; "
                                "'' = this listener + /<regional prefix>/ (F28)"),
    "stream_origin": ("", True, "scheme://host:port the streamUrl names; '' = this listener, ws:// or "
                                "wss:// to match (a downgrade test offers ws:// from https)"),
    "max_write_buffer": (64 << 20, False, "bytes queued to one socket before it is dropped as a "
                                          "slow consumer"),
}

ENUMS = {"watermark_mode": ("normal", "omit", "null"), "collision": ("old", "new", "none")}


class Settings:
    """Global values plus sparse per-conversation overrides (conv.overrides)."""

    def __init__(self, **initial):
        self.values = {name: spec[0] for name, spec in TABLE.items()}
        self.update(initial)

    def get(self, conv, key):
        if conv is not None and conv.overrides and key in conv.overrides:
            return conv.overrides[key]
        return self.values[key]

    def update(self, changes, conv=None):
        """Checks every change before applying any, so a typo changes nothing."""
        checked = {key: check(key, value, conv is not None) for key, value in changes.items()}
        if conv is None:
            self.values.update(checked)
        else:
            conv.overrides = dict(conv.overrides or {}, **checked)
        return checked


def check(key, value, per_conversation):
    if key not in TABLE:
        raise ValueError("unknown setting %r" % key)
    default, overridable, _ = TABLE[key]
    if per_conversation and not overridable:
        raise ValueError("setting %r is global only" % key)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError("setting %r takes true or false" % key)
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError("setting %r takes a number >= 0" % key)
        value = float(value) if isinstance(default, float) else value
    elif not isinstance(value, str):
        raise ValueError("setting %r takes a string" % key)
    if key in ENUMS and value not in ENUMS[key]:
        raise ValueError("setting %r is one of %s" % (key, ", ".join(ENUMS[key])))
    return value
