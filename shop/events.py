"""Domain events: the names every business event goes by, and the in-process signals that let one domain react to
another without importing it.

A domain that changes something sends a signal; the domains that care connect receivers to it in their own
modules. So orders never imports payments, inventory or promotions: cancelling an order sends `order_cancelled`,
and payments (refund), inventory (stock back) and promotions (coupon uses back) each handle it, in the same
transaction. Receivers that lock rows run in the shop's lock order (`emit`): promotions, then variants, then the
rest, as checkout takes them.

`TYPES` is the catalogue of event types and their versions, with the envelope every event has once it leaves the
process (`envelope`): {id, type, version, occurred_at, aggregate: {type, id}, data}.

Events that leave the process go through the outbox: `publish()` writes the envelope as an "event" row of
`outbox_job` in the transaction that makes the change it describes, so both commit or neither does. The relay
(`python worker.py relay`) streams committed rows in order per aggregate (shop.stream), and the consumer groups
(shop.consumers) apply each event once, by its id.

`DATA_FIELDS` names what each type's `data` carries (docs/events.md tells consumers more). Where they are
published: order.* by shop.orders.services (new_order, move; order.refunded also by payments for a partial refund),
payment.* and refund.succeeded by shop.payments.services, product.* by a commit hook in shop.catalog.changes,
stock.* by a commit hook in shop.inventory.services, customer.created by shop.accounts.services.register. No event
carries an e-mail address, a name or a postal address.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from blinker import Namespace
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shop import clock
from shop.telemetry import tracing

TYPES = {  # type -> version of its `data`
    "order.placed": 1,
    "order.confirmed": 1,
    "order.cancelled": 1,
    "order.shipped": 1,
    "order.delivered": 1,
    "order.refunded": 1,
    "payment.succeeded": 1,
    "payment.failed": 1,
    "refund.succeeded": 1,
    "product.created": 1,
    "product.updated": 1,
    "product.deleted": 1,
    "stock.changed": 1,
    "stock.low": 1,
    "customer.created": 1,
}

# The order snapshot every order.* event carries (shop.orders.services.snapshot); money in minor units.
_ORDER = (
    "order_id",
    "number",
    "status",
    "currency",
    "subtotal",
    "discount",
    "shipping",
    "tax",
    "total",
    "refunded",
    "created_at",
    "customer_id",
    "lines[sku, quantity, unit_price]",
)
_PAYMENT = ("payment_id", "order_id", "amount", "currency", "provider", "flow", "status")
_PRODUCT = ("product_id", "slug", "name", "status", "price_min", "currency", "variants[id, sku, price]")
_STOCK = ("variant_id", "sku", "product_id", "on_hand", "reserved", "available")
DATA_FIELDS = {  # type -> the fields of its `data` (version 1)
    "order.placed": _ORDER,
    "order.confirmed": _ORDER,
    "order.cancelled": _ORDER + ("was_paid",),
    "order.shipped": _ORDER,
    "order.delivered": _ORDER,
    "order.refunded": _ORDER,
    "payment.succeeded": _PAYMENT,
    "payment.failed": _PAYMENT + ("reason",),
    "refund.succeeded": ("refund_id", "payment_id", "order_id", "amount", "currency"),
    "product.created": _PRODUCT,
    "product.updated": _PRODUCT,
    "product.deleted": ("product_id", "slug"),
    "stock.changed": _STOCK,
    "stock.low": _STOCK + ("threshold",),
    "customer.created": ("customer_id", "created_at"),
}

_signals = Namespace()

# Sent with the order id, outside any transaction, before an unpaid order is cancelled (its hold ended, or a person
# cancels it). A receiver returns False when the order must not be cancelled now (payments: its Stripe page turned
# out paid, or cannot be closed yet).
order_cancelling = _signals.signal("order.cancelling")

# Sent with the locked order inside the transaction that cancels it, before its status changes; keyword arguments:
# `was_paid` (it was confirmed or later: stock goes back on the shelf and the money back to the shopper), `actor`,
# `note`.
order_cancelled = _signals.signal("order.cancelled")

# Sent with an order id while an order event's snapshot is made; payments answers with the money given back (or on
# its way back) on that order, the sum of its payments' refunded amounts: orders may not import payments.
order_refunded_total = _signals.signal("order.refunded-total")

LOCK_ORDER = {"promotions": 10, "inventory": 20}  # receivers' rank; the others run after these


F = TypeVar("F", bound=Callable[..., Any])


def ranked(rank: str | int) -> Callable[[F], F]:
    """Mark a receiver with its place in the lock order (a LOCK_ORDER name or a number)."""

    def mark(fn: F) -> F:
        fn.lock_rank = LOCK_ORDER.get(rank, rank) if isinstance(rank, str) else rank  # type: ignore[attr-defined]
        return fn

    return mark


def emit(signal, sender, **kwargs) -> list:
    """Send `signal` to its receivers in lock order; returns their answers."""
    receivers = sorted(signal.receivers_for(sender), key=lambda fn: getattr(fn, "lock_rank", 100))
    return [fn(sender, **kwargs) for fn in receivers]


def may_proceed(signal, sender, **kwargs) -> bool:
    """True unless a receiver answered False (a veto)."""
    return all(answer is not False for answer in emit(signal, sender, **kwargs))


def envelope(type_: str, aggregate_type: str, aggregate_id, data: dict, event_id: str | None = None) -> dict:
    """An event as it leaves the process: stable id, type, version, time, aggregate and data."""
    if type_ not in TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    return {
        "id": event_id or str(uuid.uuid4()),
        "type": type_,
        "version": TYPES[type_],
        "occurred_at": clock.now().isoformat(),
        "aggregate": {"type": aggregate_type, "id": str(aggregate_id)},
        "data": data,
    }


WAKE_CHANNEL = "shop_events"  # NOTIFY'd by a transaction that published: the relay LISTENs and wakes at its commit
_NOTIFIED = "events_notified"


def publish(type_: str, aggregate_type: str, aggregate_id, data: dict, session: Session | None = None) -> dict:
    """Record an event in the outbox within `session`'s transaction (the app's by default): it leaves the process
    once that transaction commits, and never if it rolls back. Returns the envelope. `data` must be JSON-able."""
    return publish_many([(type_, aggregate_type, aggregate_id, data)], session)[0]


def publish_many(items, session: Session | None = None) -> list[dict]:
    """publish() for many events at once: `items` are (type, aggregate_type, aggregate_id, data); one multi-row
    INSERT (the commit hooks of the catalogue and stock publish a batch per transaction, thousands for a seed)."""
    from shop.extensions import db
    from shop.outbox import OutboxJob

    items = list(items)
    if not items:
        return []
    session = session if session is not None else db.session()
    topic = current_topic()
    envs = [envelope(type_, aggregate_type, aggregate_id, data) for type_, aggregate_type, aggregate_id, data in items]
    trace_parent = tracing.traceparent()
    session.execute(
        insert(OutboxJob),
        [
            {
                "kind": "event",
                "queue": topic,
                "key": f"{env['aggregate']['type']}:{env['aggregate']['id']}",
                "function": env["type"],
                "args": [],
                "kwargs": env,
                "retry": None,
                **({"trace_parent": trace_parent} if trace_parent else {}),
            }
            for env in envs
        ],
    )
    if not session.info.get(_NOTIFIED):
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})
        session.info[_NOTIFIED] = True
    return envs


def current_topic() -> str:
    from flask import current_app

    return current_app.config.get("EVENT_STREAM_TOPIC") or "shop.events"


def _forget_notified(session, *args) -> None:
    session.info.pop(_NOTIFIED, None)


def _install_session_hooks() -> None:
    from sqlalchemy import event as sa_event

    # A NOTIFY belongs to its transaction: after a commit or rollback, the next publish sends one again.
    sa_event.listen(Session, "after_commit", _forget_notified)
    sa_event.listen(Session, "after_rollback", _forget_notified)


_install_session_hooks()
