"""The mail job: render and send one notification, at most once per (event, object key). Runs on the
RQ `mail` queue.

Before sending, the job claims the notification's `sent_notification` row (INSERT ... ON CONFLICT DO
NOTHING); after the backend accepted the mail it marks the row `sent`. So:
  * a duplicate or retried job that finds the row `sent` does nothing;
  * one that finds it `sending` by a live job raises MailInProgress, and RQ retries it later;
  * a row left `sending` by a worker killed mid-send (older than MAIL_CLAIM_STALE_SECONDS, longer
    than a mail job may run) is taken over, and the mail is sent once;
  * when the backend fails, the claim is released, and RQ's retry sends it later.

The backend returns as soon as the provider accepted the mail, and the `sent` mark is committed
right then, kept trying for up to a minute while PostgreSQL is away. What remains: a worker killed
(or PostgreSQL away for longer) between the provider's acceptance and that commit leaves the claim
`sending`; it is taken over once stale and the mail goes out again. Over SMTP the copy carries the
same Message-ID (message_id()), so receiving systems can drop it; SendGrid has no idempotency key.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from flask import current_app, render_template
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert

from shop import clock
from shop.extensions import db
from shop.notifications.backends import Message, backend_for
from shop.notifications.models import SentNotification
from shop.notifications.services import EVENTS, digest, object_key_for

log = logging.getLogger(__name__)
DEFAULT_CLAIM_STALE_SECONDS = 300  # a mail job is killed by RQ after 120 s, so an older claim is abandoned
MARK_SENT_PAUSES = (0.5, 1, 2, 4, 8, 15, 15, 15)  # ~1 minute of PostgreSQL outage, within the job's 120 s


class MailInProgress(RuntimeError):
    """Another job is sending this notification right now; RQ retries this one later."""


def message_id(event_name: str, object_key: str, sender: str) -> str:
    """The notification's Message-ID: the same for every attempt at (event, object key)."""
    domain = sender.rpartition("@")[2].strip("> ") or "shop"
    return f"<{digest(f'{event_name}:{object_key}', 40)}@{domain}>"


def render(event_name: str, to: str, payload: dict, object_key: str | None = None) -> Message:
    context = {"shop_name": current_app.config["SHOP_NAME"], "to": to, **payload}
    base = f"email/{event_name.replace('.', '_')}"
    sender = current_app.config["MAIL_FROM"]
    return Message(
        to=to,
        sender=sender,
        subject=EVENTS[event_name].format(**context),
        text=render_template(f"{base}.txt", **context),
        html=render_template(f"{base}.html", **context),
        event=event_name,
        message_id=message_id(event_name, object_key, sender) if object_key else "",
    )


def claim(event_name: str, object_key: str, to: str) -> tuple[int, datetime] | None:
    """Take the right to send (event, key): (row id, claim time), or None when it was sent already."""
    now = clock.now()
    row = db.session.execute(
        insert(SentNotification)
        .values(event=event_name, object_key=object_key, recipient=to, status="sending", claimed_at=now)
        .on_conflict_do_nothing(constraint="uq_sent_notification_event_object")
        .returning(SentNotification.id)
    ).first()
    if row is None:  # someone claimed it before: take it over only if that claim was abandoned
        stale = current_app.config.get("MAIL_CLAIM_STALE_SECONDS", DEFAULT_CLAIM_STALE_SECONDS)
        row = db.session.execute(
            update(SentNotification)
            .where(
                SentNotification.event == event_name,
                SentNotification.object_key == object_key,
                SentNotification.status == "sending",
                SentNotification.claimed_at < now - timedelta(seconds=stale),
            )
            .values(claimed_at=now, recipient=to)
            .returning(SentNotification.id)
        ).first()
        if row is not None:
            log.warning("taking over the abandoned claim on %s %s", event_name, object_key)
    if row is None:
        status = db.session.scalar(
            select(SentNotification.status).where(
                SentNotification.event == event_name, SentNotification.object_key == object_key
            )
        )
        db.session.commit()
        if status == "sent":
            return None
        raise MailInProgress(f"{event_name} {object_key} is being sent by another job")
    db.session.commit()
    return row.id, now


def _release(row_id: int, claimed_at: datetime) -> None:
    try:
        db.session.rollback()
        db.session.execute(
            delete(SentNotification).where(
                SentNotification.id == row_id,
                SentNotification.status == "sending",
                SentNotification.claimed_at == claimed_at,
            )
        )
        db.session.commit()
    except Exception:  # noqa: BLE001 - the claim goes stale and is taken over
        db.session.rollback()
        log.exception("could not release the claim %s", row_id)


def _mark_sent(row_id: int, claimed_at: datetime) -> None:
    done = db.session.execute(
        update(SentNotification)
        .where(SentNotification.id == row_id, SentNotification.claimed_at == claimed_at)
        .values(status="sent", sent_at=clock.now())
    ).rowcount
    db.session.commit()
    if not done:
        log.warning("notification claim %s was taken over while this job sent it", row_id)


def send_notification(event_name: str, to: str, payload: dict, key: str | None = None) -> str | None:
    """Render and send once; returns the backend's message id (None when it had been sent already).
    Raises on failure so RQ retries."""
    app = current_app._get_current_object() if current_app else None
    if app is None:  # when RQ runs us outside the worker's app context
        from shop import create_app

        app = create_app()
    with app.app_context():
        object_key = object_key_for(event_name, to, payload, key)
        claimed = claim(event_name, object_key, to)
        if claimed is None:
            log.info("%s %s was sent already; not sending it again", event_name, object_key)
            return None
        try:
            message = render(event_name, to, payload, object_key)
            sent = backend_for(app.config).send(message)
        except BaseException:
            _release(*claimed)
            raise
        # The provider accepted the mail: record it before anything else, and never let RQ run this again.
        for attempt, pause in enumerate((*MARK_SENT_PAUSES, None), start=1):
            try:
                _mark_sent(*claimed)
                break
            except Exception:  # noqa: BLE001
                db.session.rollback()
                log.warning("could not mark notification %s sent (attempt %d)", claimed[0], attempt, exc_info=True)
                if pause is None:
                    log.error(
                        "notification %s was sent but is not marked; it may be sent again once its claim is stale",
                        claimed[0],
                    )
                else:
                    time.sleep(pause)
        return sent
