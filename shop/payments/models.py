"""Payments, refunds and provider events. Only ids and statuses: card data never reaches the shop."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, event, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shop.bounds import one_of
from shop.catalog.models import utcnow
from shop.extensions import db
from shop.telemetry import tracing


class PaymentStatus(StrEnum):
    CREATING = "creating"  # recorded, not yet opened with the provider
    REQUIRES_PAYMENT = "requires_payment"  # open with the provider: the shopper may pay
    PROCESSING = "processing"  # submitted (a bank debit): the provider confirms later
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RefundStatus(StrEnum):
    PENDING = "pending"  # not yet accepted by the provider (retried)
    PROCESSING = "processing"  # accepted, not settled yet (Stripe's "pending")
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the held amount is refundable again


class WebhookEventStatus(StrEnum):
    RECEIVED = "received"
    PROCESSED = "processed"
    FAILED = "failed"
    IGNORED = "ignored"


class Payment(db.Model):
    __tablename__ = "payment"
    __table_args__ = (
        CheckConstraint(one_of("status", PaymentStatus), name="status"),
        CheckConstraint("flow IN ('intent', 'checkout')", name="flow"),
        UniqueConstraint("provider", "provider_id", name="uq_payment_provider_id"),
        UniqueConstraint("checkout_session_id", name="uq_payment_checkout_session_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("order.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    provider_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default=PaymentStatus.CREATING)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    # Taken back by the card's bank in a dispute the shop lost: no longer refundable.
    charged_back: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # "intent": a PaymentIntent the client confirms (API clients, the test gateway); "checkout": a Stripe-hosted
    # Checkout Session (the storefront in Stripe mode), whose PaymentIntent id (provider_id) is known once paid.
    flow: Mapped[str] = mapped_column(String(10), default="intent", server_default="intent")
    checkout_session_id: Mapped[str | None] = mapped_column(String(255))
    checkout_expires_at: Mapped[datetime | None] = mapped_column()  # when Stripe closes the session by itself
    failure_reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())
    # The trace of the request that created the attempt (W3C traceparent; NULL when traces are off): the provider's
    # webhook that settles it continues that trace (shop.telemetry.tracing).
    # (server_default NULL and no eager defaults: an INSERT without a trace neither names nor returns the column)
    trace_parent: Mapped[str | None] = mapped_column(String(55), server_default=text("NULL"))
    __mapper_args__ = {"eager_defaults": False}

    refunds: Mapped[list[Refund]] = relationship(back_populates="payment", order_by="Refund.id")
    disputes: Mapped[list[Dispute]] = relationship(back_populates="payment", order_by="Dispute.id")


class Refund(db.Model):
    __tablename__ = "refund"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount"),
        UniqueConstraint("provider_refund_id", name="uq_refund_provider_refund_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payment.id", ondelete="CASCADE"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    # pending: not yet accepted by the provider (retried); processing: accepted, not settled yet (Stripe's
    # "pending"); succeeded; failed (the held amount is refundable again).
    status: Mapped[str] = mapped_column(String(20), default=RefundStatus.PENDING)
    provider_refund_id: Mapped[str | None] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    payment: Mapped[Payment] = relationship(back_populates="refunds")
    lines: Mapped[list[RefundLine]] = relationship(back_populates="refund", order_by="RefundLine.id")


class RefundLine(db.Model):
    """Which order lines (and how many of their units) a refund by line paid back."""

    __tablename__ = "refund_line"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    refund_id: Mapped[int] = mapped_column(ForeignKey("refund.id", ondelete="CASCADE"), index=True)
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_line.id", ondelete="CASCADE"), index=True)
    quantity: Mapped[int] = mapped_column()
    amount: Mapped[int] = mapped_column(BigInteger)

    refund: Mapped[Refund] = relationship(back_populates="lines")


class Dispute(db.Model):
    """A chargeback the card holder's bank opened on a payment (Stripe's charge.dispute.*). An open dispute
    flags its order; the outcome (won, lost, warning_closed) is kept when it closes."""

    __tablename__ = "dispute"
    __table_args__ = (UniqueConstraint("provider_dispute_id", name="uq_dispute_provider_dispute_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payment.id", ondelete="CASCADE"), index=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("order.id", ondelete="CASCADE"), index=True)
    provider_dispute_id: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(100), default="")  # Stripe's: fraudulent, product_not_received, ...
    status: Mapped[str] = mapped_column(String(40))  # Stripe's: needs_response, under_review, won, lost, ...
    outcome: Mapped[str | None] = mapped_column(String(20))  # won, lost, warning_closed once closed
    evidence_due_by: Mapped[datetime | None] = mapped_column()
    opened_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    closed_at: Mapped[datetime | None] = mapped_column()

    payment: Mapped[Payment] = relationship(back_populates="disputes")

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class WebhookEvent(db.Model):
    """Every provider event received, once per (provider, event id): the table is the dedupe."""

    __tablename__ = "webhook_event"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_webhook_event_provider_event"),
        CheckConstraint(one_of("status", WebhookEventStatus), name="status"),
        Index("ix_webhook_event_status", "status", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(12), default=WebhookEventStatus.RECEIVED)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column()


@event.listens_for(Payment, "before_insert")
def _note_trace(mapper, connection, target: Payment) -> None:
    """The creating request's trace, when traces are on (with them off the column is left out of the INSERT)."""
    if target.trace_parent is None and (parent := tracing.traceparent()):
        target.trace_parent = parent
