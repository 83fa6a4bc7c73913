"""Stock levels: setting on-hand counts and finding what runs low; stock.changed and stock.low leave the process
from here (a commit hook sees every writer: reservations, payments, stock counts, back-office edits)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import and_, inspect, select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from shop import clock, events
from shop.catalog.models import Product, Variant
from shop.errors import Conflict, NotFound, ValidationError
from shop.extensions import db
from shop.inventory import gate


@dataclass
class LowStockLine:
    variant_id: int
    sku: str
    product_id: int
    product_name: str
    options: dict[str, str]
    on_hand: int
    threshold: int
    available: int = 0  # on hand minus live reservations


MAX_ON_HAND = 10_000_000
MAX_THRESHOLD = 1_000_000
KEEP = object()  # set_on_hand(low_stock_threshold=KEEP): leave the variant's threshold as it is


def _whole(value: object, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= hi


def set_on_hand(variant_id: int, on_hand: Any, *, low_stock_threshold: Any = KEEP) -> Variant:
    """A stock count from the warehouse replaces the number on hand; the back-office may set the variant's own
    low-stock threshold with it (None: the shop's default). The one write path for stock counts (the API and the
    back-office alike): bounds checked first, then the variant row locked, so counts don't interleave with
    checkouts and each other."""
    fields = {}
    if not _whole(on_hand, MAX_ON_HAND):
        fields["on_hand"] = f"must be a whole number from 0 to {MAX_ON_HAND:,}"
    if (
        low_stock_threshold is not KEEP
        and low_stock_threshold is not None
        and not _whole(low_stock_threshold, MAX_THRESHOLD)
    ):
        fields["low_stock_threshold"] = f"must be a whole number from 0 to {MAX_THRESHOLD:,}, or empty"
    if fields:
        raise ValidationError(fields)
    variant = lock_variants([variant_id]).get(variant_id)
    if variant is None:
        raise NotFound(InventoryErrorCode.VARIANT_NOT_FOUND, "No variant with this id.")
    variant.on_hand = on_hand
    if low_stock_threshold is not KEEP:
        variant.low_stock_threshold = low_stock_threshold
    db.session.commit()
    return variant


def _low_stock_terms(threshold: int | None) -> tuple[Any, Any, Any]:
    """(each variant's limit, its available stock, the condition "at or below its limit")."""
    from sqlalchemy import func, literal

    default = current_app.config["LOW_STOCK_THRESHOLD"]
    limit_of = literal(threshold) if threshold is not None else func.coalesce(Variant.low_stock_threshold, default)
    available = Variant.on_hand - Variant.reserved
    return limit_of, available, and_(Product.status == "active", available <= limit_of)


def low_stock(threshold: int | None = None, limit: int = 500) -> list[LowStockLine]:
    """Variants of active products whose available stock (on hand - reserved) is at or below their own
    threshold (Variant.low_stock_threshold, else LOW_STOCK_THRESHOLD; or `threshold` for all), emptiest first.
    At most `limit` of them: low_stock_count() says how many there are in all."""
    from sqlalchemy import func

    limit_of, available, is_low = _low_stock_terms(threshold)
    rows = db.session.execute(
        select(
            Variant.id,
            Variant.sku,
            Product.id,
            Product.name,
            Variant.options,
            Variant.on_hand,
            limit_of,
            func.greatest(available, 0),
        )
        .join(Product, Product.id == Variant.product_id)
        .where(is_low)
        .order_by(available, Variant.sku)
        .limit(limit)
    ).all()
    return [LowStockLine(*r) for r in rows]


def low_stock_count(threshold: int | None = None) -> int:
    """How many variants low_stock() would list without its limit (one COUNT query)."""
    from sqlalchemy import func

    _, _, is_low = _low_stock_terms(threshold)
    return (
        db.session.scalar(
            select(func.count()).select_from(Variant).join(Product, Product.id == Variant.product_id).where(is_low)
        )
        or 0
    )


# -- reservations ---------------------------------------------------------------------------------
# The rules that keep stock honest under concurrency, in one place:
#  * every change to a variant's on_hand/reserved happens with that variant row locked
#    (SELECT ... FOR UPDATE), and rows are always locked in ascending id order, so two checkouts
#    that share variants queue up instead of deadlocking;
#  * a reservation is taken only while on_hand - reserved covers it, under that lock;
#  * a reservation changes state (active -> consumed | released) exactly once, guarded by its
#    current state in the UPDATE's WHERE clause.
class InventoryErrorCode(StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    VARIANT_NOT_FOUND = "variant_not_found"


class OutOfStock(Conflict):
    """Fewer units can be bought than asked: `available` by SKU."""

    def __init__(
        self,
        shortages: dict[str, int],
        message: str = "Some items are no longer available in the quantity asked.",
        **details: Any,
    ):
        super().__init__(
            InventoryErrorCode.OUT_OF_STOCK, message, {"skus": sorted(shortages), "available": shortages, **details}
        )


def lock_variants(variant_ids: Iterable[int]) -> dict[int, Variant]:
    """Lock these variant rows, in id order, for the rest of the transaction."""
    ids = sorted(set(variant_ids))
    # FOR NO KEY UPDATE: exclusive for stock changes, yet compatible with the KEY SHARE locks that
    # foreign keys (order lines, cart items) take, so those inserts never deadlock against it.
    rows = db.session.scalars(
        select(Variant)
        .where(Variant.id.in_(ids))
        .order_by(Variant.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return {v.id: v for v in rows}


def check_available(wanted: dict[int, int]) -> dict[int, Variant]:
    """Lock the variants and make sure they cover `wanted`; OutOfStock names what is short."""
    variants = lock_variants(wanted)
    short = {
        variants[vid].sku if vid in variants else str(vid): (variants[vid].available if vid in variants else 0)
        for vid, qty in wanted.items()
        if vid not in variants or variants[vid].available < qty
    }
    if short:
        # Under the row locks: the committed truth. Sold-out variants close the gate for the buyers behind.
        gate.mark({vid: 0 for vid in wanted if vid in variants and variants[vid].available <= 0})
        raise OutOfStock(short)
    return variants


def reserve(order_id: int, wanted: dict[int, int], ttl_seconds: int) -> None:
    """Hold `wanted` ({variant_id: quantity}) for an order, all or nothing; OutOfStock names what is short.

    Runs inside the caller's transaction (flushes, does not commit)."""
    from datetime import timedelta

    from shop.inventory.models import Reservation

    variants = check_available(wanted)
    expires = clock.now() + timedelta(seconds=ttl_seconds)
    for vid in sorted(wanted):
        variants[vid].reserved += wanted[vid]
        db.session.add(Reservation(order_id=order_id, variant_id=vid, quantity=wanted[vid], expires_at=expires))
    db.session.flush()


def extend_hold(order_id: int, seconds: int) -> None:
    """Keep an order's active reservations at least `seconds` from now (a bank payment the shopper submitted in
    time, whose result comes later). Never shortens a hold. Flushes, does not commit."""
    from datetime import timedelta

    from sqlalchemy import func, update

    from shop.inventory.models import Reservation

    until = clock.now() + timedelta(seconds=seconds)
    db.session.execute(
        update(Reservation)
        .where(Reservation.order_id == order_id, Reservation.status == "active")
        .values(expires_at=func.greatest(Reservation.expires_at, until))
    )
    db.session.flush()


def _settle(order_id: int, to_status: str) -> dict[int, int]:
    """Move the order's active reservations to `to_status`; returns {variant_id: quantity} moved."""
    from sqlalchemy import update

    from shop.inventory.models import Reservation

    moved = db.session.execute(
        update(Reservation)
        .where(Reservation.order_id == order_id, Reservation.status == "active")
        .values(status=to_status)
        .returning(Reservation.variant_id, Reservation.quantity)
    ).all()
    held: dict[int, int] = {}
    for vid, qty in moved:
        held[vid] = held.get(vid, 0) + qty
    return held


def release(order_id: int) -> dict[int, int]:
    """Give an order's held units back to the shelf (cancellation, expiry, failed start of payment)."""
    held = _settle(order_id, "released")
    variants = lock_variants(held)
    for vid, qty in held.items():
        variants[vid].reserved = max(variants[vid].reserved - qty, 0)
    db.session.flush()
    return held


def consume(order_id: int) -> dict[int, int]:
    """Turn an order's reservations into a hard decrement of stock on hand: once, whoever calls twice."""
    held = _settle(order_id, "consumed")
    variants = lock_variants(held)
    for vid, qty in held.items():
        v = variants[vid]
        v.reserved = max(v.reserved - qty, 0)
        v.on_hand = max(v.on_hand - qty, 0)
    db.session.flush()
    return held


def take_now(wanted: dict[int, int]) -> bool:
    """Decrement on hand directly if the shelf still covers it (a late payment after expiry)."""
    variants = lock_variants(wanted)
    if any(vid not in variants or variants[vid].available < qty for vid, qty in wanted.items()):
        return False
    for vid, qty in wanted.items():
        variants[vid].on_hand -= qty
    db.session.flush()
    return True


def restock(returned: dict[int, int]) -> None:
    """Put units of a cancelled paid order back on hand (under the variant locks)."""
    variants = lock_variants(returned)
    for vid, qty in returned.items():
        if vid in variants:
            variants[vid].on_hand += qty
    db.session.flush()


@events.order_cancelled.connect
@events.ranked("inventory")
def _stock_back_when_cancelled(order: Any, *, was_paid: bool, **_: Any) -> None:
    """A cancelled order's units: held ones are released; paid, not shipped ones go back on the shelf."""
    if was_paid:
        restock({line.variant_id: line.quantity for line in order.lines if line.variant_id})
    else:
        release(order.id)


# -- stock.changed / stock.low -----------------------------------------------------------------------------------
# A variant's stock counts as changed when its on_hand or reserved at commit differ from what they were when the
# transaction first touched them: one stock.changed per variant per transaction, whatever path changed it, plus
# stock.low when its availability went from above its threshold to at or below it (once per crossing). A variant's
# opening stock (a new variant) is not a change; a deleted variant publishes nothing (product.updated says it).
_STOCK_MOVES = "stock_moves"  # session.info: {variant id: (variant, on_hand, reserved) when first touched}
_GATE = "stock_gate"  # session.info: {variant id: units available} as this transaction commits them


@sa_event.listens_for(Variant.on_hand, "set", active_history=True)
@sa_event.listens_for(Variant.reserved, "set", active_history=True)
def _load_previous_stock(target: Any, value: Any, oldvalue: Any, initiator: Any) -> None:
    """Registered for active_history: a count set on an expired variant (after a commit) loads the one it replaces
    first, so the transaction's starting point is known (stock.low needs it)."""


def _first(history: Any) -> Any:
    """The value an attribute had before this flush's change (None when it was never loaded)."""
    if history.deleted:
        return history.deleted[0]
    return history.unchanged[0] if history.unchanged else None


@sa_event.listens_for(Session, "after_flush")
def _note_stock_moves(session: Session, flush_context: Any) -> None:
    for obj in session.dirty:
        if not isinstance(obj, Variant):
            continue
        attrs: Any = inspect(obj).attrs
        on_hand, reserved = attrs.on_hand.history, attrs.reserved.history
        if not (on_hand.has_changes() or reserved.has_changes()):
            continue
        moves = session.info.setdefault(_STOCK_MOVES, {})
        if obj.id not in moves:  # the first change in this transaction keeps the starting point
            moves[obj.id] = (obj, _first(on_hand), _first(reserved))


def threshold_of(variant: Variant) -> int:
    """The availability at or below which a variant is low: its own threshold, else LOW_STOCK_THRESHOLD."""
    if variant.low_stock_threshold is not None:
        return variant.low_stock_threshold
    return int(current_app.config.get("LOW_STOCK_THRESHOLD", 5)) if has_app_context() else 5


def _stock_events(moves: dict[int, tuple[Variant, Any, Any]]) -> list[tuple[Any, ...]]:
    items = []
    for vid, (variant, on_hand_before, reserved_before) in sorted(moves.items()):
        state: Any = inspect(variant)
        if state.deleted or state.was_deleted or state.detached:
            continue
        on_hand, reserved = variant.on_hand, variant.reserved or 0
        if (on_hand_before, reserved_before) == (on_hand, reserved):
            continue  # back where it started
        available = max(on_hand - reserved, 0)
        data = {
            "variant_id": vid,
            "sku": variant.sku,
            "product_id": variant.product_id,
            "on_hand": on_hand,
            "reserved": reserved,
            "available": available,
        }
        items.append(("stock.changed", "variant", vid, data))
        threshold = threshold_of(variant)
        was = (
            max(on_hand_before - (reserved_before or 0), 0)
            if on_hand_before is not None and reserved_before is not None
            else None
        )
        if available <= threshold and (was is None or was > threshold):  # unknown start: better an alert twice
            items.append(("stock.low", "variant", vid, {**data, "threshold": threshold}))
    return items


@sa_event.listens_for(Session, "before_commit")
def _publish_stock_events(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint: published with the outer commit
        return
    session.flush()
    moves = session.info.pop(_STOCK_MOVES, None)
    if moves:
        events.publish_many(_stock_events(moves), session=session)
        session.info[_GATE] = {
            vid: max((variant.on_hand or 0) - (variant.reserved or 0), 0)
            for vid, (variant, *_) in moves.items()
            if not (inspect(variant).deleted or inspect(variant).was_deleted or inspect(variant).detached)
        }


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_stock_moves(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_STOCK_MOVES, None)
        session.info.pop(_GATE, None)


@sa_event.listens_for(Session, "after_commit")
def _clear_stock_moves(session: Session) -> None:
    if not session.in_nested_transaction():  # nothing may leak into the next transaction
        session.info.pop(_STOCK_MOVES, None)
        gate.mark(session.info.pop(_GATE, None) or {})  # the committed availability, to the stock gate
