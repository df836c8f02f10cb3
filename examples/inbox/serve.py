#!/usr/bin/env python3
"""The back end of a web app that shows its users' Herald notifications with
the <herald-inbox> element: it serves a page on its own origin, which loads
the element from the logger's end users' listener, and signs its user's
token (a JWT, HS256, `sub` the user id, an `exp`) with the secret the logger
checks (--user-token-secret), as `herald tokens new` and
herald_client::tokens::user_token do. A real app signs the token of whoever
is logged in; this one has one user, given on the command line.

Usage:
  HERALD_USER_TOKEN_SECRET=<secret> python3 examples/inbox/serve.py \\
      --herald http://127.0.0.1:8089 --user alice [--listen 127.0.0.1:3000]

The logger needs --web-listen (the --herald address) and
--cors-allow-origin http://127.0.0.1:3000 (this page's origin).
"""

import argparse
import base64
import hashlib
import hmac
import html
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def user_token(secret: str, user: str, ttl: int = 3600) -> str:
    """A Herald user token for `user`, valid for `ttl` seconds."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": user, "exp": int(time.time()) + ttl}).encode())
    signing_input = f"{header}.{claims}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{claims}.{b64url(signature)}"


def handler(herald: str, user: str, secret: str):
    page = open(os.path.join(HERE, "index.html"), encoding="utf-8").read()
    page = page.replace("{{HERALD}}", html.escape(herald, quote=True))
    page = page.replace("{{USER}}", html.escape(user))
    script = open(os.path.join(HERE, "app.js"), encoding="utf-8").read()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/":
                self.send(200, "text/html; charset=utf-8", page)
            elif self.path == "/app.js":
                self.send(200, "text/javascript; charset=utf-8", script)
            elif self.path == "/token":
                # A real app answers only its logged-in user, with their id.
                self.send(200, "application/json", json.dumps({"token": user_token(secret, user)}))
            else:
                self.send(404, "text/plain", "not found")

        def send(self, status, content_type, body):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--herald", required=True, help="the logger's --web-listen URL")
    parser.add_argument("--user", required=True, help="the user whose inbox the page shows")
    parser.add_argument("--listen", default="127.0.0.1:3000", help="where to serve the page")
    args = parser.parse_args()
    secret = os.environ.get("HERALD_USER_TOKEN_SECRET")
    if not secret:
        sys.exit("set HERALD_USER_TOKEN_SECRET to the logger's --user-token-secret")
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), handler(args.herald.rstrip("/"), args.user, secret))
    print(f"serving the example shop on http://{args.listen}/ for {args.user}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
