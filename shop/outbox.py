"""The outbox: work that must happen after a commit is a row in PostgreSQL first, a queued job second.

`shop.afterwards.after_commit()` INSERTs an `outbox_job` row in the transaction that needs the work,
so a rollback drops it and a commit keeps it, whether Redis is up or not. Right after the commit the
same process tries to hand the rows to RQ (`dispatch_now`); whatever that could not hand over waits
for the relay:

    python worker.py relay          # shop.outbox.run_relay(): one or more per deployment

`relay_once()` takes undispatched rows in id order with SELECT ... FOR UPDATE SKIP LOCKED, so relays
running side by side never hand the same row over twice, and enqueues each as the RQ job
`outbox-<row id>` with `unique=True`: a row that was enqueued by a relay that died before marking it
is marked, not queued a second time, while that job still exists. Jobs are idempotent anyway (a
refund of nothing left does nothing, a mail is claimed per event and object).

One mechanism for every kind of row: "job" rows are RQ jobs; "event" rows are domain events
(shop.events.publish: `queue` holds the topic, `key` the aggregate, `function` the event type and
`kwargs` the envelope), which the relay publishes to the event stream (shop.stream) in batches
(`relay_events`): one relay at a time per topic (a transaction-scoped advisory lock), rows in id order, marked
dispatched and done in the transaction that selected them once the stream stored them. A relay that dies between
publishing and marking publishes those rows again: the copies carry the same event ids and consumers skip them.
The relay LISTENs on shop.events.WAKE_CHANNEL, so a commit that published events wakes it at once.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy import BigInteger, Index, String, Text, delete, func, select, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, Session, mapped_column

from shop import clock
from shop.extensions import db, redis_ext
from shop.telemetry import tracing

log = logging.getLogger(__name__)

JOB_PREFIX = "outbox-"
LOST_AFTER = timedelta(seconds=60)  # a dispatched, unfinished row whose job is gone from Redis this long: again
RECOVER_EVERY = 15.0  # seconds between the relay's looks for lost jobs
FAST_PATH_PAUSE = 5.0  # seconds after a failed hand-over during which commits leave their rows to the relay
BATCH = 100
EVENT_BATCH = 1000  # events per relay transaction (one Stream.publish call)
EVENT_LOCK_NAMESPACE = 0x5E7E  # the first key of the relay's advisory lock; the second is hashtext(topic)
LEASE_IDLE_LIMIT = 60  # seconds a relay may sit idle inside its publishing transaction before PostgreSQL ends it


class OutboxJob(db.Model):
    __tablename__ = "outbox_job"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="job", server_default="job")  # see DISPATCHERS
    queue: Mapped[str] = mapped_column(String(60))  # an RQ queue; for "event" rows, the stream's topic
    key: Mapped[str | None] = mapped_column(String(120))  # "event" rows: the aggregate ("order:12"), kept in order
    function: Mapped[str] = mapped_column(String(200))  # dotted path, imported by the worker
    args: Mapped[list] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    kwargs: Mapped[dict] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    retry: Mapped[dict | None] = mapped_column(JSONB)  # {"max": 3, "interval": [10, 60, 300]}
    job_timeout: Mapped[int] = mapped_column(default=120, server_default="120")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    available_at: Mapped[datetime] = mapped_column(server_default=func.now())  # pushed back after a failure
    dispatched_at: Mapped[datetime | None] = mapped_column()
    done_at: Mapped[datetime | None] = mapped_column()  # succeeded, or left to RQ's failed list (recover_lost)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    # The trace the recording transaction ran in (W3C traceparent; NULL when traces are off): shop.telemetry.tracing
    trace_parent: Mapped[str | None] = mapped_column(String(55), server_default=text("NULL"))

    __table_args__ = (
        Index("ix_outbox_job_pending", "id", postgresql_where=text("dispatched_at IS NULL")),
        Index("ix_outbox_job_dispatched_at", "dispatched_at", postgresql_where=text("dispatched_at IS NOT NULL")),
        Index(
            "ix_outbox_job_unfinished",
            "dispatched_at",
            postgresql_where=text("dispatched_at IS NOT NULL AND done_at IS NULL"),
        ),
        Index("ix_outbox_job_events_pending", "id", postgresql_where=text("dispatched_at IS NULL AND kind = 'event'")),
    )


def function_path(func) -> str:
    """`func` as the dotted path a worker imports; lambdas and nested functions cannot be named so."""
    if isinstance(func, str):
        return func
    qualname = getattr(func, "__qualname__", "")
    if not qualname or "<" in qualname:
        raise ValueError(f"{func!r} is not a module-level function a worker can import")
    return f"{func.__module__}.{qualname}"


def record(
    session: Session, queue: str, func, args=(), kwargs=None, retry=None, job_timeout: int = 120, kind: str = "job"
) -> int:
    """INSERT the job in `session`'s transaction; returns the row id. Arguments must be JSON-able. `kind` picks
    the dispatcher (DISPATCHERS) that hands the row over; "job" enqueues it as it is."""
    values = {
        "kind": kind,
        "queue": queue,
        "function": function_path(func),
        "args": list(args),
        "kwargs": dict(kwargs or {}),
        "retry": {"max": retry.max, "interval": list(retry.intervals)} if retry is not None else None,
        "job_timeout": job_timeout,
    }
    if parent := tracing.traceparent():
        values["trace_parent"] = parent
    return session.execute(insert(OutboxJob).values(**values).returning(OutboxJob.id)).scalar_one()


def _enqueue(row: OutboxJob) -> None:
    """Hand a "job" row to RQ as job `outbox-<id>`; an existing job of that id means it is queued already."""
    from rq import Callback, Retry
    from rq.exceptions import DuplicateJobError

    retry = Retry(max=row.retry["max"], interval=row.retry["interval"]) if row.retry else None
    try:
        redis_ext.queue(row.queue).enqueue_call(
            row.function,
            args=tuple(row.args),
            kwargs=row.kwargs,
            timeout=row.job_timeout,
            job_id=f"{JOB_PREFIX}{row.id}",
            unique=True,
            retry=retry,
            on_success=Callback(job_succeeded),
            meta={"traceparent": row.trace_parent} if row.trace_parent else None,
        )
    except DuplicateJobError:
        log.info("outbox row %s was queued before (job outbox-%s exists); marking it dispatched", row.id, row.id)


DISPATCHERS = {"job": _enqueue}  # kind -> how a row leaves the outbox
# kind -> whether a dispatched row with no RQ job of its own is still in hand (a coalesced search sync waits
# for the one job draining its kind); recover_lost leaves such rows alone instead of dispatching them again.
STILL_IN_HAND: dict = {}


def _dispatch(session: Session, ids=None, limit: int = BATCH) -> int:
    """Hand over up to `limit` due rows (of `ids`, when given) in one transaction of `session`, which the
    caller commits. Returns how many went; raises RedisError when Redis refused, after noting it on the
    row that failed (the rows handed over before it are marked and kept)."""
    query = (
        select(OutboxJob)
        .where(
            OutboxJob.dispatched_at.is_(None),
            OutboxJob.kind.in_(list(DISPATCHERS)),
            OutboxJob.available_at <= func.now(),
        )
        .order_by(OutboxJob.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if ids is not None:
        query = query.where(OutboxJob.id.in_(list(ids)))
    done = 0
    for row in session.scalars(query).all():
        try:
            DISPATCHERS[row.kind](row)
        except RedisError as exc:  # Redis is away: every other row would fail too
            row.attempts += 1
            row.last_error = f"{type(exc).__name__}: {exc}"[:500]
            session.flush()
            raise
        except Exception as exc:  # noqa: BLE001 - this row is wrong (unknown queue...): back off, go on
            row.attempts += 1
            row.last_error = f"{type(exc).__name__}: {exc}"[:500]
            row.available_at = clock.now() + timedelta(seconds=min(3600, 10 * 2**row.attempts))
            log.error("outbox row %s cannot be dispatched: %s", row.id, row.last_error)
            continue
        row.dispatched_at = clock.now()
        done += 1
    return done


# Per Redis client: the monotonic time until which commits leave their rows to the relay, because that
# Redis was away a moment ago (so a request does not wait for a connect timeout on every commit).
_paused_until: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dispatch_now(bind, ids) -> None:
    """The fast path, run right after a commit: hand the just-committed rows to RQ. Never raises: what
    is not handed over now stays in the outbox for the relay."""
    try:
        client = redis_ext.client
        if time.monotonic() < _paused_until.get(client, 0.0):
            return
        # A short session of our own on the committed one's bind (join_transaction_mode matters only
        # when that bind is a connection inside a transaction, as in the test suite).
        with Session(bind=bind, join_transaction_mode="create_savepoint") as session, session.begin():
            _dispatch(session, ids=ids)
    except RedisError as exc:
        _paused_until[client] = time.monotonic() + FAST_PATH_PAUSE
        log.warning("Redis is unreachable (%s); %d job(s) stay in the outbox for the relay", exc, len(ids))
    except Exception:  # noqa: BLE001 - the commit stands and the rows are safe; the relay retries them
        log.warning("could not hand %d outbox job(s) to RQ now; the relay will", len(ids), exc_info=True)


def relay_once(limit: int = BATCH) -> int:
    """Dispatch up to `limit` due rows in id order; returns how many went. Raises RedisError (Redis away)
    or a DBAPIError (PostgreSQL away) for the caller to back off; attempts and errors are recorded."""
    try:
        done = _dispatch(db.session, limit=limit)
        db.session.commit()
        return done
    except RedisError:
        db.session.commit()  # keep the note on the row that failed and the rows that went before it
        raise
    except BaseException:
        db.session.rollback()
        raise


def _row_id(job_id: str) -> int | None:
    return (
        int(job_id[len(JOB_PREFIX) :])
        if job_id.startswith(JOB_PREFIX) and job_id[len(JOB_PREFIX) :].isdigit()
        else None
    )


def job_succeeded(job, connection, result, *args, **kwargs) -> None:
    """RQ success callback (in the worker, which has an app context): the row's work is done."""
    row_id = _row_id(job.id)
    if row_id is None:
        return
    try:
        db.session.execute(
            OutboxJob.__table__.update()
            .where(OutboxJob.id == row_id, OutboxJob.done_at.is_(None))
            .values(done_at=func.now())
        )
        db.session.commit()
    except Exception:  # noqa: BLE001 - the job did its work; recover_lost marks the row from RQ's record
        _forget_session()
        log.warning("could not mark outbox row %s done; the relay will from RQ's record", row_id)


def recover_lost(older_than: timedelta = LOST_AFTER, limit: int = BATCH) -> int:
    """Rows dispatched over `older_than` ago and not done, checked against RQ: a job that vanished from
    Redis (a worker took it off the queue as Redis went down, or Redis lost it) is dispatched again; a
    finished one is marked done; a failed one is left to the back-office's failed jobs (marked done).
    Returns how many went back to the relay. The jobs are idempotent, so a second run is harmless."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    cutoff = clock.now() - older_than
    rows = db.session.scalars(
        select(OutboxJob)
        .where(OutboxJob.done_at.is_(None), OutboxJob.dispatched_at < cutoff)
        .order_by(OutboxJob.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    again = 0
    for row in rows:
        try:
            status = Job.fetch(f"{JOB_PREFIX}{row.id}", connection=redis_ext.client).get_status(refresh=False)
        except NoSuchJobError:
            status = None
        if status is None and (in_hand := STILL_IN_HAND.get(row.kind)) is not None and in_hand(row):
            continue  # waiting for the job that drains its kind
        if status is None:
            row.dispatched_at, row.attempts = None, row.attempts + 1
            row.last_error = "its RQ job was lost from Redis; dispatched again"
            again += 1
        elif status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED):
            row.done_at = clock.now()
            if status != JobStatus.FINISHED:
                row.last_error = f"RQ job {status.value}: see the back-office's failed jobs"
    db.session.commit()
    if again:
        log.warning("outbox: %d dispatched job(s) were lost from Redis; dispatching them again", again)
    return again


def purge_dispatched(older_than: timedelta = timedelta(days=7)) -> int:
    """Scheduled (daily): delete rows dispatched longer ago than `older_than`; returns how many."""
    cutoff = clock.now() - older_than
    gone = db.session.execute(delete(OutboxJob).where(OutboxJob.dispatched_at < cutoff)).rowcount
    db.session.commit()
    return gone


def _forget_session() -> None:
    """Drop the session after a failure, whatever state its connection is in."""
    try:
        db.session.remove()
    except Exception:  # noqa: BLE001 - a dead connection may refuse even the rollback
        pass


def relay_events(limit: int = EVENT_BATCH, stream=None) -> int:
    """Publish up to `limit` committed event rows of this app's topic to the stream, in id order, and mark them
    dispatched and done; returns how many went. Only one relay per topic publishes at a time: the others get 0
    at once (they hold no lease) and go on relaying jobs. Raises shop.stream.StreamUnavailable (rows untouched)
    or a DBAPIError for the caller to back off."""
    from shop import events
    from shop import stream as streams

    topic = events.current_topic()
    session = db.session
    try:
        # The lease lasts as long as this transaction: a relay that stalls with it (its host paused or cut off)
        # loses it, and its rows, when PostgreSQL ends the idle transaction, so another relay takes over.
        session.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = '{LEASE_IDLE_LIMIT}s'"))
        leased = session.execute(
            text("SELECT pg_try_advisory_xact_lock(:ns, hashtext(:topic))"),
            {"ns": EVENT_LOCK_NAMESPACE, "topic": topic},
        ).scalar()
        if not leased:
            session.rollback()
            return 0
        rows = session.execute(
            select(OutboxJob.id, OutboxJob.key, OutboxJob.kwargs, OutboxJob.trace_parent)
            .where(OutboxJob.dispatched_at.is_(None), OutboxJob.kind == "event", OutboxJob.queue == topic)
            .order_by(OutboxJob.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if rows:
            # The message key is the aggregate's id (the contract): one aggregate's events stay in one partition.
            (stream or streams.current()).publish(
                [(row.kwargs["aggregate"]["id"], row.kwargs, row.trace_parent) for row in rows]
            )
            _drill_pause()
            session.execute(
                OutboxJob.__table__.update()
                .where(OutboxJob.id.in_([row.id for row in rows]))
                .values(dispatched_at=func.now(), done_at=func.now())
            )
        session.commit()
        return len(rows)
    except BaseException:
        session.rollback()
        raise


def _drill_pause() -> None:
    """For the fault drills (tests/faults/test_event_drills.py) only: with SHOP_DRILL_PAUSE_AFTER_PUBLISH=<seconds>
    the relay holds a published batch unmarked that long, so the drill can SIGKILL it in that window. Ignored in
    production."""
    import os

    from flask import current_app

    seconds = os.environ.get("SHOP_DRILL_PAUSE_AFTER_PUBLISH")
    if seconds and current_app.config.get("ENV_NAME") != "production":
        time.sleep(float(seconds))


class _Waker:
    """LISTENs on shop.events.WAKE_CHANNEL on a connection of its own: `wait()` returns as soon as a transaction
    that published events commits, or after the timeout. Without PostgreSQL it only sleeps (and retries later)."""

    def __init__(self, stop_event: threading.Event):
        self.stop_event = stop_event
        self.conn = None
        self.retry_at = 0.0

    def _connect(self):
        import psycopg

        from shop.events import WAKE_CHANNEL

        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = psycopg.connect(url, autocommit=True, connect_timeout=2)
        conn.execute(f"LISTEN {WAKE_CHANNEL}")
        return conn

    def wait(self, timeout: float) -> bool:
        if self.conn is None and time.monotonic() >= self.retry_at:
            try:
                self.conn = self._connect()
            except Exception:  # noqa: BLE001 - PostgreSQL away: the relay's own round reports it
                self.retry_at = time.monotonic() + 5
        if self.conn is None:
            return self.stop_event.wait(timeout)
        try:
            for _ in self.conn.notifies(timeout=timeout, stop_after=1):
                return True
            return False
        except Exception:  # noqa: BLE001 - the connection broke: listen again on the next wait
            self.close()
            return self.stop_event.wait(min(timeout, 1.0))

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
            self.conn = None


def run_relay(
    stop_event: threading.Event | None = None, interval: float = 1.0, max_backoff: float = 10.0, events: bool = True
) -> None:
    """Relay forever (until `stop_event` is set), in an app context: jobs to RQ and, with `events`, events to
    the stream. A Redis, PostgreSQL or stream outage never ends it: it waits with growing pauses and logs one
    line when the outage starts and one when it ends; a stream outage holds back only the events (they wait in
    the outbox). Between rounds it sleeps until a publishing commit NOTIFYs it, or `interval` at most.
    Every round beats the "relay" heartbeat (shop:heartbeat:relay), so the pauses stay under its TTL/2."""
    from shop import heartbeat

    stop_event = stop_event or threading.Event()
    instance = heartbeat.this_process()
    outage: str | None = None
    events_outage: str | None = None
    pause = interval
    events_pause, events_due = interval, 0.0
    next_recovery = time.monotonic() + RECOVER_EVERY
    waker = _Waker(stop_event) if events else None
    try:
        while not stop_event.is_set():
            try:
                heartbeat.beat(redis_ext.client, "relay", instance=instance)  # no key in Redis = no relay
                if time.monotonic() >= next_recovery:
                    recover_lost()
                    next_recovery = time.monotonic() + RECOVER_EVERY
                done = relay_once()
            except Exception as exc:  # noqa: BLE001 - the relay outlives every outage
                _forget_session()
                what = (
                    "Redis"
                    if isinstance(exc, RedisError)
                    else "PostgreSQL"
                    if isinstance(exc, DBAPIError)
                    else type(exc).__name__
                )
                if outage != what:
                    log.warning(
                        "outbox relay: %s failed (%s); retrying with backoff",
                        what,
                        (str(exc).splitlines() or [""])[0][:300],
                        exc_info=what not in ("Redis", "PostgreSQL"),
                    )
                    outage = what
                pause = min(max_backoff, max(pause, interval) * 2)
                stop_event.wait(pause)
                continue
            if outage:
                log.warning("outbox relay: %s is back, relaying again", outage)
                outage = None
            pause = interval
            sent = 0
            if events and time.monotonic() >= events_due:
                try:
                    sent = relay_events()
                except Exception as exc:  # noqa: BLE001 - events wait in the outbox until the stream is back
                    _forget_session()
                    what = type(exc).__name__
                    if events_outage != what:
                        log.warning(
                            "outbox relay: events cannot be published (%s: %s); retrying with backoff",
                            what,
                            (str(exc).splitlines() or [""])[0][:300],
                        )
                        events_outage = what
                    events_pause = min(max_backoff, max(events_pause, interval) * 2)
                    events_due = time.monotonic() + events_pause
                else:
                    if events_outage:
                        log.warning("outbox relay: the event stream is back, publishing events again")
                        events_outage = None
                    events_pause = interval
            if done >= BATCH or sent >= EVENT_BATCH:  # a full batch means more are waiting: go on at once
                continue
            wait = interval if not events_outage else max(0.0, min(interval, events_due - time.monotonic()))
            if waker is not None:
                waker.wait(wait)
            else:
                stop_event.wait(wait)
    finally:
        if waker is not None:
            waker.close()
