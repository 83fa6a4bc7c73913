"""Partner webhooks in the back-office: admins only, every change a POST with the CSRF token, the secret shown once,
the guard's refusals shown on the URL field, and the delivery log with Retry and "Send test event"."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from rq import Queue
from sqlalchemy import select

from shop.extensions import db
from shop.partners import attempts, services
from shop.partners.models import WebhookDelivery, WebhookEndpoint
from tests.integration.test_partner_webhooks import ROLES, private_ok, private_refused, world  # noqa: F401
from tests.integration.test_partner_webhooks_delivery import T0, placed
from tests.integration.test_permissions import as_user, csrf_token

PAGES = "/admin/partner-webhooks"


def register(client, **fields):
    data = {
        "csrf_token": csrf_token(client),
        "url": "http://127.0.0.1:9/hooks",
        "events": ["order.placed"],
        "description": "ERP",
        **fields,
    }
    return client.post(f"{PAGES}/new", data=data)


@pytest.mark.parametrize("role", ROLES)
def test_only_admins_see_and_change_partner_webhooks(app, db_session, world, role, private_ok):
    endpoint, _ = services.create_endpoint({"url": "http://127.0.0.1:9/h", "events": ["order.placed"]})
    client = as_user(app, world["staff"][role])
    token = csrf_token(client)
    pages = [
        client.get(f"{PAGES}/"),
        client.get(f"{PAGES}/new"),
        client.get(f"{PAGES}/{endpoint.id}/edit"),
        client.get(f"{PAGES}/{endpoint.id}/deliveries"),
    ]
    posts = [
        client.post(f"{PAGES}/{endpoint.id}/{action}", data={"csrf_token": token}) for action in ("test", "delete")
    ]
    expected = 200 if role == "admin" else 403
    assert [p.status_code for p in pages] == [expected] * 4
    assert all(p.status_code == (302 if role == "admin" else 403) for p in posts)
    menu = client.get("/admin/").get_data(as_text=True)
    assert ("Partner webhooks" in menu) == (role == "admin")


def test_registering_shows_the_secret_once(app, db_session, world, private_ok):
    client = as_user(app, world["staff"]["admin"])
    resp = register(client)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    secret = re.search(r'value="(whsec_[^"]+)"', html).group(1)
    assert "Copy the signing secret now" in html and "shown only this once" in html
    [endpoint] = db_session.scalars(select(WebhookEndpoint)).all()
    assert endpoint.url == "http://127.0.0.1:9/hooks" and endpoint.description == "ERP"
    for page in (f"{PAGES}/", f"{PAGES}/{endpoint.id}/edit", f"{PAGES}/{endpoint.id}/deliveries"):
        assert secret not in client.get(page).get_data(as_text=True)


def test_a_refused_url_is_shown_on_its_field_and_nothing_is_saved(app, db_session, world, private_refused):
    client = as_user(app, world["staff"]["admin"])
    resp = register(client, url="http://169.254.169.254/latest/meta-data/")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert 'id="url-error"' in html and "169.254.169.254 is a cloud metadata address" in html
    assert 'aria-invalid="true"' in html
    none_ticked = register(client, events=[])
    assert none_ticked.status_code == 422 and "Choose at least one event type." in none_ticked.get_data(as_text=True)
    assert db_session.scalars(select(WebhookEndpoint)).all() == []


def test_forms_without_the_csrf_token_are_refused(app, db_session, world, private_ok):
    endpoint, _ = services.create_endpoint({"url": "http://127.0.0.1:9/h", "events": ["order.placed"]})
    client = as_user(app, world["staff"]["admin"])
    assert client.post(f"{PAGES}/{endpoint.id}/delete").status_code == 400
    assert (
        client.post(f"{PAGES}/new", data={"url": "http://127.0.0.1:9/x", "events": ["order.placed"]}).status_code == 400
    )
    assert db_session.scalars(select(WebhookEndpoint.id)).all() == [endpoint.id]


def test_edit_disable_and_delete(app, db_session, world, private_ok):
    endpoint, _ = services.create_endpoint({"url": "http://127.0.0.1:9/h", "events": ["order.placed"]})
    client = as_user(app, world["staff"]["admin"])
    form = client.get(f"{PAGES}/{endpoint.id}/edit").get_data(as_text=True)
    assert 'value="order.placed" checked' in form or re.search(r'checked[^>]*value="order.placed"', form)
    saved = client.post(
        f"{PAGES}/{endpoint.id}/edit",
        data={
            "csrf_token": csrf_token(client),
            "url": "http://127.0.0.1:9/new",
            "events": ["order.shipped", "stock.low"],
            "description": "Warehouse",
        },
    )  # "enabled" unticked
    assert saved.status_code == 302
    db_session.expire_all()
    changed = db_session.get(WebhookEndpoint, endpoint.id)
    assert changed.url == "http://127.0.0.1:9/new" and changed.events == ["order.shipped", "stock.low"]
    assert changed.enabled is False and changed.disabled_reason == "Disabled by an admin."
    listing = client.get(f"{PAGES}/").get_data(as_text=True)
    assert "Disabled" in listing and "Warehouse" in listing
    gone = client.post(f"{PAGES}/{endpoint.id}/delete", data={"csrf_token": csrf_token(client)})
    assert gone.status_code == 302
    assert db_session.scalars(select(WebhookEndpoint)).all() == []


def test_the_delivery_log_retry_and_test_event(app, db_session, redis_client, world, private_ok):
    endpoint, _ = services.create_endpoint({"url": "http://127.0.0.1:9/h", "events": ["order.placed"]})
    [d] = services.record_deliveries(placed(), now=T0)
    attempts.deliver_due(now=T0)  # nothing listens on port 9: refused
    client = as_user(app, world["staff"]["admin"])
    page = client.get(f"{PAGES}/{endpoint.id}/deliveries").get_data(as_text=True)
    assert f'data-delivery="{d}"' in page and "order.placed" in page and "refused" in page
    assert "Send test event" in page and f'Retry<span class="sr-only"> delivery {d}' in page
    default = Queue("default", connection=redis_client)
    before = len(default.jobs)
    resp = client.post(f"{PAGES}/{endpoint.id}/deliveries/{d}/retry", data={"csrf_token": csrf_token(client)})
    assert resp.status_code == 302 and len(default.jobs) == before + 1
    db_session.expire_all()
    assert db_session.get(WebhookDelivery, d).next_attempt_at < T0 + timedelta(days=365 * 10)
    sent = client.post(f"{PAGES}/{endpoint.id}/test", data={"csrf_token": csrf_token(client)}, follow_redirects=True)
    assert "A test event" in sent.get_data(as_text=True)
    types = db_session.scalars(select(WebhookDelivery.event_type).order_by(WebhookDelivery.id)).all()
    assert types == ["order.placed", "webhook.test"]
    assert client.get(f"{PAGES}/999999/deliveries").status_code == 404
    assert db.session is not None
