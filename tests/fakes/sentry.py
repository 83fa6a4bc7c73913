"""A Sentry ingest endpoint, as sentry.io answers the official SDK: POST /api/<project>/envelope/ with an envelope
(newline-separated JSON: a header, then item headers and payloads), gzip-compressed or not. The raw bodies are kept
(to search them for what must never leave) and the event payloads decoded.

    with FakeSentry() as sentry:          # SENTRY_DSN=sentry.dsn
        ...
        sentry.events()                   # [event dict]
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fakes.serving import ServedInThread


class FakeSentry(ServedInThread):
    def __init__(self):
        fake = self
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with fake._lock:
                    fake.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"id": "0"}')

            def log_message(self, *args):
                pass

        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.dsn = f"http://public0123456789@127.0.0.1:{self.port}/1"

    def events(self) -> list[dict]:
        """The event items of every envelope received."""
        found = []
        with self._lock:
            bodies = list(self.bodies)
        for body in bodies:
            lines = body.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found
