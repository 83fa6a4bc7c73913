"""Logs: one JSON object per line (LOG_FORMAT=json) or text lines, with the request's and trace's ids, and nothing
personal or secret in them.

Every record gets `request_id`, `trace_id`, `user_id` ("guest" when nobody is logged in) and, inside a request,
`route` (the URL rule, never the path: paths hold tokens and order keys). Each answered request adds one line from
the "shop.access" logger with `method`, `route`, `status` and `duration_ms` (JSON format only: the text format is
for development, where the server prints its own access lines).

Redaction runs on every record's final message, whatever logger wrote it: e-mail addresses keep their first letter
and their domain (j***@example.com), and API keys, webhook secrets, bearer and refresh tokens, card-like numbers
and `password=...` values are replaced by [redacted].
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TYPE_CHECKING, Any, TypeAlias

from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:
    from types import TracebackType

    # What logging.Formatter.formatException() takes: sys.exc_info()'s tuple (typeshed's logging._SysExcInfoType).
    _ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
SECRETS = [
    re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{6,}"),  # Stripe keys
    re.compile(r"\bwhsec_[A-Za-z0-9+/=]{6,}"),  # webhook signing secrets
    re.compile(r"\bSG\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),  # SendGrid keys
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs
    re.compile(r"(?i)\b(\w*(?:password|passwd|secret|token|api_key|authorization))(\"?\s*[=:]\s*\"?)[^\s,\"&}]+"),
    re.compile(r"\b(?:\d[ -]?){13,19}\b"),  # card numbers
]


QUERY = re.compile(r"\?\S* ")  # a query string in a request line ("GET /reset?token=... HTTP/1.1")
OPAQUE = re.compile(r"(?<=/)[A-Za-z0-9_.~-]{20,}")  # a long opaque path segment (a signed token, a key)


def redact(text: str) -> str:
    """`text` with e-mail addresses shortened and secrets replaced."""
    if "@" in text:
        text = EMAIL.sub(r"\1***@\2", text)
    for pattern in SECRETS:
        if pattern.groups:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
        else:
            text = pattern.sub("[redacted]", text)
    return text


class Context(logging.Filter):
    """Adds the ids and the route to every record (the formatters redact)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import g, has_request_context, request

        from shop.telemetry import tracing

        if not hasattr(record, "request_id"):
            record.request_id = None
            record.user_id = None
            record.route = None
            if has_request_context():
                record.request_id = g.get("request_id")
                record.route = request.url_rule.rule if request.url_rule is not None else None
                record.user_id = _user_id()
        ids = tracing.current_ids()
        record.trace_id, record.span_id = ids if ids else (getattr(record, "trace_id", None), None)
        return True


def _user_id() -> str:
    """The signed-in user's id (a session's, or an API token's), "guest" otherwise; loads nothing."""
    from flask import g

    user = g.get("api_user") or g.get("_login_user")
    user_id = getattr(user, "id", None)
    return str(user_id) if user_id is not None and getattr(user, "is_authenticated", True) else "guest"


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Redacting:
    """A formatter whose message and traceback went through redact() (the record itself is left as it was: other
    handlers, pytest's capture among them, see it whole)."""

    def format(self, record: logging.LogRecord) -> str:
        msg, args = record.msg, record.args
        message = redact(record.getMessage())
        if record.name == "werkzeug":  # the development server's access lines: paths carry tokens and order keys
            message = OPAQUE.sub("[redacted]", QUERY.sub(" ", message))
        record.msg, record.args = message, ()
        try:
            return super().format(record)  # type: ignore[misc]
        finally:
            record.msg, record.args = msg, args

    def formatException(self, ei: _ExcInfo) -> str:  # noqa: N802 - logging's name
        return redact(super().formatException(ei))  # type: ignore[misc]


class JsonLines(_Redacting, JsonFormatter):
    pass


class TextLines(_Redacting, logging.Formatter):
    pass


def configure(fmt: str = "text", level: str = "INFO") -> None:
    """Route every logger through one handler on stderr in `fmt` ("json" or "text"), with the Context filter."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonLines(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
                reserved_attrs=[*_RESERVED, "span_id"],
            )
        )
    else:
        handler.setFormatter(TextLines(TEXT_FORMAT))
    handler.addFilter(Context())
    handler._shop = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    # Replace ours from an earlier app and basicConfig's (pytest's capture handlers are subclasses: they stay).
    for old in [h for h in root.handlers if getattr(h, "_shop", False) or type(h) is logging.StreamHandler]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("werkzeug").setLevel(logging.INFO if fmt == "text" else logging.WARNING)


_RESERVED = [
    "args",
    "created",
    "exc_info",
    "exc_text",
    "filename",
    "funcName",
    "levelno",
    "lineno",
    "module",
    "msecs",
    "msg",
    "pathname",
    "process",
    "processName",
    "relativeCreated",
    "stack_info",
    "thread",
    "threadName",
    "taskName",
]


access = logging.getLogger("shop.access")


def access_line(environ: dict[str, Any], status: str, seconds: float) -> None:
    """The answered request's line (JSON format only), from the ids the request left in its WSGI environ."""
    access.info(
        "request",
        extra={
            "request_id": environ.get("shop.request_id"),
            "user_id": environ.get("shop.user_id", "guest"),
            "route": environ.get("shop.route") or "(unmatched)",
            "trace_id": environ.get("shop.trace_id"),
            "method": environ.get("REQUEST_METHOD"),
            "status": int(status[:3]) if status[:3].isdigit() else None,
            "duration_ms": round(seconds * 1000, 1),
        },
    )
