"""Prometheus metrics: what every process counts, and what GET /metrics reads at scrape time.

Counters and histograms live in prometheus-client's default registry. With PROMETHEUS_MULTIPROC_DIR set (gunicorn's
workers, `make run`'s processes, RQ workers on the same host), each process writes them to memory-mapped files in
that directory and /metrics adds them up (MultiProcessCollector); without it, /metrics serves this process's own.

Figures that are state, not events (queue depths, outbox backlog, stream lag, live reservations, readiness, free
disk for uploads), are read when Prometheus scrapes (StateCollector), from Redis and PostgreSQL, whichever process
answers: a scrape every 15 s costs a handful of cheap queries.

Names (docs/observability.md lists them with their labels; deploy/prometheus/alerts.yml and the Grafana dashboard
use them):
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import SessionTransaction

log = logging.getLogger(__name__)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# -- HTTP ---------------------------------------------------------------------------------------------------------
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_REQUESTS = Counter(
    "shop_http_requests_total",
    "HTTP requests answered, by route template, method and status class (2xx, 4xx, 5xx ...).",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "shop_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
DB_QUERIES = Histogram(
    "shop_db_queries_per_request",
    "SQL statements a request ran.",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500),
)
DB_TIME = Histogram(
    "shop_db_time_per_request_seconds",
    "Time a request spent waiting for SQL statements.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DB_POOL_IN_USE = Gauge(
    "shop_db_pool_connections_in_use",
    "Database connections checked out of the pools right now.",
    multiprocess_mode="livesum",
)
# -- caches and search -------------------------------------------------------------------------------------------
CACHE = Counter(
    "shop_cache_requests_total",
    "Cache look-ups by cache (catalog, product, response) and result (hit, miss).",
    ["cache", "result"],
)
SEARCH = Counter(
    "shop_search_requests_total",
    "Searches and suggestions by the engine that answered (typesense, or database: the fallback).",
    ["kind", "engine"],
)
# -- jobs and events -----------------------------------------------------------------------------------------------
JOB_DURATION = Histogram(
    "shop_job_duration_seconds",
    "Time an RQ job ran, by queue.",
    ["queue"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
JOBS = Counter(
    "shop_jobs_total",
    "RQ jobs ended, by queue and outcome (succeeded; retried: failed with retries left; failed: no retries left).",
    ["queue", "outcome"],
)
EVENTS_CONSUMED = Counter(
    "shop_events_consumed_total",
    "Events applied by the event consumers, by group and outcome (applied, failed).",
    ["group", "outcome"],
)
# -- business ------------------------------------------------------------------------------------------------------
CARTS_CREATED = Counter("shop_carts_created_total", "Carts created.")
CHECKOUTS_STARTED = Counter("shop_checkouts_started_total", "Checkouts tried (an order placement asked for).")
ORDERS_PLACED = Counter("shop_orders_placed_total", "Orders placed (committed, awaiting payment).")
PAYMENTS = Counter("shop_payments_total", "Payments ended, by outcome (succeeded, failed).", ["outcome"])
REFUNDS = Counter("shop_refunds_total", "Refunds the provider confirmed.")
RESERVATIONS_EXPIRED = Counter(
    "shop_reservations_expired_total", "Unpaid orders whose stock holds ran out (cancelled, stock released)."
)
WEBHOOKS = Counter(
    "shop_webhooks_received_total",
    "Payment provider webhooks, by outcome (processed, duplicate, ignored, failed, rejected: bad signature or body).",
    ["provider", "outcome"],
)

__doc__ += "\n".join(
    f"    {m._name}{'_total' if m._type == 'counter' else ''}  {m._documentation}"
    for m in (
        HTTP_REQUESTS,
        HTTP_LATENCY,
        DB_QUERIES,
        DB_TIME,
        DB_POOL_IN_USE,
        CACHE,
        SEARCH,
        JOB_DURATION,
        JOBS,
        EVENTS_CONSUMED,
        CARTS_CREATED,
        CHECKOUTS_STARTED,
        ORDERS_PLACED,
        PAYMENTS,
        REFUNDS,
        RESERVATIONS_EXPIRED,
        WEBHOOKS,
    )
)


def count_after_commit(counter: Any, amount: float = 1.0) -> None:
    """Count on `counter` (a Counter, or one with its labels) once the app session's transaction commits; never
    when it rolls back (an order that failed to commit was not placed)."""
    from shop.extensions import db

    db.session().info.setdefault(_AFTER_COMMIT, []).append((counter, amount))


_AFTER_COMMIT = "metrics_after_commit"


def _install_session_hooks() -> None:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    @event.listens_for(Session, "after_commit")
    def _committed(session: Session) -> None:
        if session.in_nested_transaction():
            return
        for counter, amount in session.info.pop(_AFTER_COMMIT, ()):
            counter.inc(amount)

    @event.listens_for(Session, "after_soft_rollback")
    def _rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
        if previous_transaction.parent is None:
            session.info.pop(_AFTER_COMMIT, None)


_install_session_hooks()


# -- what /metrics reads at scrape time ---------------------------------------------------------------------------
class StateCollector:
    """Gauges read from Redis and PostgreSQL when Prometheus scrapes; each source that fails is left out (and
    counted in shop_scrape_errors), so an outage of one never hides the others."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily(
            "shop_scrape_errors", "Sources /metrics could not read at this scrape (1: failed).", labels=["source"]
        )
        for name, read in (
            ("queues", self._queues),
            ("outbox", self._outbox),
            ("stream", self._stream),
            ("reservations", self._reservations),
            ("readiness", self._readiness),
            ("uploads", self._uploads),
        ):
            try:
                yield from read()
                errors.add_metric([name], 0)
            except Exception as exc:  # noqa: BLE001 - a source that is down is a figure missing, not a 500
                log.warning("metrics: reading %s failed: %s", name, str(exc).splitlines()[0][:200] if str(exc) else exc)
                errors.add_metric([name], 1)
        yield errors

    def _queues(self) -> Iterator[Metric]:
        from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

        from shop.extensions import QUEUE_NAMES, redis_ext

        depth = GaugeMetricFamily("shop_queue_jobs", "RQ jobs by queue and state.", labels=["queue", "state"])
        for name in QUEUE_NAMES:
            queue = redis_ext.queue(name)
            conn = queue.connection
            depth.add_metric([name, "queued"], queue.count)
            depth.add_metric([name, "started"], StartedJobRegistry(queue=queue, connection=conn).count)
            # ScheduledJobRegistry's __init__ has no annotations: called through Any.
            depth.add_metric([name, "scheduled"], cast(Any, ScheduledJobRegistry)(queue=queue, connection=conn).count)
            depth.add_metric([name, "failed"], FailedJobRegistry(queue=queue, connection=conn).count)
        yield depth

    def _outbox(self) -> Iterator[Metric]:
        from sqlalchemy import text

        from shop.extensions import db

        rows = db.session.execute(
            text(
                "SELECT kind, count(*), extract(epoch FROM now() - min(created_at)) FROM outbox_job "
                "WHERE dispatched_at IS NULL GROUP BY kind"
            )
        ).all()
        db.session.rollback()
        backlog = GaugeMetricFamily("shop_outbox_backlog", "Outbox rows not handed over yet, by kind.", labels=["kind"])
        age = GaugeMetricFamily(
            "shop_outbox_oldest_age_seconds", "Age of the oldest row not handed over yet, by kind.", labels=["kind"]
        )
        seen = {kind: (count, float(oldest or 0)) for kind, count, oldest in rows}
        for kind in sorted({"job", "event", *seen}):
            count, oldest = seen.get(kind, (0, 0.0))
            backlog.add_metric([kind], count)
            age.add_metric([kind], max(oldest, 0.0))
        yield backlog
        yield age

    def _stream(self) -> Iterator[Metric]:
        from shop import stream as streams

        current = streams.current()
        if not isinstance(current, streams.RedisStream):
            return  # Kafka: the broker's own exporter reports consumer lag
        lag = GaugeMetricFamily(
            "shop_stream_lag", "Events on the stream a consumer group has not read yet.", labels=["group"]
        )
        pending = GaugeMetricFamily(
            "shop_stream_pending", "Events a consumer group read but has not acknowledged.", labels=["group"]
        )
        from redis.exceptions import ResponseError

        try:
            groups = current.client.xinfo_groups(current.topic)
        except ResponseError:  # no stream yet: nothing was published
            groups = []
        for group in groups:
            name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
            lag.add_metric([name], float(group.get("lag") or 0))
            pending.add_metric([name], float(group.get("pending") or 0))
        yield lag
        yield pending

    def _reservations(self) -> Iterator[Metric]:
        from sqlalchemy import text

        from shop.extensions import db

        active = db.session.execute(
            text("SELECT count(*) FROM reservation WHERE status = 'active' AND expires_at > now()")
        ).scalar_one()
        db.session.rollback()
        yield GaugeMetricFamily("shop_reservations_active", "Stock reservations holding stock now.", value=active)

    def _readiness(self) -> Iterator[Metric]:
        from shop import health

        checks = health.dependencies(deep=True)
        ready = GaugeMetricFamily(
            "shop_dependency_up", "Whether a dependency answered /readyz's check (1) or not (0).", labels=["dependency"]
        )
        for name, result in checks.items():
            ready.add_metric([name], 1.0 if result.get("ok") else 0.0)
        yield ready
        plain = {name: checks[name] for name in ("database", "redis", "search")}  # what /readyz (not deep) asks
        yield GaugeMetricFamily(
            "shop_ready",
            "Whether /readyz would answer 200 (PostgreSQL and Redis answer).",
            value=float(health.is_ready(plain)),
        )

    def _uploads(self) -> Iterator[Metric]:
        if self.app.config.get("STORAGE_BACKEND") != "local":
            return
        path = self.app.config["UPLOAD_DIR"]
        while path and not os.path.exists(path):
            path = os.path.dirname(path)
        usage = shutil.disk_usage(path or "/")
        yield GaugeMetricFamily(
            "shop_uploads_disk_free_bytes", "Free space where uploads are stored.", value=usage.free
        )
        yield GaugeMetricFamily(
            "shop_uploads_disk_size_bytes", "Size of the disk uploads are stored on.", value=usage.total
        )


class _Scrape:
    """What one /metrics answer reads: the counters (every process's, in multiprocess mode) and the state."""

    def __init__(self, app: Flask) -> None:
        if MULTIPROCESS:
            from prometheus_client import multiprocess

            self.base = CollectorRegistry()
            cast(Any, multiprocess).MultiProcessCollector(self.base)  # multiprocess.py has no annotations
        else:
            from prometheus_client import REGISTRY

            self.base = REGISTRY
        self.state = StateCollector(app)

    def collect(self) -> Iterator[Metric]:
        yield from self.base.collect()
        yield from self.state.collect()


def exposition(app: Flask) -> tuple[bytes, str]:
    """The Prometheus text of a scrape, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_Scrape(app)), CONTENT_TYPE_LATEST


def counters_only() -> CollectorRegistry:
    """The counters without the state (the operations page reads them in-process)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        cast(Any, multiprocess).MultiProcessCollector(registry)  # multiprocess.py has no annotations
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit hook: drop a dead worker's live gauges (its counters stay counted)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        cast(Any, multiprocess).mark_process_dead(pid)  # multiprocess.py has no annotations


def now() -> float:
    return time.perf_counter()
