"""One error shape for the API and friendly pages for the storefront.

API errors look like {"error": {"code", "message", "details"}} (API.md); no input a client can
send yields a 500, and an unexpected failure still answers in that shape without leaking internals.
A request that fails because PostgreSQL or Redis cannot be reached answers 503 `service_unavailable`
with Retry-After (see outage()): the client should try again, and nothing about it is a bug.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, make_response, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "malformed_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    503: "service_unavailable",
}
OUTAGE_RETRY_AFTER = 5  # seconds: a restarting server is usually back by then; clients back off from there
# PostgreSQL SQLSTATEs that mean "the server went away", not "your statement is wrong": connection exceptions
# (class 08) and admin/crash shutdown or "cannot connect now" while it restarts (57P01-57P03).
_PG_GONE_STATES = ("57P01", "57P02", "57P03")


class DomainError(Exception):
    """A refusal in a domain's own words: a stable code (a member of the domain's StrEnum of codes), a sentence
    people can act on, and details. No HTTP here: the kind of refusal (the subclass) maps to a status in
    HTTP_STATUS below, at the edge, and a view dispatches on the type.

    `retry_after` (seconds) says when trying again may work (rate limits, outages); `limit` is the rate limit
    behind a TooMany; `challenge` is the authentication scheme a NotAuthenticated asks for."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        retry_after: int | None = None,
        limit: int | None = None,
        challenge: str | None = None,
    ):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}
        self.retry_after, self.limit, self.challenge = retry_after, limit, challenge


class Malformed(DomainError):
    """The request cannot be read as asked (an empty upload, a body nested too deep)."""


class NotAuthenticated(DomainError):
    """Who is asking is not known (bad credentials, a spent or forged token)."""


class NotAllowed(DomainError):
    """Known, but not allowed (an expired upload URL)."""


class NotFound(DomainError):
    """Missing, or not the asker's (never revealing that another's exists)."""


class Conflict(DomainError):
    """The state of things refuses it now (stock, an order's status, a coupon used up, an e-mail taken)."""


class TooLarge(DomainError):
    """More than the shop takes (bytes, pixels)."""


class Unsupported(DomainError):
    """A kind of content the shop does not take."""


class Invalid(DomainError):
    """Input that breaks a rule of its own (a coupon that does not apply, a reused idempotency key)."""


class ValidationError(Invalid):
    """Input whose fields are wrong: details.fields names each, with what it must be."""

    def __init__(self, fields: dict[str, str], message: str = "Some fields are not valid."):
        super().__init__("validation_failed", message, {"fields": fields})


class TooMany(DomainError):
    """Too many attempts of this kind just now; `retry_after` says when to come back."""


class Unavailable(DomainError):
    """A service the request needs is away (a payment provider); `retry_after` says when to try again."""


# The one table from a kind of refusal to its HTTP status (API.md's statuses).
HTTP_STATUS: dict[type, int] = {
    Malformed: 400,
    NotAuthenticated: 401,
    NotAllowed: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    Unsupported: 415,
    Invalid: 422,
    TooMany: 429,
    Unavailable: 503,
}


def http_status(exc: DomainError) -> int:
    """The status of a refusal: an ApiError's own, else its kind's in HTTP_STATUS."""
    if isinstance(exc, ApiError):
        return exc.status
    for kind in type(exc).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    raise TypeError(f"{type(exc).__name__} is not a kind of refusal in HTTP_STATUS")


def http_headers(exc: DomainError) -> dict[str, str]:
    """The headers a refusal's data asks for: Retry-After, the RateLimit-* trio, WWW-Authenticate."""
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.limit is not None:
        headers.update(
            {
                "RateLimit-Limit": str(exc.limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(exc.retry_after or 0),
            }
        )
    if exc.challenge:
        headers["WWW-Authenticate"] = exc.challenge
    return headers


class ApiError(DomainError):
    """A refusal made at the HTTP edge itself (a view's missing header, an unsupported body): its own status.
    Domain code raises the kinds above instead."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(code, message, details)
        self.status, self.headers = status, headers


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/webhooks/")


def outage(exc: BaseException | None) -> str | None:
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
    @app.errorhandler(DomainError)
    def api_error(exc: DomainError) -> ResponseReturnValue:
        resp = jsonify(error_body(exc.code, exc.message, exc.details))
        resp.status_code = http_status(exc)
        for key, value in http_headers(exc).items():
            resp.headers[key] = value
        return resp

    from flask_wtf.csrf import CSRFError

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> ResponseReturnValue:
        message = "This form has expired or was sent from elsewhere. Go back, reload the page and try again."
        if wants_json() or request.path.startswith("/admin/uploads"):
            resp = jsonify(error_body("csrf_failed", message, {"reason": exc.description}))
            resp.status_code = 400
            return resp
        return render_template("errors/error.html", status=400, title="Please try that again", message=message), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        status = exc.code or 500
        if wants_json():
            message = exc.description or exc.name
            if status == 404:
                message = "Nothing exists at this address."
            resp = jsonify(error_body(HTTP_CODES.get(status, "http_error"), message))
            resp.status_code = status
            methods = getattr(exc, "valid_methods", None)
            if status == 405 and methods:
                resp.headers["Allow"] = ", ".join(methods)
            return resp
        template = "errors/404.html" if status == 404 else "errors/error.html"
        return render_template(template, status=status, title=exc.name, message=exc.description), status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> ResponseReturnValue:
        down = outage(exc)
        if down:
            return unavailable(down, exc)
        if isinstance(exc, RecursionError):  # its traceback is thousands of lines: one line says enough
            log.error("recursion too deep on %s %s (request %s)", request.method, request.path, g.get("request_id"))
        else:
            log.exception("unhandled error on %s %s (request %s)", request.method, request.path, g.get("request_id"))
        from shop.uow import discard

        discard()  # a failed rollback must not hide the original failure
        if wants_json():
            resp = jsonify(
                error_body(
                    "internal_error",
                    "Something went wrong on our side. It has been logged.",
                    {"request_id": g.get("request_id")},
                )
            )
            resp.status_code = 500
            return resp
        return render_template(
            "errors/error.html",
            status=500,
            title="Something went wrong",
            message="Something went wrong on our side. Please try again in a moment.",
        ), 500


def unavailable(down: str, exc: BaseException) -> Response:
    """503 for a request that needed a server that is down: one log line (the outage is the news, not a
    traceback per request), the session rolled back, and Retry-After so clients come back, not hammer."""
    log.warning(
        "%s unavailable on %s %s (request %s): %s",
        down,
        request.method,
        request.path,
        g.get("request_id"),
        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
    )
    from shop.uow import discard

    discard()  # a dead connection may fail to roll back; the pool discards it
    message = "The shop is having trouble reaching one of its services. Please try again in a moment."
    if wants_json():
        resp = jsonify(error_body("service_unavailable", message, {"request_id": g.get("request_id")}))
        resp.status_code = 503
    else:
        resp = make_response(render_template("errors/unavailable.html"), 503)
    resp.headers["Retry-After"] = str(OUTAGE_RETRY_AFTER)
    resp.headers["Cache-Control"] = "no-store"  # a CDN must not keep the outage page after the outage
    return resp
