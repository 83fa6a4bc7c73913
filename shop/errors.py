"""One error shape for the API and friendly pages for the storefront.

API errors look like {"error": {"code", "message", "details"}} (API.md); no input a client can
send yields a 500, and an unexpected failure still answers in that shape without leaking internals.
A request that fails because PostgreSQL or Redis cannot be reached answers 503 `service_unavailable`
with Retry-After (see outage()): the client should try again, and nothing about it is a bug.
"""
from __future__ import annotations

import logging

from flask import Flask, g, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

HTTP_CODES = {400: "malformed_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
              422: "validation_failed", 429: "rate_limited", 503: "service_unavailable"}
OUTAGE_RETRY_AFTER = 5  # seconds: a restarting server is usually back by then; clients back off from there
# PostgreSQL SQLSTATEs that mean "the server went away", not "your statement is wrong": connection exceptions
# (class 08) and admin/crash shutdown or "cannot connect now" while it restarts (57P01-57P03).
_PG_GONE_STATES = ("57P01", "57P02", "57P03")


class ApiError(Exception):
    """A refusal the client can act on: status, a stable machine code, a sentence, details."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details or {}, headers


class ValidationError(ApiError):
    def __init__(self, fields: dict[str, str], message: str = "Some fields are not valid."):
        super().__init__(422, "validation_failed", message, {"fields": fields})


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/webhooks/")


def outage(exc: BaseException) -> str | None:
    """'database' or 'redis' when `exc` (or what it was raised from) means that server is unreachable, else None.

    Only connection failures count: a deadlock, a lock timeout or a constraint violation is an
    OperationalError/IntegrityError too, but stays a 500 (a bug) or is handled where it happens.
    Only explicit causes (`raise ... from`) are followed, never the implicit context, so a bug in an
    except-block that handles an outage is still reported as the bug it is."""
    import psycopg
    import redis.exceptions
    from sqlalchemy import exc as sa

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return "redis"
        if isinstance(exc, sa.DisconnectionError):
            return "database"
        if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
            return "database"
        if isinstance(exc, (sa.OperationalError, sa.InterfaceError)):
            exc = exc.orig
            continue
        if isinstance(exc, psycopg.InterfaceError):
            return "database"  # the connection is closed (the server went away under it)
        if isinstance(exc, psycopg.OperationalError):
            state = getattr(exc, "sqlstate", None)
            if state is None or state.startswith("08") or state in _PG_GONE_STATES:
                return "database"  # None: it never answered (refused, reset, closed unexpectedly)
            return None
        exc, seen = exc.__cause__, seen + 1
    return None


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        resp = jsonify(error_body(exc.code, exc.message, exc.details))
        resp.status_code = exc.status
        for key, value in (exc.headers or {}).items():
            resp.headers[key] = value
        return resp

    from flask_wtf.csrf import CSRFError

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        message = "This form has expired or was sent from elsewhere. Go back, reload the page and try again."
        if wants_json() or request.path.startswith("/admin/uploads"):
            resp = jsonify(error_body("csrf_failed", message, {"reason": exc.description}))
            resp.status_code = 400
            return resp
        return render_template("errors/error.html", status=400, title="Please try that again", message=message), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        if wants_json():
            message = exc.description or exc.name
            if status == 404:
                message = "Nothing exists at this address."
            resp = jsonify(error_body(HTTP_CODES.get(status, "http_error"), message))
            resp.status_code = status
            if status == 405 and getattr(exc, "valid_methods", None):
                resp.headers["Allow"] = ", ".join(exc.valid_methods)
            return resp
        template = "errors/404.html" if status == 404 else "errors/error.html"
        return render_template(template, status=status, title=exc.name, message=exc.description), status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        down = outage(exc)
        if down:
            return unavailable(down, exc)
        if isinstance(exc, RecursionError):  # its traceback is thousands of lines: one line says enough
            log.error("recursion too deep on %s %s (request %s)", request.method, request.path, g.get("request_id"))
        else:
            log.exception("unhandled error on %s %s (request %s)", request.method, request.path, g.get("request_id"))
        try:
            from shop.extensions import db
            db.session.rollback()
        except Exception:  # noqa: BLE001 - the original failure is what matters
            pass
        if wants_json():
            resp = jsonify(error_body("internal_error", "Something went wrong on our side. It has been logged.",
                                      {"request_id": g.get("request_id")}))
            resp.status_code = 500
            return resp
        return render_template("errors/error.html", status=500, title="Something went wrong",
                               message="Something went wrong on our side. Please try again in a moment."), 500


def unavailable(down: str, exc: BaseException):
    """503 for a request that needed a server that is down: one log line (the outage is the news, not a
    traceback per request), the session rolled back, and Retry-After so clients come back, not hammer."""
    log.warning("%s unavailable on %s %s (request %s): %s", down, request.method, request.path,
                g.get("request_id"), str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
    try:
        from shop.extensions import db
        db.session.rollback()
    except Exception:  # noqa: BLE001 - a dead connection may fail to roll back; the pool discards it
        pass
    message = "The shop is having trouble reaching one of its services. Please try again in a moment."
    if wants_json():
        resp = jsonify(error_body("service_unavailable", message, {"request_id": g.get("request_id")}))
        resp.status_code = 503
    else:
        resp = make_response(render_template("errors/unavailable.html"), 503)
    resp.headers["Retry-After"] = str(OUTAGE_RETRY_AFTER)
    resp.headers["Cache-Control"] = "no-store"  # a CDN must not keep the outage page after the outage
    return resp
