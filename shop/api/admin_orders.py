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
from shop.api import bp, schemas
from shop.api.auth import json_body, permission_required
from shop.api.buying import IDEMPOTENCY_KEY, order_json
from shop.api.contract import PAGE, PER_PAGE, operation, parse, parse_body, query
from shop.api.params import Params
from shop.errors import ApiError, Conflict, Invalid, NotFound, ValidationError
from shop.extensions import db
from shop.money import money
from shop.orders import services as orders
from shop.orders import states
from shop.orders.models import Order
from shop.payments import queries as payment_queries
from shop.payments import services as payments
from shop.payments.models import Dispute
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
        paid = payment_queries.payments_of(order.id)
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
        disputes = payment_queries.disputes_of(order.id)
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


@bp.get(f"{A}/orders")
@operation(
    "Orders (orders.view); e-mail, addresses and payments only where the role allows",
    tags=["admin"],
    params=[
        query("status", {"type": "string", "enum": list(states.STATUSES)}, "only orders in this status"),
        PAGE,
        PER_PAGE,
    ],
    responses={200: schemas.StaffOrderPage, 422: "validation_failed: a query parameter"},
)
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
@operation(
    "Move an order: processing/shipped/delivered (orders.fulfil), cancelled/returned (orders.cancel)",
    tags=["admin"],
    body=schemas.Transition,
    responses={
        200: schemas.StaffOrder,
        403: "forbidden: your role may not make this move (details.permission)",
        404: "order_not_found: no such order",
        409: "invalid_transition",
        422: 'validation_failed: an unknown status, or bad tracking (details.fields["tracking.<name>"])',
    },
)
@permission_required(P.ORDERS_VIEW)
def admin_transition(order_id: int):
    body = parse_body(schemas.Transition)
    target, note = body.status, body.note or ""
    needed = states.staff_permission(target)
    if needed is None:
        raise ValidationError({"status": f"must be one of {', '.join(STAFF_TARGETS)}"})
    tracking = orders.clean_tracking(body.tracking)  # {carrier, number, url}: 422 tracking.<field>
    if tracking and target != states.SHIPPED:
        raise ValidationError({"tracking": "is given only with status shipped"})
    if not has_permission(g.api_user, needed):
        raise ApiError(403, "forbidden", "Your role does not allow this.", {"permission": needed.value})
    order = orders.transition(order_id, target, g.api_user.email, note, tracking)
    return staff_order_json(orders.for_staff(order.id), g.api_user)


@bp.post(f"{A}/orders/<int:order_id>/refunds")
@operation(
    "Refund part or all of the payment, by amount or by line (payments)",
    tags=["admin"],
    params=[IDEMPOTENCY_KEY],
    body=schemas.RefundIn,
    responses={
        201: schemas.Refund,
        400: "idempotency_key_required: no Idempotency-Key; malformed_request",
        404: "order_not_found: no such order",
        409: "nothing_to_refund, refund_pending, payment_disputed (an open dispute: Stripe refuses refunds until it "
        "closes), refund_refused, request_in_progress",
        422: "validation_failed: details.fields.amount (missing, or above what is left), lines[i].<field> (shape), "
        "lines.<line_id> (not a line of this order, or more units than are left unrefunded); idempotency_key_reused",
        503: "payment_unavailable: the payment provider cannot be reached",
    },
)
@permission_required(P.PAYMENTS)
def admin_refund(order_id: int):
    data = json_body()
    key = request.headers.get("Idempotency-Key")
    if not key:
        raise ApiError(400, "idempotency_key_required", "Send an Idempotency-Key header (a UUID) with refunds.")
    currency = _order_currency(order_id)
    body = parse(schemas.RefundIn, data, currency=currency)  # Money in the order's currency
    if body.currency is not None and body.currency != currency:
        raise ValidationError({"currency": f"must be in {currency}"})
    amount, reason = body.amount, body.reason
    lines: dict[int, int] | None = None
    if body.lines is not None:
        lines = {}
        for i, entry in enumerate(body.lines):
            if entry.line_id in lines:
                raise ValidationError({f"lines[{i}].line_id": "is named twice"})
            lines[entry.line_id] = entry.quantity
    if amount is None and not lines:
        raise ValidationError({"amount": "must be a positive amount in minor units"})
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
@operation(
    "Sales by day and currency, and totals with refunds and net (reports.view)",
    tags=["admin"],
    params=[
        query("from", {"type": "string", "format": "date"}, "first day (default: 30 days ago)"),
        query("to", {"type": "string", "format": "date"}, "last day (default: today); at most 366 days after from"),
    ],
    responses={200: schemas.SalesReport, 422: "validation_failed: bad dates (details.fields)"},
)
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
