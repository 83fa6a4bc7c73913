"""The mail job: render and send one notification. Runs on the RQ `mail` queue."""
from __future__ import annotations

from flask import current_app, render_template

from shop.notifications.backends import Message, backend_for
from shop.notifications.services import EVENTS


def render(event_name: str, to: str, payload: dict) -> Message:
    context = {"shop_name": current_app.config["SHOP_NAME"], "to": to, **payload}
    base = f"email/{event_name.replace('.', '_')}"
    return Message(
        to=to, sender=current_app.config["MAIL_FROM"], subject=EVENTS[event_name].format(**context),
        text=render_template(f"{base}.txt", **context), html=render_template(f"{base}.html", **context),
        event=event_name)


def send_notification(event_name: str, to: str, payload: dict) -> str:
    """Render and send; returns the backend's message id. Raises on failure so RQ retries."""
    app = current_app._get_current_object() if current_app else None
    if app is None:  # when RQ runs us outside the worker's app context
        from shop import create_app

        app = create_app()
    with app.app_context():
        message = render(event_name, to, payload)
        return backend_for(app.config).send(message)
