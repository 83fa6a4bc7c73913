"""Notifications: `notify(event, to, payload)` renders templates/email/<event>.{txt,html} and sends
through the configured mail backend on the RQ `mail` queue, after the surrounding commit."""

from shop.notifications.services import EVENTS, notify

__all__ = ["EVENTS", "notify"]
