"""Orders keep snapshots of what was bought, so later catalogue changes never rewrite history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shop.bounds import one_of
from shop.catalog.models import utcnow
from shop.extensions import db
from shop.orders.states import STATUSES


class Order(db.Model):
    __tablename__ = "order"
    __table_args__ = (
        CheckConstraint(one_of("status", STATUSES), name="status"),
        CheckConstraint(
            "total >= 0 AND subtotal >= 0 AND discount >= 0 AND shipping >= 0 AND tax >= 0", name="money_nonnegative"
        ),
        Index("ix_order_user_created", "user_id", "created_at"),
        Index("ix_order_status_created", "status", "created_at"),
        # Checkout counts a client's unpaid holds by IP and by e-mail (shop.checkout.holds).
        Index("ix_order_pending_client_ip", "client_ip", postgresql_where="status = 'pending'"),
        Index("ix_order_pending_email", "email", postgresql_where="status = 'pending'"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    email: Mapped[str] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(12), default="pending")
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int] = mapped_column(BigInteger)
    discount: Mapped[int] = mapped_column(BigInteger, default=0)
    shipping: Mapped[int] = mapped_column(BigInteger)
    tax: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    shipping_method: Mapped[str] = mapped_column(String(40))
    shipping_address: Mapped[dict] = mapped_column(JSONB)
    billing_address: Mapped[dict | None] = mapped_column(JSONB)
    # A guest proves ownership with a token shown once; only its hash is kept.
    access_token_hash: Mapped[str | None] = mapped_column(String(64))
    cart_id: Mapped[str | None] = mapped_column(String(36), index=True)
    client_ip: Mapped[str | None] = mapped_column(String(45))  # who placed it (counts unpaid holds per client)
    # Set by staff when the order is shipped (shop.orders.services.clean_tracking): the parcel's carrier and
    # number, and a link to follow it (given, or made from the number for a well-known carrier; else None).
    tracking_carrier: Mapped[str | None] = mapped_column(String(60))
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    tracking_url: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", order_by="OrderLine.id", cascade="all, delete-orphan"
    )
    events: Mapped[list[OrderEvent]] = relationship(
        back_populates="order", order_by="OrderEvent.id", cascade="all, delete-orphan"
    )


class OrderLine(db.Model):
    __tablename__ = "order_line"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("order.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int | None] = mapped_column(ForeignKey("variant.id", ondelete="SET NULL"), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    options: Mapped[dict] = mapped_column(JSONB, default=dict)
    quantity: Mapped[int] = mapped_column()
    unit_price: Mapped[int] = mapped_column(BigInteger)  # what was charged per unit (the sale price in a sale)
    # The unit price before an automatic sale rule, kept only when the line was bought on sale (else None).
    list_price: Mapped[int | None] = mapped_column(BigInteger)
    line_total: Mapped[int] = mapped_column(BigInteger)

    order: Mapped[Order] = relationship(back_populates="lines")


class OrderEvent(db.Model):
    """One move of the state machine: from, to, who, why, when."""

    __tablename__ = "order_event"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("order.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(12))
    to_status: Mapped[str] = mapped_column(String(12))
    actor: Mapped[str] = mapped_column(String(254))  # "customer", "system", "stripe", or a staff e-mail
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    order: Mapped[Order] = relationship(back_populates="events")
