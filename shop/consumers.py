"""Consumer groups on the event stream: each applies every event once in effect, by its id.

A domain declares a group with `@consumer("sales", types={"order.confirmed", ...})`: the function gets the envelope
and runs inside a database transaction of the app's session. `handle()` first claims (group, event id) in
`consumed_event` in that same transaction, so a redelivered event (the stream delivers at least once: a relay that
died before marking its rows, a consumer that died before acknowledging) finds its claim and is skipped, and a
handler that fails rolls its claim back with its work and is delivered again. A handler's outside effects (a mail,
an HTTP delivery) are outbox jobs written in the same transaction (shop.afterwards), never calls made in it; the one
exception is the shop's own Redis, whose writes are idempotent and made just before the commit (the cache group: a
failure there rolls the batch back, and it is delivered again).

Running them: `python worker.py events [group ...]` (shop.stream's consumer loop, `run()`); `drain()` relays and
consumes everything pending synchronously (the CLI and the tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, String, delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, mapped_column

from shop import clock
from shop.extensions import db
from shop.telemetry import metrics, tracing

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
    # Run by the group's consumer after a batch it applied committed, outside any transaction: the outside effect
    # the handlers recorded (partner webhooks: send the deliveries now). Its failures are logged, not retried: the
    # recorded rows stay for the scheduled scan that is the safety net.
    then: Callable[[], object] | None = None
    # Seconds (or a function of none giving them) after which an event is too old for this group: skipped, unclaimed.
    # A group whose effect is pointless late (a cache entry long expired, a "your order shipped" mail weeks on) sets
    # it, so a long consumer outage, or a new group's first start over the stream's whole history, does not act on
    # the past.
    max_age: float | Callable[[], float] | None = None

    def wants(self, envelope: dict) -> bool:
        if self.types is not None and envelope["type"] not in self.types:
            return False
        if self.max_age is None:
            return True
        limit = self.max_age() if callable(self.max_age) else self.max_age
        occurred = datetime.fromisoformat(envelope["occurred_at"])
        return (clock.now() - occurred).total_seconds() <= limit


GROUPS: dict[str, Group] = {}
Handler = Callable[[dict[str, Any]], None]  # fn(envelope)


def consumer(
    name: str,
    types: Iterable[str] | None = None,
    description: str = "",
    then: Callable[[], object] | None = None,
    max_age: float | Callable[[], float] | None = None,
) -> Callable[[Handler], Handler]:
    """Register `fn(envelope)` as consumer group `name`, for the event `types` given (all when None); `then()` runs
    after each batch the group applied and committed (Group.then); events older than `max_age` seconds are skipped
    (Group.max_age)."""

    def register(fn: Handler) -> Handler:
        if name in GROUPS and GROUPS[name].handler is not fn:
            raise ValueError(f"consumer group {name!r} is registered twice")
        summary = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        GROUPS[name] = Group(name, fn, frozenset(types) if types is not None else None, summary, then, max_age)
        return fn

    return register


def load_groups() -> dict[str, Group]:
    """Import the modules that declare consumer groups (each registers itself on import)."""
    import importlib

    for module in CONSUMER_MODULES:
        importlib.import_module(module)
    return GROUPS


# The modules holding @consumer declarations; the domains own their handlers.
CONSUMER_MODULES: list[str] = [
    "shop.reports.services",
    "shop.inventory.alerts",
    "shop.partners.consumer",
    "shop.orders.mails",
    "shop.search.hooks",
    "shop.cache",
]


def _apply_one(spec, group: str, envelope: dict, trace: str | None) -> None:
    """The group's handler for one event, in a span continuing the trace the event was published in."""
    with tracing.resumed(
        trace,
        f"event {envelope['type']}",
        {"shop.consumer_group": group, "shop.event_id": str(envelope["id"])},
        "consumer",
    ):
        spec.handler(envelope)


def handle(group: str, envelope: dict, trace: str | None = None) -> bool:
    """Apply `envelope` for `group` once: True when applied now, False when this group had it already or does not
    want it (its type, or its age). Commits on success; on an exception rolls back (claim included) and re-raises."""
    spec = GROUPS[group]
    if not spec.wants(envelope):
        return False
    session = db.session
    try:
        claimed = session.execute(
            insert(ConsumedEvent)
            .values(group=group, event_id=str(envelope["id"]))
            .on_conflict_do_nothing()
            .returning(ConsumedEvent.event_id)
        ).first()
        if claimed is None:
            session.rollback()
            return False
        _apply_one(spec, group, envelope, trace)
        session.commit()
        return True
    except BaseException:
        session.rollback()
        raise


def purge_consumed(older_than: timedelta = timedelta(days=14)) -> int:
    """Scheduled (daily): forget claims older than any redelivery can be (the stream keeps less than this)."""
    cutoff = clock.now() - older_than
    gone = db.session.execute(delete(ConsumedEvent).where(ConsumedEvent.consumed_at < cutoff)).rowcount
    db.session.commit()
    return gone


# -- running the groups on the stream ---------------------------------------------------------------------------
POLL_BATCH = 200  # messages per poll, applied in one transaction when every handler succeeds
POLL_TIMEOUT = 1.0  # seconds a poll waits for something new (a stop is noticed within it)
BEAT_EVERY = 10.0  # seconds between heartbeats of the "events" role (TTL 30 s)


def handle_batch(group: str, envelopes: list[dict], traces: dict[str, str | None] | None = None) -> int:
    """Apply `envelopes` for `group` in one transaction: claim every id at once, run the handler for each newly
    claimed one in order, commit once. Returns how many were applied. When a handler raises, the whole batch is
    rolled back (claims included) and the exception propagates: the caller applies them one by one (handle()).
    The same effect as handle() per envelope, with one commit instead of one per event."""
    spec = GROUPS[group]
    wanted = [env for env in envelopes if spec.wants(env)]
    if not wanted:
        return 0
    session = db.session
    try:
        ids = list(dict.fromkeys(str(env["id"]) for env in wanted))
        claimed = set(
            session.scalars(
                insert(ConsumedEvent)
                .values([{"group": group, "event_id": event_id} for event_id in ids])
                .on_conflict_do_nothing()
                .returning(ConsumedEvent.event_id)
            )
        )
        applied = 0
        for env in wanted:
            if str(env["id"]) in claimed:
                claimed.discard(str(env["id"]))  # a duplicate within the batch runs once
                _apply_one(spec, group, env, (traces or {}).get(str(env["id"])))
                applied += 1
        session.commit()
        return applied
    except BaseException:
        session.rollback()
        raise


class _Applier:
    """One group's handling of polled messages: a batch in one transaction, or, when a handler fails, each on its
    own so the others still go. A message whose handler failed stays unacknowledged (delivered again after the
    claim idle time), and so do the later messages of the same aggregate in that batch (their order holds).
    Each failing event is logged with its traceback the first time, in one line after that."""

    def __init__(self, group: str):
        self.group = group
        self.failed_before: dict[str, int] = {}

    def apply(self, messages: list) -> tuple[list, int, BaseException | None]:
        """(messages to acknowledge, how many were applied now, the first handler error or None)."""
        envelopes = [m.envelope for m in messages]
        traces = {str(m.envelope["id"]): m.trace for m in messages if m.trace}
        try:
            applied_now = handle_batch(self.group, envelopes, traces)
            metrics.EVENTS_CONSUMED.labels(self.group, "applied").inc(applied_now)
            return list(messages), applied_now, None
        except Exception:  # noqa: BLE001 - one of them failed: go one by one
            pass
        done, applied, first_error, blocked = [], 0, None, set()
        for message in messages:
            env = message.envelope
            if message.key and message.key in blocked:
                continue
            try:
                applied += handle(self.group, env, message.trace)
            except Exception as exc:  # noqa: BLE001 - left unacknowledged: delivered again later
                first_error = first_error or exc
                if message.key:
                    blocked.add(message.key)
                self._log_failure(env, exc)
                continue
            self.failed_before.pop(str(env["id"]), None)
            done.append(message)
        metrics.EVENTS_CONSUMED.labels(self.group, "applied").inc(applied)
        return done, applied, first_error

    def _log_failure(self, env: dict, exc: BaseException) -> None:
        event_id = str(env["id"])
        metrics.EVENTS_CONSUMED.labels(self.group, "failed").inc()
        times = self.failed_before.get(event_id, 0) + 1
        if len(self.failed_before) > 10_000:
            self.failed_before.clear()
        self.failed_before[event_id] = times
        if times == 1:
            log.error(
                "consumer group %s: %s %s failed; it will be delivered again",
                self.group,
                env["type"],
                event_id,
                exc_info=exc,
            )
        else:
            log.warning(
                "consumer group %s: %s %s failed again (%d times): %s",
                self.group,
                env["type"],
                event_id,
                times,
                f"{type(exc).__name__}: {exc}"[:300],
            )


def _group_names(groups) -> list[str]:
    load_groups()
    names = list(groups) if groups else sorted(GROUPS)
    if unknown := [name for name in names if name not in GROUPS]:
        raise ValueError(f"unknown consumer group(s): {', '.join(unknown)} (known: {', '.join(sorted(GROUPS))})")
    return names


def _consume_group(app, group: str, name: str, stop_event, max_backoff: float) -> None:
    """One group's loop in its own thread and app context: poll, apply, acknowledge; outages back off."""
    from shop import stream as streams

    with app.app_context():
        applier = _Applier(group)
        consumer, outage, pause = None, None, 0.5
        while not stop_event.is_set():
            try:
                if consumer is None:
                    consumer = streams.current().consumer(group, f"{name}:{group}")
                messages = consumer.poll(POLL_BATCH, POLL_TIMEOUT)
                if messages:
                    done, applied, _error = applier.apply(messages)
                    consumer.ack(done)
                    if applied:
                        _then(group)
            except Exception as exc:  # noqa: BLE001 - a stream or PostgreSQL outage: back off, never end
                _forget_session()
                what = type(exc).__name__
                if outage != what:
                    log.warning(
                        "consumer group %s: %s (%s); retrying with backoff",
                        group,
                        what,
                        (str(exc).splitlines() or [""])[0][:300],
                    )
                    outage = what
                pause = min(max_backoff, pause * 2)
                stop_event.wait(pause)
                continue
            if outage:
                log.warning("consumer group %s: consuming again", group)
                outage, pause = None, 0.5
        if consumer is not None:
            consumer.close()


def _then(group: str) -> None:
    """The group's `then` after a committed batch; a failure is logged (what it would have done stays recorded)."""
    if (then := GROUPS[group].then) is None:
        return
    try:
        then()
    except Exception:  # noqa: BLE001 - the recorded rows wait for the scheduled scan
        _forget_session()
        log.warning(
            "consumer group %s: its follow-up after a batch failed; the scheduled scan will do it", group, exc_info=True
        )


def _forget_session() -> None:
    try:
        db.session.rollback()
        db.session.remove()
    except Exception:  # noqa: BLE001 - a dead connection may refuse even the rollback
        pass


def run(groups=None, stop_event=None, name: str | None = None, max_backoff: float = 10.0) -> None:
    """Consume `groups` (every declared group by default) until `stop_event` is set: one thread per group, each
    with its own app context and stream consumer named `name` (host:pid by default). Beats the "events"
    heartbeat. Call it in an app context."""
    import threading

    from flask import current_app

    from shop import heartbeat
    from shop.extensions import redis_ext

    names = _group_names(groups)
    stop_event = stop_event or threading.Event()
    app = current_app._get_current_object()
    name = name or heartbeat.this_process()
    threads = [
        threading.Thread(
            target=_consume_group, args=(app, group, name, stop_event, max_backoff), name=f"events-{group}", daemon=True
        )
        for group in names
    ]
    for thread in threads:
        thread.start()
    log.info("consuming events for %s", ", ".join(names))
    try:
        while not stop_event.is_set():
            heartbeat.beat(redis_ext.client, "events", instance=name)
            stop_event.wait(BEAT_EVERY)
    finally:
        stop_event.set()
        for thread in threads:
            thread.join(timeout=15)


def drain(groups=None, timeout: float = 60.0) -> int:
    """Relay every pending event row to the stream, then consume `groups` (all by default) until nothing is left,
    synchronously in the caller's app context (tests, the CLI). Returns how many events were applied. A handler
    error propagates once the rest is consumed (its message stays unacknowledged); TimeoutError after `timeout`
    seconds. Messages delivered to other members and not acknowledged are theirs until the claim idle time."""
    import time

    from shop import outbox
    from shop import stream as streams

    names = _group_names(groups)
    deadline = time.monotonic() + timeout
    while outbox.relay_events():
        if time.monotonic() > deadline:
            raise TimeoutError("drain: the outbox did not empty in time")
    stream = streams.current()
    consumers = {group: stream.consumer(group, f"drain:{streams.default_consumer_name()}") for group in names}
    applied, first_error = 0, None
    try:
        for group, consumer in consumers.items():
            applier = _Applier(group)
            while True:
                messages = consumer.poll(POLL_BATCH, 0.05)
                if messages:
                    done, count, error = applier.apply(messages)
                    consumer.ack(done)
                    if count:
                        _then(group)
                    applied += count
                    first_error = first_error or error
                    if error is not None and not done:
                        break  # only failing messages are left for this group
                elif consumer.caught_up():
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"drain: consumer group {group} did not catch up in {timeout:.0f}s")
    finally:
        for consumer in consumers.values():
            consumer.close()
    if first_error is not None:
        raise first_error
    return applied
