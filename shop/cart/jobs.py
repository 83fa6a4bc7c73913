"""Scheduled cart work: forget carts nobody will come back to."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select

from shop import clock
from shop.cart.models import Cart, CartStatus
from shop.extensions import db

log = logging.getLogger(__name__)
ABANDONED_AFTER_DAYS = 30


def purge_abandoned_carts(now: datetime | None = None, days: int = ABANDONED_AFTER_DAYS, batch: int = 1000) -> int:
    """Delete open guest carts untouched for `days`, and merged or converted carts older than that
    (orders keep their own copy of every line). Batched, one transaction each; returns how many."""
    now = now or clock.now()
    cutoff = now - timedelta(days=days)
    stale = or_(
        (Cart.status == CartStatus.OPEN) & Cart.user_id.is_(None),
        Cart.status.in_((CartStatus.MERGED, CartStatus.CONVERTED)),
    )
    deleted = 0
    while True:
        ids = db.session.scalars(select(Cart.id).where(stale, Cart.updated_at < cutoff).limit(batch)).all()
        if not ids:
            break
        db.session.execute(delete(Cart).where(Cart.id.in_(ids), Cart.updated_at < cutoff))
        db.session.commit()
        deleted += len(ids)
        if len(ids) < batch:
            break
    db.session.commit()
    if deleted:
        log.info("deleted %s abandoned carts", deleted)
    return deleted
