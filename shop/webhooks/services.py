"""Receiving provider events: stored once per (provider, event id), applied exactly once.

The INSERT ... ON CONFLICT DO NOTHING and the event's effect share one transaction. Copies of an
event that arrive together queue on the unique index; when the first commits, the others find it
processed and do nothing. If applying fails, the event is still stored, marked failed with the
error, and retried: by the provider's own redelivery, by the scheduled retry job, or by staff.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from shop import clock
from shop.extensions import db
from shop.payments import services as payments
from shop.payments.models import WebhookEvent, WebhookEventStatus

log = logging.getLogger(__name__)

HANDLERS = payments.HANDLERS  # the payment domain names the events it acts on


def _apply(row: WebhookEvent) -> None:
    handler = HANDLERS.get(row.type)
    row.attempts += 1
    if handler is None:
        row.status, row.last_error = WebhookEventStatus.IGNORED, None
    else:
        outcome = handler(row.payload["data"]["object"])
        row.status, row.last_error = WebhookEventStatus.PROCESSED, None
        log.info("webhook %s %s: %s", row.event_id, row.type, outcome)
    row.processed_at = clock.now()


def receive(provider: str, event: dict[str, Any]) -> str:
    """Store and apply one verified event. Returns what happened; raises if applying failed."""
    event_id, kind = str(event["id"]), str(event.get("type", ""))
    inserted = db.session.execute(
        insert(WebhookEvent)
        .values(provider=provider, event_id=event_id, type=kind, payload=event)
        .on_conflict_do_nothing(constraint="uq_webhook_event_provider_event")
        .returning(WebhookEvent.id)
    ).scalar()
    if inserted is None:  # seen before: apply only if an earlier attempt failed
        # Re-read under the lock (populate_existing): retry() and the back-office hold this row already, and
        # a stale "failed" would apply the event twice.
        row = db.session.scalar(
            select(WebhookEvent)
            .where(WebhookEvent.provider == provider, WebhookEvent.event_id == event_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        assert row is not None  # the insert's conflict says it is there
        if row.status != WebhookEventStatus.FAILED:
            db.session.commit()
            return "duplicate"
    else:
        row = db.session.get(WebhookEvent, inserted)
        assert row is not None  # inserted by this transaction
    try:
        _apply(row)
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        _record_failure(provider, event, exc)
        raise
    return str(row.status)


def _record_failure(provider: str, event: dict[str, Any], exc: Exception) -> None:
    """Keep the event and its error even though applying it rolled back."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    db.session.execute(
        insert(WebhookEvent)
        .values(
            provider=provider,
            event_id=str(event["id"]),
            type=str(event.get("type", "")),
            payload=event,
            status=WebhookEventStatus.FAILED,
            attempts=1,
            last_error=error,
        )
        .on_conflict_do_update(
            constraint="uq_webhook_event_provider_event",
            set_={"status": "failed", "last_error": error, "attempts": WebhookEvent.attempts + 1},
            where=WebhookEvent.status != WebhookEventStatus.PROCESSED,
        )
    )
    db.session.commit()


def retry(event_row_id: int) -> str:
    """Apply a failed event again (the scheduled job and the back-office use this)."""
    # Locked and re-read (populate_existing): the back-office loaded it before calling; two retries queue here.
    row = db.session.get(WebhookEvent, event_row_id, with_for_update=True, populate_existing=True)
    if row is None or row.status != WebhookEventStatus.FAILED:
        db.session.commit()
        return "nothing to retry"
    return receive(row.provider, row.payload)


def retry_failed(limit: int = 100) -> int:
    """Scheduled: retry every failed event once."""
    ids = db.session.scalars(
        select(WebhookEvent.id)
        .where(WebhookEvent.status == WebhookEventStatus.FAILED)
        .order_by(WebhookEvent.received_at)
        .limit(limit)
    ).all()
    db.session.commit()
    done = 0
    for event_row_id in ids:
        try:
            retry(event_row_id)
            done += 1
        except Exception:  # noqa: BLE001 - recorded on the row; the next run tries again
            log.exception("retrying webhook event %s failed", event_row_id)
    return done
