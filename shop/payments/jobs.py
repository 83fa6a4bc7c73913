"""Payment jobs: the test gateway's event delivery, and periodic retries of failed webhook events."""
from __future__ import annotations

import json
import time
import urllib.request
import uuid

import stripe


def test_event(intent_id: str, payment, outcome: str) -> dict:
    """A Stripe-shaped event for the test gateway's decision."""
    succeeded = outcome == "approve"
    intent = {"id": intent_id, "object": "payment_intent", "amount": payment.amount,
              "currency": payment.currency.lower(), "status": "succeeded" if succeeded else "requires_payment_method",
              "metadata": {"order_id": str(payment.order_id), "payment_id": str(payment.id)}}
    if not succeeded:
        intent["last_payment_error"] = {"message": "Your card was declined (test gateway)."}
    return {"id": f"evt_test_{uuid.uuid4().hex[:24]}", "object": "event", "created": int(time.time()),
            "type": "payment_intent.succeeded" if succeeded else "payment_intent.payment_failed",
            "data": {"object": intent}}


def deliver_signed_event(url: str, event: dict, secret: str) -> int:
    """POST the event to a webhook URL, signed as Stripe signs. Raises on non-2xx so RQ retries."""
    body = json.dumps(event)
    req = urllib.request.Request(url, data=body.encode(), method="POST", headers={
        "Content-Type": "application/json",
        "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, secret)})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - our own configured URL
        return resp.status


def retry_failed_webhooks() -> int:
    from shop.webhooks.services import retry_failed

    return retry_failed()
