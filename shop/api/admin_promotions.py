"""/api/v1/admin coupons and the promotions usage report, under the role table of API.md
(promotions and coupons: analysts view, managers and admins edit)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from functools import wraps

from flask import current_app, g, request
from psycopg import errors as pg_errors
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shop.accounts.permissions import Permission as P
from shop.accounts.permissions import has_permission
from shop.api import bp
from shop.api.auth import json_body, login_required, permission_required
from shop.api.params import Params
from shop.audit.services import track
from shop.bounds import column_max
from shop.errors import ApiError, ValidationError
from shop.extensions import db
from shop.money import foreign_currency, money
from shop.promotions import backoffice as bo
from shop.promotions.models import KINDS, Promotion, PromotionCode

A = "/v1/admin"


def any_permission_required(*permissions: P):
    """Staff holding any one of `permissions` (403 otherwise)."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapper(*args, **kwargs):
            if not any(has_permission(g.api_user, p) for p in permissions):
                raise ApiError(
                    403,
                    "forbidden",
                    "Your role does not allow this.",
                    {"permission": permissions[0].value, "any_of": [p.value for p in permissions]},
                )
            track(g.api_user, "api")
            return view(*args, **kwargs)

        return wrapper

    return decorator


def _instant(value, field: str, errors: dict) -> datetime | None:
    """An ISO 8601 date-time (UTC when it names no offset)."""
    if value is None:
        return None
    if not isinstance(value, str):
        errors[field] = "must be an ISO 8601 date-time, e.g. 2026-12-01T09:00:00Z"
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)  # OverflowError near year 1 or 9999
        if not 2000 <= parsed.year <= 9000:
            raise ValueError("out of range")
    except (ValueError, OverflowError):
        errors[field] = "must be an ISO 8601 date-time between the years 2000 and 9000, e.g. 2026-12-01T09:00:00Z"
        return None
    return parsed


def _whole(value, field: str, errors: dict, *, lo: int, hi: int, currency: str | None = None) -> int | None:
    """An optional whole number in [lo, hi]; with `currency` also a Money object in that currency."""
    if value is None:
        return None
    if currency is not None and isinstance(value, dict):
        if value.get("currency", currency) != currency:
            errors[field] = f"must be in {currency}"
            return None
        value = value.get("amount")
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        errors[field] = f"must be a whole number from {lo} to {hi}" + (" (minor units)" if currency else "")
        return None
    return value


def _flag(data: dict, field: str, default: bool, errors: dict) -> bool:
    value = data.get(field, default)
    if not isinstance(value, bool):
        errors[field] = "must be true or false"
        return default
    return value


def parse_coupon(data: dict) -> tuple[dict, str]:
    """The promotion's columns and its code from a request body; ValidationError naming every bad field."""
    errors: dict[str, str] = {}
    currency = current_app.config["SHOP_CURRENCY"]
    if problem := foreign_currency(data, currency):
        errors["currency"] = problem  # amounts are never taken in another currency than the shop's
    code = data.get("code")
    if problem := bo.code_problem(code):
        errors["code"] = problem
    kind = data.get("kind")
    if kind not in KINDS:
        errors["kind"] = f"must be one of {', '.join(KINDS)}"
    value = data.get("value")
    if isinstance(value, dict) and kind == "fixed":
        if value.get("currency", currency) != currency:
            errors["value"] = f"must be in {currency}"
        value = value.get("amount")
    if "value" not in errors:
        if value is None and kind in ("percent", "fixed"):
            errors["value"] = "is required"
        elif problem := bo.value_problem(kind, value):
            errors["value"] = problem
    name = data.get("name", code.strip() if isinstance(code, str) else None)
    if not isinstance(name, str) or not name.strip() or len(name) > 120:
        errors["name"] = "must be text of 1 to 120 characters"
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 5000:
        errors["description"] = "must be text of at most 5000 characters"
    starts_at = _instant(data.get("starts_at"), "starts_at", errors)
    ends_at = _instant(data.get("ends_at"), "ends_at", errors)
    if "ends_at" not in errors and (problem := bo.window_problem(starts_at, ends_at)):
        errors["ends_at"] = problem
    min_subtotal = _whole(data.get("min_subtotal"), "min_subtotal", errors, lo=0, hi=bo.MAX_AMOUNT, currency=currency)
    usage_limit = _whole(data.get("usage_limit"), "usage_limit", errors, lo=1, hi=bo.MAX_LIMIT)
    per_customer = _whole(data.get("per_customer_limit"), "per_customer_limit", errors, lo=1, hi=bo.MAX_LIMIT)
    priority = _whole(data.get("priority", 0), "priority", errors, lo=-1000, hi=1000)
    for key in ("applies_to", "excludes"):
        if problem := bo.targets_problem(data.get(key)):
            errors[key] = problem
    flags = {
        f: _flag(data, f, d, errors) for f, d in (("first_order_only", False), ("stackable", False), ("active", True))
    }
    if errors:
        raise ValidationError(errors)
    columns = dict(
        name=name.strip(),
        description=description,
        kind=kind,
        value=0 if kind == "free_shipping" else value,
        currency=currency,
        automatic=False,
        starts_at=starts_at,
        ends_at=ends_at,
        min_subtotal=min_subtotal,
        usage_limit=usage_limit,
        per_customer_limit=per_customer,
        priority=priority or 0,
        applies_to=bo.clean_targets(data.get("applies_to")),
        excludes=bo.clean_targets(data.get("excludes")),
        **flags,
    )
    return columns, code.strip()


def _code_taken(code: str) -> ApiError:
    return ApiError(409, "code_taken", f"The code {code} exists already (codes ignore case).", {"code": code})


@bp.post(f"{A}/coupons")
@permission_required(P.PROMOTIONS_EDIT)
def create_coupon():
    columns, code = parse_coupon(json_body())
    if bo.codes_taken([code]):
        raise _code_taken(code)
    promotion = Promotion(**columns)
    promotion.codes = [PromotionCode(code=code, usage_limit=None)]
    db.session.add(promotion)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        if isinstance(exc.orig, pg_errors.UniqueViolation):  # the same code created a moment ago
            raise _code_taken(code) from None
        raise
    return bo.promotion_json(promotion, shared=[code], single_use=0), 201


@bp.get(f"{A}/coupons")
@permission_required(P.PROMOTIONS_VIEW)
def list_coupons():
    p = Params(request.args)
    page, per_page = p.int("page", 1, lo=1, hi=100_000), p.int("per_page", 20, lo=1, hi=100)
    code = p.str("code", max_len=64)
    automatic = p.choice("automatic", ("true", "false"), "")
    p.raise_if_invalid()
    where = []
    if code:
        where.append(
            Promotion.id.in_(
                select(PromotionCode.promotion_id).where(func.upper(PromotionCode.code) == code.strip().upper())
            )
        )
    if automatic:
        where.append(Promotion.automatic.is_(automatic == "true"))
    total = db.session.scalar(select(func.count()).select_from(Promotion).where(*where))
    rows = db.session.scalars(
        select(Promotion).where(*where).order_by(Promotion.id.desc()).limit(per_page).offset((page - 1) * per_page)
    ).all()
    ids = [r.id for r in rows]
    shared, single = bo.shared_codes_of(ids), bo.single_use_counts(ids)
    return {
        "items": [bo.promotion_json(r, shared=shared[r.id], single_use=single.get(r.id, 0)) for r in rows],
        "page": page,
        "per_page": per_page,
        "total": total,
    }


@bp.get(f"{A}/reports/promotions")
@any_permission_required(P.PROMOTIONS_VIEW, P.REPORTS_VIEW)
def promotions_report():
    """Usage per promotion: active redemptions, discount given, revenue of the orders using it."""
    p = Params(request.args)
    start, end = p.date("from"), p.date("to")
    promotion_id = p.int("promotion_id", None, lo=1, hi=column_max(Promotion.id))
    errors = p.errors
    if start and end and start > end:
        errors["from"] = "must not be after to"
    if errors:
        raise ValidationError(errors, "Some query parameters are not valid.")
    if promotion_id is not None and db.session.get(Promotion, promotion_id) is None:
        raise ApiError(404, "promotion_not_found", "No promotion with this id.")
    lo = datetime.combine(start, time.min, UTC) if start else None
    hi = datetime.combine(end + timedelta(days=1), time.min, UTC) if end else None
    rows = bo.usage_report(promotion_id, lo, hi)
    items = []
    for row in rows:
        item = row.as_json()
        item["by_currency"] = [
            {
                "currency": c,
                "redemptions": f["redemptions"],
                "discount": money(f["discount"], c),
                "revenue": money(f["revenue"], c),
            }
            for c, f in sorted(row.by_currency.items())
        ]
        items.append(item)
    totals = bo.usage_totals(rows)
    return {
        "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None,
        "items": items,
        "totals": [
            {
                "currency": c,
                "redemptions": t["redemptions"],
                "discount": money(t["discount"], c),
                "revenue": money(t["revenue"], c),
            }
            for c, t in sorted(totals.items())
        ],
    }
