"""Scheduled inventory work: the low-stock scan. (Holds that run out are ended by shop.orders.jobs: ending one
cancels its order.)"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from shop import clock
from shop.extensions import db

log = logging.getLogger(__name__)


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

    now = now or clock.now()
    lines = low_stock(limit=10_000)
    level = {str(line.variant_id): ("out" if line.available <= 0 else "low") for line in lines}
    reported = {k.decode(): v.decode() for k, v in redis_ext.client.hgetall(REPORTED_KEY).items()}
    went_low = [
        line for line in lines if reported.get(str(line.variant_id)) not in (level[str(line.variant_id)], "out")
    ]
    if went_low:
        ids = ",".join(f"{line.variant_id}:{level[str(line.variant_id)]}" for line in went_low)
        scan = f"{now:%Y%m%d%H}:{hashlib.sha256(ids.encode()).hexdigest()[:16]}"
        managers = db.session.scalars(
            select(User).where(User.role == "manager", User.is_active_account.is_(True)).order_by(User.id)
        ).all()
        payload_lines = [
            {
                "sku": line.sku,
                "product_name": line.product_name,
                "options": ", ".join(f"{k} {v}" for k, v in (line.options or {}).items()),
                "available": line.available,
                "threshold": line.threshold,
            }
            for line in went_low
        ]
        for manager in managers:
            notify(
                "inventory.low_stock",
                manager.email,
                {
                    "name": manager.name,
                    "count": len(went_low),
                    "lines": payload_lines,
                    "link": external_url("low_stock.index"),
                },
                key=f"low-stock:{scan}:user:{manager.id}",
            )
        db.session.commit()  # the mails are queued now
    with redis_ext.client.pipeline() as pipe:
        pipe.delete(REPORTED_KEY)
        if level:
            pipe.hset(REPORTED_KEY, mapping=level)
        pipe.execute()
    if went_low:
        log.info("low stock: %s variant(s) went low", len(went_low))
    return [line.sku for line in went_low]
