#!/usr/bin/env python3
"""A real SMTP server for Herald's email tests and benchmarks (aiosmtpd):
it appends every message it accepts to a JSON-lines file and answers some
recipients as a troubled server would.

- `reject…@` recipients: 550 (permanent).
- `tempfail…@` recipients: 451 (temporary) the first time each address is
  tried, then accepted.
- With --tls-cert and --tls-key it offers STARTTLS (and --require-starttls
  refuses mail before it); with --user and --password it asks for AUTH
  (only over TLS).

Each accepted message is one line of --out: `mail_from`, `rcpt_tos`, `tls`
(whether STARTTLS was on), `auth` (the user), `data` (the message as sent),
`received_at` (seconds since the epoch).
It prints `ready` once it listens, and runs until killed.

Usage: scripts/smtp_sink.py --port PORT --out FILE [--tls-cert PEM --tls-key PEM
       [--require-starttls]] [--user U --password P]
"""

import argparse
import json
import ssl
import time
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    """The handler: refusals by recipient, and the file of accepted mail."""

    def __init__(self, out):
        self.out = out
        self.tried = set()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0]
        if local.startswith("reject"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if local.startswith("tempfail") and address not in self.tried:
            self.tried.add(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "auth": session.auth_data.login.decode() if session.authenticated else None,
            "data": envelope.original_content.decode("utf-8", "replace"),
            "received_at": time.time(),
        }
        with self.lock, open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 2.0.0 accepted"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--user")
    p.add_argument("--password")
    args = p.parse_args()

    options = {}
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        options["tls_context"] = context
        options["require_starttls"] = args.require_starttls
    if args.user:
        def check(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == args.user
                and auth_data.password.decode() == args.password
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        options["authenticator"] = check
        options["auth_required"] = True
        options["auth_require_tls"] = bool(args.tls_cert)
    controller = Controller(
        Sink(args.out), hostname="127.0.0.1", port=args.port, **options
    )
    controller.start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
