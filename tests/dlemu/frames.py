"""Server-to-client WebSocket frames (RFC 6455 section 5.2), written straight to the transport.

aiohttp does the handshake, reads the client's frames and closes sockets; this file only
builds what the emulator pushes. It exists because the fault plan needs frames no library
sends on purpose: a message split into continuation frames (F21) and text frames that are
not UTF-8 (F22). Writing bytes synchronously also lets one loop turn push to thousands of
sockets without a task or an await per socket. Server frames are never masked.
"""
import struct

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA


def frame(opcode, payload, fin=True):
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def message(payload, opcode=TEXT, fragment_size=0):
    """One message as bytes: a single frame, or frames of fragment_size payload bytes
    (the first with the opcode, the rest continuations, FIN on the last)."""
    if not fragment_size or len(payload) <= fragment_size:
        return frame(opcode, payload)
    parts = [payload[i:i + fragment_size] for i in range(0, len(payload), fragment_size)]
    out = [frame(opcode, parts[0], fin=False)]
    out += [frame(CONTINUATION, p, fin=False) for p in parts[1:-1]]
    out.append(frame(CONTINUATION, parts[-1], fin=True))
    return b"".join(out)
