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
from shop.api import bp, schemas
from shop.api.auth import login_required, permission_required
from shop.api.contract import PAGE, PER_PAGE, operation, parse_body, query
from shop.api.params import Params
from shop.audit.services import track
from shop.bounds import column_max
from shop.errors import ApiError, ValidationError
from shop.extensions import db
from shop.money import money
from shop.promotions import backoffice as bo
from shop.promotions.models import Promotion, PromotionCode

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

        wrapper.__permissions__ = permissions  # type: ignore[attr-defined]  # the document's 403
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


def parse_coupon(body: schemas.NewCoupon) -> tuple[dict, str]:
    """The promotion's columns and its code from a request body whose shape the model checked; ValidationError
    naming every rule it breaks (the code's characters, the value for its kind, the window, the targets)."""
    errors: dict[str, str] = {}
    currency = current_app.config["SHOP_CURRENCY"]
    if body.currency is not None and body.currency != currency:
        errors["currency"] = f"must be in {currency}, the shop's currency"  # never amounts in another currency
    if problem := bo.code_problem(body.code):
        errors["code"] = problem
    value = body.value
    if isinstance(value, dict) and body.kind == "fixed":
        if value.get("currency", currency) != currency:
            errors["value"] = f"must be in {currency}"
        value = value.get("amount")
    if "value" not in errors:
        if value is None and body.kind in ("percent", "fixed"):
            errors["value"] = "is required"
        elif problem := bo.value_problem(body.kind, value):
            errors["value"] = problem
    name = body.name if body.name is not None else body.code.strip()
    if not name.strip():
        errors["name"] = "must be text of 1 to 120 characters"
    starts_at = _instant(body.starts_at, "starts_at", errors)
    ends_at = _instant(body.ends_at, "ends_at", errors)
    if "ends_at" not in errors and (problem := bo.window_problem(starts_at, ends_at)):
        errors["ends_at"] = problem
    targets = {}
    for key in ("applies_to", "excludes"):
        targets[key] = getattr(body, key)
        if problem := bo.targets_problem(targets[key]):
            errors[key] = problem
    if errors:
        raise ValidationError(errors)
    columns = dict(
        name=name.strip(),
        description=body.description,
        kind=body.kind,
        value=0 if body.kind == "free_shipping" else value,
        currency=currency,
        automatic=False,
        starts_at=starts_at,
        ends_at=ends_at,
        min_subtotal=body.min_subtotal,
        usage_limit=body.usage_limit,
        per_customer_limit=body.per_customer_limit,
        priority=body.priority,
        applies_to=bo.clean_targets(targets["applies_to"]),
        excludes=bo.clean_targets(targets["excludes"]),
        first_order_only=body.first_order_only,
        stackable=body.stackable,
        active=body.active,
    )
    return columns, body.code.strip()


def _code_taken(code: str) -> ApiError:
    return ApiError(409, "code_taken", f"The code {code} exists already (codes ignore case).", {"code": code})


@bp.post(f"{A}/coupons")
@operation(
    "Create a coupon: a promotion with one shared code (promotions.edit)",
    tags=["admin"],
    body=schemas.NewCoupon,
    responses={
        201: schemas.Promotion,
        409: "code_taken: the code exists (ignoring case)",
        422: "validation_failed: field errors: kind, value range, dates, applies_to shape",
    },
)
@permission_required(P.PROMOTIONS_EDIT)
def create_coupon():
    columns, code = parse_coupon(parse_body(schemas.NewCoupon))
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
@operation(
    "Promotions and their shared codes, newest first (promotions.view)",
    tags=["admin"],
    params=[
        query("code", {"type": "string", "maxLength": 64}, "only the promotion with this code (any case)"),
        query("automatic", {"type": "boolean"}, "automatic sales or coupons only"),
        PAGE,
        PER_PAGE,
    ],
    responses={200: schemas.PromotionPage, 422: "validation_failed: a query parameter"},
)
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
@operation(
    "Usage per promotion: active redemptions, discount given, revenue of the orders using it (orders not "
    "cancelled) (promotions.view or reports.view)",
    tags=["admin"],
    params=[
        query("from", {"type": "string", "format": "date"}, "redemptions made on or after this day"),
        query("to", {"type": "string", "format": "date"}, "redemptions made on or before this day"),
        query("promotion_id", {"type": "integer", "minimum": 1}, "one promotion"),
    ],
    responses={
        200: schemas.PromotionsReport,
        404: "promotion_not_found: no such promotion",
        422: "validation_failed: bad dates",
    },
)
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
