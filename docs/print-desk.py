#!/usr/bin/env python3
"""A stand-in agent desk for trying handoffd: it receives what the generic webhook hub
(scripts/hubs/webhook.lua) sends, checks the signature with $HUB_SECRET, prints each
request and answers 200. Standard library only.

    HUB_SECRET=... python3 docs/print-desk.py [PORT]      (default 8090)
"""
import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("HUB_SECRET", "").encode()


class Desk(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ts = self.headers.get("X-Handoffd-Timestamp", "")
        want = "v1=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get("X-Handoffd-Signature", ""))
        print(f"POST {self.path} (signature {'ok' if ok else 'WRONG'})")
        print(json.dumps(json.loads(body or b"null"), indent=2, ensure_ascii=False), flush=True)
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok":true}' if ok else b'{"error":"signature"}')

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8090
    print(f"desk listening on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Desk).serve_forever()
