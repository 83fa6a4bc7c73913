"""Scheduled order work: end the stock holds whose time ran out by cancelling their unpaid orders."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select

from shop import clock, events
from shop.extensions import db
from shop.inventory.models import Reservation
from shop.orders import services as orders
from shop.orders import states
from shop.telemetry import metrics

log = logging.getLogger(__name__)


def expire_reservations(now: datetime | None = None, limit: int = 500) -> int:
    """Cancel pending orders whose holds expired (each in its own transaction); returns how many. An order whose hold
    was extended meanwhile (a bank payment submitted on Stripe's page) is left pending."""
    now = now or clock.now()
    order_ids = db.session.scalars(
        select(Reservation.order_id)
        .where(Reservation.status == "active", Reservation.expires_at <= now)
        .group_by(Reservation.order_id)
        .order_by(Reservation.order_id)
        .limit(limit)
    ).all()
    db.session.commit()
    cancelled = 0
    for order_id in order_ids:
        # Its payment pages are closed first, outside any transaction (payments' receiver expires an open Stripe
        # page, so nobody pays for stock about to be released; a page found paid is applied instead: a veto).
        try:
            if not events.may_proceed(events.order_cancelling, order_id):
                continue
        except Exception:  # noqa: BLE001 - one order's trouble must not stop every other hold from ending
            db.session.rollback()
            log.exception("closing the payment pages of order %s failed; tried again at the next sweep", order_id)
            continue
        order = orders.lock(order_id)  # the payment webhook takes this same lock: one of them goes first
        held = orders.hold_expires_at(order_id)
        if held is not None and held.replace(tzinfo=held.tzinfo or UTC) > now:
            db.session.commit()  # its hold was extended meanwhile (close_sessions found a bank payment submitted)
            continue
        expired = order.status == states.PENDING
        if expired:
            orders.move(order, states.CANCELLED, "system", "Payment not received before the reservation expired")
            cancelled += 1
        db.session.commit()
        if expired:
            metrics.RESERVATIONS_EXPIRED.inc()
    if cancelled:
        log.info("expired %s reservations", cancelled)
    return cancelled
