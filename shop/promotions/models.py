"""Promotion rules, their codes (shared or single-use batches) and redemptions by orders."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shop.catalog.models import utcnow
from shop.extensions import db

KINDS = ("percent", "fixed", "free_shipping")


class Promotion(db.Model):
    """A rule. With `automatic` it applies without a code (a catalogue sale); else through its codes."""

    __tablename__ = "promotion"
    __table_args__ = (
        CheckConstraint("kind IN ('percent', 'fixed', 'free_shipping')", name="kind"),
        CheckConstraint("(kind <> 'percent') OR (value BETWEEN 1 AND 100)", name="percent_value"),
        CheckConstraint("value >= 0", name="value_nonnegative"),
        CheckConstraint("usage_limit IS NULL OR usage_limit >= 0", name="usage_limit"),
        CheckConstraint("per_customer_limit IS NULL OR per_customer_limit >= 0", name="per_customer_limit"),
        Index("ix_promotion_automatic_window", "automatic", "starts_at", "ends_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(20))
    # percent: 1-100; fixed: minor units; free_shipping: 0
    value: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    automatic: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    starts_at: Mapped[datetime | None] = mapped_column()
    ends_at: Mapped[datetime | None] = mapped_column()
    min_subtotal: Mapped[int | None] = mapped_column(BigInteger)
    usage_limit: Mapped[int | None] = mapped_column()
    per_customer_limit: Mapped[int | None] = mapped_column()
    first_order_only: Mapped[bool] = mapped_column(default=False)
    stackable: Mapped[bool] = mapped_column(default=False)
    priority: Mapped[int] = mapped_column(default=0)
    # {"categories": [ids], "products": [ids], "variants": [ids]}; empty means everything
    applies_to: Mapped[dict] = mapped_column(JSONB, default=dict)
    excludes: Mapped[dict] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())

    codes: Mapped[list[PromotionCode]] = relationship(
        back_populates="promotion", order_by="PromotionCode.id", cascade="all, delete-orphan"
    )

    def __str__(self) -> str:
        return self.name


class PromotionCode(db.Model):
    """A code shoppers type. A shared code (usage_limit None: the promotion's limits apply) or one of a
    batch of single-use codes (usage_limit 1)."""

    __tablename__ = "promotion_code"
    __table_args__ = (
        Index("uq_promotion_code_code_upper", text("upper(code)"), unique=True),
        CheckConstraint("usage_limit IS NULL OR usage_limit >= 0", name="usage_limit"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    promotion_id: Mapped[int] = mapped_column(ForeignKey("promotion.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    usage_limit: Mapped[int | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    promotion: Mapped[Promotion] = relationship(back_populates="codes")


class Redemption(db.Model):
    """One use of a promotion by an order. Counted while active; released when the order is cancelled
    or its reservation expires."""

    __tablename__ = "redemption"
    __table_args__ = (
        UniqueConstraint("promotion_id", "order_id", name="uq_redemption_promotion_order"),
        CheckConstraint("status IN ('active', 'released')", name="status"),
        Index("ix_redemption_promotion_active", "promotion_id", postgresql_where="status = 'active'"),
        Index("ix_redemption_customer", "promotion_id", "user_id", "email"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    promotion_id: Mapped[int] = mapped_column(ForeignKey("promotion.id", ondelete="RESTRICT"))
    code_id: Mapped[int | None] = mapped_column(ForeignKey("promotion_code.id", ondelete="SET NULL"), index=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("order.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    email: Mapped[str] = mapped_column(String(254))  # lower-cased: a guest cannot dodge a per-customer limit
    discount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    released_at: Mapped[datetime | None] = mapped_column()
