#!/usr/bin/python3
"""WebSocket test server for runtime/directline/websocket.c (aiohttp; run with Debian's /usr/bin/python3).

Listens on 127.0.0.1 with ports chosen by the kernel: one plain listener, plus one TLS
listener per --tls CERT KEY pair. Prints one line per listener, "PORT plain 41234",
"PORT tls0 41235", ..., then one line per thing a test may want to assert
("request path=/echo", "server-close code=1000 reason=bye", "server-ping").
Stops by itself when its standard input closes (the test process went away) or after
--lifetime seconds. --quiet prints the PORT lines only (for the benchmark).

What a connection gets depends on its path:
  /echo                  echoes text messages
  /push?n=N              sends msg-1 .. msg-N, then echoes
  /keepalive             sends "", "  \\n" and "done", then echoes
  /fragmented            sends "Hello, world" in three fragments with a ping ("p")
                         between them, then "after"; waits for the answer (prints
                         "server-got type=PONG data=p"), then closes 1000 "done"
  /binary                sends a binary message, then "after"
  /big?size=N            sends one text message of N bytes, then echoes
  /close?code=C&reason=R closes with that code and reason
  /abrupt                sends "bye", then drops the TCP connection without a close frame
  /silent                answers no ping and sends nothing (prints "server-ping" per ping)
  /hold                  accepts and waits (for the memory benchmark)
  /status?code=C[&retry_after=V]  refuses the upgrade with HTTP C
  /stall                 never answers the upgrade
  /badaccept             answers 101 with a wrong Sec-WebSocket-Accept
  /hugeheader            answers with a 10 KB header
"""
import argparse
import asyncio
import logging
import ssl
import sys

from aiohttp import WSMsgType, web


QUIET = False


def say(*parts):
    if not QUIET or str(parts[0]).startswith("PORT "):
        print(*parts, flush=True)


async def converse(ws):
    """Echoes text until the client closes; reports the close it sent."""
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.PING:
            say("server-ping")
        elif msg.type == WSMsgType.CLOSE:
            say(f"server-close code={msg.data} reason={msg.extra}")
            break
        elif msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
            say("server-gone")
            break


def frame(opcode, payload, fin=True):
    """One unmasked server frame with a payload under 126 bytes."""
    return bytes([(0x80 if fin else 0) | opcode, len(payload)]) + payload


async def upgrade(request, **kwargs):
    ws = web.WebSocketResponse(**kwargs)
    await ws.prepare(request)
    return ws


async def on_echo(request):
    ws = await upgrade(request)
    await converse(ws)
    return ws


async def on_push(request):
    ws = await upgrade(request)
    for i in range(int(request.query.get("n", "1"))):
        await ws.send_str(f"msg-{i + 1}")
    await converse(ws)
    return ws


async def on_keepalive(request):
    ws = await upgrade(request)
    for text in ("", "  \n", "done"):
        await ws.send_str(text)
    await converse(ws)
    return ws


async def on_fragmented(request):
    ws = await upgrade(request, autoping=False)  # so that the client's pong is printed
    request.transport.write(frame(0x1, b"Hel", fin=False) + frame(0x9, b"p")
                            + frame(0x0, b"lo, ", fin=False) + frame(0x0, b"world"))
    await ws.send_str("after")
    msg = await ws.receive()
    say(f"server-got type={msg.type.name} data={msg.data.decode() if msg.type == WSMsgType.PONG else ''}")
    await ws.close(code=1000, message=b"done")
    return ws


async def on_binary(request):
    ws = await upgrade(request)
    await ws.send_bytes(b"\x00\x01binary")
    await ws.send_str("after")
    await converse(ws)
    return ws


async def on_big(request):
    ws = await upgrade(request)
    await ws.send_str("x" * int(request.query["size"]))
    await converse(ws)
    return ws


async def on_close(request):
    ws = await upgrade(request)
    await ws.close(code=int(request.query["code"]), message=request.query.get("reason", "").encode())
    say(f"server-closed code={ws.close_code}")
    return ws


async def on_abrupt(request):
    ws = await upgrade(request)
    await ws.send_str("bye")
    request.transport.close()
    return ws


async def on_silent(request):
    ws = await upgrade(request, autoping=False)
    await converse(ws)
    return ws


async def on_hold(request):
    ws = await upgrade(request)
    async for _ in ws:
        pass
    return ws


async def on_status(request):
    headers = {}
    if "retry_after" in request.query:
        headers["Retry-After"] = request.query["retry_after"]
    return web.Response(status=int(request.query["code"]), headers=headers, text="refused\n")


async def on_stall(request):
    await asyncio.sleep(3600)
    return web.Response(status=500)


async def on_badaccept(request):
    return web.Response(status=101, headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": "d3Jvbmc="})


async def on_hugeheader(request):
    return web.Response(status=403, headers={"X-Pad": "a" * 10000})


ROUTES = {
    "/echo": on_echo, "/push": on_push, "/keepalive": on_keepalive,
    "/fragmented": on_fragmented, "/binary": on_binary, "/big": on_big, "/close": on_close, "/abrupt": on_abrupt,
    "/silent": on_silent, "/hold": on_hold, "/status": on_status, "/stall": on_stall,
    "/badaccept": on_badaccept, "/hugeheader": on_hugeheader,
}


@web.middleware
async def announce(request, handler):
    test_header = request.headers.get("X-Test")
    say(f"request path={request.path}" + (f" x-test={test_header}" if test_header else ""))
    return await handler(request)


def make_app():
    app = web.Application(middlewares=[announce])
    for path, handler in ROUTES.items():
        app.router.add_get(path, handler)
    return app


async def listen(runner, name, ssl_context, backlog):
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context, backlog=backlog,
                       shutdown_timeout=0.5)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    say(f"PORT {name} {port}")


async def main(args):
    runner = web.AppRunner(make_app(), handle_signals=False)
    await runner.setup()
    await listen(runner, "plain", None, args.backlog)
    for i, (cert, key) in enumerate(args.tls):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        await listen(runner, f"tls{i}", ctx, args.backlog)
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.wait([stdin_closed], timeout=args.lifetime)
    await runner.cleanup()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)  # server-side errors go to stderr
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tls", nargs=2, action="append", default=[], metavar=("CERT", "KEY"))
    parser.add_argument("--lifetime", type=float, default=600)
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--quiet", action="store_true", help="print the PORT lines only")
    arguments = parser.parse_args()
    QUIET = arguments.quiet
    asyncio.run(main(arguments))
    sys.exit(0)
