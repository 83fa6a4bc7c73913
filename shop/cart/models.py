"""Carts: a guest's (held by its secret token) or a user's. Lines name variants, never prices."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shop.bounds import one_of
from shop.catalog.models import Variant, utcnow
from shop.extensions import db


class CartStatus(StrEnum):
    OPEN = "open"
    CONVERTED = "converted"  # became an order
    MERGED = "merged"  # its lines moved into the user's cart at log-in


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Cart(db.Model):
    __tablename__ = "cart"
    __table_args__ = (
        CheckConstraint(one_of("status", CartStatus), name="status"),
        # One open cart per user; guests' carts have no user.
        Index("uq_cart_open_user", "user_id", unique=True, postgresql_where="status = 'open' AND user_id IS NOT NULL"),
        Index("ix_cart_updated_at", "updated_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(10), default=CartStatus.OPEN)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())

    items: Mapped[list[CartItem]] = relationship(
        back_populates="cart", order_by="CartItem.id", cascade="all, delete-orphan"
    )


class CartItem(db.Model):
    __tablename__ = "cart_item"
    __table_args__ = (
        UniqueConstraint("cart_id", "variant_id", name="uq_cart_item_cart_variant"),
        CheckConstraint("quantity BETWEEN 1 AND 100", name="quantity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    cart_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cart.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("variant.id", ondelete="CASCADE"), index=True)
    quantity: Mapped[int] = mapped_column()

    cart: Mapped[Cart] = relationship(back_populates="items")
    variant: Mapped[Variant] = relationship()
