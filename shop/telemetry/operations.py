"""What the back-office operations page shows (admin/operations.py): the first page an on-call engineer opens when an
alert wakes them. Queue depths and failed jobs (Redis), recent 5xx answers and the slowest routes (Prometheus, or the
shop's own counters), webhook failures (PostgreSQL) and the search engine's state (Typesense and the fallback breaker).

Everything here only reads, and returns plain dicts and lists. Nothing raises: a source that does not answer turns
its section into a sentence saying what is unknown and why, so the page answers 200 in the outage it is opened for.

5xx and latency come from the same metrics Prometheus scrapes (shop/telemetry/metrics.py). With PROMETHEUS_URL set,
the page asks that Prometheus for the last hour (2 s per query); without it, or when it does not answer, it adds up
the counters of this host's processes (`metrics.counters_only()`), which cover the time since they started.
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

PROMETHEUS_TIMEOUT = 2.0  # seconds per query: a Prometheus that hangs must not hold the page
FAILED_JOBS_SHOWN = 5
WEBHOOK_EVENTS_SHOWN = 10
SLOW_ROUTES_SHOWN = 10
WINDOW = timedelta(hours=1)

# PromQL of the last hour, by route (summed over methods; the route label is the URL rule, so the series are bounded).
Q_REQUESTS = "sum by (route) (increase(shop_http_requests_total[1h]))"
Q_5XX = 'sum by (route) (increase(shop_http_requests_total{status="5xx"}[1h])) > 0'
Q_P95 = (
    "topk(10, histogram_quantile(0.95, sum by (route, le) (rate(shop_http_request_duration_seconds_bucket[1h]))) >= 0)"
)
Q_AVERAGE = (
    "sum by (route) (rate(shop_http_request_duration_seconds_sum[1h]))"
    " / sum by (route) (rate(shop_http_request_duration_seconds_count[1h]))"
)


class _Sample(TypedDict):
    """One series of an instant vector in Prometheus's query answer."""

    metric: dict[str, str]  # its labels
    value: list[float | str]  # [unix time, "the value as a string"]


class _SlowRoute(TypedDict):
    """A row of the slowest routes (seconds); _readable() adds the texts."""

    route: str
    p95: float
    above_buckets: bool
    requests: int
    average: float | None
    p95_text: NotRequired[str]
    average_text: NotRequired[str]


class _ErrorRoute(TypedDict):
    """A row of the 5xx table."""

    route: str
    count: int
    requests: int
    share: str


def snapshot(app: Flask) -> dict[str, Any]:
    """Every section of the page. Runs in `app`'s context (the request's, or one pushed here)."""
    from flask import has_app_context

    if not has_app_context():
        with app.app_context():
            return snapshot(app)
    traffic = http_traffic(app)
    return {
        "generated_at": datetime.now(UTC),
        "queues": queue_state(),
        "errors": traffic["errors"],
        "slow": traffic["slow"],
        "source": traffic["source"],
        "webhooks": webhook_failures(),
        "search": search_state(app),
    }


def _reason(exc: BaseException) -> str:
    """One line naming what went wrong (no traceback, no multi-line driver messages)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:240] if text else type(exc).__name__


# -- queues ---------------------------------------------------------------------------------------------------------
def queue_state() -> dict[str, Any]:
    """Depth of every queue, the count of jobs whose retries ran out and the most recent of them (shop/queues.py)."""
    from shop import queues

    try:
        counts = [asdict(c) for c in queues.overview()]
        recent = queues.failed_jobs(limit=FAILED_JOBS_SHOWN)  # each queue's newest: the newest overall are among them
    except Exception as exc:  # noqa: BLE001 - Redis away: the section says so, the page still answers
        log.warning("operations: reading the queues failed: %s", _reason(exc))
        return {
            "ok": False,
            "problem": f"Redis did not answer ({_reason(exc)}): queue depths and failed jobs are unknown.",
        }
    oldest = datetime.min.replace(tzinfo=UTC)
    recent.sort(key=lambda j: _aware(j.failed_at) or oldest, reverse=True)
    return {
        "ok": True,
        "counts": counts,
        "failed_total": sum(c["failed"] for c in counts),
        "queued_total": sum(c["queued"] for c in counts),
        "failed_recent": [asdict(j) for j in recent[:FAILED_JOBS_SHOWN]],
    }


def _aware(moment: datetime | None) -> datetime | None:
    """RQ stamps naive UTC datetimes."""
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- webhooks -------------------------------------------------------------------------------------------------------
def webhook_failures() -> dict[str, Any]:
    """Provider events that failed (all of them: they stay failed until retried) and partner deliveries that failed
    in the last hour, per endpoint."""
    return {"provider": _provider_failures(), "partner": _partner_failures()}


def _provider_failures() -> dict[str, Any]:
    from sqlalchemy import func, select

    from shop.extensions import db
    from shop.payments.models import WebhookEvent, WebhookEventStatus

    failed = WebhookEvent.status == WebhookEventStatus.FAILED
    try:
        total = db.session.scalar(select(func.count()).select_from(WebhookEvent).where(failed)) or 0
        rows = db.session.execute(
            select(
                WebhookEvent.id,
                WebhookEvent.provider,
                WebhookEvent.type,
                WebhookEvent.event_id,
                WebhookEvent.attempts,
                WebhookEvent.last_error,
                WebhookEvent.received_at,
            )
            .where(failed)
            .order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc())
            .limit(WEBHOOK_EVENTS_SHOWN)
        ).all()
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001 - PostgreSQL away
        _forget_transaction()
        log.warning("operations: reading provider webhook events failed: %s", _reason(exc))
        return {
            "ok": False,
            "problem": f"PostgreSQL did not answer ({_reason(exc)}): failed provider events are unknown.",
        }
    return {
        "ok": True,
        "total": total,
        "latest": [
            {
                "id": r.id,
                "provider": r.provider,
                "type": r.type,
                "event_id": r.event_id,
                "attempts": r.attempts,
                "error": _first_line(r.last_error),
                "received_at": r.received_at,
            }
            for r in rows
        ],
    }


def _partner_failures() -> dict[str, Any]:
    from sqlalchemy import and_, func, or_, select

    from shop import clock
    from shop.extensions import db
    from shop.partners.models import FAILED, WebhookAttempt, WebhookDelivery, WebhookEndpoint

    since = clock.now() - WINDOW
    attempt_failed = or_(
        WebhookAttempt.error.is_not(None),
        WebhookAttempt.status_code.is_(None),
        WebhookAttempt.status_code < 200,
        WebhookAttempt.status_code >= 300,
    )
    try:
        given_up = dict(
            db.session.execute(
                select(WebhookDelivery.endpoint_id, func.count())
                .where(WebhookDelivery.state == FAILED, WebhookDelivery.finished_at >= since)
                .group_by(WebhookDelivery.endpoint_id)
            ).all()
        )
        attempts = dict(
            db.session.execute(
                select(WebhookDelivery.endpoint_id, func.count())
                .join(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)
                .where(and_(WebhookAttempt.started_at >= since, attempt_failed))
                .group_by(WebhookDelivery.endpoint_id)
            ).all()
        )
        ids = set(given_up) | set(attempts)
        endpoints = (
            db.session.execute(
                select(
                    WebhookEndpoint.id,
                    WebhookEndpoint.url,
                    WebhookEndpoint.description,
                    WebhookEndpoint.enabled,
                    WebhookEndpoint.failing_since,
                ).where(WebhookEndpoint.id.in_(ids))
            ).all()
            if ids
            else []
        )
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001 - PostgreSQL away
        _forget_transaction()
        log.warning("operations: reading partner webhook deliveries failed: %s", _reason(exc))
        return {
            "ok": False,
            "problem": f"PostgreSQL did not answer ({_reason(exc)}): partner webhook failures are unknown.",
        }
    rows = [
        {
            "endpoint_id": e.id,
            "url": e.url,
            "description": e.description,
            "enabled": e.enabled,
            "failing_since": e.failing_since,
            "deliveries_failed": given_up.get(e.id, 0),
            "attempts_failed": attempts.get(e.id, 0),
        }
        for e in endpoints
    ]
    rows.sort(key=lambda r: (r["deliveries_failed"], r["attempts_failed"]), reverse=True)
    return {
        "ok": True,
        "endpoints": rows,
        "deliveries_failed": sum(given_up.values()),
        "attempts_failed": sum(attempts.values()),
    }


def _first_line(text: str | None, limit: int = 200) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _forget_transaction() -> None:
    """A failed statement leaves the session's transaction unusable: roll it back (which may fail too)."""
    from shop.extensions import db

    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001, S110 - the connection is gone; the next use reconnects
        pass


# -- search ---------------------------------------------------------------------------------------------------------
def search_state(app: Flask) -> dict[str, Any]:
    """Whether Typesense answers its health check (shop/health.py) and whether this process's circuit breaker sends
    searches to PostgreSQL (shop/search/services.py) for a while."""
    from shop import health
    from shop.search import services

    url = app.config.get("TYPESENSE_URL", "")
    check = health._check(health._search)  # the check /readyz reports as "search"
    left = services._open_until.get(url, 0.0) - time.monotonic()
    breaker_open = left > 0
    return {
        "url": url,
        "answering": bool(check.get("ok")),
        "latency_ms": check.get("latency_ms"),
        "error": check.get("error"),
        "breaker_open": breaker_open,
        "breaker_seconds_left": math.ceil(left) if breaker_open else 0,
        "breaker_until": datetime.now(UTC) + timedelta(seconds=left) if breaker_open else None,
    }


# -- HTTP traffic: 5xx and latency ----------------------------------------------------------------------------------
class _Prometheus:
    """Instant queries against PROMETHEUS_URL (the first failure ends its use for this snapshot: http_traffic)."""

    def __init__(self, url: str):
        self.url = url

    def query(self, promql: str) -> list[_Sample]:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"PROMETHEUS_URL must be an http(s) URL, not {self.url!r}")
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(address, timeout=PROMETHEUS_TIMEOUT) as resp:  # noqa: S310 - configured URL
            body = json.loads(resp.read())
        if body.get("status") != "success" or body.get("data", {}).get("resultType") != "vector":
            raise RuntimeError(f"Prometheus refused the query: {body.get('error') or body.get('status')}")
        return body["data"]["result"]


def _by_route(result: list[_Sample]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in result:
        value = float(item["value"][1])
        if not math.isnan(value):
            out[item["metric"].get("route", "(none)")] = value
    return out


def http_traffic(app: Flask) -> dict[str, Any]:
    """5xx by route and the slowest routes, from Prometheus (last hour) or the counters (since the processes
    started), with the source and its window in words."""
    url = app.config.get("PROMETHEUS_URL", "")
    problem = None
    if url:
        prometheus = _Prometheus(url)
        try:
            return _from_prometheus(prometheus)
        except Exception as exc:  # noqa: BLE001 - Prometheus away or odd: fall back to the counters
            log.warning("operations: Prometheus at %s did not answer: %s", url, _reason(exc))
            problem = f"Prometheus at {url} did not answer ({_reason(exc)})"
    try:
        found = _from_counters()
    except Exception as exc:  # noqa: BLE001 - an unreadable multiprocess directory, say
        log.warning("operations: reading the counters failed: %s", _reason(exc))
        reason = f"The shop's counters could not be read ({_reason(exc)})"
        if problem:
            reason = f"{problem}; {reason[0].lower()}{reason[1:]}"
        return {
            "source": {"kind": "none", "window": "", "problem": reason + "."},
            "errors": {"ok": False, "problem": reason + ": 5xx answers are unknown."},
            "slow": {"ok": False, "problem": reason + ": latencies are unknown."},
        }
    from shop.telemetry import metrics

    if metrics.MULTIPROCESS:
        window = "since the shop's processes on this host started"
    else:
        window = "since this process started (its own requests only)"
    found["source"] = {
        "kind": "counters",
        "window": window + (": set PROMETHEUS_URL for a last-hour window" if not url else ""),
        "problem": (problem + "; these figures are the shop's own counters instead.") if problem else None,
    }
    return found


def _from_prometheus(prometheus: _Prometheus) -> dict[str, Any]:
    requests = _by_route(prometheus.query(Q_REQUESTS))  # the first query: it fails fast when nothing answers
    errors = _by_route(prometheus.query(Q_5XX))
    p95 = _by_route(prometheus.query(Q_P95))
    average = _by_route(prometheus.query(Q_AVERAGE))
    slow: list[_SlowRoute] = [
        {
            "route": route,
            "p95": seconds,
            "above_buckets": False,
            "requests": round(requests.get(route, 0)),
            "average": average.get(route),
        }
        for route, seconds in p95.items()
    ]
    slow.sort(key=lambda r: r["p95"], reverse=True)
    note = None if requests else "Prometheus has no shop_http_* series for the last hour: is it scraping this shop?"
    return {
        "source": {"kind": "prometheus", "window": f"last hour, from Prometheus at {prometheus.url}", "problem": note},
        "errors": _errors_table(errors, requests),
        "slow": {"ok": True, "routes": [_readable(r) for r in slow[:SLOW_ROUTES_SHOWN]]},
    }


def _from_counters() -> dict[str, Any]:
    """The same figures from the counters of this host's processes (prometheus-client's registry)."""
    from shop.telemetry import metrics

    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for family in metrics.counters_only().collect():
        if family.name not in ("shop_http_requests", "shop_http_request_duration_seconds"):
            continue
        for sample in family.samples:
            route = sample.labels.get("route", "(none)")
            if sample.name == "shop_http_requests_total":
                requests[route] += sample.value
                if sample.labels.get("status") == "5xx":
                    errors[route] += sample.value
            elif sample.name == "shop_http_request_duration_seconds_bucket":
                buckets[route][float(sample.labels["le"])] += sample.value  # cumulative: adding methods keeps it so
            elif sample.name == "shop_http_request_duration_seconds_sum":
                sums[route] += sample.value
            elif sample.name == "shop_http_request_duration_seconds_count":
                counts[route] += sample.value
    slow: list[_SlowRoute] = []
    for route, by_bound in buckets.items():
        p95, above = quantile(0.95, sorted(by_bound.items()))
        if p95 is None:
            continue
        slow.append(
            {
                "route": route,
                "p95": p95,
                "above_buckets": above,
                "requests": round(counts[route]),
                "average": sums[route] / counts[route] if counts[route] else None,
            }
        )
    slow.sort(key=lambda r: (r["p95"], r["average"] or 0), reverse=True)
    return {
        "errors": _errors_table({r: n for r, n in errors.items() if n > 0}, requests),
        "slow": {"ok": True, "routes": [_readable(r) for r in slow[:SLOW_ROUTES_SHOWN]]},
    }


def quantile(q: float, buckets: list[tuple[float, float]]) -> tuple[float | None, bool]:
    """The q-quantile of a cumulative histogram [(upper bound, count up to it), ... (inf, total)], estimated as
    Prometheus's histogram_quantile() does (linear within the bucket it falls in), and whether it lies above the
    largest finite bucket (then the estimate is that bucket's bound: "more than"). (None, False) for no samples."""
    if not buckets or buckets[-1][1] <= 0:
        return None, False
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower, True
            if count == below:
                return bound, False
            return lower + (bound - lower) * (rank - below) / (count - below), False
        lower, below = bound, count
    return lower, True


def _errors_table(errors: dict[str, float], requests: dict[str, float]) -> dict[str, Any]:
    rows: list[_ErrorRoute] = [
        {
            "route": route,
            "count": round(count),
            "requests": round(requests.get(route, 0)),
            "share": f"{count / requests[route]:.1%}" if requests.get(route) else "",
        }
        for route, count in errors.items()
        if round(count) > 0
    ]
    rows.sort(key=lambda r: r["count"], reverse=True)
    return {"ok": True, "routes": rows, "total": sum(r["count"] for r in rows)}


def duration(seconds: float | None) -> str:
    """A latency as people read it: "8 ms", "340 ms", "1.25 s"."""
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def _readable(row: _SlowRoute) -> _SlowRoute:
    row["p95_text"] = ("more than " if row["above_buckets"] else "") + duration(row["p95"])
    row["average_text"] = duration(row["average"])
    return row
