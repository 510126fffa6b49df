#!/usr/bin/env python3
"""A callback receiver for the `make up` demo: verifies the Standard Webhooks
signature of each delivery and prints the answer the fleet sent back."""
import base64, hashlib, hmac, json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = base64.b64decode(os.environ["DEMO_CALLBACK_SECRET"].removeprefix("whsec_"))


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        signed = f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(SECRET, signed, hashlib.sha256).digest()).decode()
        valid = any(s == f"v1,{expected}" for s in self.headers.get("webhook-signature", "").split())
        self.send_response(204 if valid else 401)
        self.end_headers()
        event = json.loads(body or b"{}")
        data = event.get("data", {})
        print(f"\n=== callback {event.get('type')} for task {data.get('task_id')} (signature {'valid' if valid else 'INVALID'}) ===")
        print(json.dumps(data, indent=2)[:6000])
        sys.stdout.flush()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ.get("DEMO_RECEIVER_PORT", "8099"))), Receiver).serve_forever()
