"""Consumer groups on the event stream: each applies every event once in effect, by its id.

A domain declares a group with `@consumer("sales", types={"order.confirmed", ...})`: the function gets the envelope
and runs inside a database transaction of the app's session. `handle()` first claims (group, event id) in
`consumed_event` in that same transaction, so a redelivered event (the stream delivers at least once: a relay that
died before marking its rows, a consumer that died before acknowledging) finds its claim and is skipped, and a
handler that fails rolls its claim back with its work and is delivered again. A handler's outside effects (a mail,
an HTTP delivery) are outbox jobs written in the same transaction (shop.afterwards), never calls made in it.

Running them: `python worker.py events [group ...]` (shop.stream's consumer loop, `run()`); `drain()` relays and
consumes everything pending synchronously (the CLI and the tests).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import DateTime, String, delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, mapped_column

from shop.extensions import db

log = logging.getLogger(__name__)


class ConsumedEvent(db.Model):
    __tablename__ = "consumed_event"

    group: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    consumed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)


@dataclass
class Group:
    name: str
    handler: Callable[[dict], None]
    types: frozenset | None = None  # None: every type
    description: str = ""
    extra: dict = field(default_factory=dict)

    def wants(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types


GROUPS: dict[str, Group] = {}


def consumer(name: str, types=None, description: str = ""):
    """Register `fn(envelope)` as consumer group `name`, for the event `types` given (all when None)."""
    def register(fn):
        if name in GROUPS and GROUPS[name].handler is not fn:
            raise ValueError(f"consumer group {name!r} is registered twice")
        summary = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        GROUPS[name] = Group(name, fn, frozenset(types) if types is not None else None, summary)
        return fn
    return register


def load_groups() -> dict[str, Group]:
    """Import the modules that declare consumer groups (each registers itself on import)."""
    import importlib

    for module in CONSUMER_MODULES:
        importlib.import_module(module)
    return GROUPS


# The modules holding @consumer declarations; the domains own their handlers.
CONSUMER_MODULES: list[str] = []


def handle(group: str, envelope: dict) -> bool:
    """Apply `envelope` for `group` once: True when applied now, False when this group had it already or does not
    want its type. Commits on success; on an exception rolls back (claim included) and re-raises."""
    spec = GROUPS[group]
    if not spec.wants(envelope["type"]):
        return False
    session = db.session
    try:
        claimed = session.execute(
            insert(ConsumedEvent).values(group=group, event_id=str(envelope["id"]))
            .on_conflict_do_nothing().returning(ConsumedEvent.event_id)).first()
        if claimed is None:
            session.rollback()
            return False
        spec.handler(envelope)
        session.commit()
        return True
    except BaseException:
        session.rollback()
        raise


def purge_consumed(older_than: timedelta = timedelta(days=14)) -> int:
    """Scheduled (daily): forget claims older than any redelivery can be (the stream keeps less than this)."""
    cutoff = datetime.now(timezone.utc) - older_than
    gone = db.session.execute(delete(ConsumedEvent).where(ConsumedEvent.consumed_at < cutoff)).rowcount
    db.session.commit()
    return gone
