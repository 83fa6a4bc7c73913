"""Scheduled inventory work: release reservations whose time ran out and cancel their unpaid orders."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import select

from shop.extensions import db
from shop.inventory.models import Reservation

log = logging.getLogger(__name__)


def expire_reservations(now: datetime | None = None, limit: int = 500) -> int:
    """Cancel pending orders whose holds expired (each in its own transaction); returns how many."""
    from shop.orders import services as orders
    from shop.orders import states

    now = now or datetime.now(timezone.utc)
    order_ids = db.session.scalars(
        select(Reservation.order_id).where(Reservation.status == "active", Reservation.expires_at <= now)
        .group_by(Reservation.order_id).order_by(Reservation.order_id).limit(limit)).all()
    db.session.commit()
    cancelled = 0
    for order_id in order_ids:
        order = orders.lock(order_id)  # the payment webhook takes this same lock: one of them goes first
        if order.status == states.PENDING:
            orders.move(order, states.CANCELLED, "system", "Payment not received before the reservation expired")
            cancelled += 1
        db.session.commit()
    if cancelled:
        log.info("expired %s reservations", cancelled)
    return cancelled
