"""/api/v1/admin orders, refunds and sales reports, under the role table of API.md."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import current_app, g, request
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from shop import clock, idempotency
from shop.accounts.permissions import Permission as P
from shop.accounts.permissions import has_permission
from shop.api import bp
from shop.api.auth import json_body, permission_required
from shop.api.buying import order_json
from shop.api.params import Params
from shop.bounds import fits
from shop.errors import ApiError, Conflict, Invalid, NotFound, ValidationError
from shop.extensions import db
from shop.money import foreign_currency, minor_units, money
from shop.orders import services as orders
from shop.orders import states
from shop.orders.models import Order
from shop.payments import services as payments
from shop.payments.models import Dispute, Payment
from shop.reports import services as reports

A = "/v1/admin"
# Provider ids (pi_..., re_..., ch_...) that event notes may carry: payment details.
PROVIDER_ID = re.compile(r"\b(?:pi|re|ch|py|pm|cus|evt)_[A-Za-z0-9_]+")
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
            event["note"] = redact_payment_note(event["note"])
    for item, line in zip(body["items"], order.lines):
        item["id"] = line.id  # what a refund by line names (lines[].line_id)
    if has_permission(user, P.PAYMENTS):
        paid = db.session.scalars(select(Payment).where(Payment.order_id == order.id).order_by(Payment.id)).all()
        body["payments"] = [
            {
                "id": p.id,
                "provider": p.provider,
                "provider_id": p.provider_id,
                "status": p.status,
                "amount": money(p.amount, p.currency),
                "refunded": money(p.refunded_amount, p.currency),
                "failure_reason": p.failure_reason,
            }
            for p in paid
        ]
        done = payments.refunded_units(order.id)
        for item in body["items"]:
            item["refunded_quantity"] = done.get(item["id"], 0)
        disputes = db.session.scalars(
            select(Dispute).where(Dispute.order_id == order.id).order_by(Dispute.opened_at, Dispute.id)
        ).all()
        # Disputes are payment details (the permission table): roles without them get neither key.
        body["disputed"] = any(d.is_open for d in disputes)
        body["disputes"] = [dispute_json(d) for d in disputes]
    return body


def redact_payment_note(note: str | None) -> str:
    """An event note for roles without payment details: no provider ids."""
    return PROVIDER_ID.sub("(payment id hidden)", note or "")


def dispute_json(dispute: Dispute) -> dict:
    """A dispute as the admin API shows it: Stripe's own reason, status and outcome codes."""

    def at(moment):
        return moment.isoformat() if moment else None

    return {
        "id": dispute.id,
        "amount": money(dispute.amount, dispute.currency),
        "reason": dispute.reason,
        "status": dispute.status,
        "outcome": dispute.outcome,
        "evidence_due_by": at(dispute.evidence_due_by),
        "opened_at": at(dispute.opened_at),
        "closed_at": at(dispute.closed_at),
    }


def refund_lines_in(data: dict) -> dict[int, int] | None:
    """The body's `lines` ([{line_id, quantity}]) as {order line id: quantity}, or None when absent. Only the
    shape is checked here (422 lines[i].<field>); the service checks them against the order (422 lines.<id>)."""
    raw = data.get("lines")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ValidationError({"lines": "must be a non-empty list of {line_id, quantity}"})
    problems, lines = {}, {}
    for i, entry in enumerate(raw[:1000]):
        if not isinstance(entry, dict):
            problems[f"lines[{i}]"] = "must be an object {line_id, quantity}"
            continue
        line_id, quantity = entry.get("line_id"), entry.get("quantity")
        if isinstance(line_id, bool) or not isinstance(line_id, int) or line_id < 1:
            problems[f"lines[{i}].line_id"] = "must be the id of a line of this order"
        elif line_id in lines:
            problems[f"lines[{i}].line_id"] = "is named twice"
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            problems[f"lines[{i}].quantity"] = "must be a whole number of units, at least 1"
        if f"lines[{i}].line_id" not in problems and f"lines[{i}].quantity" not in problems:
            lines[line_id] = quantity
    if len(raw) > 1000:
        problems["lines"] = "at most 1000 lines"
    if problems:
        raise ValidationError(problems)
    return lines


@bp.get(f"{A}/orders")
@permission_required(P.ORDERS_VIEW)
def admin_orders():
    p = Params(request.args)
    status = p.choice("status", list(states.STATUSES), "")
    page, per_page = p.int("page", 1, lo=1, hi=100_000), p.int("per_page", 20, lo=1, hi=100)
    p.raise_if_invalid()
    where = [Order.status == status] if status else []
    total = db.session.scalar(select(func.count()).select_from(Order).where(*where))
    rows = db.session.scalars(
        select(Order)
        .where(*where)
        .order_by(Order.created_at.desc(), Order.id.desc())
        .options(selectinload(Order.lines), selectinload(Order.events))
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return {
        "items": [staff_order_json(o, g.api_user) for o in rows],
        "page": page,
        "per_page": per_page,
        "total": total,
    }


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
    lines = refund_lines_in(data)
    if not (amount is None and lines) and not fits(amount, Payment.refunded_amount, lo=1):
        raise ValidationError({"amount": "must be a positive amount in minor units"})
    if not isinstance(reason, str) or len(reason) > 1000:
        raise ValidationError({"reason": "must be text of at most 1000 characters"})
    # A refusal (404, 409, 422) is the key's answer too; an outage releases it for a retry.
    with idempotency.once(f"refund:{order_id}", key, data, keep=(NotFound, Conflict, Invalid)) as claim:
        if claim.repeat:
            return claim.repeat[1], claim.repeat[0]
        record = payments.refund(order_id, amount, reason, g.api_user.email, lines=lines)
        payment = record.payment
        body = {
            "id": record.id,
            "order_id": order_id,
            "amount": money(record.amount, payment.currency),
            "reason": record.reason,
            "status": record.status,
            "provider_refund_id": record.provider_refund_id,
            "refunded_total": money(payment.refunded_amount, payment.currency),
            "lines": [
                {"line_id": rl.order_line_id, "quantity": rl.quantity, "amount": money(rl.amount, payment.currency)}
                for rl in record.lines
            ],
        }
        claim.answer(201, body)
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
    today = clock.now().date()
    start, end = p.date("from", today - timedelta(days=29)), p.date("to", today)
    errors = p.errors
    if not errors and start > end:
        errors["from"] = "must not be after to"
    if not errors and (end - start).days > 366:
        errors["to"] = "a report covers at most 366 days"
    if errors:
        raise ValidationError(errors)
    # From the read model (shop.reports): the order tables are not read here (CQRS).
    return reports.sales_from_read_model(start, end)
