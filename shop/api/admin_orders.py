"""/api/v1/admin orders, refunds and sales reports, under the role table of API.md."""
from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone

from flask import current_app, g, request
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from shop import idempotency
from shop.accounts.permissions import Permission as P
from shop.accounts.permissions import has_permission
from shop.api import bp
from shop.api.auth import json_body, permission_required
from shop.api.buying import order_json
from shop.api.params import Params
from shop.bounds import fits
from shop.errors import ApiError, ValidationError, error_body
from shop.extensions import db
from shop.money import foreign_currency, minor_units, money
from shop.orders import services as orders
from shop.orders import states
from shop.orders.models import Order
from shop.payments import services as payments
from shop.payments.models import Payment

A = "/v1/admin"
PROVIDER_ID = re.compile(r"\b(pi|ch|re|py)_[A-Za-z0-9_]+")
STAFF_TARGETS = sorted(states.FULFILMENT | states.CUSTOMER_SERVICE)


def staff_order_json(order: Order, user) -> dict:
    """An order as this staff member may see it: personal data and payments only where the table allows."""
    body = order_json(order)
    if not has_permission(user, P.CUSTOMERS_PII):
        body["email"] = None
        body["billing_address"] = None
        if has_permission(user, P.ORDER_SHIPPING_ADDRESS) and body["shipping_address"]:
            body["shipping_address"] = {k: v for k, v in body["shipping_address"].items() if k != "phone"}
        else:
            body["shipping_address"] = None
    if not has_permission(user, P.PAYMENTS):
        for event in body["events"]:
            event["note"] = PROVIDER_ID.sub("(payment id hidden)", event["note"] or "")
    if has_permission(user, P.PAYMENTS):
        paid = db.session.scalars(select(Payment).where(Payment.order_id == order.id).order_by(Payment.id)).all()
        body["payments"] = [{"id": p.id, "provider": p.provider, "provider_id": p.provider_id, "status": p.status,
                             "amount": money(p.amount, p.currency), "refunded": money(p.refunded_amount, p.currency),
                             "failure_reason": p.failure_reason} for p in paid]
    return body


@bp.get(f"{A}/orders")
@permission_required(P.ORDERS_VIEW)
def admin_orders():
    p = Params(request.args)
    status = p.choice("status", list(states.STATUSES), "")
    page, per_page = p.int("page", 1, lo=1, hi=100_000), p.int("per_page", 20, lo=1, hi=100)
    p.raise_if_invalid()
    where = [Order.status == status] if status else []
    total = db.session.scalar(select(func.count()).select_from(Order).where(*where))
    rows = db.session.scalars(select(Order).where(*where).order_by(Order.created_at.desc(), Order.id.desc())
                              .options(selectinload(Order.lines), selectinload(Order.events))
                              .limit(per_page).offset((page - 1) * per_page)).all()
    return {"items": [staff_order_json(o, g.api_user) for o in rows], "page": page, "per_page": per_page,
            "total": total}


@bp.post(f"{A}/orders/<int:order_id>/transition")
@permission_required(P.ORDERS_VIEW)
def admin_transition(order_id: int):
    data = json_body()
    target, note = data.get("status"), data.get("note") or ""
    needed = states.staff_permission(target) if isinstance(target, str) else None
    if needed is None:
        raise ValidationError({"status": f"must be one of {', '.join(STAFF_TARGETS)}"})
    if not isinstance(note, str) or len(note) > 1000:
        raise ValidationError({"note": "must be text of at most 1000 characters"})
    tracking = orders.clean_tracking(data.get("tracking"))  # {carrier, number, url}: 422 tracking.<field>
    if tracking and target != states.SHIPPED:
        raise ValidationError({"tracking": "is given only with status shipped"})
    if not has_permission(g.api_user, needed):
        raise ApiError(403, "forbidden", "Your role does not allow this.", {"permission": needed.value})
    order = orders.transition(order_id, target, g.api_user.email, note, tracking)
    return staff_order_json(orders.for_staff(order.id), g.api_user)


@bp.post(f"{A}/orders/<int:order_id>/refunds")
@permission_required(P.PAYMENTS)
def admin_refund(order_id: int):
    data = json_body()
    key = request.headers.get("Idempotency-Key")
    if not key:
        raise ApiError(400, "idempotency_key_required", "Send an Idempotency-Key header (a UUID) with refunds.")
    amount, reason = data.get("amount"), data.get("reason") or ""
    currency = _order_currency(order_id)
    for field, value in (("currency", data), ("amount", amount)):
        if problem := foreign_currency(value, currency):
            raise ValidationError({field: problem})
    amount = minor_units(amount)
    if not fits(amount, Payment.refunded_amount, lo=1):
        raise ValidationError({"amount": "must be a positive amount in minor units"})
    if not isinstance(reason, str) or len(reason) > 1000:
        raise ValidationError({"reason": "must be text of at most 1000 characters"})
    scope = f"refund:{order_id}"
    repeat = idempotency.claim(scope, key, data)
    if repeat:
        return repeat[1], repeat[0]
    try:
        record = payments.refund(order_id, amount, reason, g.api_user.email)
    except ApiError as exc:
        if exc.status in (404, 409, 422):
            idempotency.finish(scope, key, exc.status, error_body(exc.code, exc.message, exc.details))
        else:
            idempotency.release(scope, key)
        raise
    except Exception:
        idempotency.release(scope, key)
        raise
    payment = record.payment
    body = {"id": record.id, "order_id": order_id, "amount": money(record.amount, payment.currency),
            "reason": record.reason, "status": record.status, "provider_refund_id": record.provider_refund_id,
            "refunded_total": money(payment.refunded_amount, payment.currency)}
    idempotency.finish(scope, key, 201, body)
    return body, 201


def _order_currency(order_id: int) -> str:
    """The currency a refund of this order is in (the shop's when there is no such order: the service 404s).
    Only the column is read: the order itself is loaded under the refund's row lock, never before it."""
    currency = db.session.scalar(select(Order.currency).where(Order.id == order_id))
    return currency or current_app.config["SHOP_CURRENCY"]


@bp.get(f"{A}/reports/sales")
@permission_required(P.REPORTS_VIEW)
def sales_report():
    p = Params(request.args)
    today = datetime.now(timezone.utc).date()
    start, end = p.date("from", today - timedelta(days=29)), p.date("to", today)
    errors = p.errors
    if not errors and start > end:
        errors["from"] = "must not be after to"
    if not errors and (end - start).days > 366:
        errors["to"] = "a report covers at most 366 days"
    if errors:
        raise ValidationError(errors)
    lo = datetime.combine(start, time.min, timezone.utc)
    hi = datetime.combine(end + timedelta(days=1), time.min, timezone.utc)
    sold = [states.CONFIRMED, states.PROCESSING, states.SHIPPED, states.DELIVERED, states.RETURNED, states.REFUNDED]
    day = func.date_trunc("day", Order.created_at).label("day")
    rows = db.session.execute(
        select(day, Order.currency, func.count(Order.id), func.sum(Order.total), func.sum(Order.discount))
        .where(Order.created_at >= lo, Order.created_at < hi, Order.status.in_(sold))
        .group_by(day, Order.currency).order_by(day)).all()
    refunded = db.session.execute(
        select(Payment.currency, func.coalesce(func.sum(Payment.refunded_amount), 0))
        .join(Order, Order.id == Payment.order_id)
        .where(Order.created_at >= lo, Order.created_at < hi).group_by(Payment.currency)).all()
    days = [{"date": r[0].date().isoformat(), "orders": r[2], "revenue": money(int(r[3]), r[1]),
             "discounts": money(int(r[4] or 0), r[1])} for r in rows]
    totals: dict[str, dict] = {}
    for r in rows:
        t = totals.setdefault(r[1], {"orders": 0, "revenue": 0, "refunded": 0})
        t["orders"] += r[2]
        t["revenue"] += int(r[3])
    for currency, amount in refunded:
        totals.setdefault(currency, {"orders": 0, "revenue": 0, "refunded": 0})["refunded"] = int(amount)
    return {"from": start.isoformat(), "to": end.isoformat(), "days": days,
            "totals": [{"currency": c, "orders": t["orders"], "revenue": money(t["revenue"], c),
                        "refunded": money(t["refunded"], c), "net": money(t["revenue"] - t["refunded"], c)}
                       for c, t in sorted(totals.items())]}
