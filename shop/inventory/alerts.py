"""Consumer group "alerts": a variant whose stock fell to its low-stock threshold is mailed to the managers at once.

The hourly scan (shop.inventory.jobs.scan_low_stock) stays as the safety net; this group marks what it mailed in
the scan's record, so the scan does not list the same variant again. Each mail's key names the event, so a
redelivered event never mails twice (and the consumed_event claim skips it anyway).
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from sqlalchemy import select

from shop.consumers import consumer
from shop.extensions import db

log = logging.getLogger(__name__)


@consumer("alerts", types={"stock.low"})
def low_stock_alert(envelope: dict) -> None:
    """Mail every active manager that a variant of an active product went low (stock.low)."""
    from shop.accounts.models import User
    from shop.accounts.services import external_url
    from shop.catalog.models import Product, Variant
    from shop.notifications import notify

    data = envelope["data"]
    found = db.session.execute(
        select(Product.name, Product.status, Variant.options)
        .join(Product, Product.id == Variant.product_id)
        .where(Variant.id == data["variant_id"])
    ).first()
    if found is None or found.status != "active":  # gone since, or a draft nobody can buy: the list shows neither
        return
    line = {
        "sku": data["sku"],
        "product_name": found.name,
        "options": ", ".join(f"{k} {v}" for k, v in (found.options or {}).items()),
        "available": data["available"],
        "threshold": data["threshold"],
    }
    managers = db.session.scalars(
        select(User).where(User.role == "manager", User.is_active_account.is_(True)).order_by(User.id)
    ).all()
    for manager in managers:
        notify(
            "inventory.low_stock",
            manager.email,
            {"name": manager.name, "count": 1, "lines": [line], "link": external_url("low_stock.index")},
            key=f"low-stock-event:{envelope['id']}:user:{manager.id}",
        )
    _mark_reported(data["variant_id"], "out" if data["available"] <= 0 else "low")


def _mark_reported(variant_id: int, level: str) -> None:
    """Tell the hourly scan this variant was reported at `level` (best effort: at worst it is listed again)."""
    from shop.extensions import redis_ext
    from shop.inventory.jobs import REPORTED_KEY

    try:
        redis_ext.client.hset(REPORTED_KEY, str(variant_id), level)
    except RedisError as exc:
        log.warning("could not mark variant %s as reported to the low-stock scan: %s", variant_id, exc)
