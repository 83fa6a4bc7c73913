"""A record of every notification sent, one per (event, object): the guard that mail never doubles."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from shop.catalog.models import utcnow
from shop.extensions import db


class SentNotification(db.Model):
    __tablename__ = "sent_notification"
    __table_args__ = (UniqueConstraint("event", "object_key", name="uq_sent_notification_event_object"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event: Mapped[str] = mapped_column(String(60))
    object_key: Mapped[str] = mapped_column(String(200))  # e.g. "order:42", "user:7:verify:<token hash>"
    recipient: Mapped[str] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(10), default="sending")  # sending, sent
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column()
