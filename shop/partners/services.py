"""Partner webhooks' rules for endpoints and deliveries: registering, changing and deleting endpoints, a delivery
per subscribed endpoint for each event, the test event and an admin's retry. Attempts are in attempts.py.

A delivery is one event for one endpoint: written in the transaction that needs it, attempted by a job queued after
its commit (shop.afterwards), never by an HTTP call inside a transaction.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from shop import clock
from shop.afterwards import after_commit
from shop.events import TYPES
from shop.extensions import db
from shop.partners import guard, signing
from shop.partners.models import PENDING, WebhookAttempt, WebhookDelivery, WebhookEndpoint

TEST_TYPE = "webhook.test"  # the type of the event "Send test event" sends (not a domain event)
QUEUE = "default"  # shop.extensions.QUEUE_NAMES has no queue of its own for webhooks
ATTEMPT_JOB = "shop.partners.jobs.attempt_delivery"
MAX_DESCRIPTION = 200


class Invalid(ValueError):
    """Fields that are not valid: {field: problem}."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k} {v}" for k, v in fields.items()))
        self.fields = fields


class UrlRefused(ValueError):
    """The URL fails the SSRF guard (guard.UrlNotAllowed's message)."""


class NotFound(LookupError):
    pass


class EndpointDisabled(RuntimeError):
    pass


class DeliveryInProgress(RuntimeError):
    """An attempt of this delivery is being made right now: a retry would send it twice at once."""


def _now(now: datetime | None) -> datetime:
    return now or clock.now()


def _allow_private() -> bool:
    return bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE"))


# -- endpoints ------------------------------------------------------------------------------------
def clean(data: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """The endpoint fields in `data` (all required ones unless `partial`), checked: Invalid names every bad field,
    UrlRefused a URL the guard refuses (checked last, once the rest is right)."""
    fields: dict[str, str] = {}
    out: dict[str, Any] = {}
    if "url" in data or not partial:
        url = data.get("url")
        if not isinstance(url, str) or not url.strip():
            fields["url"] = "is required: an http:// or https:// URL"
        elif len(url.strip()) > guard.MAX_URL:
            fields["url"] = f"must be at most {guard.MAX_URL} characters"
        else:
            out["url"] = url.strip()
    if "events" in data or not partial:
        events = data.get("events")
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            fields["events"] = "must be a non-empty list of event types"
        elif unknown := sorted({e for e in events if e not in TYPES}):
            fields["events"] = f"names unknown event types: {', '.join(unknown[:10])}"
        else:
            out["events"] = sorted(set(events), key=list(TYPES).index)
    if "description" in data:
        description = data.get("description")
        if description is None:
            description = ""
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            fields["description"] = f"must be text of at most {MAX_DESCRIPTION} characters"
        else:
            out["description"] = description.strip()
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            fields["enabled"] = "must be true or false"
        else:
            out["enabled"] = data["enabled"]
    if fields:
        raise Invalid(fields)
    if "url" in out:
        try:
            guard.check(out["url"], allow_private=_allow_private())
        except guard.UrlNotAllowed as exc:
            raise UrlRefused(str(exc)) from None
    return out


def create_endpoint(data: dict[str, Any]) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its secret (the only time the secret is readable)."""
    values = clean(data)
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        url=values["url"],
        events=values["events"],
        description=values.get("description", ""),
        enabled=values.get("enabled", True),
        secret_encrypted=signing.seal(secret, current_app.config["SECRET_KEY"]),
    )
    if not endpoint.enabled:
        endpoint.disabled_at, endpoint.disabled_reason = clock.now(), "Disabled by an admin."
    db.session.add(endpoint)
    db.session.commit()
    return endpoint, secret


def get_endpoint(endpoint_id: int, *, lock: bool = False) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    endpoint = db.session.scalars(query.with_for_update() if lock else query).first()
    if endpoint is None:
        raise NotFound(endpoint_id)
    return endpoint


def update_endpoint(endpoint_id: int, data: dict[str, Any], now: datetime | None = None) -> WebhookEndpoint:
    """Change url, events, description or enabled. Enabling again forgets why it was disabled and how long it had
    been failing; its pending deliveries go out again at their due times."""
    values = clean(data, partial=True)
    endpoint = get_endpoint(endpoint_id, lock=True)
    for key in ("url", "events", "description"):
        if key in values:
            setattr(endpoint, key, values[key])
    if "enabled" in values and values["enabled"] != endpoint.enabled:
        endpoint.enabled = values["enabled"]
        if endpoint.enabled:
            endpoint.disabled_at = endpoint.disabled_reason = endpoint.failing_since = None
        else:
            endpoint.disabled_at, endpoint.disabled_reason = _now(now), "Disabled by an admin."
    db.session.commit()
    return endpoint


def delete_endpoint(endpoint_id: int) -> None:
    """Delete an endpoint with its deliveries and their log: the deliveries first, then the endpoint, the order in
    which an attempt being recorded locks them (attempts.record), so the two cannot deadlock."""
    endpoint = get_endpoint(endpoint_id)
    db.session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
    db.session.delete(endpoint)
    db.session.commit()


def list_endpoints(page: int, per_page: int) -> tuple[int, list[WebhookEndpoint]]:
    total = db.session.scalar(select(func.count()).select_from(WebhookEndpoint))
    rows = db.session.scalars(
        select(WebhookEndpoint).order_by(WebhookEndpoint.id.desc()).limit(per_page).offset((page - 1) * per_page)
    ).all()
    return total or 0, list(rows)


def list_deliveries(
    endpoint_id: int, page: int, per_page: int, state: str | None = None
) -> tuple[int, list[WebhookDelivery]]:
    """An endpoint's deliveries, newest first, with their attempts loaded."""
    from sqlalchemy.orm import selectinload

    get_endpoint(endpoint_id)
    where = [WebhookDelivery.endpoint_id == endpoint_id] + ([WebhookDelivery.state == state] if state else [])
    total = db.session.scalar(select(func.count()).select_from(WebhookDelivery).where(*where))
    rows = db.session.scalars(
        select(WebhookDelivery)
        .where(*where)
        .options(selectinload(WebhookDelivery.log))
        .order_by(WebhookDelivery.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return total or 0, list(rows)


# -- deliveries -----------------------------------------------------------------------------------
def body_of(envelope: dict[str, Any]) -> str:
    """The JSON body partners receive: the envelope's fields in the contract's order."""
    keys = ("id", "type", "version", "occurred_at", "aggregate", "data")
    return json.dumps({k: envelope[k] for k in keys if k in envelope}, separators=(",", ":"))


def _new_delivery(endpoint_id: int, envelope: dict[str, Any], now: datetime, *, alone: bool = False) -> int | None:
    """INSERT a delivery due now (with `alone`, as for an admin's test event, also a job after the commit that
    sends it; a consumer's deliveries are sent by its group's `then`, shop.partners.consumer.send_due); None when
    it existed already."""
    delivery_id = db.session.execute(
        insert(WebhookDelivery)
        .values(
            endpoint_id=endpoint_id,
            event_id=str(envelope["id"]),
            event_type=envelope["type"],
            body=body_of(envelope),
            state=PENDING,
            next_attempt_at=now,
        )
        .on_conflict_do_nothing(constraint="uq_webhook_delivery_endpoint_event")
        .returning(WebhookDelivery.id)
    ).scalar()
    if delivery_id is not None:
        # One scan job per transaction sends every due delivery (a consumer batch makes hundreds at once), in
        # parallel and outside any transaction; a job per delivery would cost a worker fork each.
        if alone:
            after_commit(QUEUE, ATTEMPT_JOB, delivery_id)
    return delivery_id


def record_deliveries(envelope: dict[str, Any], now: datetime | None = None) -> list[int]:
    """A delivery for each enabled endpoint subscribed to the event's type, in the caller's transaction (the
    consumer group's: the event is claimed and its deliveries written together). Returns their ids."""
    occurred = datetime.fromisoformat(envelope["occurred_at"])
    endpoint_ids = db.session.scalars(
        select(WebhookEndpoint.id)
        .where(
            WebhookEndpoint.enabled.is_(True),
            WebhookEndpoint.events.contains([envelope["type"]]),
            # An endpoint hears what happens once it exists, not the stream's past.
            WebhookEndpoint.created_at <= occurred,
        )
        .order_by(WebhookEndpoint.id)
    ).all()
    made = [_new_delivery(endpoint_id, envelope, _now(now)) for endpoint_id in endpoint_ids]
    return [i for i in made if i is not None]


def sample_envelope(endpoint: WebhookEndpoint, now: datetime) -> dict[str, Any]:
    """The "Send test event" message: a `webhook.test` event about the endpoint itself."""
    return {
        "id": str(uuid.uuid4()),
        "type": TEST_TYPE,
        "version": 1,
        "occurred_at": now.isoformat(),
        "aggregate": {"type": "webhook_endpoint", "id": str(endpoint.id)},
        "data": {
            "endpoint_id": endpoint.id,
            "shop": current_app.config.get("SHOP_NAME", ""),
            "message": "A test event: your endpoint is reachable and can verify our signature.",
        },
    }


def send_test(endpoint_id: int, now: datetime | None = None) -> WebhookDelivery:
    """Queue a test event for the endpoint (whatever types it subscribes to); refused while it is disabled."""
    now = _now(now)
    endpoint = get_endpoint(endpoint_id)
    if not endpoint.enabled:
        raise EndpointDisabled(endpoint_id)
    delivery_id = _new_delivery(endpoint.id, sample_envelope(endpoint, now), now, alone=True)
    assert delivery_id is not None  # a new event id: no delivery had it
    db.session.commit()
    return db.session.get_one(WebhookDelivery, delivery_id)


def retry_delivery(endpoint_id: int, delivery_id: int, now: datetime | None = None) -> WebhookDelivery:
    """An admin's "Retry": the delivery is attempted again now, whatever state it is in. A failed one that fails
    again is failed again; a pending one goes on with its schedule."""
    now = _now(now)
    endpoint = get_endpoint(endpoint_id)
    if not endpoint.enabled:
        raise EndpointDisabled(endpoint_id)
    delivery = db.session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id)
        .with_for_update()
    ).first()
    if delivery is None:
        raise NotFound(delivery_id)
    logged = db.session.scalar(
        select(func.count()).select_from(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id)
    )
    due = delivery.next_attempt_at  # set on every pending delivery (the end of its claim while one is in flight)
    if delivery.state == PENDING and delivery.attempts > (logged or 0) and due is not None and due > now:
        raise DeliveryInProgress(delivery_id)  # claimed (attempts counted) and not logged yet: in flight
    delivery.state, delivery.next_attempt_at, delivery.finished_at = PENDING, now, None
    after_commit(QUEUE, ATTEMPT_JOB, delivery.id)
    db.session.commit()
    return delivery
