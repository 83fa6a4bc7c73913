"""notify(): the one way the shop tells people things.

The message is queued only when the surrounding transaction commits (and dropped when it rolls
back), so a worker never mails about a row that does not exist. Channels: e-mail today.

Every notification is idempotent per (event, object key): the mail job claims a `sent_notification`
row before it sends (jobs.py), so a retried or duplicated job sends once. The key names what the mail
is about ("order:A1B2", "refund:7", "user:3:reset:<token hash>"); without one it is derived from the
payload (the order number, or a hash of the recipient and the payload).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shop.afterwards import after_commit

# event name -> subject line (a template string over the payload)
EVENTS = {
    "account.verify_email": "Confirm your e-mail address",
    "account.password_reset": "Reset your password",
    "account.password_changed": "Your password was changed",
    "order.confirmed": "Order {number} is confirmed",
    "order.shipped": "Order {number} is on its way",
    "order.delivered": "Order {number} was delivered",
    "order.refunded": "Your refund for order {number}",
    "inventory.low_stock": "Low stock: {count} variant(s) went low",
    "payment.dispute_opened": "Dispute opened on order {number}",
    "webhooks.endpoint_disabled": "Webhook endpoint disabled: {host}",
}

MAIL_RETRY_INTERVALS = [10, 30, 60, 300, 900]  # seconds between attempts: transient outages pass


def digest(value: str, length: int = 32) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def object_key_for(event_name: str, to: str, payload: dict[str, Any], key: str | None = None) -> str:
    """The object a notification is about; (event, key) is sent at most once."""
    if key:
        key = str(key)
        return key if len(key) <= 200 else f"{key[:100]}:{digest(key)}"
    if payload.get("number"):
        return f"order:{payload['number']}"
    return f"mail:{digest(json.dumps([to, payload], sort_keys=True, default=str), 48)}"


def notify(event_name: str, to: str, payload: dict[str, Any], key: str | None = None) -> None:
    """Queue `event_name` for `to` after the current transaction commits. Payload must be JSON-able.

    `key` names the object the mail is about; the same (event, key) is mailed once however many
    jobs run. Mails that must go out again for each request (a new reset link) put the token in it."""
    from rq import Retry

    from shop.notifications.jobs import send_notification

    if event_name not in EVENTS:
        raise ValueError(f"unknown notification {event_name!r}")
    payload = dict(payload)
    after_commit(
        "mail",
        send_notification,
        event_name,
        to,
        payload,
        key=object_key_for(event_name, to, payload, key),
        retry=Retry(max=len(MAIL_RETRY_INTERVALS), interval=MAIL_RETRY_INTERVALS),
    )
