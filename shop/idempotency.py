"""Idempotency-Key handling (API.md): a repeat with the same key and body returns the first answer
and has no second effect. The unique (scope, key) row is claimed before the work starts, so two
copies arriving together cannot both do it."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import String, Text, func
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, mapped_column

from shop.catalog.models import utcnow
from shop.errors import ApiError
from shop.extensions import db

KEEP_FOR = timedelta(hours=24)
STALE_CLAIM = timedelta(minutes=2)


class IdempotencyKey(db.Model):
    __tablename__ = "idempotency_key"

    scope: Mapped[str] = mapped_column(String(120), primary_key=True)  # endpoint + caller
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column()
    response: Mapped[dict | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now(), index=True)
    note: Mapped[str | None] = mapped_column(Text)


def body_hash(body) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def claim(scope: str, key: str, body) -> tuple[int, dict] | None:
    """Claim `key` for this request. Returns the stored (status, body) for a finished repeat, None when
    the caller should do the work; 409 while a first copy is still running, 422 for another body."""
    if not isinstance(key, str) or not 8 <= len(key) <= 255:
        raise ApiError(422, "validation_failed", "Idempotency-Key must be 8 to 255 characters (a UUID is ideal).",
                       {"fields": {"Idempotency-Key": "must be 8 to 255 characters"}})
    digest = body_hash(body)
    inserted = db.session.execute(
        insert(IdempotencyKey).values(scope=scope, key=key, request_hash=digest)
        .on_conflict_do_nothing().returning(IdempotencyKey.key)).scalar()
    db.session.commit()  # the claim is visible to every other copy from now on
    if inserted:
        return None
    row = db.session.get(IdempotencyKey, (scope, key))
    if row.request_hash != digest:
        raise ApiError(422, "idempotency_key_reused", "This Idempotency-Key was used with a different request.")
    if row.status_code is None:
        # A claim far older than any request can run belongs to a process that died mid-way: take it over.
        taken = db.session.execute(
            IdempotencyKey.__table__.update()
            .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key, IdempotencyKey.status_code.is_(None),
                   IdempotencyKey.created_at < func.now() - STALE_CLAIM)
            .values(created_at=func.now())).rowcount
        db.session.commit()
        if taken:
            return None
        raise ApiError(409, "request_in_progress", "A request with this Idempotency-Key is still being processed.")
    return row.status_code, row.response


def finish(scope: str, key: str, status_code: int, response: dict) -> None:
    """Store the answer for repeats (only successes and business refusals; see release()).

    Rolls back first: a refused request's unfinished work must never ride along on this commit."""
    db.session.rollback()
    row = db.session.get(IdempotencyKey, (scope, key))
    row.status_code, row.response = status_code, response
    db.session.commit()


def release(scope: str, key: str) -> None:
    """Forget a claim whose request failed in a way the client may retry (validation, outage)."""
    db.session.rollback()
    row = db.session.get(IdempotencyKey, (scope, key))
    if row is not None and row.status_code is None:
        db.session.delete(row)
        db.session.commit()


def purge_expired(now: datetime | None = None) -> int:
    now = now or datetime.now(timezone.utc)
    result = db.session.execute(IdempotencyKey.__table__.delete().where(IdempotencyKey.created_at < now - KEEP_FOR))
    db.session.commit()
    return result.rowcount

