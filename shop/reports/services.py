"""The sales report, read from the `sales_order` projection that the "sales" consumer group keeps (CQRS).

Every order.* event carries the whole order snapshot after its change (status, money, refunded total, created_at),
so the projection keeps, per order, the snapshot of the latest event: `apply()` upserts it only over an older one.
That makes the projection order-insensitive (two consumers of one group may apply one order's events in either
order) and idempotent (shop.consumers.handle also skips an event id it has seen), and lets `replay()` rebuild it
from the stream at any time, beside the live consumers.

`sales_from_orders()` computes the same report from the order tables: the check that the read model is right.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

from sqlalchemy import CursorResult, Date, cast, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert

from shop.consumers import consumer
from shop.extensions import db
from shop.money import money
from shop.orders import states
from shop.orders.models import Order
from shop.payments.models import Payment
from shop.reports.models import SalesOrder

if TYPE_CHECKING:
    from shop.stream import Stream

log = logging.getLogger(__name__)

GROUP = "sales"
ORDER_EVENTS = frozenset(
    {"order.placed", "order.confirmed", "order.cancelled", "order.shipped", "order.delivered", "order.refunded"}
)
VERSIONS = {1}  # the order snapshot versions this projection understands
# Paid and not cancelled: what counts as revenue.
SOLD = (states.CONFIRMED, states.PROCESSING, states.SHIPPED, states.DELIVERED, states.RETURNED, states.REFUNDED)
# Breaks a tie of two snapshots with the same occurred_at: the one further along the state machine is the later.
RANK = {
    states.PENDING: 0,
    states.CONFIRMED: 1,
    states.PROCESSING: 2,
    states.SHIPPED: 3,
    states.DELIVERED: 4,
    states.RETURNED: 5,
    states.REFUNDED: 6,
    states.CANCELLED: 7,
}
REPLAY_BATCH = 500


class SalesRow(TypedDict):
    """A sales_order row as an order.* event describes it (models.SalesOrder's columns)."""

    order_id: int
    number: str
    created_at: datetime
    day: date
    currency: str
    status: str
    sold: bool
    total: int
    discount: int
    refunded: int
    event_at: datetime
    rank: int
    event_id: str


class SalesDay(TypedDict):
    date: str
    orders: int
    revenue: dict[str, Any] | None  # Money
    discounts: dict[str, Any] | None


class SalesTotal(TypedDict):
    currency: str
    orders: int
    revenue: dict[str, Any] | None
    refunded: dict[str, Any] | None
    net: dict[str, Any] | None


# The API's body ("from" is a keyword: the functional form).
SalesReport = TypedDict("SalesReport", {"from": str, "to": str, "days": list[SalesDay], "totals": list[SalesTotal]})


class ReplayCounts(TypedDict):
    deleted: int  # projection rows deleted to be rebuilt
    read: int  # events read from the stream
    applied: int  # order.* events applied
    orders: int  # orders whose rows were rebuilt


# -- the projection ------------------------------------------------------------------------------------------------
def _utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def snapshot_row(envelope: dict[str, Any]) -> SalesRow | None:
    """The projection row an order.* event describes, or None for one this projection cannot read (logged: a
    handler that raised would have the event delivered again for ever)."""
    data = envelope.get("data") or {}
    if envelope.get("version") not in VERSIONS:
        log.error(
            "sales: event %s is %s version %s, which this projection does not know; skipped",
            envelope.get("id"),
            envelope.get("type"),
            envelope.get("version"),
        )
        return None
    try:
        created = _utc(data["created_at"])
        status = data["status"]
        return {
            "order_id": int(data["order_id"]),
            "number": data["number"],
            "created_at": created,
            "day": created.date(),
            "currency": data["currency"],
            "status": status,
            "sold": status in SOLD,
            "total": int(data["total"]),
            "discount": int(data.get("discount") or 0),
            "refunded": int(data.get("refunded") or 0),
            "event_at": _utc(envelope["occurred_at"]),
            "rank": RANK.get(status, 0),
            "event_id": str(envelope["id"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        log.error(
            "sales: event %s (%s) has no readable order snapshot (%r); skipped",
            envelope.get("id"),
            envelope.get("type"),
            exc,
        )
        return None


def _newer(row: SalesRow) -> tuple[datetime, int, int]:
    return row["event_at"], row["rank"], row["refunded"]


def upsert(rows: Iterable[SalesRow]) -> int:
    """Store each order's snapshot unless the stored one is as new or newer; one statement. Returns rows written.

    INSERT ... ON CONFLICT DO UPDATE ... WHERE locks the stored row and compares against its committed version, so
    consumers applying two events of one order at once keep the newer whichever commits first."""
    latest: dict[int, SalesRow] = {}
    for row in rows:  # one statement may not touch a row twice: the newest of this batch per order
        if row["order_id"] not in latest or _newer(row) > _newer(latest[row["order_id"]]):
            latest[row["order_id"]] = row
    if not latest:
        return 0
    stmt = insert(SalesOrder).values(list(latest.values()))
    new = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[SalesOrder.order_id],
        set_={
            c: new[c]
            for c in (
                "number",
                "created_at",
                "day",
                "currency",
                "status",
                "sold",
                "total",
                "discount",
                "refunded",
                "event_at",
                "rank",
                "event_id",
            )
        },
        where=tuple_(SalesOrder.event_at, SalesOrder.rank, SalesOrder.refunded)
        < tuple_(new.event_at, new.rank, new.refunded),
    )
    # An INSERT answers a CursorResult, which has the rowcount; Session.execute() is typed to answer a Result.
    return typing.cast(CursorResult[Any], db.session.execute(stmt)).rowcount


@consumer(GROUP, types=ORDER_EVENTS, description="The sales read model (sales_order) behind the sales report")
def apply(envelope: dict[str, Any]) -> None:
    """Consumer group "sales": keep the order's latest snapshot (shop.consumers.handle commits)."""
    row = snapshot_row(envelope)
    if row is not None:
        upsert([row])


# -- the report ----------------------------------------------------------------------------------------------------
def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return datetime.combine(start, time.min, UTC), datetime.combine(end + timedelta(days=1), time.min, UTC)


def _report(
    start: date,
    end: date,
    days: Iterable[tuple[date, str, int, Decimal | int, Decimal | int | None]],
    refunded: Iterable[tuple[str, Decimal | int]],
) -> SalesReport:
    """The API's body from (day, currency, orders, revenue, discounts) rows and (currency, refunded) rows (PostgreSQL's
    SUM of a bigint is a numeric: a Decimal).

    A currency is in the totals when it has sold orders or refunds in the range."""
    totals: dict[str, dict[str, int]] = {}
    for _, currency, orders, revenue, _ in days:
        t = totals.setdefault(currency, {"orders": 0, "revenue": 0, "refunded": 0})
        t["orders"] += int(orders)
        t["revenue"] += int(revenue)
    for currency, amount in refunded:
        if int(amount):
            totals.setdefault(currency, {"orders": 0, "revenue": 0, "refunded": 0})["refunded"] = int(amount)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "days": [
            {
                "date": day.isoformat(),
                "orders": int(orders),
                "revenue": money(int(revenue), currency),
                "discounts": money(int(discounts or 0), currency),
            }
            for day, currency, orders, revenue, discounts in days
        ],
        "totals": [
            {
                "currency": c,
                "orders": t["orders"],
                "revenue": money(t["revenue"], c),
                "refunded": money(t["refunded"], c),
                "net": money(t["revenue"] - t["refunded"], c),
            }
            for c, t in sorted(totals.items())
        ],
    }


def sales_from_read_model(start: date, end: date) -> SalesReport:
    """Sold orders, revenue and discounts per UTC day and currency of the orders created from `start` to `end`
    (inclusive), and per currency the refunds of those orders (any status) and the net: from the projection."""
    s = SalesOrder
    in_range = (s.day >= start, s.day <= end)
    days = db.session.execute(
        select(s.day, s.currency, func.count(), func.sum(s.total), func.sum(s.discount))
        .where(*in_range, s.sold)
        .group_by(s.day, s.currency)
        .order_by(s.day, s.currency)
    ).all()
    refunded = db.session.execute(select(s.currency, func.sum(s.refunded)).where(*in_range).group_by(s.currency)).all()
    return _report(start, end, days, refunded)


def sales_from_orders(start: date, end: date) -> SalesReport:
    """The same report computed from the order and payment tables (what the read model must agree with)."""
    lo, hi = _bounds(start, end)
    day = cast(func.timezone("UTC", Order.created_at), Date).label("day")
    days = db.session.execute(
        select(day, Order.currency, func.count(Order.id), func.sum(Order.total), func.sum(Order.discount))
        .where(Order.created_at >= lo, Order.created_at < hi, Order.status.in_(SOLD))
        .group_by(day, Order.currency)
        .order_by(day, Order.currency)
    ).all()
    refunded = db.session.execute(
        select(Payment.currency, func.coalesce(func.sum(Payment.refunded_amount), 0))
        .join(Order, Order.id == Payment.order_id)
        .where(Order.created_at >= lo, Order.created_at < hi)
        .group_by(Payment.currency)
    ).all()
    return _report(start, end, days, refunded)


def sold_on(day: date) -> list[tuple[str, int, int]]:
    """(currency, sold orders, revenue) of the orders created on `day` (UTC), from the projection: the dashboard."""
    s = SalesOrder
    return [
        (c, int(n), int(total))
        for c, n, total in db.session.execute(
            select(s.currency, func.count(), func.sum(s.total))
            .where(s.day == day, s.sold)
            .group_by(s.currency)
            .order_by(s.currency)
        ).all()
    ]


# -- replay --------------------------------------------------------------------------------------------------------
def _peeked(iterator: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Read the first item now (so an unreachable stream fails before anything is deleted), then the rest lazily."""
    try:
        first = next(iterator)
    except StopIteration:
        return iter(())

    def chain() -> Iterator[dict[str, Any]]:
        yield first
        yield from iterator

    return chain()


def replay(since: datetime | None, stream: Stream | None = None, batch: int = REPLAY_BATCH) -> ReplayCounts:
    """Rebuild, from the stream, the projection rows of the orders created from `since` (all when None) whose events
    the stream still holds, in one transaction: each such order's row is deleted when its first event is read, and
    every order.* event of the stream since then is applied again. Orders the stream no longer holds (trimmed away,
    or older than the event backbone: migration 0015 filled their rows from the order tables) keep their rows:
    nothing is deleted that cannot be rebuilt.

    The report keeps showing the old rows until the commit, and a failure (the stream unreachable, say) leaves them
    as they were. Events are applied here directly, not through their consumed_event claims: applying is
    idempotent and order-insensitive, so the live "sales" consumers may run meanwhile (an event they have not
    consumed yet is applied once more when they do, changing nothing), and replay takes no claim rows that a live
    consumer's transaction may hold (no deadlock)."""
    if stream is None:
        from shop import stream as streams

        stream = streams.current()
    events = _peeked(iter(stream.read_from(since)))
    counts: ReplayCounts = {"deleted": 0, "read": 0, "applied": 0, "orders": 0}
    seen: set[int] = set()
    try:
        rows: list[SalesRow] = []

        def flush() -> None:
            fresh = {row["order_id"] for row in rows} - seen
            if fresh:
                gone = delete(SalesOrder).where(SalesOrder.order_id.in_(fresh))
                if since is not None:  # a row that says its order is older than `since` stays as it is
                    gone = gone.where(SalesOrder.created_at >= since)
                counts["deleted"] += typing.cast(CursorResult[Any], db.session.execute(gone)).rowcount
                seen.update(fresh)
            upsert(rows)
            rows.clear()

        for envelope in events:
            counts["read"] += 1
            if envelope.get("type") not in ORDER_EVENTS:
                continue
            row = snapshot_row(envelope)
            if row is None or (since is not None and row["created_at"] < since):
                continue  # an older order's row was kept: it is right already
            rows.append(row)
            counts["applied"] += 1
            if len(rows) >= batch:
                flush()
        flush()
        counts["orders"] = len(seen)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return counts


def first_day() -> date | None:
    """The day of the oldest order in the projection (a whole-history check starts there)."""
    return db.session.scalar(select(func.min(SalesOrder.day)))
