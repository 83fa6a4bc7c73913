"""One error shape for the API and friendly pages for the storefront.

API errors look like {"error": {"code", "message", "details"}} (API.md); no input a client can
send yields a 500, and an unexpected failure still answers in that shape without leaking internals.
"""
from __future__ import annotations

import logging

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

HTTP_CODES = {400: "malformed_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
              422: "validation_failed", 429: "rate_limited"}


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
