"""Partner webhook endpoints, their deliveries and each delivery's attempts (the delivery log)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shop.extensions import db


class DeliveryState(StrEnum):
    """A partner webhook delivery's state."""

    PENDING = "pending"  # due (again) at next_attempt_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # out of attempts, or its endpoint is gone


PENDING, SUCCEEDED, FAILED = DeliveryState
STATES = tuple(DeliveryState)


class WebhookEndpoint(db.Model):
    """A partner's URL and the event types it wants. The secret is stored encrypted (signing.py) and shown once."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(ARRAY(String(60)))
    description: Mapped[str] = mapped_column(String(200), default="", server_default="")
    secret_encrypted: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(String(300))
    disabled_at: Mapped[datetime | None] = mapped_column()
    # The first failed attempt since the last success; three days of that and the endpoint is disabled.
    failing_since: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class WebhookDelivery(db.Model):
    """One event for one endpoint: sent until a 2xx answer, or until the retry schedule runs out."""

    __tablename__ = "webhook_delivery"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64))  # the envelope's id: the webhook-id header
    event_type: Mapped[str] = mapped_column(String(60))
    body: Mapped[str] = mapped_column(Text)  # the envelope as sent, byte for byte on every attempt
    state: Mapped[str] = mapped_column(String(16), default=PENDING, server_default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")  # counted when an attempt is claimed
    # Due time of the next attempt; while an attempt runs, the end of its claim (services.CLAIM).
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_status: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column()

    endpoint: Mapped[WebhookEndpoint] = relationship()
    log: Mapped[list[WebhookAttempt]] = relationship(order_by="WebhookAttempt.id", viewonly=True)

    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_delivery_endpoint_event"),
        Index("ix_webhook_delivery_due", "next_attempt_at", postgresql_where=text("state = 'pending'")),
        Index("ix_webhook_delivery_endpoint", "endpoint_id", "id"),
    )


class WebhookAttempt(db.Model):
    """One POST (and the redirects it followed): what was sent, what came back, how long it took."""

    __tablename__ = "webhook_attempt"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_delivery.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column()
    duration_ms: Mapped[int] = mapped_column()
    url: Mapped[str] = mapped_column(String(2000))  # the last URL reached (after redirects)
    request_headers: Mapped[dict] = mapped_column(JSONB)
    request_excerpt: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int | None] = mapped_column()
    response_excerpt: Mapped[str] = mapped_column(Text, default="", server_default="")
    error: Mapped[str | None] = mapped_column(String(500))
