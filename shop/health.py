"""Liveness and readiness for load balancers and operators."""

from __future__ import annotations

import ipaddress
import time
import urllib.request

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import text

from shop import heartbeat
from shop.extensions import QUEUE_NAMES, db, redis_ext

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """200 while the process can answer at all."""
    return jsonify(status="ok")


def _check(fn) -> dict:
    started = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported with its reason
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def _database():
    db.session.execute(text("SELECT 1"))
    db.session.rollback()


def _redis():
    redis_ext.client.ping()


def _search():
    url = current_app.config["TYPESENSE_URL"].rstrip("/") + "/health"
    with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - configured URL
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")


def client_in(setting: str) -> bool:
    """Whether the client (its address after PROXY_COUNT trusted proxies) is in the networks of `setting`
    (READYZ_DETAILS_ALLOW, METRICS_ALLOW)."""
    try:
        client = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    client = getattr(client, "ipv4_mapped", None) or client  # ::ffff:127.0.0.1 from a dual-stack listener
    return any(client in network for network in current_app.config[setting] if network.version == client.version)


def _may_see_details() -> bool:
    return client_in("READYZ_DETAILS_ALLOW")


PROCESS_ROLES = ("workers", "scheduler", "relay", "events")  # what /readyz?deep=1 needs alive


def _processes() -> dict:
    """The heartbeats (shop/heartbeat.py) of the processes that must run beside the web servers: a worker
    on every queue (or mails, search sync or payments stall), the cron scheduler (one per deployment:
    sweeps, retries of webhooks and refunds), the outbox relay (everything recorded for the queues and the event
    stream) and an event consumer (`worker.py events`: the sales report, low-stock alerts, partner webhooks).
    A SIGKILLed process drops out within heartbeat.TTL seconds. Raises when Redis does not answer."""
    client = redis_ext.client
    queues = {name: heartbeat.seen(client, f"worker:{name}") for name in QUEUE_NAMES}
    found = {"workers": {"ok": all(q["alive"] for q in queues.values()), "queues": queues}}
    for role in ("scheduler", "relay", "events"):
        seen = heartbeat.seen(client, role)
        found[role] = {"ok": bool(seen["alive"]), **seen}
    return found


def dependencies(deep: bool = False) -> dict:
    """Each dependency's check: PostgreSQL, Redis and Typesense, and with `deep` the background processes."""
    checks = {"database": _check(_database), "redis": _check(_redis), "search": _check(_search)}
    if deep:
        try:
            checks.update(_processes())
        except Exception as exc:  # noqa: BLE001 - Redis away: already reported (and not ready) above
            checks.update(
                {role: {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]} for role in PROCESS_ROLES}
            )
    return checks


def is_ready(checks: dict) -> bool:
    """Whether the shop can serve: PostgreSQL and Redis answer (and the processes live, when they were checked)."""
    return bool(checks["database"]["ok"] and checks["redis"]["ok"]) and all(
        checks[role]["ok"] for role in PROCESS_ROLES if role in checks
    )


@bp.get("/readyz")
def readyz():
    """200 when PostgreSQL and Redis answer, else 503; each dependency's state is in the body for
    READYZ_DETAILS_ALLOW's addresses, only {"status"} for everyone else.

    Search is reported but does not make the shop unready: the catalogue falls back to PostgreSQL.
    `?deep=1` (for monitoring, not load balancers: a dead worker is no reason to stop serving pages)
    also needs a live heartbeat from a worker on every queue, the scheduler, the relay and an event consumer
    (_processes).
    """
    checks = dependencies(deep=request.args.get("deep") == "1")
    ready = is_ready(checks)
    status = "ready" if ready else "unavailable"
    # Latencies and error strings tell an outsider how the shop is built: operators' addresses only.
    resp = jsonify(status=status, checks=checks) if _may_see_details() else jsonify(status=status)
    resp.status_code = 200 if ready else 503
    resp.headers["Cache-Control"] = "no-store"
    return resp
