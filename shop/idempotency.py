"""Idempotency-Key handling (API.md): a repeat with the same key and body returns the first answer
and has no second effect. The unique (scope, key) row is claimed before the work starts, so two
copies arriving together cannot both do it.

A claim is also held, for as long as the request that made it is alive, as a PostgreSQL advisory
lock on a connection of its own (not the session's: that one commits, and is handed back to the pool,
several times during the work). A web process or database that dies drops that connection and so the
lock at once: a repeat that finds the claim unfinished and the lock free knows the first copy died
and takes the work over, instead of answering 409 `request_in_progress` for minutes.

Work that commits something before its answer is stored (a checkout's order) records what it made on
its claim in the same transaction (record()), so the copy that takes over resumes from there
(made()) rather than doing it twice or refusing because the first copy's effect is already there.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import StrEnum

from flask import current_app, g
from sqlalchemy import String, Text, create_engine, func, null, select, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, mapped_column

from shop import clock
from shop.catalog.models import utcnow
from shop.errors import Conflict, DomainError, Invalid, ValidationError, error_body, http_status
from shop.extensions import db


class IdempotencyErrorCode(StrEnum):
    IN_PROGRESS = "request_in_progress"
    KEY_REUSED = "idempotency_key_reused"


class RequestInProgress(Conflict):
    """A first copy of this request still holds its key: answer 409, or wait a moment and ask again."""


KEEP_FOR = timedelta(hours=24)
_engine_lock = threading.Lock()


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
    the caller should do the work (first copy, or taking over from one that died: see made());
    409 while a first copy is still running, 422 for another body."""
    if not isinstance(key, str) or not 8 <= len(key) <= 255:
        raise ValidationError(
            {"Idempotency-Key": "must be 8 to 255 characters"},
            "Idempotency-Key must be 8 to 255 characters (a UUID is ideal).",
        )
    digest = body_hash(body)
    answer = _answer(scope, key, digest)  # a finished repeat needs no lock: many may read it at once
    if answer is not None:
        return answer
    if not _lock(scope, key):
        db.session.rollback()
        raise RequestInProgress(
            IdempotencyErrorCode.IN_PROGRESS, "A request with this Idempotency-Key is still being processed."
        )
    try:
        answer = _answer(scope, key, digest)  # finished while we took the lock?
        if answer is not None:
            _unlock(scope, key)
            return answer
        db.session.execute(
            insert(IdempotencyKey).values(scope=scope, key=key, request_hash=digest).on_conflict_do_nothing()
        )  # a row already here is an unfinished claim whose copy died
        db.session.commit()  # the claim is visible to every other copy from now on
    except BaseException:
        _unlock(scope, key)
        raise
    return None


def _answer(scope: str, key: str, digest: str) -> tuple[int, dict] | None:
    """The stored answer of a finished claim (422 if it was made for another body), else None."""
    row = db.session.execute(
        select(IdempotencyKey.request_hash, IdempotencyKey.status_code, IdempotencyKey.response).where(
            IdempotencyKey.scope == scope, IdempotencyKey.key == key
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != digest:
        raise Invalid(IdempotencyErrorCode.KEY_REUSED, "This Idempotency-Key was used with a different request.")
    return (row.status_code, row.response) if row.status_code is not None else None


def record(scope: str, key: str, **made) -> None:
    """Note what this claim's work has made (e.g. order_id), inside the transaction that makes it: if the
    answer is then lost, a repeat resumes from it (made()). Does not commit."""
    db.session.execute(
        IdempotencyKey.__table__.update()
        .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key, IdempotencyKey.status_code.is_(None))
        .values(response=made)
    )


def made(scope: str, key: str) -> dict:
    """What an earlier copy of this claim committed before it died without an answer ({} if nothing)."""
    response = db.session.scalar(
        select(IdempotencyKey.response).where(
            IdempotencyKey.scope == scope, IdempotencyKey.key == key, IdempotencyKey.status_code.is_(None)
        )
    )
    return response or {}


def forget_made(scope: str, key: str) -> None:
    """Drop what record() noted, when it turned out to be undone (the work may start over). Does not commit."""
    db.session.execute(
        IdempotencyKey.__table__.update()
        .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key, IdempotencyKey.status_code.is_(None))
        .values(response=null())
    )  # SQL NULL, not JSON null: release() looks for NULL


def finish(scope: str, key: str, status_code: int, response: dict) -> None:
    """Store the answer for repeats (only successes and business refusals; see release()).

    Rolls back first: a refused request's unfinished work must never ride along on this commit."""
    try:
        db.session.rollback()
        row = db.session.get(IdempotencyKey, (scope, key), populate_existing=True)
        row.status_code, row.response = status_code, response
        db.session.commit()
    finally:
        _unlock(scope, key)


def release(scope: str, key: str) -> None:
    """Forget a claim whose request failed in a way the client may retry (validation, outage).

    A claim whose work already committed something (record()) is kept, unlocked: the retry resumes it."""
    try:
        db.session.rollback()
        db.session.execute(
            IdempotencyKey.__table__.delete().where(
                IdempotencyKey.scope == scope,
                IdempotencyKey.key == key,
                IdempotencyKey.status_code.is_(None),
                IdempotencyKey.response.is_(None),
            )
        )
        db.session.commit()
    finally:
        _unlock(scope, key)


# ------------------------------------------------------------------------------------ liveness locks


def _lock_key(scope: str, key: str) -> int:
    digest = hashlib.blake2b(f"shop.idempotency:{scope}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_engine():
    """A pool of its own for the lock connections: never waits (no overflow limit), so a request holding a
    lock can never starve another of the session's pool (or the reverse) into a deadlock."""
    engine = current_app.extensions.get("idempotency_locks")
    if engine is None:
        with _engine_lock:
            engine = current_app.extensions.get("idempotency_locks")
            if engine is None:
                engine = create_engine(db.engine.url, pool_size=2, max_overflow=-1, pool_pre_ping=True)
                current_app.extensions["idempotency_locks"] = engine
    return engine


def _lock(scope: str, key: str) -> bool:
    """Take the claim's liveness lock for this request (False: a live copy holds it)."""
    held = g.setdefault("idempotency_locks", {})
    if (scope, key) in held:
        return True
    conn = _lock_engine().connect()
    try:
        # Transaction-scoped: rolled back (and so released) however the connection is given back.
        got = conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _lock_key(scope, key)}).scalar()
    except BaseException:
        conn.invalidate()
        conn.close()
        raise
    if not got:
        conn.close()
        return False
    held[(scope, key)] = conn
    return True


def _unlock(scope: str, key: str) -> None:
    conn = g.get("idempotency_locks", {}).pop((scope, key), None)
    if conn is None:
        return
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - the server went away, and the lock with it
        conn.invalidate()
    conn.close()


class Claim:
    """One request's hold on an Idempotency-Key (once()): `repeat` is the first answer, (status, body), when this
    request is a repeat of a finished one; otherwise the caller does the work and gives its answer()."""

    def __init__(self, scope: str, key: str, repeat: tuple[int, dict] | None):
        self.scope, self.key, self.repeat, self.answered = scope, key, repeat, False

    @property
    def ids(self) -> tuple[str, str]:
        return self.scope, self.key

    def answer(self, status: int, body: dict) -> None:
        """Store this answer for repeats (commits)."""
        finish(self.scope, self.key, status, body)
        self.answered = True


@contextmanager
def once(
    scope: str, key: str, body, *, keep: tuple[type[DomainError], ...] = (Conflict,), wait: float = 0
) -> Iterator[Claim]:
    """The Idempotency-Key protocol, written once for the API, the storefront and the back-office.

    Claims the key (waiting up to `wait` seconds while a first copy of the request is still at work, else 409
    request_in_progress) and yields the Claim. A refusal of a kind in `keep` raised inside becomes the key's stored
    answer (in the API's error shape) and goes on up; any other failure, or leaving without an answer, releases
    the key so the client may try again."""
    deadline = time.monotonic() + wait
    while True:
        try:
            held = Claim(scope, key, claim(scope, key, body))
            break
        except RequestInProgress:
            if time.monotonic() >= deadline:
                raise
            db.session.rollback()
            time.sleep(0.2)
    if held.repeat is not None:
        yield held
        return
    try:
        yield held
    except keep as exc:
        if not held.answered:
            finish(scope, key, http_status(exc), error_body(exc.code, exc.message, exc.details))
        raise
    except BaseException:
        if not held.answered:
            release(scope, key)
        raise
    if not held.answered:
        release(scope, key)


def release_locks(exc=None) -> None:
    """Teardown safety net: a request that ended without finish()/release() gives its locks back now,
    not when its connection is garbage-collected."""
    for scope, key in list(g.get("idempotency_locks", {})):
        _unlock(scope, key)


def purge_expired(now: datetime | None = None) -> int:
    now = now or clock.now()
    result = db.session.execute(IdempotencyKey.__table__.delete().where(IdempotencyKey.created_at < now - KEEP_FOR))
    db.session.commit()
    return result.rowcount
