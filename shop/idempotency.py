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
from sqlalchemy.exc import DBAPIError
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


def claim(scope: str, key: str, body) -> Claim:
    """Claim `key` for this request: the Claim's `repeat` is the stored (status, body) of a finished repeat;
    otherwise the caller does the work (first copy, or taking over from one that died: see made()).
    409 while a first copy is still running, 422 for another body.

    The liveness lock is taken first: it alone keeps a second copy out, so the claim's row need not be committed
    before the work starts. It is written with the work's own transaction (record()) or with the answer (finish()),
    and a first copy that dies before either leaves nothing behind: its retry starts afresh, as it should."""
    if not isinstance(key, str) or not 8 <= len(key) <= 255:
        raise ValidationError(
            {"Idempotency-Key": "must be 8 to 255 characters"},
            "Idempotency-Key must be 8 to 255 characters (a UUID is ideal).",
        )
    digest = body_hash(body)
    if not _lock(scope, key):
        answer = _answer(scope, key, digest)  # finished meanwhile: many repeats may read it at once
        if answer is not None:
            return Claim(scope, key, digest, repeat=answer)
        db.session.rollback()
        raise RequestInProgress(
            IdempotencyErrorCode.IN_PROGRESS, "A request with this Idempotency-Key is still being processed."
        )
    try:
        row = _row(scope, key, digest)
    except BaseException:
        _unlock(scope, key)
        raise
    if row is not None and row.status_code is not None:
        _unlock(scope, key)
        return Claim(scope, key, digest, repeat=(row.status_code, row.response))
    # No row: the first copy. An unfinished row: a copy that died after committing part of its work (made()).
    return Claim(scope, key, digest, fresh=row is None)


def _row(scope: str, key: str, digest: str):
    """The claim's stored row (request_hash, status_code, response), or None; 422 if made for another body."""
    row = db.session.execute(
        select(IdempotencyKey.request_hash, IdempotencyKey.status_code, IdempotencyKey.response).where(
            IdempotencyKey.scope == scope, IdempotencyKey.key == key
        )
    ).first()
    if row is not None and row.request_hash != digest:
        raise Invalid(IdempotencyErrorCode.KEY_REUSED, "This Idempotency-Key was used with a different request.")
    return row


def _answer(scope: str, key: str, digest: str) -> tuple[int, dict] | None:
    """The stored answer of a finished claim (422 if it was made for another body), else None."""
    row = _row(scope, key, digest)
    return (row.status_code, row.response) if row is not None and row.status_code is not None else None


def _upsert(held: Claim, **values):
    """INSERT the claim's row with `values`, or set them on its unfinished row (one statement)."""
    stmt = insert(IdempotencyKey).values(scope=held.scope, key=held.key, request_hash=held.digest, **values)
    return stmt.on_conflict_do_update(
        index_elements=[IdempotencyKey.scope, IdempotencyKey.key],
        set_={name: stmt.excluded[name] for name in values},
        where=IdempotencyKey.status_code.is_(None),
    )


def record(held: Claim, **made) -> None:
    """Note what this claim's work has made (e.g. order_id), inside the transaction that makes it: if the
    answer is then lost, a repeat resumes from it (made()). Does not commit."""
    db.session.execute(_upsert(held, response=made))


def made(held: Claim) -> dict:
    """What an earlier copy of this claim committed before it died without an answer ({} if nothing)."""
    if held.fresh:
        return {}  # nothing was stored when this request claimed the key
    response = db.session.scalar(
        select(IdempotencyKey.response).where(
            IdempotencyKey.scope == held.scope, IdempotencyKey.key == held.key, IdempotencyKey.status_code.is_(None)
        )
    )
    return response or {}


def forget_made(held: Claim) -> None:
    """Drop what record() noted, when it turned out to be undone (the work may start over). Does not commit."""
    db.session.execute(
        IdempotencyKey.__table__.update()
        .where(IdempotencyKey.scope == held.scope, IdempotencyKey.key == held.key, IdempotencyKey.status_code.is_(None))
        .values(response=null())
    )  # SQL NULL, not JSON null: release() looks for NULL


def finish(held: Claim, status_code: int, response: dict) -> None:
    """Store the answer for repeats (only successes and business refusals; see release()).

    Rolls back first: a refused request's unfinished work must never ride along on this commit."""
    try:
        db.session.rollback()
        db.session.execute(_upsert(held, status_code=status_code, response=response))
        db.session.commit()
    finally:
        _unlock(held.scope, held.key)
    held.answered = True


def release(held: Claim) -> None:
    """Forget a claim whose request failed in a way the client may retry (validation, outage).

    A claim whose work already committed something (record()) is kept, unlocked: the retry resumes it."""
    try:
        db.session.rollback()
        db.session.execute(
            IdempotencyKey.__table__.delete().where(
                IdempotencyKey.scope == held.scope,
                IdempotencyKey.key == held.key,
                IdempotencyKey.status_code.is_(None),
                IdempotencyKey.response.is_(None),
            )
        )
        db.session.commit()
    finally:
        _unlock(held.scope, held.key)


def refuse_at_once(scope: str, key: str, body, refusal: DomainError) -> bool:
    """Store `refusal`, known before any work is done (a sold-out stock gate), as the key's answer, in one statement
    that also tries the key's liveness lock, and commit: True when stored, and the caller raises it. Only for a new
    key that no copy of the request holds; otherwise False, and the caller takes the usual way (once()), which
    answers a repeat, a copy still at work and a reused key as always. No lock connection, no second transaction:
    the cheap answer the buyers of a sold-out flash sale get."""
    if not isinstance(key, str) or not 8 <= len(key) <= 255:
        return False  # the usual way answers 422
    stored = db.session.execute(
        text(
            "INSERT INTO idempotency_key (scope, key, request_hash, status_code, response, created_at) "
            "SELECT :scope, :key, :digest, :status, CAST(:response AS jsonb), :created_at "
            "WHERE pg_try_advisory_xact_lock(:lock) "  # a copy at work holds it (and has no row yet)
            "ON CONFLICT DO NOTHING RETURNING 1"
        ),
        {
            "scope": scope,
            "key": key,
            "digest": body_hash(body),
            "status": http_status(refusal),
            "response": json.dumps(error_body(refusal.code, refusal.message, refusal.details)),
            "created_at": utcnow(),
            "lock": _lock_key(scope, key),
        },
    ).first()
    db.session.commit()  # also gives the transaction-scoped lock back
    return stored is not None


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
                # No pre-ping (a round trip per request): a connection found dead is replaced once, in _lock().
                engine = create_engine(db.engine.url, pool_size=2, max_overflow=-1)
                current_app.extensions["idempotency_locks"] = engine
    return engine


def _lock(scope: str, key: str) -> bool:
    """Take the claim's liveness lock for this request (False: a live copy holds it)."""
    held = g.setdefault("idempotency_locks", {})
    if (scope, key) in held:
        return True
    for attempt in (1, 2):
        conn = _lock_engine().connect()
        try:
            # Transaction-scoped: rolled back (and so released) however the connection is given back.
            got = conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _lock_key(scope, key)}).scalar()
            break
        except DBAPIError as exc:
            conn.invalidate()
            conn.close()
            if attempt == 1 and exc.connection_invalidated:
                continue  # a pooled connection the server had dropped (a restart): once more on a new one
            raise
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
    request is a repeat of a finished one; otherwise the caller does the work and gives its answer(). `fresh`: no
    earlier copy of the request left anything behind (nothing to resume)."""

    def __init__(self, scope: str, key: str, digest: str, *, repeat: tuple[int, dict] | None = None, fresh=False):
        self.scope, self.key, self.digest, self.repeat, self.fresh = scope, key, digest, repeat, fresh
        self.answered = False

    def answer(self, status: int, body: dict) -> None:
        """Store this answer for repeats (commits)."""
        finish(self, status, body)


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
            held = claim(scope, key, body)
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
            finish(held, http_status(exc), error_body(exc.code, exc.message, exc.details))
        raise
    except BaseException:
        if not held.answered:
            release(held)
        raise
    if not held.answered:
        release(held)


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
