"""Errors to Sentry (sentry-sdk) when SENTRY_DSN is set: unhandled exceptions of requests and jobs, and ERROR log
lines. Nothing personal leaves: no cookies, headers, bodies, query strings or IP addresses (send_default_pii off
and before_send strips what the integrations still collect); the user is their id only; messages and exception
values go through the same redaction as the logs (e-mail addresses shortened, secrets replaced)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shop.telemetry.logs import redact

if TYPE_CHECKING:
    from flask import Flask

KEPT_HEADERS = {"user-agent", "content-type", "content-length", "x-request-id", "accept"}


def scrub(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """before_send: `event` without personal data."""
    req = event.get("request")
    if isinstance(req, dict):
        req.pop("cookies", None)
        req.pop("data", None)
        req.pop("query_string", None)
        req.pop("env", None)
        headers = req.get("headers")
        if isinstance(headers, dict):
            req["headers"] = {k: v for k, v in headers.items() if k.lower() in KEPT_HEADERS}
        if isinstance(req.get("url"), str):
            req["url"] = req["url"].split("?", 1)[0]
    user = event.get("user")
    if isinstance(user, dict):
        event["user"] = {"id": user["id"]} if "id" in user else {}
    for exc in (event.get("exception") or {}).get("values") or []:
        if isinstance(exc.get("value"), str):
            exc["value"] = redact(exc["value"])
        for frame in (exc.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)  # local variables: passwords, cards, addresses
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        for key in ("message", "formatted"):
            if isinstance(logentry.get(key), str):
                logentry[key] = redact(logentry[key])
        logentry.pop("params", None)
    if isinstance(event.get("message"), str):
        event["message"] = redact(event["message"])
    for crumb in (event.get("breadcrumbs") or {}).get("values") or []:
        if isinstance(crumb.get("message"), str):
            crumb["message"] = redact(crumb["message"])
        crumb.pop("data", None)
    return event


_started = False


def init(app: Flask) -> None:
    """Start the SDK for this process, once."""
    global _started
    if _started:
        return
    import sentry_sdk

    sentry_sdk.init(
        dsn=app.config["SENTRY_DSN"],
        environment=app.config.get("SENTRY_ENVIRONMENT"),
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        traces_sample_rate=0,  # traces go to OpenTelemetry (tracing.py), not to Sentry
        before_send=scrub,  # type: ignore[arg-type]
        before_breadcrumb=lambda crumb, hint: scrub({"breadcrumbs": {"values": [crumb]}})["breadcrumbs"]["values"][0],
    )
    _started = True
