"""Attempts of partner webhook deliveries: the retry schedule, claiming, sending, recording, and disabling
endpoints that keep failing.

A delivery is attempted right after the transaction that created it commits (the RQ job `attempt_delivery`) and
then by `deliver_due()` every minute, on the schedule of Standard Webhooks / Svix with jitter. Each attempt is
claimed first in a short transaction (SELECT ... FOR UPDATE SKIP LOCKED, then its due time pushed past the
attempt's longest run), so two workers never send one attempt twice; the HTTP request runs outside any
transaction, and its result is recorded in another.

Every function takes `now`, so tests move the clock instead of waiting.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import select, update

from shop import clock
from shop.extensions import db
from shop.partners import sending, signing
from shop.partners.models import FAILED, PENDING, SUCCEEDED, WebhookAttempt, WebhookDelivery, WebhookEndpoint

# Pauses after each failed attempt (Standard Webhooks / Svix, and one more 10 h): 9 attempts over about 37 hours,
# never less than 30 (each pause is drawn within +-JITTER of its value).
SCHEDULE = [
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
    timedelta(hours=10),
]
MAX_ATTEMPTS = len(SCHEDULE) + 1
JITTER = 0.2


def claim_hold(timeout: float) -> timedelta:
    """How long an attempt in progress holds its delivery: longer than the requests of one attempt can take with
    `timeout` (connect and read, each hop of the redirects)."""
    return timedelta(seconds=timeout * 2 * (sending.MAX_REDIRECTS + 1) + 30)


CLAIM = claim_hold(sending.TIMEOUT)  # with the default timeout
DISABLE_AFTER = timedelta(days=3)  # failing with no success this long: the endpoint is disabled
SCAN_BATCH = 50
SCAN_SENDERS = 8  # requests in flight at once during a scan
SCAN_BUDGET = 240.0  # seconds a scan keeps claiming more (the cron job may run 600)


def _now(now: datetime | None) -> datetime:
    return now or clock.now()


def _allow_private() -> bool:
    return bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE"))


@dataclass
class Claimed:
    delivery_id: int
    endpoint_id: int
    attempt: int  # this attempt's number, from 1
    url: str
    event_id: str
    body: str
    secret: str | None
    error: str | None = None  # set when the attempt cannot even start (the secret is unreadable)


def claim(now: datetime, *, delivery_id: int | None = None, limit: int = SCAN_BATCH) -> list[Claimed]:
    """Take due deliveries of enabled endpoints for one attempt each, in one short transaction, and commit: rows
    another worker holds are skipped (SKIP LOCKED) and the claimed ones are not due again until CLAIM has passed."""
    query = (
        select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.state == PENDING, WebhookDelivery.next_attempt_at <= now, WebhookEndpoint.enabled.is_(True)
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    )
    if delivery_id is not None:
        query = query.where(WebhookDelivery.id == delivery_id)
    try:
        ids = db.session.scalars(query).all()
        if not ids:
            db.session.commit()
            return []
        rows = db.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids))
            .values(next_attempt_at=now + claim_hold(_timeout()), attempts=WebhookDelivery.attempts + 1)
            .returning(
                WebhookDelivery.id,
                WebhookDelivery.endpoint_id,
                WebhookDelivery.attempts,
                WebhookDelivery.event_id,
                WebhookDelivery.body,
            )
        ).all()
        endpoints = {
            e.id: e
            for e in db.session.execute(
                select(WebhookEndpoint.id, WebhookEndpoint.url, WebhookEndpoint.secret_encrypted).where(
                    WebhookEndpoint.id.in_({r.endpoint_id for r in rows})
                )
            )
        }
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    key = current_app.config["SECRET_KEY"]
    claimed = []
    for r in sorted(rows, key=lambda r: ids.index(r.id)):
        endpoint = endpoints[r.endpoint_id]
        try:
            secret, error = signing.unseal(endpoint.secret_encrypted, key), None
        except signing.SecretUnreadable as exc:
            secret, error = None, str(exc)
        claimed.append(Claimed(r.id, r.endpoint_id, r.attempts, endpoint.url, r.event_id, r.body, secret, error))
    return claimed


def send(item: Claimed, *, allow_private: bool, timeout: float) -> sending.Result:
    """One attempt over HTTP, signed at the moment it leaves (webhook-timestamp is the real time of sending)."""
    if item.error:
        return sending.Result(started_at=clock.now(), url=item.url, request_headers={}, error=item.error)
    timestamp = int(time.time())
    headers = {
        "webhook-id": item.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.signature(item.secret, item.event_id, timestamp, item.body),
    }
    return sending.post(item.url, item.body, headers, allow_private=allow_private, timeout=timeout)


def backoff(attempt: int, rng: random.Random | None = None) -> timedelta:
    """The pause after failed attempt number `attempt` (from 1), with jitter."""
    base = SCHEDULE[min(attempt, len(SCHEDULE)) - 1]
    return base * (rng or random).uniform(1 - JITTER, 1 + JITTER)


def record(item: Claimed, result: sending.Result, now: datetime) -> str | None:
    """Log the attempt and move the delivery on: succeeded, due again after its pause, or failed for good.
    A failure starts (or continues) the endpoint's failing streak; three days of it disable the endpoint.
    Returns the delivery's new state (None when it was deleted meanwhile)."""
    try:
        delivery = db.session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.id == item.delivery_id).with_for_update()
        ).first()
        if delivery is None:
            db.session.commit()
            return None
        db.session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                started_at=result.started_at,
                duration_ms=result.duration_ms,
                url=result.url,
                request_headers=result.request_headers,
                request_excerpt=item.body[: sending.EXCERPT],
                status_code=result.status,
                response_excerpt=result.response_excerpt,
                error=result.error,
            )
        )
        delivery.last_status, delivery.last_error = result.status, result.error
        endpoint = WebhookEndpoint.__table__
        if result.ok:
            delivery.state, delivery.next_attempt_at, delivery.finished_at = SUCCEEDED, None, now
            # Only an endpoint that was failing is written: deliveries succeeding side by side do not queue up on
            # the endpoint's row lock.
            db.session.execute(
                update(endpoint)
                .where(endpoint.c.id == item.endpoint_id, endpoint.c.failing_since.is_not(None))
                .values(failing_since=None)
            )
        else:
            if delivery.attempts >= MAX_ATTEMPTS:
                delivery.state, delivery.next_attempt_at, delivery.finished_at = FAILED, None, now
            else:
                delivery.next_attempt_at = now + backoff(delivery.attempts)
            db.session.execute(
                update(endpoint)
                .where(endpoint.c.id == item.endpoint_id, endpoint.c.failing_since.is_(None))
                .values(failing_since=now)
            )
            _disable_failing(now, endpoint_id=item.endpoint_id)
        state = delivery.state
        db.session.commit()
        return state
    except BaseException:
        db.session.rollback()
        raise


def attempt(delivery_id: int, now: datetime | None = None) -> str | None:
    """Attempt one delivery if it is due and its endpoint enabled (else do nothing); returns its new state."""
    now = _now(now)
    claimed = claim(now, delivery_id=delivery_id, limit=1)
    if not claimed:
        return None
    result = send(claimed[0], allow_private=_allow_private(), timeout=_timeout())
    return record(claimed[0], result, _now(None) if now is None else now)


def _timeout() -> float:
    return float(current_app.config.get("WEBHOOK_TIMEOUT", sending.TIMEOUT))


def deliver_due(now: datetime | None = None) -> int:
    """Scheduled every minute: disable endpoints failing for three days, then attempt every due delivery of the
    enabled ones (SCAN_SENDERS requests at a time). Returns how many attempts were made."""
    fixed = now  # a test's moved clock; otherwise each claim and record reads the real time (a scan lasts minutes)
    _disable_failing(_now(fixed))
    db.session.commit()
    allow_private, timeout = _allow_private(), _timeout()
    done, started = 0, time.monotonic()
    with ThreadPoolExecutor(max_workers=SCAN_SENDERS, thread_name_prefix="webhook") as pool:
        while time.monotonic() - started < SCAN_BUDGET:
            batch = claim(_now(fixed))
            if not batch:
                break
            results = pool.map(lambda item: send(item, allow_private=allow_private, timeout=timeout), batch)
            for item, result in zip(batch, results):
                record(item, result, _now(fixed))
                done += 1
    return done


# -- disabling ------------------------------------------------------------------------------------
def _disable_failing(now: datetime, endpoint_id: int | None = None) -> list[int]:
    """Disable the enabled endpoints failing with no success for DISABLE_AFTER, and mail every admin, in the
    caller's transaction. The guarded UPDATE makes one worker the one that disables (and mails)."""
    endpoint = WebhookEndpoint.__table__
    cutoff = now - DISABLE_AFTER
    query = (
        update(endpoint)
        .where(endpoint.c.enabled.is_(True), endpoint.c.failing_since <= cutoff)
        .values(
            enabled=False, disabled_at=now, disabled_reason="Disabled automatically: every attempt failed for 3 days."
        )
        .returning(endpoint.c.id, endpoint.c.url, endpoint.c.description, endpoint.c.failing_since)
    )
    if endpoint_id is not None:
        query = query.where(endpoint.c.id == endpoint_id)
    disabled = db.session.execute(query).all()
    for row in disabled:
        _mail_admins(row, now)
    return [row.id for row in disabled]


def _mail_admins(row, now: datetime) -> None:
    from shop.accounts.models import User
    from shop.accounts.services import external_url
    from shop.notifications import notify

    last = db.session.execute(
        select(WebhookDelivery.last_status, WebhookDelivery.last_error)
        .where(
            WebhookDelivery.endpoint_id == row.id,
            WebhookDelivery.last_error.isnot(None) | WebhookDelivery.last_status.isnot(None),
        )
        .order_by(WebhookDelivery.id.desc())
        .limit(1)
    ).first()
    admins = db.session.scalars(
        select(User).where(User.role == "admin", User.is_active_account.is_(True)).order_by(User.id)
    ).all()
    for admin in admins:
        notify(
            "webhooks.endpoint_disabled",
            admin.email,
            {
                "name": admin.name,
                "url": row.url,
                "host": urlsplit(row.url).hostname or row.url,
                "description": row.description or "",
                "failing_since": f"{row.failing_since:%d %B %Y %H:%M} UTC",
                "last_problem": (last.last_error or f"HTTP {last.last_status}") if last else "",
                "link": external_url("partner_webhooks.deliveries", endpoint_id=row.id),
            },
            key=f"webhook-endpoint:{row.id}:disabled:{now.isoformat()}:user:{admin.id}",
        )
