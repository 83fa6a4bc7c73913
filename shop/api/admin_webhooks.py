"""/api/v1/admin/webhooks: partner webhook endpoints, their delivery log, retries and test events (admins only,
API.md "Events and partner webhooks"). The rules live in shop.partners.services; this maps them to HTTP."""

from __future__ import annotations

from flask import request

from shop.accounts.permissions import Permission as P
from shop.api import bp, schemas
from shop.api.auth import permission_required
from shop.api.contract import PAGE, PER_PAGE, operation, parse_body, query
from shop.api.params import Params
from shop.errors import ApiError, ValidationError
from shop.partners import services
from shop.partners.models import STATES, WebhookAttempt, WebhookDelivery, WebhookEndpoint

A = "/v1/admin/webhooks"
# Webhooks are the admins' (API.md: "webhooks and API keys (admin)"); staff.manage is the admins' own permission.
MANAGE = P.STAFF_MANAGE
NO_ENDPOINT = "not_found: no such endpoint"
ADMINS = " (admins only)"


def _iso(value):
    return value.isoformat() if value is not None else None


def endpoint_json(e: WebhookEndpoint) -> dict:
    return {
        "id": e.id,
        "url": e.url,
        "events": list(e.events),
        "description": e.description,
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "disabled_at": _iso(e.disabled_at),
        "failing_since": _iso(e.failing_since),
        "created_at": _iso(e.created_at),
    }


def attempt_json(a: WebhookAttempt) -> dict:
    return {
        "id": a.id,
        "started_at": _iso(a.started_at),
        "duration_ms": a.duration_ms,
        "url": a.url,
        "request_headers": a.request_headers,
        "request_excerpt": a.request_excerpt,
        "status_code": a.status_code,
        "response_excerpt": a.response_excerpt,
        "error": a.error,
    }


def delivery_json(d: WebhookDelivery, with_log: bool = True) -> dict:
    body = {
        "id": d.id,
        "endpoint_id": d.endpoint_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": _iso(d.next_attempt_at) if d.state == "pending" else None,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": _iso(d.created_at),
        "finished_at": _iso(d.finished_at),
    }
    if with_log:
        body["log"] = [attempt_json(a) for a in d.log]
    return body


def _call(fn, *args, **kwargs):
    """Run a service, mapping its refusals to the contract's errors (422 validation_failed / url_not_allowed)."""
    try:
        return fn(*args, **kwargs)
    except services.Invalid as exc:
        raise ValidationError(exc.fields) from None
    except services.UrlRefused as exc:
        raise ApiError(422, "url_not_allowed", str(exc), {"fields": {"url": str(exc)}}) from None
    except services.NotFound:
        raise ApiError(404, "not_found", "No webhook endpoint or delivery with this id.") from None
    except services.EndpointDisabled:
        raise ApiError(
            409, "endpoint_disabled", "The endpoint is disabled: enable it first (PATCH enabled=true)."
        ) from None
    except services.DeliveryInProgress:
        raise ApiError(
            409,
            "delivery_in_progress",
            "An attempt of this delivery is being made right now; look at its log in a minute.",
        ) from None


@bp.post(A)
@operation(
    "Register a partner webhook endpoint; the answer holds its secret, once" + ADMINS,
    tags=["webhooks"],
    body=schemas.NewWebhookEndpoint,
    responses={
        201: schemas.WebhookEndpointCreated,
        422: "validation_failed (details.fields), or url_not_allowed: the URL is not http(s), carries credentials, "
        "or resolves to a loopback, private, link-local or metadata address",
    },
)
@permission_required(MANAGE)
def create_webhook():
    data = parse_body(schemas.NewWebhookEndpoint).model_dump(exclude_unset=True)
    endpoint, secret = _call(services.create_endpoint, data)
    body = endpoint_json(endpoint)
    return (
        {"id": body.pop("id"), "url": body.pop("url"), "events": body.pop("events"), "secret": secret, **body},
        201,
        {"Cache-Control": "no-store"},
    )


@bp.get(A)
@operation(
    "Partner webhook endpoints, newest first" + ADMINS,
    tags=["webhooks"],
    params=[PAGE, PER_PAGE],
    responses={200: schemas.WebhookEndpointPage, 422: "validation_failed: a query parameter"},
)
@permission_required(MANAGE)
def list_webhooks():
    p = Params(request.args)
    page, per_page = p.int("page", 1, lo=1, hi=100_000), p.int("per_page", 20, lo=1, hi=100)
    p.raise_if_invalid()
    total, rows = services.list_endpoints(page, per_page)
    return {"items": [endpoint_json(e) for e in rows], "page": page, "per_page": per_page, "total": total}


@bp.get(f"{A}/<int:endpoint_id>")
@operation(
    "One endpoint (never its secret)" + ADMINS,
    tags=["webhooks"],
    responses={200: schemas.WebhookEndpoint, 404: NO_ENDPOINT},
)
@permission_required(MANAGE)
def get_webhook(endpoint_id: int):
    return endpoint_json(_call(services.get_endpoint, endpoint_id))


@bp.patch(f"{A}/<int:endpoint_id>")
@operation(
    "Change url, events, description or enabled" + ADMINS,
    tags=["webhooks"],
    body=schemas.WebhookEndpointChange,
    responses={200: schemas.WebhookEndpoint, 404: NO_ENDPOINT, 422: "validation_failed or url_not_allowed"},
)
@permission_required(MANAGE)
def update_webhook(endpoint_id: int):
    data = parse_body(schemas.WebhookEndpointChange).model_dump(exclude_unset=True)
    return endpoint_json(_call(services.update_endpoint, endpoint_id, data))


@bp.delete(f"{A}/<int:endpoint_id>")
@operation(
    "Delete an endpoint with its delivery log" + ADMINS,
    tags=["webhooks"],
    responses={204: None, 404: NO_ENDPOINT},
)
@permission_required(MANAGE)
def delete_webhook(endpoint_id: int):
    _call(services.delete_endpoint, endpoint_id)
    return "", 204


@bp.get(f"{A}/<int:endpoint_id>/deliveries")
@operation(
    "The endpoint's deliveries, newest first, each with its attempts" + ADMINS,
    tags=["webhooks"],
    params=[query("state", {"type": "string", "enum": list(STATES)}, "only deliveries in this state"), PAGE, PER_PAGE],
    responses={200: schemas.WebhookDeliveryPage, 404: NO_ENDPOINT, 422: "validation_failed: a query parameter"},
)
@permission_required(MANAGE)
def list_webhook_deliveries(endpoint_id: int):
    p = Params(request.args)
    page, per_page = p.int("page", 1, lo=1, hi=100_000), p.int("per_page", 20, lo=1, hi=100)
    state = p.choice("state", STATES, "")
    p.raise_if_invalid()
    total, rows = _call(services.list_deliveries, endpoint_id, page, per_page, state or None)
    return {"items": [delivery_json(d) for d in rows], "page": page, "per_page": per_page, "total": total}


@bp.post(f"{A}/<int:endpoint_id>/deliveries/<int:delivery_id>/retry")
@operation(
    "Attempt a delivery again now, whatever its state" + ADMINS,
    tags=["webhooks"],
    responses={
        202: schemas.WebhookDelivery,
        404: "not_found: no such endpoint or delivery",
        409: "endpoint_disabled: enable it first; delivery_in_progress: an attempt is being made right now",
    },
)
@permission_required(MANAGE)
def retry_webhook_delivery(endpoint_id: int, delivery_id: int):
    return delivery_json(_call(services.retry_delivery, endpoint_id, delivery_id)), 202


@bp.post(f"{A}/<int:endpoint_id>/test")
@operation(
    "Send a `webhook.test` event to the endpoint (whatever types it subscribes to)" + ADMINS,
    tags=["webhooks"],
    responses={202: schemas.WebhookDelivery, 404: NO_ENDPOINT, 409: "endpoint_disabled: enable it first"},
)
@permission_required(MANAGE)
def test_webhook(endpoint_id: int):
    return delivery_json(_call(services.send_test, endpoint_id)), 202
