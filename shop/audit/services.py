"""Recording writes: `track(actor, channel)` makes the session audit everything it flushes.

One mechanism for the back-office and the admin API: while a session carries an actor, an
after_flush hook writes an AuditEntry for every created, changed or deleted row of an audited
model, with the values before and after, through the same connection and so the same
transaction. A write that rolls back leaves no entry; a write that commits always has one.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flask import has_request_context, request
from sqlalchemy import event, insert, inspect
from sqlalchemy.orm import Session

from shop.audit.models import AuditEntry
from shop.extensions import db

_ACTOR = "audit_actor"


def _not_audited() -> tuple[type, ...]:
    """Bookkeeping rows that are not business data: the log itself and request-replay records."""
    from shop.idempotency import IdempotencyKey

    return (AuditEntry, IdempotencyKey)


SECRET_FIELDS = {"password_hash"}


def track(actor: Any, channel: str) -> None:
    """Audit every write of the current session on behalf of `actor` (a User)."""
    ip = request.remote_addr if has_request_context() else None
    db.session.info[_ACTOR] = {"id": actor.id, "email": actor.email, "channel": channel, "ip": ip}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _state(obj: Any, *, old: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    state = inspect(obj)
    for attr in state.mapper.column_attrs:
        key = attr.key
        if key in SECRET_FIELDS:
            hist = state.attrs[key].history
            out[key] = "(changed)" if old is False and hist.has_changes() else "(hidden)"
            continue
        hist = state.attrs[key].history
        if old and hist.deleted:
            value = hist.deleted[0]
        elif old and hist.added:
            value = None  # set without a loaded previous value: it was unset
        elif key in state.unloaded:
            continue  # deferred and never loaded (search_vector): reading it would need the row, maybe gone
        else:
            value = getattr(obj, key, None)
        out[key] = _jsonable(value)
    return out


def _pk(obj: Any) -> str:
    # Read from the columns: in after_flush a new object has its id but no identity key yet.
    return ",".join(str(v) for v in inspect(obj).mapper.primary_key_from_instance(obj))


@event.listens_for(Session, "after_flush")
def _record(session: Session, flush_context: Any) -> None:
    actor = session.info.get(_ACTOR)
    if not actor:
        return
    NOT_AUDITED = _not_audited()
    rows = []
    for action, objects in (("create", session.new), ("update", session.dirty), ("delete", session.deleted)):
        for obj in objects:
            if isinstance(obj, NOT_AUDITED) or not hasattr(obj, "__table__"):
                continue
            if action == "update" and not session.is_modified(obj, include_collections=False):
                continue
            before = None if action == "create" else _state(obj, old=True)
            after = None if action == "delete" else _state(obj, old=False)
            if action == "update" and before == after:
                continue
            rows.append(
                {
                    "actor_id": actor["id"],
                    "actor_email": actor["email"],
                    "channel": actor["channel"],
                    "ip": actor["ip"],
                    "action": action,
                    "entity_type": obj.__class__.__name__,
                    "entity_id": _pk(obj)[:60],
                    "before": before,
                    "after": after,
                }
            )
    if rows:
        session.connection().execute(insert(AuditEntry), rows)
