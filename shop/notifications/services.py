"""notify(): the one way the shop tells people things.

The message is queued only when the surrounding transaction commits (and dropped when it rolls
back), so a worker never mails about a row that does not exist. Channels: e-mail today.
"""
from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from shop.extensions import db, redis_ext

log = logging.getLogger(__name__)

# event name -> subject line (a template string over the payload)
EVENTS = {
    "account.verify_email": "Confirm your e-mail address",
    "account.password_reset": "Reset your password",
    "account.password_changed": "Your password was changed",
}
_PENDING = "pending_notifications"


def notify(event_name: str, to: str, payload: dict) -> None:
    """Queue `event_name` for `to` after the current transaction commits. Payload must be JSON-able."""
    if event_name not in EVENTS:
        raise ValueError(f"unknown notification {event_name!r}")
    db.session.connection()  # make sure a transaction is open, so its rollback also drops the mail
    db.session.info.setdefault(_PENDING, []).append((event_name, to, dict(payload)))


def _enqueue(items: list[tuple[str, str, dict]]) -> None:
    from shop.notifications.jobs import send_notification

    queue = redis_ext.queue("mail")
    for event_name, to, payload in items:
        try:
            queue.enqueue(send_notification, event_name, to, payload, retry=_retry(), job_timeout=60)
        except Exception:  # noqa: BLE001 - the commit stands; an operator sees the log line
            log.exception("could not queue %s mail to %s", event_name, to)


def _retry():
    from rq import Retry

    return Retry(max=5, interval=[10, 30, 60, 300, 900])


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    items = session.info.pop(_PENDING, None)
    if items and current_app:
        _enqueue(items)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)
