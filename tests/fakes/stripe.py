"""A local HTTP server that answers like Stripe's API for what the shop uses, and records every request.

The shop's StripeGateway uses the official SDK pointed at this server (STRIPE_API_BASE = fake.url).
Shapes are Stripe's (API version 2025-08-27.basil). Covered:

* POST /v1/payment_intents   form-encoded as stripe-python sends it (`metadata[order_id]=7`,
                              `automatic_payment_methods[enabled]=true`); needs amount and currency.
* GET  /v1/payment_intents/<id>
* POST /v1/refunds            payment_intent (or charge) and an optional amount; refuses a PaymentIntent
                              without a successful charge, an amount above what is left unrefunded, and
                              a charge with an open dispute (400 `charge_disputed`), with Stripe's 400
                              `invalid_request_error`. GET /v1/refunds/<id>, GET /v1/charges/<id>.
* POST /v1/checkout/sessions  hosted Checkout in `payment` mode: `line_items[i][price_data][currency]`,
                              `[unit_amount]`, `[product_data][name]`, `line_items[i][quantity]`, `success_url`,
                              `cancel_url`, `customer_email`, `client_reference_id`, `metadata[...]`,
                              `payment_intent_data[metadata][...]`, `discounts[0][coupon]`,
                              `shipping_options[i][shipping_rate_data][...]` (fixed_amount) and `expires_at`
                              (30 minutes to 24 hours from now, as Stripe; no grace: send a margin).
                              amount_subtotal, total_details and amount_total are computed as Stripe does
                              (a coupon applies to the goods only, capped at the subtotal; shipping on top).
                              The answer's `url` is the hosted page, `{fake.url}/c/pay/<id>`.
* GET  /v1/checkout/sessions/<id> (`expand[]=line_items`), GET .../<id>/line_items, GET /v1/checkout/sessions
  (`payment_intent=` filter), POST .../<id>/expire (only an `open` session; sends checkout.session.expired).
  A session past its expires_at is expired the next time it is read or paid (the event is sent once).
* POST /v1/coupons (amount_off + currency, or percent_off; duration, max_redemptions, name), GET /v1/coupons/<id>.
* GET  /v1/account (`fake.account`, a dict tests may change), GET /v1/webhook_endpoints (`fake.webhook_endpoints`,
  see `add_webhook_endpoint(url, events)`), GET /v1/disputes/<id>, GET /v1/events/<id>.
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

The hosted page, GET /c/pay/<session id>, is plain HTML without JavaScript: the order, then one form per
outcome, each a button ("Pay", "Pay (card declined)", "Pay with 3-D Secure" -> "Complete"/"Fail", "Pay by bank
(succeeds later)", "Pay by bank (fails later)") and a "← Back" link to the cancel_url. POST /c/pay/<id> with
`outcome=approve|decline|3ds|3ds_complete|3ds_fail|bank_ok|bank_fail`:
  approve, 3ds_complete  the intent succeeds with a charge; events payment_intent.succeeded, charge.succeeded,
                         checkout.session.completed; 303 to success_url ({CHECKOUT_SESSION_ID} filled in).
  decline, 3ds_fail      payment_intent.payment_failed; the session stays open; the page again with the error.
  bank_ok, bank_fail     the intent is `processing`, the session complete but unpaid; checkout.session.completed;
                         303 to success_url. `settle_bank(session_id)` later sends payment_intent.succeeded +
                         checkout.session.async_payment_succeeded (or payment_intent.payment_failed +
                         checkout.session.async_payment_failed).
A session that is no longer open answers a page saying it has expired or was already paid; nothing is charged.

Events: every state change sends a full Event, recorded in `fake.events` (creation order). With a
`webhook_url` (constructor argument or attribute, e.g. the live shop's `/webhooks/stripe`) one background
thread POSTs each, signed (`Stripe-Signature`, with `webhook_secret`), in creation order, retrying a failed
attempt (non-2xx, refused) after 0.2, 0.5, 1, 2 and 5 s (`retry_backoff`); later events do not wait for a
retried one, as with Stripe. Events made while no webhook_url is set are recorded only. `fake.deliveries`
records (event_id, type, status) per attempt, status 0 when the connection failed; `event_types()` lists the
types made so far. Knobs:
  duplicate_deliveries = True   each event is delivered twice
  reverse_next(n)               the next n events are delivered in reverse order (sent once the n-th exists,
                                or at wait_delivered())
  delivery_delay = seconds      events wait that long before their first attempt (the shopper is back first)
  hold_deliveries()             queue without sending (wait_delivered() is False meanwhile) until
  release_deliveries()
  wait_delivered(timeout)       True once nothing is queued or being sent
  clock_offset = seconds        the fake's clock for session expiry runs that far ahead (a shopper back after 25 h)

Tests drive payments: `succeed(intent_id)` (or `fail(...)`) moves an intent as a card payment would (pass
`notify=True` to send the events too); `event(type, object)` gives the body and `Stripe-Signature` header of
a webhook, signed with the endpoint secret, without recording or sending it; `expire_session(id)` is Stripe's
own timer running out; `dispute(intent_id)` / `close_dispute(id, "won"|"lost")` send charge.dispute.created /
.closed (a lost dispute's amount can no longer be refunded); with `refund_status = "pending"` refunds stay
pending until `settle_refund(id, "succeeded"|"failed")` sends charge.refund.updated (and charge.refunded when it
succeeded; a failed refund gives its amount back to the charge). Succeeded refunds send charge.refunded when made.
"""

from __future__ import annotations

import heapq
import html
import itertools
import json
import re
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

import stripe

API_VERSION = "2025-08-27.basil"
RETRY_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
MIN_SESSION_SECONDS, MAX_SESSION_SECONDS = 30 * 60, 24 * 60 * 60
ZERO_DECIMAL = {
    "bif",
    "clp",
    "djf",
    "gnf",
    "jpy",
    "kmf",
    "krw",
    "mga",
    "pyg",
    "rwf",
    "ugx",
    "vnd",
    "vuv",
    "xaf",
    "xof",
    "xpf",
}
OPEN_DISPUTE = {"warning_needs_response", "warning_under_review", "needs_response", "under_review"}
OUTCOMES = {"approve", "decline", "3ds", "3ds_complete", "3ds_fail", "bank_ok", "bank_fail"}


@dataclass
class Recorded:
    method: str
    path: str
    params: dict
    idempotency_key: str | None
    status: int = 0
    replayed: bool = False
    headers: dict = field(default_factory=dict)


class Delivery(NamedTuple):
    """One attempt to deliver an event to the webhook_url; status 0 when the connection failed."""

    event_id: str
    type: str
    status: int


class StripeError(Exception):
    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        code: str | None = None,
        param: str | None = None,
        saved: bool = True,
    ):
        super().__init__(message)
        self.status, self.saved = status, saved
        self.body = {
            "error": {
                k: v
                for k, v in {"type": type_, "code": code, "message": message, "param": param}.items()
                if v is not None
            }
        }
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


def _int(params: dict, name: str, required: bool, param: str | None = None) -> int | None:
    """An integer parameter; `param` is the name the error reports (the full nested name)."""
    raw = params.get(name)
    param = param or name
    if raw is None or raw == "":
        if required:
            raise StripeError(
                400,
                "invalid_request_error",
                f"Missing required param: {param}.",
                "parameter_missing",
                param,
                saved=False,
            )
        return None
    if not re.fullmatch(r"\d+", str(raw)):
        raise StripeError(
            400, "invalid_request_error", f"Invalid integer: {raw}", "parameter_invalid_integer", param, saved=False
        )
    return int(raw)


def _missing(param: str) -> StripeError:
    return StripeError(
        400, "invalid_request_error", f"Missing required param: {param}.", "parameter_missing", param, saved=False
    )


def _invalid(param: str, message: str, code: str | None = None) -> StripeError:
    """A parameter Stripe validates before executing anything (so nothing is saved under the idempotency key)."""
    return StripeError(400, "invalid_request_error", message, code, param, saved=False)


def _no_such(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, "invalid_request_error", f"No such {kind}: '{object_id}'", "resource_missing", param)


def _copy(obj):
    """A snapshot: answers and events must not change when the fake's state does later."""
    return json.loads(json.dumps(obj))


def _list(data: list, url: str) -> dict:
    return {"object": "list", "data": data, "has_more": False, "url": url}


def money(amount: int, currency: str) -> str:
    """`$55.00`, `€5.00`, `1,200 JPY`: integer minor units shown without floats."""
    cur = currency.lower()
    if cur in ZERO_DECIMAL:
        text = f"{amount:,}"
    else:
        text = f"{amount // 100:,}.{amount % 100:02d}"
    symbol = {"usd": "$", "eur": "€", "gbp": "£"}.get(cur)
    return f"{symbol}{text}" if symbol else f"{text} {cur.upper()}"


class FakeStripe:
    def __init__(self, secret_key: str | None = None, webhook_secret: str = "whsec_x", webhook_url: str | None = None):
        """`secret_key`: the one key accepted (any `sk_test_...` when None). `webhook_url`: where events are
        POSTed (settable later; None: events are only recorded in `events`)."""
        self.secret_key = secret_key
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.requests: list[Recorded] = []
        self.intents: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.charges: dict[str, dict] = {}  # charge id -> {"payment_intent", "amount", "amount_refunded", ...}
        self.sessions: dict[str, dict] = {}  # checkout session id -> the Session object
        self.coupons: dict[str, dict] = {}
        self.shipping_rates: dict[str, dict] = {}
        self.disputes: dict[str, dict] = {}
        self.events: list[dict] = []
        self.deliveries: list[Delivery] = []
        self.webhook_endpoints: list[dict] = []
        self.account = {
            "id": "acct_" + secrets.token_hex(8),
            "object": "account",
            "business_type": "company",
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True,
            "payouts_enabled": True,
            "details_submitted": True,
            "country": "US",
            "created": int(time.time()),
            "default_currency": "usd",
            "email": "owner@example.com",
            "settings": {"dashboard": {"display_name": "Test shop", "timezone": "Etc/UTC"}},
            "type": "standard",
        }
        self.fail_next = 0
        self.refund_status = "succeeded"  # or "pending": refunds wait for settle_refund()
        self.duplicate_deliveries = False
        self.delivery_delay = 0.0
        self.retry_backoff = RETRY_BACKOFF
        self.delivery_timeout = 10.0
        self.clock_offset = 0.0
        self._saved: dict[str, tuple[str, str, dict, int, dict]] = {}  # key -> method, path, params, status, body
        self._lock = threading.RLock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._ids = itertools.count(1)
        self._running = False
        self._connections: set[socket.socket] = set()
        self._local = threading.local()  # the API request being answered, for the events it causes
        # per checkout session: line items, payment_intent_data, the bank outcome waiting for settle_bank()
        self._line_items: dict[str, list[dict]] = {}
        self._intent_data: dict[str, dict] = {}
        self._bank_outcome: dict[str, str] = {}
        # webhook delivery: a heap of (due, seq, event, attempt) served by one thread
        self._outbox: list[tuple[float, int, dict, int]] = []
        self._outbox_cv = threading.Condition()  # never taken before self._lock
        self._seq = itertools.count()
        self._held = False
        self._in_flight = 0
        self._reverse_left = 0
        self._reversed: list[dict] = []
        self._closing = False
        self._deliverer = threading.Thread(target=self._deliver_loop, daemon=True)
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
        # a short poll: stop() (and each test's teardown) waits for the serving loop to notice
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self):
        self.thread.start()
        self._deliverer.start()
        self._running = True
        return self

    def __exit__(self, *exc):
        self.stop()
        with self._outbox_cv:
            self._closing = True
            self._outbox_cv.notify_all()
        self._deliverer.join(self.delivery_timeout + 1)

    def stop(self) -> None:
        """Close the port: from now on connections are refused, as in an outage (webhooks still go out)."""
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
        return [
            r
            for r in found
            if (method is None or r.method == method)
            and (path is None or r.path == path or (path.endswith("/") and r.path.startswith(path)))
        ]

    def event_types(self) -> list[str]:
        """The types of the events made so far, in order."""
        with self._lock:
            return [e["type"] for e in self.events]

    def succeed(self, intent_id: str, notify: bool = False) -> dict:
        """The customer paid: the intent succeeds with one charge. Returns the intent (the event's object).
        `notify`: also send payment_intent.succeeded and charge.succeeded."""
        with self._lock:
            intent = self.intents[intent_id]
            fresh = intent["status"] != "succeeded"
            self._succeed_locked(intent)
            if notify and fresh:
                self._emit("payment_intent.succeeded", intent)
                self._emit("charge.succeeded", self._charge_object(intent["latest_charge"]))
            return _copy(intent)

    def fail(self, intent_id: str, message: str = "Your card was declined.", notify: bool = False) -> dict:
        """A declined attempt: the intent goes back to requires_payment_method with the error.
        `notify`: also send payment_intent.payment_failed."""
        with self._lock:
            intent = self.intents[intent_id]
            self._decline_locked(intent, message)
            if notify:
                self._emit("payment_intent.payment_failed", intent)
            return _copy(intent)

    def event(
        self,
        type_: str,
        obj: dict,
        *,
        event_id: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> tuple[bytes, str]:
        """The webhook Stripe would POST: (body bytes, Stripe-Signature header value). Not recorded or sent."""
        payload = {
            "id": event_id or self._new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        body = json.dumps(payload, separators=(",", ":"))
        header = stripe.WebhookSignature.generate_signature_header(
            body, secret or self.webhook_secret, timestamp=timestamp
        )
        return body.encode(), header

    def expire_session(self, session_id: str) -> dict:
        """Stripe's own timer ran out (the shopper abandoned the page): the session expires, with its event."""
        with self._lock:
            session = self.sessions[session_id]
            if session["status"] != "open":
                raise ValueError(f"session {session_id} is {session['status']}, not open")
            self._expire_locked(session)
            return _copy(session)

    def settle_bank(self, session_id: str) -> dict:
        """The bank answers a `bank_ok` / `bank_fail` payment: events payment_intent.succeeded +
        checkout.session.async_payment_succeeded, or payment_intent.payment_failed +
        checkout.session.async_payment_failed. Returns the session."""
        with self._lock:
            session = self.sessions[session_id]
            outcome = self._bank_outcome.pop(session_id, None)
            if outcome is None:
                raise ValueError(f"session {session_id} has no bank payment waiting to settle")
            intent = self.intents[session["payment_intent"]]
            if outcome == "bank_ok":
                self._succeed_locked(intent)
                session["payment_status"] = "paid"
                self._emit("payment_intent.succeeded", intent)
                self._emit("checkout.session.async_payment_succeeded", session)
            else:
                intent.update(
                    status="requires_payment_method",
                    last_payment_error={
                        "type": "invalid_request_error",
                        "code": "payment_method_provider_decline",
                        "message": "The customer's bank declined the payment.",
                        "payment_method": {
                            "id": intent["payment_method"],
                            "object": "payment_method",
                            "type": "us_bank_account",
                        },
                    },
                )
                self._emit("payment_intent.payment_failed", intent)
                self._emit("checkout.session.async_payment_failed", session)
            return _copy(session)

    def dispute(self, payment_intent_id: str, reason: str = "fraudulent", amount: int | None = None) -> dict:
        """The cardholder disputes the intent's charge (a chargeback): sends charge.dispute.created. Until it
        closes, refunds of that charge are refused with 400 `charge_disputed`. Returns the Dispute."""
        with self._lock:
            intent = self.intents[payment_intent_id]
            charge_id = intent.get("latest_charge")
            if not charge_id:
                raise ValueError(f"{payment_intent_id} has no charge to dispute")
            charge = self.charges[charge_id]
            now = int(time.time())
            dispute = {
                "id": self._new_id("dp"),
                "object": "dispute",
                "amount": charge["amount"] - charge["amount_refunded"] if amount is None else amount,
                "balance_transactions": [],
                "charge": charge_id,
                "created": now,
                "currency": intent["currency"],
                "enhanced_eligibility_types": [],
                "evidence_details": {
                    "due_by": now + 7 * 24 * 3600,
                    "has_evidence": False,
                    "past_due": False,
                    "submission_count": 0,
                },
                "is_charge_refundable": False,
                "livemode": False,
                "metadata": {},
                "payment_intent": payment_intent_id,
                "reason": reason,
                "status": "needs_response",
            }
            self.disputes[dispute["id"]] = dispute
            charge["disputed"] = True
            self._emit("charge.dispute.created", dispute)
            return _copy(dispute)

    def close_dispute(self, dispute_id: str, status: str) -> dict:
        """The card network decided: "won" (the money stays) or "lost" (the disputed amount is gone and can
        no longer be refunded). Sends charge.dispute.closed. Returns the Dispute."""
        if status not in ("won", "lost"):
            raise ValueError("a dispute closes as won or lost")
        with self._lock:
            dispute = self.disputes[dispute_id]
            if dispute["status"] not in OPEN_DISPUTE:
                raise ValueError(f"dispute {dispute_id} is already {dispute['status']}")
            dispute["status"] = status
            if status == "lost":
                charge = self.charges[dispute["charge"]]
                charge["amount_lost"] = charge.get("amount_lost", 0) + dispute["amount"]
            self._emit("charge.dispute.closed", dispute)
            return _copy(dispute)

    def settle_refund(self, refund_id: str, status: str, failure_reason: str = "expired_or_canceled_card") -> dict:
        """A pending refund ends: sends charge.refund.updated, then charge.refunded when it succeeded. A failed
        refund gives its amount back to the charge. Returns the Refund."""
        if status not in ("succeeded", "failed"):
            raise ValueError("a refund settles as succeeded or failed")
        with self._lock:
            refund = self.refunds[refund_id]
            if refund["status"] != "pending":
                raise ValueError(f"refund {refund_id} is {refund['status']}, not pending")
            refund["status"] = status
            if status == "failed":
                refund["failure_reason"] = failure_reason
                self.charges[refund["charge"]]["amount_refunded"] -= refund["amount"]
            self._emit("charge.refund.updated", refund)
            if status == "succeeded":
                self._emit("charge.refunded", self._charge_object(refund["charge"]))
            return _copy(refund)

    def add_webhook_endpoint(self, url: str, events=("*",), status: str = "enabled") -> dict:
        """A webhook endpoint as GET /v1/webhook_endpoints lists it (the account's configuration)."""
        endpoint = {
            "id": self._new_id("we"),
            "object": "webhook_endpoint",
            "api_version": API_VERSION,
            "application": None,
            "created": int(time.time()),
            "description": None,
            "enabled_events": list(events),
            "livemode": False,
            "metadata": {},
            "status": status,
            "url": url,
        }
        with self._lock:
            self.webhook_endpoints.append(endpoint)
        return endpoint

    # -- webhook delivery --------------------------------------------------------------------------
    def hold_deliveries(self) -> None:
        """Queue events without sending them until release_deliveries()."""
        with self._outbox_cv:
            self._held = True

    def release_deliveries(self) -> None:
        with self._outbox_cv:
            self._held = False
            self._outbox_cv.notify_all()

    def reverse_next(self, n: int) -> None:
        """Deliver the next n events in reverse order (the last made arrives first)."""
        with self._outbox_cv:
            self._flush_reversed()
            self._reverse_left = n

    def wait_delivered(self, timeout: float = 10.0) -> bool:
        """Wait until no event is queued, waiting for a retry or being sent. False on timeout."""
        deadline = time.monotonic() + timeout
        with self._outbox_cv:
            self._flush_reversed()
            self._outbox_cv.notify_all()
            while self._outbox or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._outbox_cv.wait(left)
            return True

    def _emit(self, type_: str, obj: dict) -> dict:
        """Record a full Event (a snapshot of `obj`) and queue it for the webhook_url, if one is set."""
        request_id, key = getattr(self._local, "request", (None, None))
        url = self.webhook_url
        event = {
            "id": self._new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": _copy(obj)},
            "livemode": False,
            "pending_webhooks": 1 if url else 0,
            "request": {"id": request_id, "idempotency_key": key},
            "type": type_,
        }
        with self._lock:
            self.events.append(event)
        if url:
            with self._outbox_cv:
                if self._reverse_left > 0:
                    self._reversed.append(event)
                    self._reverse_left -= 1
                    if self._reverse_left == 0:
                        self._flush_reversed()
                else:
                    self._queue(event)
                self._outbox_cv.notify_all()
        return event

    def _queue(self, event: dict) -> None:
        """Under _outbox_cv: the event's first attempt(s), after delivery_delay."""
        due = time.monotonic() + self.delivery_delay
        for _ in range(2 if self.duplicate_deliveries else 1):
            heapq.heappush(self._outbox, (due, next(self._seq), event, 1))

    def _flush_reversed(self) -> None:
        """Under _outbox_cv: queue the events kept back by reverse_next(), last first."""
        batch, self._reversed, self._reverse_left = self._reversed, [], 0
        for event in reversed(batch):
            self._queue(event)

    def _deliver_loop(self) -> None:
        while True:
            with self._outbox_cv:
                while True:
                    if self._closing:
                        return
                    if self._outbox and not self._held:
                        wait = self._outbox[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._outbox_cv.wait(wait)
                    else:
                        self._outbox_cv.wait()
                _, _, event, attempt = heapq.heappop(self._outbox)
                self._in_flight += 1
                url = self.webhook_url
            status = self._post_event(url, event) if url else 0
            with self._outbox_cv:
                self._in_flight -= 1
                if url and not 200 <= status < 300 and attempt <= len(self.retry_backoff):
                    heapq.heappush(
                        self._outbox,
                        (time.monotonic() + self.retry_backoff[attempt - 1], next(self._seq), event, attempt + 1),
                    )
                self._outbox_cv.notify_all()

    def _post_event(self, url: str, event: dict) -> int:
        """One delivery attempt, signed now (Stripe signs every attempt afresh). Returns the HTTP status."""
        body = json.dumps(event, separators=(",", ":"))
        header = stripe.WebhookSignature.generate_signature_header(body, self.webhook_secret)
        request = urllib.request.Request(
            url,
            data=body.encode(),
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": header,
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.delivery_timeout) as resp:
                resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            status = err.code
        except (OSError, ValueError):  # refused, reset, timed out, a bad URL
            status = 0
        with self._lock:
            self.deliveries.append(Delivery(event["id"], event["type"], status))
        return status

    # -- the API -----------------------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}{secrets.token_hex(8)}"

    def _now(self) -> float:
        return time.time() + self.clock_offset

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0)).decode()
        url = urlsplit(handler.path)
        params = decode_form(raw if method == "POST" else url.query)
        key = handler.headers.get("Idempotency-Key")
        record = Recorded(method, url.path, params, key, headers=dict(handler.headers))
        with self._lock:
            self.requests.append(record)
        if url.path.startswith("/c/pay/"):
            record.status = self._page(handler, method, url.path[len("/c/pay/") :], params)
            return
        request_id = "req_" + secrets.token_hex(7)
        self._local.request = (request_id, key)
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
        finally:
            self._local.request = (None, None)
        record.status, record.replayed = status, replayed
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Request-Id", request_id)
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
            raise StripeError(
                401,
                "invalid_request_error",
                f"Invalid API Key provided: {shown}",
                "api_key_invalid" if token else None,
                saved=False,
            )

    def _idempotent(self, key: str, method: str, path: str, params: dict) -> tuple[int, dict, bool]:
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # copies with one key queue here
            saved = self._saved.get(key)
            if saved is not None:
                s_method, s_path, s_params, s_status, s_body = saved
                if (s_method, s_path) != (method, path) or s_params != params:
                    raise StripeError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters they "
                        f"were first used with. Try using a key other than '{key}' if you meant to "
                        "execute a different request.",
                        saved=False,
                    )
                return s_status, s_body, True
            try:
                status, body = self._route(method, path, params)
            except StripeError as exc:
                if not exc.saved:
                    raise
                status, body = exc.status, exc.body
            self._saved[key] = (method, path, params, status, body)
            return status, body, False

    ROUTES = (
        ("POST", r"/v1/payment_intents", "_create_intent"),
        ("GET", r"/v1/payment_intents/([A-Za-z0-9_]+)", "_get_intent"),
        ("POST", r"/v1/refunds", "_create_refund"),
        ("GET", r"/v1/refunds/([A-Za-z0-9_]+)", "_get_refund"),
        ("GET", r"/v1/charges/([A-Za-z0-9_]+)", "_get_charge"),
        ("POST", r"/v1/checkout/sessions", "_create_session"),
        ("GET", r"/v1/checkout/sessions", "_list_sessions"),
        ("GET", r"/v1/checkout/sessions/([A-Za-z0-9_]+)", "_get_session"),
        ("GET", r"/v1/checkout/sessions/([A-Za-z0-9_]+)/line_items", "_get_line_items"),
        ("POST", r"/v1/checkout/sessions/([A-Za-z0-9_]+)/expire", "_expire_session"),
        ("POST", r"/v1/coupons", "_create_coupon"),
        ("GET", r"/v1/coupons/([A-Za-z0-9_-]+)", "_get_coupon"),
        ("GET", r"/v1/disputes/([A-Za-z0-9_]+)", "_get_dispute"),
        ("GET", r"/v1/events/([A-Za-z0-9_]+)", "_get_event"),
        ("GET", r"/v1/account", "_get_account"),
        ("GET", r"/v1/webhook_endpoints", "_list_webhook_endpoints"),
    )

    def _route(self, method: str, path: str, params: dict) -> tuple[int, dict]:
        for r_method, pattern, name in self.ROUTES:
            found = re.fullmatch(pattern, path)
            if method == r_method and found:
                return 200, getattr(self, name)(params, *found.groups())
        raise StripeError(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({method} {path}). Please see https://stripe.com/docs or we can "
            "help at https://support.stripe.com/.",
            saved=False,
        )

    def _stored(self, store: dict, kind: str, object_id: str) -> dict:
        with self._lock:
            found = store.get(object_id)
            if found is None:
                raise _no_such(kind, object_id)
            return _copy(found)

    def _get_intent(self, params: dict, intent_id: str) -> dict:
        with self._lock:
            if intent_id not in self.intents:
                raise _no_such("payment_intent", intent_id, "intent")
            return _copy(self.intents[intent_id])

    def _get_refund(self, params: dict, refund_id: str) -> dict:
        return self._stored(self.refunds, "refund", refund_id)

    def _get_charge(self, params: dict, charge_id: str) -> dict:
        with self._lock:
            if charge_id not in self.charges:
                raise _no_such("charge", charge_id, "charge")
            return self._charge_object(charge_id)

    def _get_coupon(self, params: dict, coupon_id: str) -> dict:
        return self._stored(self.coupons, "coupon", coupon_id)

    def _get_dispute(self, params: dict, dispute_id: str) -> dict:
        return self._stored(self.disputes, "dispute", dispute_id)

    def _get_event(self, params: dict, event_id: str) -> dict:
        with self._lock:
            return self._stored({e["id"]: e for e in self.events}, "event", event_id)

    def _get_account(self, params: dict) -> dict:
        with self._lock:
            return _copy(self.account)

    def _list_webhook_endpoints(self, params: dict) -> dict:
        with self._lock:
            return _list(_copy(self.webhook_endpoints), "/v1/webhook_endpoints")

    def _create_intent(self, params: dict) -> dict:
        amount = _int(params, "amount", required=True)
        currency = params.get("currency")
        if not currency:
            raise StripeError(
                400,
                "invalid_request_error",
                "Missing required param: currency.",
                "parameter_missing",
                "currency",
                saved=False,
            )
        if amount < 50:
            raise StripeError(
                400, "invalid_request_error", "Amount must be at least $0.50 usd", "amount_too_small", "amount"
            )
        apm = params.get("automatic_payment_methods") or {}
        with self._lock:
            intent_id = self._new_id("pi")
            intent = {
                "id": intent_id,
                "object": "payment_intent",
                "amount": amount,
                "amount_capturable": 0,
                "amount_received": 0,
                "automatic_payment_methods": {"enabled": apm.get("enabled") == "true", "allow_redirects": "always"}
                if apm
                else None,
                "capture_method": "automatic",
                "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
                "confirmation_method": "automatic",
                "created": int(time.time()),
                "currency": currency.lower(),
                "customer": None,
                "description": params.get("description"),
                "last_payment_error": None,
                "latest_charge": None,
                "livemode": False,
                "metadata": params.get("metadata") or {},
                "payment_method": None,
                "payment_method_types": ["card"],
                "status": "requires_payment_method",
            }
            self.intents[intent_id] = intent
            return json.loads(json.dumps(intent))

    def _succeed_locked(self, intent: dict) -> str:
        """The intent succeeds with one charge (once). Returns the charge id."""
        if intent["status"] != "succeeded":
            charge_id = self._new_id("ch")
            self.charges[charge_id] = {
                "payment_intent": intent["id"],
                "amount": intent["amount"],
                "amount_refunded": 0,
                "created": int(time.time()),
                "disputed": False,
            }
            intent.update(
                status="succeeded",
                amount_received=intent["amount"],
                latest_charge=charge_id,
                payment_method=intent.get("payment_method") or self._new_id("pm"),
                last_payment_error=None,
            )
        return intent["latest_charge"]

    def _decline_locked(self, intent: dict, message: str = "Your card was declined.") -> None:
        intent.update(
            status="requires_payment_method",
            last_payment_error={
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": message,
            },
        )

    def _create_refund(self, params: dict) -> dict:
        amount = _int(params, "amount", required=False)
        with self._lock:
            if params.get("payment_intent"):
                intent = self.intents.get(params["payment_intent"])
                if intent is None:
                    raise StripeError(
                        404,
                        "invalid_request_error",
                        f"No such payment_intent: '{params['payment_intent']}'",
                        "resource_missing",
                        "payment_intent",
                    )
                if intent["status"] != "succeeded" or not intent.get("latest_charge"):
                    raise StripeError(
                        400,
                        "invalid_request_error",
                        f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
                    )
                charge_id = intent["latest_charge"]
            elif params.get("charge"):
                charge_id = params["charge"]
                if charge_id not in self.charges:
                    raise StripeError(
                        404, "invalid_request_error", f"No such charge: '{charge_id}'", "resource_missing", "charge"
                    )
            else:
                raise StripeError(
                    400,
                    "invalid_request_error",
                    "One of the following params should be provided for this request: payment_intent or charge.",
                    "parameter_missing",
                    saved=False,
                )
            charge = self.charges[charge_id]
            if any(d["charge"] == charge_id and d["status"] in OPEN_DISPUTE for d in self.disputes.values()):
                raise StripeError(
                    400,
                    "invalid_request_error",
                    f"Charge {charge_id} has been charged back; cannot issue a refund.",
                    "charge_disputed",
                )
            left = charge["amount"] - charge["amount_refunded"] - charge.get("amount_lost", 0)
            amount = left if amount is None else amount
            if left <= 0:
                raise StripeError(
                    400,
                    "invalid_request_error",
                    f"Charge {charge_id} has already been refunded.",
                    "charge_already_refunded",
                )
            if amount <= 0 or amount > left:
                currency = self.intents[charge["payment_intent"]]["currency"]
                raise StripeError(
                    400,
                    "invalid_request_error",
                    f"Refund amount ({amount / 100:.2f} {currency}) is greater than unrefunded amount "
                    f"on charge ({left / 100:.2f} {currency})",
                    "amount_too_large",
                    "amount",
                )
            charge["amount_refunded"] += amount
            refund_id = self._new_id("re")
            refund = {
                "id": refund_id,
                "object": "refund",
                "amount": amount,
                "balance_transaction": None,
                "charge": charge_id,
                "created": int(time.time()),
                "currency": self.intents[charge["payment_intent"]]["currency"],
                "metadata": params.get("metadata") or {},
                "payment_intent": charge["payment_intent"],
                "reason": params.get("reason"),
                "receipt_number": None,
                "source_transfer_reversal": None,
                "status": self.refund_status,
                "transfer_reversal": None,
            }
            self.refunds[refund_id] = refund
            if refund["status"] == "succeeded":
                self._emit("charge.refunded", self._charge_object(charge_id))
            return json.loads(json.dumps(refund))

    def charge_object(self, intent_id: str) -> dict:
        """The Charge of a succeeded intent as `charge.refunded` carries it (amount_refunded so far)."""
        with self._lock:
            return self._charge_object(self.intents[intent_id]["latest_charge"])

    def _charge_object(self, charge_id: str) -> dict:
        with self._lock:
            charge = self.charges[charge_id]
            intent = self.intents[charge["payment_intent"]]
            return {
                "id": charge_id,
                "object": "charge",
                "amount": charge["amount"],
                "amount_captured": charge["amount"],
                "amount_refunded": charge["amount_refunded"],
                "balance_transaction": None,
                "captured": True,
                "created": charge.get("created"),
                "currency": intent["currency"],
                "disputed": charge.get("disputed", False),
                "failure_code": None,
                "failure_message": None,
                "livemode": False,
                "metadata": _copy(intent["metadata"]),
                "paid": True,
                "payment_intent": intent["id"],
                "payment_method": intent.get("payment_method"),
                "refunded": charge["amount_refunded"] >= charge["amount"],
                "status": "succeeded",
            }

    # -- coupons -------------------------------------------------------------------------------------
    def _create_coupon(self, params: dict) -> dict:
        amount_off = _int(params, "amount_off", required=False)
        percent_raw = params.get("percent_off") or None
        if (amount_off is None) == (percent_raw is None):
            raise _invalid("amount_off", "You must pass exactly one of `amount_off` or `percent_off`.")
        currency = (params.get("currency") or "").lower() or None
        if amount_off is not None and not currency:
            raise _invalid("currency", "You must pass currency when passing amount_off.", "parameter_missing")
        percent_off = None
        if percent_raw is not None:
            try:
                percent_off = float(Decimal(percent_raw))
            except InvalidOperation:
                raise _invalid("percent_off", f"Invalid decimal: {percent_raw}") from None
            if not 0 < percent_off <= 100:
                raise _invalid("percent_off", "Percent off must be greater than 0 and at most 100.")
        duration = params.get("duration") or "once"
        if duration not in ("once", "repeating", "forever"):
            raise _invalid("duration", "Invalid duration: must be one of once, repeating, or forever")
        max_redemptions = _int(params, "max_redemptions", required=False)
        if max_redemptions is not None and max_redemptions < 1:
            raise _invalid("max_redemptions", "This value must be greater than or equal to 1.")
        with self._lock:
            coupon_id = params.get("id") or "".join(
                secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(8)
            )
            if coupon_id in self.coupons:
                raise StripeError(
                    400, "invalid_request_error", "Coupon already exists.", "resource_already_exists", "id"
                )
            coupon = {
                "id": coupon_id,
                "object": "coupon",
                "amount_off": amount_off,
                "created": int(time.time()),
                "currency": currency,
                "duration": duration,
                "duration_in_months": _int(params, "duration_in_months", required=False),
                "livemode": False,
                "max_redemptions": max_redemptions,
                "metadata": params.get("metadata") or {},
                "name": params.get("name"),
                "percent_off": percent_off,
                "redeem_by": None,
                "times_redeemed": 0,
                "valid": True,
            }
            self.coupons[coupon_id] = coupon
            return _copy(coupon)

    # -- checkout sessions ---------------------------------------------------------------------------
    def _create_session(self, params: dict) -> dict:
        mode = params.get("mode")
        if not mode:
            raise _missing("mode")
        if mode != "payment":
            raise _invalid("mode", f"The fake Stripe serves `mode=payment` only, not `{mode}`.")
        ui_mode = params.get("ui_mode") or "hosted"
        if ui_mode == "hosted" and not params.get("success_url"):
            raise _missing("success_url")
        currency, items = self._session_items(params)
        subtotal = sum(item["amount_subtotal"] for item in items)
        with self._lock:
            coupon, discount = self._session_discount(params, currency, subtotal)
            rates = self._session_shipping(params, currency)
        shipping = rates[0]["fixed_amount"]["amount"] if rates else 0
        total = subtotal - discount + shipping
        if 0 < total < 50 and currency == "usd":
            raise _invalid("line_items", "The Checkout Session's total amount due must add up to at least $0.50 usd")
        now = int(time.time())
        expires_at = _int(params, "expires_at", required=False)
        if expires_at is None:
            expires_at = now + MAX_SESSION_SECONDS
        elif expires_at - now < MIN_SESSION_SECONDS:
            raise _invalid(
                "expires_at", "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation."
            )
        elif expires_at - now > MAX_SESSION_SECONDS:
            raise _invalid(
                "expires_at", "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation."
            )
        self._spread_discount(items, discount)
        with self._lock:
            session_id = self._new_id("cs_test")
            session = {
                "id": session_id,
                "object": "checkout.session",
                "adaptive_pricing": {"enabled": False},
                "after_expiration": None,
                "allow_promotion_codes": None,
                "amount_subtotal": subtotal,
                "amount_total": total,
                "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
                "billing_address_collection": None,
                "cancel_url": params.get("cancel_url"),
                "client_reference_id": params.get("client_reference_id"),
                "client_secret": None,
                "collected_information": None,
                "consent": None,
                "consent_collection": None,
                "created": now,
                "currency": currency,
                "customer": None,
                "customer_creation": "if_required",
                "customer_details": None,
                "customer_email": params.get("customer_email"),
                "discounts": [{"coupon": coupon["id"], "promotion_code": None}] if coupon else [],
                "expires_at": expires_at,
                "invoice": None,
                "livemode": False,
                "locale": params.get("locale"),
                "metadata": params.get("metadata") or {},
                "mode": mode,
                "payment_intent": None,
                "payment_link": None,
                "payment_method_collection": "if_required",
                "payment_method_types": params.get("payment_method_types") or ["card"],
                "payment_status": "unpaid",
                "recovered_from": None,
                "setup_intent": None,
                "shipping_address_collection": params.get("shipping_address_collection"),
                "shipping_cost": {
                    "amount_subtotal": shipping,
                    "amount_tax": 0,
                    "amount_total": shipping,
                    "shipping_rate": rates[0]["id"],
                }
                if rates
                else None,
                "shipping_options": [
                    {"shipping_amount": r["fixed_amount"]["amount"], "shipping_rate": r["id"]} for r in rates
                ],
                "status": "open",
                "submit_type": params.get("submit_type"),
                "subscription": None,
                "success_url": params.get("success_url"),
                "total_details": {"amount_discount": discount, "amount_shipping": shipping, "amount_tax": 0},
                "ui_mode": ui_mode,
                "url": f"{self.url}/c/pay/{session_id}",
            }
            self.sessions[session_id] = session
            self._line_items[session_id] = items
            self._intent_data[session_id] = params.get("payment_intent_data") or {}
            return self._session_answer(session, params)

    def _session_items(self, params: dict) -> tuple[str, list[dict]]:
        """The line items as Stripe's `item` objects (price_data only), and their one currency."""
        raw_items = params.get("line_items")
        if not raw_items or not isinstance(raw_items, list):
            raise _missing("line_items")
        currency = (params.get("currency") or "").lower() or None
        items = []
        for i, raw in enumerate(raw_items):
            p = f"line_items[{i}]"
            if not isinstance(raw, dict):
                raise _invalid(p, f"Invalid object: {p}")
            if raw.get("price"):
                raise StripeError(
                    400,
                    "invalid_request_error",
                    f"No such price: '{raw['price']}'",
                    "resource_missing",
                    f"{p}[price]",
                    saved=False,
                )
            data = raw.get("price_data")
            if not isinstance(data, dict):
                raise _invalid(p, f"You must specify either `price` or `price_data` in {p}.", "parameter_missing")
            item_currency = (data.get("currency") or "").lower()
            if not item_currency:
                raise _missing(f"{p}[price_data][currency]")
            if currency and item_currency != currency:
                raise _invalid(f"{p}[price_data][currency]", "All line items must use the same currency.")
            currency = item_currency
            unit = _int(data, "unit_amount", required=True, param=f"{p}[price_data][unit_amount]")
            name = (data.get("product_data") or {}).get("name")
            if not name:
                raise _missing(f"{p}[price_data][product_data][name]")
            quantity = _int(raw, "quantity", required=True, param=f"{p}[quantity]")
            if quantity < 1:
                raise _invalid(f"{p}[quantity]", "This value must be greater than or equal to 1.")
            price = {
                "id": self._new_id("price"),
                "object": "price",
                "active": False,
                "billing_scheme": "per_unit",
                "created": int(time.time()),
                "currency": item_currency,
                "livemode": False,
                "metadata": {},
                "product": self._new_id("prod"),
                "recurring": None,
                "tax_behavior": "unspecified",
                "type": "one_time",
                "unit_amount": unit,
                "unit_amount_decimal": str(unit),
            }
            items.append(
                {
                    "id": self._new_id("li"),
                    "object": "item",
                    "amount_discount": 0,
                    "amount_subtotal": unit * quantity,
                    "amount_tax": 0,
                    "amount_total": unit * quantity,
                    "currency": item_currency,
                    "description": name,
                    "price": price,
                    "quantity": quantity,
                }
            )
        return currency, items

    def _session_discount(self, params: dict, currency: str, subtotal: int) -> tuple[dict | None, int]:
        """Under the lock: the coupon of `discounts[0][coupon]` and what it takes off the goods."""
        discounts = params.get("discounts") or []
        if not discounts:
            return None, 0
        if len(discounts) > 1:
            raise _invalid("discounts", "You may only specify one discount.")
        coupon_id = (discounts[0] or {}).get("coupon") if isinstance(discounts[0], dict) else None
        if not coupon_id:
            raise _missing("discounts[0][coupon]")
        coupon = self.coupons.get(coupon_id)
        if coupon is None:
            raise StripeError(
                400,
                "invalid_request_error",
                f"No such coupon: '{coupon_id}'",
                "resource_missing",
                "discounts[0][coupon]",
                saved=False,
            )
        if not coupon["valid"]:
            raise _invalid(
                "discounts[0][coupon]", f"Coupon {coupon_id} is used up and cannot be applied.", "coupon_expired"
            )
        if coupon["amount_off"] is not None:
            if coupon["currency"] != currency:
                raise _invalid(
                    "discounts[0][coupon]",
                    f"The coupon's currency ({coupon['currency']}) does not match the Checkout Session's ({currency}).",
                )
            return coupon, min(coupon["amount_off"], subtotal)
        off = (Decimal(subtotal) * Decimal(str(coupon["percent_off"])) / 100).quantize(Decimal(1), ROUND_HALF_UP)
        return coupon, min(int(off), subtotal)

    def _session_shipping(self, params: dict, currency: str) -> list[dict]:
        """Under the lock: the ShippingRates of `shipping_options` (the first is the one charged)."""
        rates = []
        for i, option in enumerate(params.get("shipping_options") or []):
            p = f"shipping_options[{i}]"
            if not isinstance(option, dict):
                raise _invalid(p, f"Invalid object: {p}")
            if option.get("shipping_rate"):
                rate = self.shipping_rates.get(option["shipping_rate"])
                if rate is None:
                    raise StripeError(
                        400,
                        "invalid_request_error",
                        f"No such shipping rate: '{option['shipping_rate']}'",
                        "resource_missing",
                        f"{p}[shipping_rate]",
                        saved=False,
                    )
                rates.append(rate)
                continue
            data = option.get("shipping_rate_data")
            if not isinstance(data, dict):
                raise _missing(f"{p}[shipping_rate_data]")
            if not data.get("display_name"):
                raise _missing(f"{p}[shipping_rate_data][display_name]")
            if (data.get("type") or "fixed_amount") != "fixed_amount":
                raise _invalid(f"{p}[shipping_rate_data][type]", "Invalid type: must be fixed_amount")
            fixed = data.get("fixed_amount") or {}
            amount = _int(fixed, "amount", required=True, param=f"{p}[shipping_rate_data][fixed_amount][amount]")
            rate_currency = (fixed.get("currency") or "").lower()
            if not rate_currency:
                raise _missing(f"{p}[shipping_rate_data][fixed_amount][currency]")
            if rate_currency != currency:
                raise _invalid(
                    f"{p}[shipping_rate_data][fixed_amount][currency]",
                    "The shipping rate's currency must match the line items' currency.",
                )
            rate = {
                "id": self._new_id("shr"),
                "object": "shipping_rate",
                "active": True,
                "created": int(time.time()),
                "delivery_estimate": None,
                "display_name": data["display_name"],
                "fixed_amount": {"amount": amount, "currency": rate_currency},
                "livemode": False,
                "metadata": data.get("metadata") or {},
                "tax_behavior": "unspecified",
                "tax_code": None,
                "type": "fixed_amount",
            }
            self.shipping_rates[rate["id"]] = rate
            rates.append(rate)
        return rates

    @staticmethod
    def _spread_discount(items: list[dict], discount: int) -> None:
        """Each line's share of the discount, pro rata, the rounding left on the last line."""
        subtotal = sum(item["amount_subtotal"] for item in items)
        left = discount
        for n, item in enumerate(items):
            share = left if n == len(items) - 1 else (discount * item["amount_subtotal"] // subtotal if subtotal else 0)
            left -= share
            item["amount_discount"] = share
            item["amount_total"] = item["amount_subtotal"] - share

    def _session_answer(self, session: dict, params: dict) -> dict:
        answer = _copy(session)
        if "line_items" in (params.get("expand") or []):
            answer["line_items"] = _list(
                _copy(self._line_items[session["id"]]), f"/v1/checkout/sessions/{session['id']}/line_items"
            )
        return answer

    def _session(self, session_id: str) -> dict:
        """Under the lock: the session, expired first if its time is up."""
        session = self.sessions.get(session_id)
        if session is None:
            raise _no_such("checkout.session", session_id, "session")
        self._lazy_expire(session)
        return session

    def _lazy_expire(self, session: dict) -> None:
        if session["status"] == "open" and self._now() >= session["expires_at"]:
            self._expire_locked(session)

    def _expire_locked(self, session: dict) -> None:
        session.update(status="expired", url=None)
        self._emit("checkout.session.expired", session)

    def _get_session(self, params: dict, session_id: str) -> dict:
        with self._lock:
            return self._session_answer(self._session(session_id), params)

    def _list_sessions(self, params: dict) -> dict:
        with self._lock:
            found = [self._session(sid) for sid in list(self.sessions)]
            wanted = params.get("payment_intent")
            data = [_copy(s) for s in reversed(found) if not wanted or s["payment_intent"] == wanted]
            return _list(data, "/v1/checkout/sessions")

    def _get_line_items(self, params: dict, session_id: str) -> dict:
        with self._lock:
            self._session(session_id)
            return _list(_copy(self._line_items[session_id]), f"/v1/checkout/sessions/{session_id}/line_items")

    def _expire_session(self, params: dict, session_id: str) -> dict:
        with self._lock:
            session = self._session(session_id)
            if session["status"] != "open":
                raise StripeError(
                    400, "invalid_request_error", "Only Checkout Sessions with a status of `open` can be expired."
                )
            self._expire_locked(session)
            return _copy(session)

    # -- the hosted payment page -------------------------------------------------------------------
    def _page(self, handler: BaseHTTPRequestHandler, method: str, session_id: str, params: dict) -> int:
        """GET shows the page; POST applies the `outcome` the shopper chose. Returns the status sent."""
        with self._lock:
            session = self.sessions.get(session_id)
            if session is None:
                return self._send_page(
                    handler,
                    404,
                    self._html(
                        "Payment page not found",
                        "<h1>Payment page not found</h1><p>This link is not a payment page.</p>",
                    ),
                )
            self._lazy_expire(session)
            if session["status"] != "open":
                return self._send_page(handler, 200, self._closed_page(session))
            if method != "POST":
                return self._send_page(handler, 200, self._pay_page(session))
            outcome = params.get("outcome")
            if outcome not in OUTCOMES:
                return self._send_page(handler, 400, self._pay_page(session, "Choose one of the buttons to pay."))
            if outcome == "3ds":
                return self._send_page(handler, 200, self._auth_page(session))
            redirect = self._pay(session, outcome)
            if redirect is None:
                return self._send_page(
                    handler, 200, self._pay_page(session, "Your card was declined. Try another card.")
                )
        handler.send_response(303)
        handler.send_header("Location", redirect)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return 303

    def _pay(self, session: dict, outcome: str) -> str | None:
        """Under the lock: one payment attempt on an open session, with Stripe's events. Returns where the
        shopper goes next (the success_url), or None when the card was declined (they stay on the page)."""
        session_id = session["id"]
        intent = self._session_intent(session) if session["amount_total"] else None
        if outcome in ("decline", "3ds_fail"):
            if intent is None:
                return None
            self._decline_locked(intent)
            self._emit("payment_intent.payment_failed", intent)
            return None
        completed = {
            "status": "complete",
            "url": None,
            "customer_details": {
                "address": None,
                "email": session["customer_email"],
                "name": None,
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
            },
        }
        if intent is None:  # nothing to pay (a 100% coupon): Stripe makes no PaymentIntent
            session.update(completed, payment_status="no_payment_required")
            self._redeem(session)
            self._emit("checkout.session.completed", session)
        elif outcome in ("approve", "3ds_complete"):
            intent["payment_method_types"] = ["card"]
            charge_id = self._succeed_locked(intent)
            session.update(completed, payment_status="paid")
            self._redeem(session)
            self._emit("payment_intent.succeeded", intent)
            self._emit("charge.succeeded", self._charge_object(charge_id))
            self._emit("checkout.session.completed", session)
        else:  # bank_ok / bank_fail: submitted now, the bank answers at settle_bank()
            intent.update(
                status="processing",
                payment_method=self._new_id("pm"),
                last_payment_error=None,
                payment_method_types=["us_bank_account"],
            )
            session.update(completed, payment_status="unpaid")
            self._bank_outcome[session_id] = outcome
            self._redeem(session)
            self._emit("checkout.session.completed", session)
        return (session["success_url"] or "").replace("{CHECKOUT_SESSION_ID}", session_id)

    def _session_intent(self, session: dict) -> dict:
        """Under the lock: the session's PaymentIntent, made at the first attempt to pay (as Stripe does since
        2022-08-01) with payment_intent_data's metadata, and reused by the next attempts."""
        if session["payment_intent"] is None:
            data = self._intent_data.get(session["id"]) or {}
            created = self._create_intent(
                {
                    "amount": str(session["amount_total"]),
                    "currency": session["currency"],
                    "description": data.get("description"),
                    "metadata": data.get("metadata") or {},
                }
            )
            session["payment_intent"] = created["id"]
        return self.intents[session["payment_intent"]]

    def _redeem(self, session: dict) -> None:
        for discount in session["discounts"]:
            coupon = self.coupons.get(discount["coupon"])
            if coupon is not None:
                coupon["times_redeemed"] += 1
                if coupon["max_redemptions"] and coupon["times_redeemed"] >= coupon["max_redemptions"]:
                    coupon["valid"] = False

    @staticmethod
    def _send_page(handler: BaseHTTPRequestHandler, status: int, page: str) -> int:
        data = page.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        handler.wfile.write(data)
        return status

    def _shop_name(self) -> str:
        return ((self.account.get("settings") or {}).get("dashboard") or {}).get("display_name") or "Test shop"

    def _html(self, heading: str, main: str) -> str:
        title = html.escape(f"{heading} – {self._shop_name()}" if heading != f"Pay {self._shop_name()}" else heading)
        return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; color: #1a1a1a; background: #f6f8fa; margin: 0; line-height: 1.45; }}
main {{ max-width: 30rem; margin: 1.5rem auto; padding: 1.25rem; background: #fff; border: 1px solid #d0d7de;
        border-radius: 8px; }}
h1 {{ font-size: 1.4rem; margin: .75rem 0 .5rem; }}
h2 {{ font-size: 1.05rem; margin: 1.25rem 0 .5rem; }}
.due {{ font-size: 1.6rem; font-weight: 600; margin: 0 0 1rem; }}
table {{ width: 100%; border-collapse: collapse; }}
caption {{ text-align: left; font-weight: 600; padding-bottom: .25rem; }}
th, td {{ padding: .3rem 0; text-align: left; vertical-align: top; }}
.num {{ text-align: right; white-space: nowrap; }}
tfoot tr:first-child > * {{ border-top: 1px solid #d0d7de; }}
tfoot tr:last-child > * {{ font-weight: 700; }}
form {{ margin: .5rem 0; }}
button {{ width: 100%; padding: .7rem 1rem; font: inherit; font-weight: 600; border-radius: 6px; cursor: pointer;
          border: 2px solid #4b44d6; background: #4b44d6; color: #fff; }}
button.other {{ background: #fff; color: #3a33b8; }}
a {{ color: #3a33b8; }}
:focus-visible {{ outline: 3px solid #0b57d0; outline-offset: 2px; }}
.error {{ color: #8c1d18; background: #fdecea; border: 1px solid #c5221f; border-radius: 6px; padding: .6rem .8rem; }}
.note {{ color: #57606a; font-size: .9rem; }}
</style>
</head>
<body>
<main>
{main}
</main>
</body>
</html>
"""

    def _back(self, session: dict) -> str:
        if not session.get("cancel_url"):
            return ""
        return f'<p><a href="{html.escape(session["cancel_url"])}">← Back</a></p>'

    def _summary(self, session: dict) -> str:
        cur = session["currency"]
        rows = "".join(
            f'<tr><td>{html.escape(item["description"])}</td><td class="num">{item["quantity"]}</td>'
            f'<td class="num">{money(item["amount_subtotal"], cur)}</td></tr>'
            for item in self._line_items.get(session["id"], [])
        )
        totals = [("Subtotal", money(session["amount_subtotal"], cur))]
        if session["total_details"]["amount_discount"]:
            totals.append(("Discount", "−" + money(session["total_details"]["amount_discount"], cur)))
        if session["shipping_cost"]:
            rate = self.shipping_rates.get(session["shipping_cost"]["shipping_rate"]) or {}
            label = f"Shipping ({rate['display_name']})" if rate.get("display_name") else "Shipping"
            totals.append((label, money(session["shipping_cost"]["amount_total"], cur)))
        totals.append(("Total", money(session["amount_total"], cur)))
        foot = "".join(
            f'<tr><th scope="row" colspan="2">{html.escape(label)}</th><td class="num">{value}</td></tr>'
            for label, value in totals
        )
        email = (
            f"<p>Receipt to <strong>{html.escape(session['customer_email'])}</strong></p>"
            if session.get("customer_email")
            else ""
        )
        return (
            f'<table><caption>Your order</caption><thead><tr><th scope="col">Item</th>'
            f'<th scope="col" class="num">Qty</th><th scope="col" class="num">Amount</th></tr></thead>'
            f"<tbody>{rows}</tbody><tfoot>{foot}</tfoot></table>{email}"
        )

    def _button(self, session: dict, outcome: str, label: str, other: bool = False) -> str:
        css = ' class="other"' if other else ""
        return (
            f'<form method="post" action="/c/pay/{html.escape(session["id"])}">'
            f'<input type="hidden" name="outcome" value="{outcome}">'
            f'<button type="submit"{css}>{html.escape(label)}</button></form>'
        )

    def _pay_page(self, session: dict, error: str | None = None) -> str:
        heading = f"Pay {self._shop_name()}"
        alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
        body = (
            f"{self._back(session)}<h1>{html.escape(heading)}</h1>{alert}"
            f'<p class="due">{money(session["amount_total"], session["currency"])}</p>{self._summary(session)}'
            f"<h2>Card</h2>"
            f"{self._button(session, 'approve', 'Pay')}"
            f"{self._button(session, 'decline', 'Pay (card declined)', other=True)}"
            f"{self._button(session, '3ds', 'Pay with 3-D Secure', other=True)}"
            f"<h2>Bank transfer</h2>"
            f"{self._button(session, 'bank_ok', 'Pay by bank (succeeds later)', other=True)}"
            f"{self._button(session, 'bank_fail', 'Pay by bank (fails later)', other=True)}"
            f'<p class="note">A local test payment page: nothing is charged.</p>'
        )
        return self._html(heading, body)

    def _auth_page(self, session: dict) -> str:
        amount = money(session["amount_total"], session["currency"])
        body = (
            f"<h1>Complete authentication</h1>"
            f"<p>Your bank asks you to confirm the payment of <strong>{amount}</strong> to "
            f"{html.escape(self._shop_name())}.</p>"
            f"{self._button(session, '3ds_complete', 'Complete')}"
            f"{self._button(session, '3ds_fail', 'Fail', other=True)}"
        )
        return self._html("Complete authentication", body)

    def _closed_page(self, session: dict) -> str:
        if session["status"] == "expired":
            heading, text = "This payment page has expired", "Go back to the shop to start the payment again."
        elif session["payment_status"] == "unpaid":  # a bank payment waiting for the bank
            heading, text = "This payment is already being processed", "Nothing more will be charged."
        else:
            heading, text = "This payment has already been paid", "Nothing more will be charged."
        return self._html(heading, f"{self._back(session)}<h1>{heading}</h1><p>{text}</p>")
