"""A Redis gate in front of the hot variant rows: a variant known to be sold out is refused at checkout without
locking its row, so a flash sale's thousand late buyers do not queue behind the row the few winners need.

PostgreSQL stays the truth, and the gate only ever refuses: a checkout that passes it still locks the rows and
checks them (shop.inventory.services.check_available), so the gate cannot oversell. It can only wrongly refuse
while it is behind, and it is kept in step:
  * a flag `stock:soldout:<database>:<variant id>` is set when a checkout finds the variant's availability at 0
    under its row lock, and after every commit that leaves it at 0;
  * it is removed after every commit that leaves the variant with units to sell (a hold released or expired, an
    order cancelled, a stock count raised);
  * it lapses after STOCK_GATE_SECONDS in any case, so a removal lost to a Redis error costs at most that long.
A Redis error opens the gate (PostgreSQL answers, as before it existed). STOCK_GATE_ENABLED=0 turns it off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


def enabled() -> bool:
    return has_app_context() and bool(current_app.config.get("STOCK_GATE_ENABLED", True))


def _key(variant_id: int) -> str:
    # The database's name keeps two shops (or two test databases) on one Redis apart.
    database = current_app.extensions.get("stock_gate_db")
    if database is None:
        database = current_app.extensions["stock_gate_db"] = make_url(
            current_app.config["SQLALCHEMY_DATABASE_URI"]
        ).database
    return f"stock:soldout:{database}:{variant_id}"


def _redis() -> Any:
    from shop.extensions import redis_ext

    return redis_ext.client


def sold_out(variant_ids: Iterable[int]) -> set[int]:
    """The variants among `variant_ids` the gate knows to be sold out (empty when off or when Redis fails)."""
    ids = sorted(set(variant_ids))
    if not ids or not enabled():
        return set()
    try:
        flags = _redis().mget([_key(vid) for vid in ids])
    except Exception as exc:  # noqa: BLE001 - refused, timeout...: the gate opens, PostgreSQL decides
        log.warning("stock gate: Redis unavailable (%s); checkouts go to PostgreSQL", exc)
        return set()
    return {vid for vid, flag in zip(ids, flags) if flag is not None}


def mark(available: Mapping[int, int]) -> None:
    """Bring the gate in step with committed availability ({variant id: units available})."""
    if not available or not enabled():
        return
    ttl = max(1, int(current_app.config.get("STOCK_GATE_SECONDS", 5)))
    try:
        pipe = _redis().pipeline(transaction=False)
        for vid, units in sorted(available.items()):
            if units <= 0:
                pipe.set(_key(vid), 1, ex=ttl)
            else:
                pipe.delete(_key(vid))
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - a flag left behind lapses after its TTL
        log.warning("stock gate: could not update %d flag(s) (%s); they lapse in %ss", len(available), exc, ttl)
