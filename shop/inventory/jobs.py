"""Scheduled inventory work: release reservations whose time ran out and cancel their unpaid orders."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import select

from shop.extensions import db
from shop.inventory.models import Reservation

log = logging.getLogger(__name__)


def expire_reservations(now: datetime | None = None, limit: int = 500) -> int:
    """Cancel pending orders whose holds expired (each in its own transaction); returns how many. An order whose hold
    was extended meanwhile (a bank payment submitted on Stripe's page) is left pending."""
    from shop.orders import services as orders
    from shop.orders import states
    from shop.payments import services as payments

    now = now or datetime.now(timezone.utc)
    order_ids = db.session.scalars(
        select(Reservation.order_id).where(Reservation.status == "active", Reservation.expires_at <= now)
        .group_by(Reservation.order_id).order_by(Reservation.order_id).limit(limit)).all()
    db.session.commit()
    cancelled = 0
    for order_id in order_ids:
        # A hosted Stripe page still open for it is closed at Stripe first (outside any transaction), so nobody pays
        # for stock about to be released; a page found paid (or a bank payment submitted) is applied instead.
        try:
            if not payments.close_sessions(order_id):
                continue
        except Exception:  # noqa: BLE001 - one order's trouble must not stop every other hold from ending
            db.session.rollback()
            log.exception("closing the payment pages of order %s failed; tried again at the next sweep", order_id)
            continue
        order = orders.lock(order_id)  # the payment webhook takes this same lock: one of them goes first
        held = orders.hold_expires_at(order_id)
        if held is not None and held.replace(tzinfo=held.tzinfo or timezone.utc) > now:
            db.session.commit()  # its hold was extended meanwhile (close_sessions found a bank payment submitted)
            continue
        if order.status == states.PENDING:
            orders.move(order, states.CANCELLED, "system", "Payment not received before the reservation expired")
            cancelled += 1
        db.session.commit()
    if cancelled:
        log.info("expired %s reservations", cancelled)
    return cancelled


# -- low-stock scan (hourly) ----------------------------------------------------------------------
REPORTED_KEY = "shop:low_stock:reported"  # Redis hash: variant id -> "low" | "out", as last reported


def scan_low_stock(now: datetime | None = None) -> list[str]:
    """Mail each active manager one list of the variants that went low since the last scan.

    What was reported is remembered (REPORTED_KEY), so a variant is listed when it goes low, again
    when it runs out, and again only after it was restocked above its threshold and went low anew.
    The mail's key names the hour and the variants, so a duplicated or retried scan mails once.
    Returns the SKUs reported."""
    import hashlib

    from shop.accounts.models import User
    from shop.accounts.services import external_url
    from shop.extensions import redis_ext
    from shop.inventory.services import low_stock
    from shop.notifications import notify

    now = now or datetime.now(timezone.utc)
    lines = low_stock(limit=10_000)
    level = {str(line.variant_id): ("out" if line.available <= 0 else "low") for line in lines}
    reported = {k.decode(): v.decode() for k, v in redis_ext.client.hgetall(REPORTED_KEY).items()}
    went_low = [line for line in lines
                if reported.get(str(line.variant_id)) not in (level[str(line.variant_id)], "out")]
    if went_low:
        ids = ",".join(f"{line.variant_id}:{level[str(line.variant_id)]}" for line in went_low)
        scan = f"{now:%Y%m%d%H}:{hashlib.sha256(ids.encode()).hexdigest()[:16]}"
        managers = db.session.scalars(select(User).where(User.role == "manager", User.is_active_account.is_(True))
                                      .order_by(User.id)).all()
        payload_lines = [{"sku": line.sku, "product_name": line.product_name,
                          "options": ", ".join(f"{k} {v}" for k, v in (line.options or {}).items()),
                          "available": line.available, "threshold": line.threshold} for line in went_low]
        for manager in managers:
            notify("inventory.low_stock", manager.email,
                   {"name": manager.name, "count": len(went_low), "lines": payload_lines,
                    "link": external_url("low_stock.index")}, key=f"low-stock:{scan}:user:{manager.id}")
        db.session.commit()  # the mails are queued now
    with redis_ext.client.pipeline() as pipe:
        pipe.delete(REPORTED_KEY)
        if level:
            pipe.hset(REPORTED_KEY, mapping=level)
        pipe.execute()
    if went_low:
        log.info("low stock: %s variant(s) went low", len(went_low))
    return [line.sku for line in went_low]
