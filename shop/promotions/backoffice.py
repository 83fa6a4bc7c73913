"""What the back-office and the admin API do with promotions: check a rule's fields, add shared codes,
generate batches of single-use codes, and report usage. (Evaluating and redeeming: rules.py, services.py.)"""

from __future__ import annotations

import csv
import io
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from flask import has_request_context, request
from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shop import clock
from shop.audit.models import AuditEntry
from shop.bounds import INT4_MAX, is_whole
from shop.catalog.models import Category, Product, Variant
from shop.extensions import db
from shop.money import money
from shop.orders import states
from shop.orders.models import Order
from shop.promotions.models import KINDS, Promotion, PromotionCode, Redemption

# No 0/O, 1/I: codes people read off a flyer and type.
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
CODE_LENGTH = 10
MAX_BATCH = 10_000
TARGET_KEYS = ("categories", "products", "variants")
TARGET_MODELS = {"categories": Category, "products": Product, "variants": Variant}
MAX_AMOUNT = 10**12  # minor units; far below BIGINT, far above any real price
MAX_LIMIT = INT4_MAX  # usage limits are integer columns


# -- checking a rule ------------------------------------------------------------------------------
def value_problem(kind: str, value) -> str | None:
    """Why `value` is not right for `kind` (percent 1-100, fixed > 0 in minor units, free shipping 0)."""
    if kind not in KINDS:
        return None  # the kind's own error says it
    if kind == "free_shipping":
        return None if value in (None, 0) else "must be 0 (or left out) for free shipping"
    if not isinstance(value, int) or isinstance(value, bool):
        return "must be a whole number" + (" (percent)" if kind == "percent" else " (minor units)")
    if kind == "percent" and not 1 <= value <= 100:
        return "must be a percentage from 1 to 100"
    if kind == "fixed" and not 0 < value <= MAX_AMOUNT:
        return "must be an amount above 0 (in minor units)"
    return None


def window_problem(starts_at: datetime | None, ends_at: datetime | None) -> str | None:
    if starts_at and ends_at and ends_at <= starts_at:
        return "must be after starts_at"
    return None


def targets_problem(spec) -> str | None:
    """`applies_to` / `excludes`: {categories|products|variants: [ids]}, every id existing."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        return "must be an object {categories|products|variants: [ids]}"
    unknown = sorted(set(spec) - set(TARGET_KEYS))
    if unknown:
        return f"may only have the keys categories, products, variants (not {', '.join(map(str, unknown))})"
    for key, ids in spec.items():
        if not isinstance(ids, list) or not all(is_whole(i, 1, INT4_MAX) for i in ids):
            return f"{key} must be a list of ids"
        model = TARGET_MODELS[key]
        found = set(db.session.scalars(select(model.id).where(model.id.in_(ids)))) if ids else set()
        missing = sorted(set(ids) - found)
        if missing:
            return f"no {key} with the ids {', '.join(map(str, missing[:10]))}"
    return None


def clean_targets(spec: dict | None) -> dict:
    """Sorted unique ids, empty lists dropped: {} means everything."""
    return {k: sorted(set(spec[k])) for k in TARGET_KEYS if spec and spec.get(k)}


def codes_taken(codes) -> list[str]:
    """The codes (any case) that exist already."""
    upper = [c.upper() for c in codes]
    if not upper:
        return []
    return list(db.session.scalars(select(PromotionCode.code).where(func.upper(PromotionCode.code).in_(upper))))


def code_problem(code) -> str | None:
    if not isinstance(code, str) or not 3 <= len(code.strip()) <= 64:
        return "must be 3 to 64 characters"
    if not all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in code.strip()):
        return "may use letters, digits, - and _ only"
    return None


# -- codes ----------------------------------------------------------------------------------------
def shared_codes(promotion_id: int) -> list[PromotionCode]:
    return list(
        db.session.scalars(
            select(PromotionCode)
            .where(PromotionCode.promotion_id == promotion_id, PromotionCode.usage_limit.is_(None))
            .order_by(PromotionCode.id)
        )
    )


def _random_code(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def generate_codes(
    promotion_id: int, count: int, *, length: int = CODE_LENGTH, prefix: str = ""
) -> tuple[datetime, list[str]]:
    """Insert `count` new single-use codes for the promotion in bulk; codes that collide with existing
    ones (any case) are skipped by the unique index and drawn again. Returns the batch's timestamp (shared
    by all its codes: it names the batch) and the codes. The caller commits."""
    if not 1 <= count <= MAX_BATCH:
        raise ValueError(f"count must be from 1 to {MAX_BATCH}")
    batch_at = clock.now()
    made: list[str] = []
    for _ in range(20):  # 32**10 codes: a second round is already rare
        wanted: set[str] = set()
        while len(wanted) < count - len(made):
            wanted.add(prefix + _random_code(length))
        rows = [
            {"promotion_id": promotion_id, "code": c, "usage_limit": 1, "created_at": batch_at} for c in sorted(wanted)
        ]
        inserted = db.session.scalars(
            pg_insert(PromotionCode).values(rows).on_conflict_do_nothing().returning(PromotionCode.code)
        )
        made.extend(inserted)
        if len(made) == count:
            break
    else:  # only with a tiny code space (a long prefix and a short length)
        raise RuntimeError("could not find enough unused codes; use longer codes")
    audit_bulk(
        "create",
        "PromotionCodeBatch",
        f"{promotion_id}@{batch_at.isoformat()}",
        {
            "promotion_id": promotion_id,
            "count": count,
            "batch": batch_at.isoformat(),
            "usage_limit": 1,
            "length": length + len(prefix),
            "prefix": prefix,
        },
    )
    return batch_at, sorted(made)


def audit_bulk(action: str, entity_type: str, entity_id: str, after: dict) -> None:
    """One audit entry for rows written in bulk (core inserts skip the per-row hook), for the session's actor."""
    from shop.audit.services import _ACTOR

    actor = db.session.info.get(_ACTOR)
    if not actor:
        return
    db.session.execute(
        insert(AuditEntry).values(
            actor_id=actor["id"],
            actor_email=actor["email"],
            channel=actor["channel"],
            ip=actor["ip"] or (request.remote_addr if has_request_context() else None),
            action=action,
            entity_type=entity_type,
            entity_id=entity_id[:60],
            before=None,
            after=after,
        )
    )


@dataclass
class Batch:
    created_at: datetime
    count: int
    used: int


def batches(promotion_id: int) -> list[Batch]:
    """The promotion's single-use code batches, newest first, with how many of each are used."""
    used = select(Redemption.code_id).where(Redemption.status == "active", Redemption.code_id.isnot(None))
    rows = db.session.execute(
        select(
            PromotionCode.created_at,
            func.count(PromotionCode.id),
            func.count(PromotionCode.id).filter(PromotionCode.id.in_(used)),
        )
        .where(PromotionCode.promotion_id == promotion_id, PromotionCode.usage_limit == 1)
        .group_by(PromotionCode.created_at)
        .order_by(PromotionCode.created_at.desc())
    ).all()
    return [Batch(at, n, u) for at, n, u in rows]


def codes_csv(promotion: Promotion, batch_at: datetime | None = None) -> str:
    """code,promotion,batch,used for the single-use codes (of one batch, or all)."""
    used = set(
        db.session.scalars(
            select(Redemption.code_id)
            .join(PromotionCode, PromotionCode.id == Redemption.code_id)
            .where(PromotionCode.promotion_id == promotion.id, Redemption.status == "active")
        )
    )
    where = [PromotionCode.promotion_id == promotion.id, PromotionCode.usage_limit == 1]
    if batch_at is not None:
        where.append(PromotionCode.created_at == batch_at)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["code", "promotion", "batch", "used"])
    for code in db.session.scalars(select(PromotionCode).where(*where).order_by(PromotionCode.code)):
        writer.writerow(
            [code.code, _csv_safe(promotion.name), code.created_at.isoformat(), "yes" if code.id in used else "no"]
        )
    return out.getvalue()


def _csv_safe(text: str) -> str:
    """No formula injection when the file is opened in a spreadsheet."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# -- usage ----------------------------------------------------------------------------------------
@dataclass
class Usage:
    promotion_id: int
    name: str
    kind: str
    value: int
    automatic: bool
    currency: str
    redemptions: int = 0  # active redemptions
    released: int = 0  # given back (order cancelled or expired)
    discount: int = 0  # sum of the active redemptions' discounts
    revenue: int = 0  # sum of the totals of their paid orders (PAID: not pending, cancelled or refunded)
    orders: int = 0  # how many such orders
    refunded: int = 0  # sum of the totals of their refunded orders, apart from revenue
    refunded_orders: int = 0  # how many such orders
    by_currency: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {
            "promotion_id": self.promotion_id,
            "name": self.name,
            "kind": self.kind,
            "value": self.value,
            "automatic": self.automatic,
            "redemptions": self.redemptions,
            "released": self.released,
            "orders": self.orders,
            "discount": money(self.discount, self.currency),
            "revenue": money(self.revenue, self.currency),
            "refunded_orders": self.refunded_orders,
            "refunded": money(self.refunded, self.currency),
        }


# Orders whose money the shop has: revenue. Pending (unpaid or declined) and cancelled orders are not;
# refunded ones are reported apart.
PAID = (states.CONFIRMED, states.PROCESSING, states.SHIPPED, states.DELIVERED, states.RETURNED)


def usage_report(
    promotion_id: int | None = None, start: datetime | None = None, end: datetime | None = None
) -> list[Usage]:
    """Per promotion: active redemptions, discount given, revenue of the paid orders using it (PAID:
    never pending, unpaid or declined ones) and, apart, the refunded ones; from the redemptions joined
    to their orders; optionally only redemptions made in [start, end). Every promotion is listed, used or not."""
    active = Redemption.status == "active"
    counted = active & Order.status.in_(PAID)
    refunded = active & (Order.status == states.REFUNDED)
    where = []
    if promotion_id is not None:
        where.append(Redemption.promotion_id == promotion_id)
    if start is not None:
        where.append(Redemption.created_at >= start)
    if end is not None:
        where.append(Redemption.created_at < end)
    rows = db.session.execute(
        select(
            Redemption.promotion_id,
            Order.currency,
            func.count(Redemption.id).filter(active),
            func.count(Redemption.id).filter(~active),
            func.coalesce(func.sum(Redemption.discount).filter(active), 0),
            func.coalesce(func.sum(Order.total).filter(counted), 0),
            func.count(Order.id).filter(counted),
            func.coalesce(func.sum(Order.total).filter(refunded), 0),
            func.count(Order.id).filter(refunded),
        )
        .join(Order, Order.id == Redemption.order_id)
        .where(*where)
        .group_by(Redemption.promotion_id, Order.currency)
    ).all()
    promos = select(Promotion).order_by(Promotion.id.desc())
    if promotion_id is not None:
        promos = promos.where(Promotion.id == promotion_id)
    report = {p.id: Usage(p.id, p.name, p.kind, p.value, p.automatic, p.currency) for p in db.session.scalars(promos)}
    for pid, currency, n_active, n_released, discount, revenue, orders, refunded_total, n_refunded in rows:
        usage = report.get(pid)
        if usage is None:
            continue
        usage.by_currency[currency] = {
            "redemptions": n_active,
            "discount": int(discount),
            "revenue": int(revenue),
            "refunded": int(refunded_total),
        }
        usage.redemptions += n_active
        usage.released += n_released
        usage.orders += orders
        usage.refunded_orders += n_refunded
        if currency == usage.currency:  # orders are in the shop's currency; others listed by_currency
            usage.discount += int(discount)
            usage.revenue += int(revenue)
            usage.refunded += int(refunded_total)
    return list(report.values())


def usage_totals(rows: list[Usage], *, with_refunded: bool = False) -> dict[str, dict]:
    """Totals per currency over the report's rows (and of refunded orders' totals, when asked)."""
    totals: dict[str, dict] = {}
    keys = ("redemptions", "discount", "revenue") + (("refunded",) if with_refunded else ())
    for row in rows:
        for currency, figures in row.by_currency.items():
            t = totals.setdefault(currency, dict.fromkeys(keys, 0))
            for key in t:
                t[key] += figures[key]
    return totals


# -- the JSON shape -------------------------------------------------------------------------------
def promotion_json(p: Promotion, shared: list[str] | None = None, single_use: int | None = None) -> dict:
    """A promotion for the admin API; `shared` and `single_use` may come precomputed (lists)."""
    if shared is None:
        shared = [c.code for c in shared_codes(p.id)]
    if single_use is None:
        single_use = single_use_counts([p.id]).get(p.id, 0)
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "kind": p.kind,
        "value": p.value,
        "currency": p.currency,
        "automatic": p.automatic,
        "active": p.active,
        "starts_at": p.starts_at.isoformat() if p.starts_at else None,
        "ends_at": p.ends_at.isoformat() if p.ends_at else None,
        "min_subtotal": money(p.min_subtotal, p.currency),
        "usage_limit": p.usage_limit,
        "per_customer_limit": p.per_customer_limit,
        "first_order_only": p.first_order_only,
        "stackable": p.stackable,
        "priority": p.priority,
        "applies_to": p.applies_to or {},
        "excludes": p.excludes or {},
        "codes": shared,
        "single_use_codes": single_use,
        "created_at": p.created_at.isoformat() if p.created_at else None,
    }


def single_use_counts(promotion_ids) -> dict[int, int]:
    ids = list(promotion_ids)
    if not ids:
        return {}
    return dict(
        db.session.execute(
            select(PromotionCode.promotion_id, func.count(PromotionCode.id))
            .where(PromotionCode.promotion_id.in_(ids), PromotionCode.usage_limit == 1)
            .group_by(PromotionCode.promotion_id)
        ).all()
    )


def shared_codes_of(promotion_ids) -> dict[int, list[str]]:
    ids = list(promotion_ids)
    out: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        for pid, code in db.session.execute(
            select(PromotionCode.promotion_id, PromotionCode.code)
            .where(PromotionCode.promotion_id.in_(ids), PromotionCode.usage_limit.is_(None))
            .order_by(PromotionCode.id)
        ):
            out[pid].append(code)
    return out
