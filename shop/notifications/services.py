"""notify(): the one way the shop tells people things.

The message is queued only when the surrounding transaction commits (and dropped when it rolls
back), so a worker never mails about a row that does not exist. Channels: e-mail today.
"""
from __future__ import annotations

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
}


def notify(event_name: str, to: str, payload: dict) -> None:
    """Queue `event_name` for `to` after the current transaction commits. Payload must be JSON-able."""
    from rq import Retry

    from shop.notifications.jobs import send_notification

    if event_name not in EVENTS:
        raise ValueError(f"unknown notification {event_name!r}")
    after_commit("mail", send_notification, event_name, to, dict(payload),
                 retry=Retry(max=5, interval=[10, 30, 60, 300, 900]))
