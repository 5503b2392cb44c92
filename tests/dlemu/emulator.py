#!/usr/bin/python3
"""Command line of the Direct Line 3.0 emulator.

    /usr/bin/python3 -m tests.dlemu [options]          (from the repository root)
    /usr/bin/python3 tests/dlemu/emulator.py [options]

Prints one JSON line to stdout once every listener is bound (ports, base URLs, CA file,
secret), then serves until SIGTERM, SIGINT, end of stdin when stdin is a pipe or a
terminal, or (Linux) the exit of the process that started it, so a harness that dies
cannot leave it running. README.md lists the options.
"""
import argparse
import asyncio
import asyncio.sslproto
import ctypes
import json
import os
import signal
import stat
import sys

if __package__ in (None, ""):       # run as a script: make `tests.dlemu` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "tests.dlemu"

from .server import Emulator                    # noqa: E402
from .settings import TABLE, check               # noqa: E402

TLS_READ_BUFFER = 32 * 1024
PR_SET_PDEATHSIG = 1


def parse(argv):
    p = argparse.ArgumentParser(prog="dlemu", description="Direct Line 3.0 emulator for tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="plain HTTP/ws listener (0: any free port)")
    p.add_argument("--tls-port", type=int, default=0, help="HTTPS/wss listener; -1: none")
    p.add_argument("--wrong-tls-port", type=int, default=-1,
                   help="HTTPS/wss listener whose certificate names another host; -1: none")
    p.add_argument("--secret", default="dlemu-secret")
    p.add_argument("--token-ttl", type=float, help="expires_in of tokens, seconds (1800)")
    p.add_argument("--stream-ttl", type=float, help="lifetime of streamUrl t= tokens, seconds (60)")
    p.add_argument("--page-size", type=int, help="activities per GET page (100)")
    p.add_argument("--connect-rate-limit", type=int, help="reconnects+handshakes per second (0: none)")
    p.add_argument("--regional-prefix", default="europe",
                   help="Direct Line is also served under /<prefix>/v3/directline")
    p.add_argument("--cert-dir", help="keep the generated certificates here (default: a temp dir)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=JSON",
                   help="any setting as JSON or a bare word, e.g. --set keepalive_interval=1 "
                        "--set collision=none")
    p.add_argument("--stdin", choices=("auto", "watch", "ignore"), default="auto",
                   help="stop at end of stdin: auto = when stdin is a pipe, socket or terminal")
    p.add_argument("--parent-death", choices=("on", "off"), default="on",
                   help="stop when the process (thread) that started this one exits (Linux)")
    return p.parse_args(argv)


def settings_from(args):
    out = {}
    for name in ("token_ttl", "stream_ttl", "page_size", "connect_rate_limit"):
        if getattr(args, name) is not None:
            out[name] = getattr(args, name)
    for item in args.set:
        name, _, text = item.partition("=")
        try:
            value = json.loads(text)
        except ValueError:
            value = text            # a bare word is a string
        out[name] = value
    for name, value in out.items():
        check(name, value, False)
    return out


def port(value):
    return None if value < 0 else value


def watch_stdin(args):
    if args.stdin != "auto":
        return args.stdin == "watch"
    mode = os.fstat(0).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0)


def read_stdin(done):
    try:
        if os.read(0, 65536):
            return
    except OSError:
        pass
    done.set()


def die_with_parent():
    """SIGTERM when our parent exits, even if stdin is /dev/null (PR_SET_PDEATHSIG)."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return                      # not Linux: stdin and signals still work
    if os.getppid() != parent:      # it died before prctl took effect
        sys.exit("dlemu: parent exited before start-up")


def shrink_tls_buffers():
    """asyncio gives every TLS connection a 256 KiB read buffer (SSLProtocol.max_size), 2.5 GiB
    for 10,000 wss sockets. A TLS record carries at most 16 KiB, so 32 KiB loses nothing.
    Done here, for the emulator's own process only, not when it runs inside a test."""
    if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > TLS_READ_BUFFER:
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


async def serve(args):
    emu = Emulator(host=args.host, port=args.port, tls_port=port(args.tls_port),
                   wrong_tls_port=port(args.wrong_tls_port), secret=args.secret,
                   regional_prefix=args.regional_prefix, cert_dir=args.cert_dir,
                   **settings_from(args))
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    if watch_stdin(args):
        loop.add_reader(0, read_stdin, done)
    info = await emu.start()
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    try:
        await done.wait()
    finally:
        if watch_stdin(args):
            loop.remove_reader(0)
        await emu.stop()


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        settings_from(args)
    except ValueError as e:
        sys.exit("dlemu: %s (settings: %s)" % (e, ", ".join(sorted(TABLE))))
    if args.parent_death == "on":
        die_with_parent()
    shrink_tls_buffers()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
