"""Stock reservations: units held for a pending order until it is paid or the hold expires."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from shop.catalog.models import utcnow
from shop.extensions import db


class Reservation(db.Model):
    __tablename__ = "reservation"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity"),
        CheckConstraint("status IN ('active', 'consumed', 'released')", name="status"),
        # The expiry job looks for active holds past their time.
        Index("ix_reservation_active_expiry", "expires_at", postgresql_where="status = 'active'"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("order.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("variant.id", ondelete="RESTRICT"), index=True)
    quantity: Mapped[int] = mapped_column()
    status: Mapped[str] = mapped_column(String(10), default="active")
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
