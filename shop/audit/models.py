from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shop.catalog.models import utcnow
from shop.extensions import db


class AuditEntry(db.Model):
    """One row per changed object. Written in the same transaction as the change itself."""

    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_entry_entity", "entity_type", "entity_id"), Index("ix_audit_entry_at", "at"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    actor_id: Mapped[int | None] = mapped_column(index=True)  # no FK: the record outlives the account
    actor_email: Mapped[str] = mapped_column(String(254))
    channel: Mapped[str] = mapped_column(String(20))  # back-office, api, cli
    action: Mapped[str] = mapped_column(String(10))  # create, update, delete
    entity_type: Mapped[str] = mapped_column(String(60))
    entity_id: Mapped[str] = mapped_column(String(60))
    before: Mapped[dict | None] = mapped_column(JSONB)
    after: Mapped[dict | None] = mapped_column(JSONB)
    ip: Mapped[str | None] = mapped_column(String(64))
