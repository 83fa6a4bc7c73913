"""Reads of an order's payments and disputes, for the back-office page and the admin API alike."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from shop.extensions import db
from shop.payments.models import Dispute, Payment, Refund


def payments_of(order_id: int, *, with_refunds: bool = False) -> Sequence[Payment]:
    """The order's payment attempts, oldest first (with their refunds and refund lines loaded when asked)."""
    query = select(Payment).where(Payment.order_id == order_id).order_by(Payment.id)
    if with_refunds:
        query = query.options(selectinload(Payment.refunds).selectinload(Refund.lines))
    return db.session.scalars(query).all()


def disputes_of(order_id: int) -> Sequence[Dispute]:
    """The order's disputes (chargebacks and inquiries), open and closed, oldest first."""
    return db.session.scalars(
        select(Dispute).where(Dispute.order_id == order_id).order_by(Dispute.opened_at, Dispute.id)
    ).all()
