"""A local HTTP server that answers like SendGrid's v3 mail API and records what it was sent.

The shop's SendGrid backend uses the official SDK pointed at this server (SENDGRID_API_HOST).
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeSendGrid:
    def __init__(self, api_key: str = "SG.test-key"):
        self.api_key = api_key
        self.messages: list[dict] = []
        self.fail_next = 0  # answer this many requests with 500, as an outage would
        # Stall this many requests until `release` is set, then drop them unrecorded: a send that
        # never completed because its sender was killed in the middle of it.
        self.stall_next = 0
        self.stalled = threading.Event()  # set once a request is being held
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v3/mail/send":
                    return self._answer(404, {"errors": [{"message": "not found"}]})
                if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._answer(401, {"errors": [{"message": "The provided authorization grant is invalid"}]})
                if fake.stall_next:
                    fake.stall_next -= 1
                    fake.stalled.set()
                    fake.release.wait(120)
                    self.close_connection = True
                    return None
                if fake.fail_next:
                    fake.fail_next -= 1
                    return self._answer(500, {"errors": [{"message": "internal error"}]})
                payload = json.loads(body)
                if not payload.get("personalizations") or not payload.get("from"):
                    return self._answer(400, {"errors": [{"message": "Bad Request", "field": "personalizations"}]})
                fake.messages.append(payload)
                self.send_response(202)
                self.send_header("X-Message-Id", uuid.uuid4().hex)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
