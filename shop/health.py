"""Liveness and readiness for load balancers and operators."""
from __future__ import annotations

import time
import urllib.request

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from shop.extensions import db, redis_ext

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


@bp.get("/readyz")
def readyz():
    """200 when PostgreSQL and Redis answer, else 503; each dependency's state is in the body.

    Search is reported but does not make the shop unready: the catalogue falls back to PostgreSQL.
    """
    checks = {"database": _check(_database), "redis": _check(_redis), "search": _check(_search)}
    ready = checks["database"]["ok"] and checks["redis"]["ok"]
    resp = jsonify(status="ready" if ready else "unavailable", checks=checks)
    resp.status_code = 200 if ready else 503
    resp.headers["Cache-Control"] = "no-store"
    return resp
