"""A local HTTP server that answers like Stripe's API for what the shop uses, and records every request.

The shop's StripeGateway uses the official SDK pointed at this server (STRIPE_API_BASE = fake.url).
Covered, with Stripe's shapes:

* POST /v1/payment_intents   form-encoded as stripe-python sends it (`metadata[order_id]=7`,
                              `automatic_payment_methods[enabled]=true`); needs amount and currency.
* GET  /v1/payment_intents/<id>
* POST /v1/refunds            payment_intent (or charge) and an optional amount; refuses a PaymentIntent
                              without a successful charge, and an amount above what is left unrefunded,
                              with Stripe's 400 `invalid_request_error`.
* Authentication: `Authorization: Bearer sk_test_...` (the configured key, if one is given), else a
  401 like Stripe's.
* Idempotency (docs.stripe.com/idempotency): the status and body of the first request with an
  `Idempotency-Key` are saved once the endpoint starts to execute (not for a 401 or a missing
  parameter), and a repeat with the same endpoint and parameters gets them again, with
  `Idempotent-Replayed: true`; the same key with another endpoint or other parameters is a 400
  `idempotency_error`. Copies with one key that arrive together are answered one after the other
  (real Stripe may answer the later ones 409 instead; the SDK retries those).
* Outages: `fail_next = n` answers the next n API requests 500 `api_error` (the SDK retries those),
  `stop()` closes the port so connections are refused.

Tests drive the payment itself: `succeed(intent_id)` (or `fail(...)`) moves an intent as a card
payment would, and `event(type, object)` gives the body and `Stripe-Signature` header of the webhook
Stripe would send, signed with the endpoint secret.
"""
from __future__ import annotations

import itertools
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import stripe

API_VERSION = "2025-08-27.basil"


@dataclass
class Recorded:
    method: str
    path: str
    params: dict
    idempotency_key: str | None
    status: int = 0
    replayed: bool = False
    headers: dict = field(default_factory=dict)


class StripeError(Exception):
    def __init__(self, status: int, type_: str, message: str, code: str | None = None, param: str | None = None,
                 saved: bool = True):
        super().__init__(message)
        self.status, self.saved = status, saved
        self.body = {"error": {k: v for k, v in {"type": type_, "code": code, "message": message,
                                                 "param": param}.items() if v is not None}}
        if code:
            self.body["error"]["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"


def decode_form(body: str) -> dict:
    """Stripe's form encoding back into nested dicts and lists: `a[b][c]=1`, `a[0]=x`, `a[]=x`."""
    out: dict = {}
    for raw_key, value in parse_qsl(body, keep_blank_values=True):
        head, *rest = re.findall(r"^[^\[]+|\[[^\]]*\]", raw_key)
        parts = [head] + [p[1:-1] for p in rest]
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt = None if last else parts[i + 1]
            wants_list = nxt is not None and (nxt == "" or nxt.isdigit())
            if isinstance(node, list):
                if part == "" or int(part) >= len(node):
                    node.append(value if last else ([] if wants_list else {}))
                    idx = len(node) - 1
                else:
                    idx = int(part)
                if not last:
                    node = node[idx]
                continue
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, [] if wants_list else {})
    return out


def _int(params: dict, name: str, required: bool) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise StripeError(400, "invalid_request_error", f"Missing required param: {name}.", "parameter_missing",
                              name, saved=False)
        return None
    if not re.fullmatch(r"\d+", str(raw)):
        raise StripeError(400, "invalid_request_error", f"Invalid integer: {raw}", "parameter_invalid_integer", name,
                          saved=False)
    return int(raw)


class FakeStripe:
    def __init__(self, secret_key: str | None = None, webhook_secret: str = "whsec_x"):
        """`secret_key`: the one key accepted (any `sk_test_...` when None)."""
        self.secret_key = secret_key
        self.webhook_secret = webhook_secret
        self.requests: list[Recorded] = []
        self.intents: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.charges: dict[str, dict] = {}  # charge id -> {"payment_intent", "amount", "amount_refunded"}
        self.fail_next = 0
        self._saved: dict[str, tuple[str, str, dict, int, dict]] = {}  # key -> method, path, params, status, body
        self._lock = threading.RLock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._ids = itertools.count(1)
        self._running = False
        self._connections: set[socket.socket] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as api.stripe.com

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self):
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def do_GET(self):
                fake._handle(self, "GET")

            def do_POST(self):
                fake._handle(self, "POST")

            def do_DELETE(self):
                fake._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self):
        self.thread.start()
        self._running = True
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        """Close the port: from now on connections are refused, as in an outage."""
        if self._running:
            self._running = False
            self.server.shutdown()
            self.server.server_close()
            with self._lock:  # and the keep-alive connections the SDK holds are cut too
                for conn in list(self._connections):
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    # -- what tests look at ------------------------------------------------------------------------
    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally only those of one method and path (a prefix ending in '/' matches
        every path under it)."""
        with self._lock:
            found = list(self.requests)
        return [r for r in found if (method is None or r.method == method)
                and (path is None or r.path == path or (path.endswith("/") and r.path.startswith(path)))]

    def succeed(self, intent_id: str) -> dict:
        """The customer paid: the intent succeeds with one charge. Returns the intent (the event's object)."""
        with self._lock:
            intent = self.intents[intent_id]
            if intent["status"] != "succeeded":
                charge_id = self._new_id("ch")
                self.charges[charge_id] = {"payment_intent": intent_id, "amount": intent["amount"],
                                           "amount_refunded": 0}
                intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge_id,
                              payment_method=self._new_id("pm"), last_payment_error=None)
            return json.loads(json.dumps(intent))

    def fail(self, intent_id: str, message: str = "Your card was declined.") -> dict:
        """A declined attempt: the intent goes back to requires_payment_method with the error."""
        with self._lock:
            intent = self.intents[intent_id]
            intent.update(status="requires_payment_method",
                          last_payment_error={"type": "card_error", "code": "card_declined",
                                              "decline_code": "generic_decline", "message": message})
            return json.loads(json.dumps(intent))

    def event(self, type_: str, obj: dict, *, event_id: str | None = None, timestamp: int | None = None,
              secret: str | None = None) -> tuple[bytes, str]:
        """The webhook Stripe would POST: (body bytes, Stripe-Signature header value)."""
        payload = {"id": event_id or self._new_id("evt"), "object": "event", "api_version": API_VERSION,
                   "created": int(time.time()), "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
                   "request": {"id": None, "idempotency_key": None}, "type": type_}
        body = json.dumps(payload, separators=(",", ":"))
        header = stripe.WebhookSignature.generate_signature_header(body, secret or self.webhook_secret,
                                                                   timestamp=timestamp)
        return body.encode(), header

    # -- the API -----------------------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}{secrets.token_hex(8)}"

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0)).decode()
        url = urlsplit(handler.path)
        params = decode_form(raw if method == "POST" else url.query)
        key = handler.headers.get("Idempotency-Key")
        record = Recorded(method, url.path, params, key, headers=dict(handler.headers))
        with self._lock:
            self.requests.append(record)
        replayed = False
        try:
            if self.fail_next > 0:
                with self._lock:
                    self.fail_next -= 1
                raise StripeError(500, "api_error", "An unknown error occurred", saved=False)
            self._authenticate(handler.headers.get("Authorization", ""))
            if key and method == "POST":
                status, body, replayed = self._idempotent(key, method, url.path, params)
            else:
                status, body = self._route(method, url.path, params)
        except StripeError as exc:
            status, body = exc.status, exc.body
        record.status, record.replayed = status, replayed
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Request-Id", "req_" + secrets.token_hex(7))
        handler.send_header("Stripe-Version", API_VERSION)
        if key:
            handler.send_header("Idempotency-Key", key)
        if replayed:
            handler.send_header("Idempotent-Replayed", "true")
        handler.end_headers()
        handler.wfile.write(data)

    def _authenticate(self, authorization: str) -> None:
        token = authorization[7:] if authorization.startswith("Bearer ") else ""
        if not token.startswith("sk_test_") or (self.secret_key and token != self.secret_key):
            shown = (token[:8] + "*" * 8 + token[-4:]) if len(token) > 12 else token
            raise StripeError(401, "invalid_request_error", f"Invalid API Key provided: {shown}",
                              "api_key_invalid" if token else None, saved=False)

    def _idempotent(self, key: str, method: str, path: str, params: dict) -> tuple[int, dict, bool]:
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # copies with one key queue here
            saved = self._saved.get(key)
            if saved is not None:
                s_method, s_path, s_params, s_status, s_body = saved
                if (s_method, s_path) != (method, path) or s_params != params:
                    raise StripeError(400, "idempotency_error",
                                      "Keys for idempotent requests can only be used with the same parameters they "
                                      f"were first used with. Try using a key other than '{key}' if you meant to "
                                      "execute a different request.", saved=False)
                return s_status, s_body, True
            try:
                status, body = self._route(method, path, params)
            except StripeError as exc:
                if not exc.saved:
                    raise
                status, body = exc.status, exc.body
            self._saved[key] = (method, path, params, status, body)
            return status, body, False

    def _route(self, method: str, path: str, params: dict) -> tuple[int, dict]:
        if method == "POST" and path == "/v1/payment_intents":
            return 200, self._create_intent(params)
        found = re.fullmatch(r"/v1/payment_intents/([A-Za-z0-9_]+)", path)
        if method == "GET" and found:
            with self._lock:
                intent = self.intents.get(found.group(1))
            if intent is None:
                raise StripeError(404, "invalid_request_error", f"No such payment_intent: '{found.group(1)}'",
                                  "resource_missing", "intent")
            return 200, intent
        if method == "POST" and path == "/v1/refunds":
            return 200, self._create_refund(params)
        raise StripeError(404, "invalid_request_error",
                          f"Unrecognized request URL ({method} {path}). Please see https://stripe.com/docs or we can "
                          "help at https://support.stripe.com/.", saved=False)

    def _create_intent(self, params: dict) -> dict:
        amount = _int(params, "amount", required=True)
        currency = params.get("currency")
        if not currency:
            raise StripeError(400, "invalid_request_error", "Missing required param: currency.", "parameter_missing",
                              "currency", saved=False)
        if amount < 50:
            raise StripeError(400, "invalid_request_error", "Amount must be at least $0.50 usd", "amount_too_small",
                              "amount")
        apm = params.get("automatic_payment_methods") or {}
        with self._lock:
            intent_id = self._new_id("pi")
            intent = {
                "id": intent_id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
                "amount_received": 0, "automatic_payment_methods":
                    {"enabled": apm.get("enabled") == "true", "allow_redirects": "always"} if apm else None,
                "capture_method": "automatic", "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
                "confirmation_method": "automatic", "created": int(time.time()), "currency": currency.lower(),
                "customer": None, "description": params.get("description"), "last_payment_error": None,
                "latest_charge": None, "livemode": False, "metadata": params.get("metadata") or {},
                "payment_method": None, "payment_method_types": ["card"], "status": "requires_payment_method",
            }
            self.intents[intent_id] = intent
            return json.loads(json.dumps(intent))

    def _create_refund(self, params: dict) -> dict:
        amount = _int(params, "amount", required=False)
        with self._lock:
            if params.get("payment_intent"):
                intent = self.intents.get(params["payment_intent"])
                if intent is None:
                    raise StripeError(404, "invalid_request_error",
                                      f"No such payment_intent: '{params['payment_intent']}'", "resource_missing",
                                      "payment_intent")
                if intent["status"] != "succeeded" or not intent.get("latest_charge"):
                    raise StripeError(400, "invalid_request_error",
                                      f"This PaymentIntent ({intent['id']}) does not have a successful charge to "
                                      "refund.")
                charge_id = intent["latest_charge"]
            elif params.get("charge"):
                charge_id = params["charge"]
                if charge_id not in self.charges:
                    raise StripeError(404, "invalid_request_error", f"No such charge: '{charge_id}'",
                                      "resource_missing", "charge")
            else:
                raise StripeError(400, "invalid_request_error",
                                  "One of the following params should be provided for this request: payment_intent "
                                  "or charge.", "parameter_missing", saved=False)
            charge = self.charges[charge_id]
            left = charge["amount"] - charge["amount_refunded"]
            amount = left if amount is None else amount
            if left <= 0:
                raise StripeError(400, "invalid_request_error", f"Charge {charge_id} has already been refunded.",
                                  "charge_already_refunded")
            if amount <= 0 or amount > left:
                currency = self.intents[charge["payment_intent"]]["currency"]
                raise StripeError(400, "invalid_request_error",
                                  f"Refund amount ({amount / 100:.2f} {currency}) is greater than unrefunded amount "
                                  f"on charge ({left / 100:.2f} {currency})", "amount_too_large", "amount")
            charge["amount_refunded"] += amount
            refund_id = self._new_id("re")
            refund = {"id": refund_id, "object": "refund", "amount": amount, "balance_transaction": None,
                      "charge": charge_id, "created": int(time.time()),
                      "currency": self.intents[charge["payment_intent"]]["currency"],
                      "metadata": params.get("metadata") or {}, "payment_intent": charge["payment_intent"],
                      "reason": params.get("reason"), "receipt_number": None, "source_transfer_reversal": None,
                      "status": "succeeded", "transfer_reversal": None}
            self.refunds[refund_id] = refund
            return json.loads(json.dumps(refund))

    def charge_object(self, intent_id: str) -> dict:
        """The Charge of a succeeded intent as `charge.refunded` carries it (amount_refunded so far)."""
        with self._lock:
            intent = self.intents[intent_id]
            charge_id = intent["latest_charge"]
            charge = self.charges[charge_id]
            return {"id": charge_id, "object": "charge", "amount": charge["amount"],
                    "amount_refunded": charge["amount_refunded"], "currency": intent["currency"],
                    "payment_intent": intent_id, "refunded": charge["amount_refunded"] >= charge["amount"],
                    "status": "succeeded"}
