"""handoff.http from a hub script: real requests from the daemon to a fake server.

Setup: a fake HTTP server on 127.0.0.1 and a daemon whose hub (scripts/httphub.lua)
forwards each webhook call to it. Expected: statuses, headers and bodies arrive as
sent, failures come back as nil, err with the stable reasons, and a hung call times
out without holding up anything else.
"""
import asyncio
import concurrent.futures
import json
import urllib.request

import pytest
from aiohttp import web
from multidict import CIMultiDict

from conftest import SOURCE_DIR
from fakeserver import FakeServer

SCRIPTS = SOURCE_DIR / "tests/integration/scripts"


async def echo(request, body):
    return web.json_response({"method": request.method, "q": request.query.get("q"),
                              "hub": request.headers.get("X-Hub"),
                              "ctype": request.headers.get("Content-Type"), "body": body.decode()},
                             headers=CIMultiDict([("X-Reply", "yes"), ("X-Twice", "a"), ("x-twice", "b")]))


async def status(request, body):
    return web.Response(status=int(request.match_info["code"]), text="status body")


async def hang(request, body):
    await asyncio.sleep(30)
    return web.Response(text="too late")


async def big(request, body):
    return web.Response(body=b"x" * 5000)


async def seq(request, body):
    await asyncio.sleep(0.01 * (int(request.match_info["n"]) % 5))
    return web.Response(text=request.match_info["n"])


@pytest.fixture
def server():
    srv = FakeServer()
    srv.route("POST", "/echo", echo).route("GET", "/status/{code}", status)
    srv.route("GET", "/hang", hang).route("GET", "/big", big).route("GET", "/seq/{n}", seq)
    yield srv.start()
    srv.stop()


@pytest.fixture
def hub(daemon, server):
    return daemon(f"""return {{
  listen = "127.0.0.1:0",
  script_path = "{SCRIPTS}/?.lua",
  directline = {{ secret = "test-secret-0123456789" }},
  hub = {{ module = "httphub", target = "{server.url}" }},
}}
""")


def call(d, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{d.port}{path}", data=body, method=method)
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read())


def test_round_trip(hub, server):
    out = call(hub, "POST", "/h/echo", b"hello \x00 world")
    assert out["status"] == 200 and out["x"] == "yes" and out["ctype"].startswith("application/json")
    assert out["twice"] == "a, b", "a repeated response header: its values joined, names lowercased"
    sent = json.loads(out["body"])
    assert sent == {"method": "POST", "q": "1", "hub": "abc", "ctype": "text/plain", "body": "hello \x00 world"}
    assert hub.error_lines() == []


@pytest.mark.parametrize("code", [404, 429, 503])
def test_http_errors_are_responses(hub, server, code):
    out = call(hub, "GET", f"/h/status?code={code}")
    assert out == {"status": code, "body": "status body", "ctype": "text/plain; charset=utf-8"}


def test_a_hung_call_times_out_and_others_go_on(hub, server):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        hung = pool.submit(call, hub, "GET", "/h/hang")
        quick = [pool.submit(call, hub, "GET", "/h/status?code=200") for _ in range(3)]
        assert all(f.result()["status"] == 200 for f in quick)
        assert hung.result() == {"err": "timeout"}


def test_body_cap(hub, server):
    assert call(hub, "GET", "/h/big") == {"err": "body too large"}


def test_many_concurrent_calls_each_get_their_answer(hub, server):
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = {n: pool.submit(call, hub, "GET", f"/h/seq?n={n}") for n in range(200)}
        for n, f in futures.items():
            assert f.result()["body"] == str(n)
    assert len(server.requests) == 200
