# examples/python/webhook_receiver.py ADDRESS SECRET: checks Herald's webhooks (Standard Webhooks)
import base64, hashlib, hmac, http.server, json, sys, time

KEY = base64.b64decode(sys.argv[2].removeprefix("whsec_"))  # the key: the base64 after whsec_


def verified(headers, body, tolerance=300):
    """Whether a delivery is Herald's: fresh, and one of its signatures matches."""
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    mac = hmac.new(KEY, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split())


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = self.headers.get("content-length", "0")
        body = self.rfile.read(min(int(length), 1 << 20) if length.isdigit() else 0)  # 1 MiB at most
        if verified(self.headers, body):
            event = json.loads(body)  # parsed only once verified
            print(f"verified {self.headers['webhook-id']}: {event['description']} for {event['user_id']}", flush=True)
            self.send_response_only(204)
        else:
            print(f"refused {self.headers.get('webhook-id')}: no valid signature", flush=True)
            self.send_response_only(401)
        self.end_headers()


host, port = sys.argv[1].rsplit(":", 1)
print(f"receiving webhooks on http://{sys.argv[1]}/", flush=True)
http.server.HTTPServer((host, int(port)), Receiver).serve_forever()
