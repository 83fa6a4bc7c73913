"""People: shoppers with their address book, and staff with a role."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from flask_login import UserMixin
from sqlalchemy import CheckConstraint, ForeignKey, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shop.bounds import one_of
from shop.catalog.models import utcnow
from shop.extensions import db


class Role(StrEnum):
    """Staff roles, defined once: what each may do is in permissions.py, the column's CHECK below and the
    migrations name the same values."""

    WAREHOUSE = "warehouse"
    SUPPORT = "support"
    ANALYST = "analyst"
    MANAGER = "manager"
    ADMIN = "admin"


ROLES = tuple(Role)


class User(UserMixin, db.Model):
    __tablename__ = "user_account"
    __table_args__ = (
        # E-mail addresses are unique whatever their case.
        Index("uq_user_account_email_lower", text("lower(email)"), unique=True),
        CheckConstraint(f"role IS NULL OR {one_of('role', Role)}", name="role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    # None for shoppers; staff have exactly one role (see permissions.py).
    role: Mapped[str | None] = mapped_column(String(20), index=True)
    is_active_account: Mapped[bool] = mapped_column(default=True)
    email_verified_at: Mapped[datetime | None] = mapped_column()
    # Bumped by a password change: every session cookie and token minted before it stops working.
    credentials_version: Mapped[int] = mapped_column(default=1)
    # Bumped by log-out and deactivation: every browser session (and remember-me cookie) minted before it ends.
    session_version: Mapped[int] = mapped_column(default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    last_login_at: Mapped[datetime | None] = mapped_column()

    addresses: Mapped[list[Address]] = relationship(
        back_populates="user", order_by="Address.id", cascade="all, delete-orphan"
    )

    @property
    def is_active(self) -> bool:  # Flask-Login
        return self.is_active_account

    @property
    def is_staff(self) -> bool:
        return self.role is not None

    def get_id(self) -> str:
        # The session remembers both versions, so a password change, a log-out or a deactivation ends it.
        return f"{self.id}:{self.credentials_version}:{self.session_version}"

    def __repr__(self) -> str:
        return f"<User {self.id} {self.role or 'shopper'}>"


class Address(db.Model):
    __tablename__ = "address"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    line1: Mapped[str] = mapped_column(String(200))
    line2: Mapped[str] = mapped_column(String(200), default="")
    city: Mapped[str] = mapped_column(String(120))
    region: Mapped[str] = mapped_column(String(120), default="")
    postal_code: Mapped[str] = mapped_column(String(20))
    country: Mapped[str] = mapped_column(String(2))
    phone: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    user: Mapped[User] = relationship(back_populates="addresses")

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "line1": self.line1,
            "line2": self.line2 or None,
            "city": self.city,
            "region": self.region or None,
            "postal_code": self.postal_code,
            "country": self.country,
            "phone": self.phone or None,
        }
