"""Payment jobs: the test gateway's event delivery, and starting payments a dead checkout left half-started."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import stripe


def test_event(intent_id: str, payment, outcome: str) -> dict:
    """A Stripe-shaped event for the test gateway's decision."""
    succeeded = outcome == "approve"
    intent = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": payment.amount,
        "currency": payment.currency.lower(),
        "status": "succeeded" if succeeded else "requires_payment_method",
        "metadata": {"order_id": str(payment.order_id), "payment_id": str(payment.id)},
    }
    if not succeeded:
        intent["last_payment_error"] = {"message": "Your card was declined (test gateway)."}
    return {
        "id": f"evt_test_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "created": int(time.time()),
        "type": "payment_intent.succeeded" if succeeded else "payment_intent.payment_failed",
        "data": {"object": intent},
    }


def deliver_signed_event(url: str, event: dict, secret: str) -> int:
    """POST the event to a webhook URL, signed as Stripe signs. Raises on non-2xx so RQ retries."""
    body = json.dumps(event)
    req = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, secret),
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - our own configured URL
        return resp.status


STUCK_AFTER_SECONDS = 120  # far longer than a provider call may take (10 s timeout, 2 retries)
START_LEASE_SECONDS = 60  # a sweep's claim on a payment it is starting: longer than that call, too


def finish_stuck_payments(older_than_seconds: int = STUCK_AFTER_SECONDS) -> dict:
    """Scheduled: payments left `creating` by a checkout that died between its commit and the provider's
    answer (web process or PostgreSQL killed). Each is started now (Stripe sees the same idempotency key,
    so an intent the dead copy did create is returned, not doubled); when that fails the order is
    cancelled and its hold released (payments.start does both); a payment whose order is no longer
    pending (its reservation expired) is cancelled without asking the provider.

    Two sweeps at once never start the same payment: a sweep takes one by moving its `updated_at` a lease
    (START_LEASE_SECONDS) into the future, only if it is still stale (one guarded UPDATE wins; the other
    sees a row that is not stale until the lease has run out), and payments.start re-reads the row
    under its lock before recording anything."""
    from sqlalchemy import func, select, update

    from shop.extensions import db
    from shop.orders import services as orders
    from shop.orders import states
    from shop.payments import services as payments
    from shop.payments.models import Payment, PaymentStatus

    stale = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds)
    creating = PaymentStatus.CREATING
    ids = db.session.scalars(
        select(Payment.id).where(Payment.status == creating, Payment.updated_at < stale).order_by(Payment.id).limit(100)
    ).all()
    db.session.commit()
    outcome = {"started": 0, "failed": 0, "cancelled": 0}
    for payment_id in ids:
        taken = db.session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.status == creating, Payment.updated_at < stale)
            .values(updated_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, START_LEASE_SECONDS))
        ).rowcount
        db.session.commit()
        if not taken:
            continue  # another sweep has it, or it was started meanwhile
        order_id = db.session.scalar(select(Payment.order_id).where(Payment.id == payment_id))
        order = orders.lock(order_id)
        payment = payments.lock_payment(payment_id)
        if payment.status != creating:  # started meanwhile (a checkout retried with its key resumes it too)
            db.session.commit()
            continue
        if order.status != states.PENDING:  # expired or cancelled meanwhile: nothing left to pay for
            payment.status, payment.failure_reason = PaymentStatus.CANCELLED, f"order {order.status} before it started"
            outcome["cancelled"] += 1
            db.session.commit()
            continue
        # A "Pay again" attempt (not the order's first) keeps its order and hold if the provider fails again.
        first = db.session.scalar(select(func.min(Payment.id)).where(Payment.order_id == order_id)) == payment_id
        db.session.commit()
        try:
            payments.start(payment_id, cancel_on_failure=first)
            outcome["started"] += 1
        except payments.PaymentUnavailable:
            outcome["failed"] += 1  # logged by start(); a first attempt's order is cancelled, its stock released
    return outcome
