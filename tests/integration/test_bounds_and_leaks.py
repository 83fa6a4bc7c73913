"""Issue 9, items 7 and 9: numbers beyond their columns are field errors (never 500s), money in another
currency is refused, staff accounts stay out of the customer pages, webhooks from the future are refused,
/readyz keeps its details for operators, and uploaded images are stored re-encoded."""

import ipaddress
import json
import time
import uuid
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from shop.catalog.models import Product
from shop.payments.models import Refund, WebhookEvent
from shop.promotions.models import Promotion
from tests.fakes.stripe import FakeStripe
from tests.images import pixels, tiny_png
from tests.integration.test_backoffice_orders import make_order
from tests.integration.test_permissions import as_user, csrf_token, token_for, world  # noqa: F401 - fixture

INT4_MAX = 2**31 - 1


def api(client, method, path, user, body=None, **headers):
    return getattr(client, method)(
        path,
        data=json.dumps(body) if body is not None else None,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token_for(user)}", **headers},
    )


def fields_of(resp) -> dict:
    assert resp.status_code == 422, resp.get_data(as_text=True)[:300]
    return resp.get_json()["error"]["details"]["fields"]


def count(db_session, model) -> int:
    return db_session.scalar(select(func.count()).select_from(model))


# -- item 7: numbers beyond their columns ---------------------------------------------------------------
PRODUCT = {
    "category": "tops",
    "name": "Huge",
    "options": [],
    "variants": [{"sku": "HUGE-1", "options": {}, "price": 1000}],
}


@pytest.mark.parametrize(
    "change,field",
    [
        ({"category": 2**40}, "category"),
        ({"category_id": INT4_MAX + 1}, "category"),
        ({"variants": [{"sku": "HUGE-1", "options": {}, "price": INT4_MAX + 1}]}, "variants[0].price"),
        (
            {"variants": [{"sku": "HUGE-1", "options": {}, "price": 1000, "compare_at_price": {"amount": 2**32}}]},
            "variants[0].compare_at_price",
        ),
        (
            {"variants": [{"sku": "HUGE-1", "options": {}, "price": 1000, "on_hand": INT4_MAX + 1}]},
            "variants[0].on_hand",
        ),
        (
            {"variants": [{"sku": "HUGE-1", "options": {}, "price": 1000, "weight_grams": 2**35}]},
            "variants[0].weight_grams",
        ),
    ],
)
def test_admin_product_numbers_beyond_their_columns_are_422(client, db_session, world, change, field):
    before = count(db_session, Product)
    resp = api(client, "post", "/api/v1/admin/products", world["staff"]["manager"], {**PRODUCT, **change})
    assert field in fields_of(resp)
    assert count(db_session, Product) == before


def test_a_product_at_the_columns_limits_is_created(client, db_session, world):
    body = {**PRODUCT, "variants": [{"sku": "HUGE-1", "options": {}, "price": INT4_MAX, "on_hand": INT4_MAX}]}
    resp = api(client, "post", "/api/v1/admin/products", world["staff"]["manager"], body)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["variants"][0]["price"]["amount"] == INT4_MAX


@pytest.mark.parametrize(
    "query,field",
    [
        ("from=9999-12-31&to=9999-12-31", "from"),
        ("from=9999-12-30&to=9999-12-31", "to"),
        ("from=0001-01-01&to=0001-01-02", "from"),
    ],
)
def test_sales_report_dates_out_of_range_are_422(client, world, query, field):
    resp = api(client, "get", f"/api/v1/admin/reports/sales?{query}", world["staff"]["analyst"])
    assert field in fields_of(resp)


def product_form(token, category_id, **variant) -> dict:
    data = {
        "csrf_token": token,
        "name": "Form Giant",
        "slug": "",
        "category": str(category_id),
        "brand": "",
        "description": "",
        "status": "draft",
        "options_text": "",
        "variants-0-sku": "GIANT-1",
        "variants-0-options_text": "",
        "variants-0-price_amount": "10.00",
        "variants-0-on_hand": "1",
        "variants-0-weight_grams": "100",
    }
    data.update({f"variants-0-{k}": v for k, v in variant.items()})
    return data


@pytest.mark.parametrize(
    "variant,message",
    [
        ({"price_amount": "99999999999.00"}, "at most $21,474,836.47"),
        ({"compare_at_amount": "30000000.00"}, "at most $21,474,836.47"),
        ({"on_hand": str(2**40)}, "Enter a whole number from -2147483648 to 2147483647"),
        ({"weight_grams": str(INT4_MAX + 1)}, "Enter a whole number from -2147483648 to 2147483647"),
    ],
)
def test_back_office_product_form_shows_a_field_error_for_numbers_beyond_columns(
    app, db_session, world, variant, message
):
    client = as_user(app, world["staff"]["manager"])
    resp = client.post(
        "/admin/products/new/", data=product_form(csrf_token(client), world["product"].category_id, **variant)
    )
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and message in page
    assert "psycopg" not in page and "[SQL:" not in page
    assert db_session.scalar(select(Product).where(Product.name == "Form Giant")) is None


def test_back_office_stock_form_refuses_stock_beyond_the_column(app, db_session, world):
    client = as_user(app, world["staff"]["warehouse"])
    variant = world["variant"]
    resp = client.post(
        f"/admin/stock/edit/?id={variant.id}", data={"csrf_token": csrf_token(client), "on_hand": str(2**40)}
    )
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Enter a whole number from" in page and "psycopg" not in page
    db_session.refresh(variant)
    assert variant.on_hand == 10


@pytest.mark.parametrize(
    "path",
    [
        "/admin/products/edit/?id={big}",
        "/admin/stock/edit/?id={big}",
        "/admin/promotions/details/?id={big}",
        "/admin/customers/details/?id={big}",
    ],
)
def test_back_office_pages_for_ids_beyond_the_key_are_not_500(app, world, path):
    client = as_user(app, world["staff"]["manager"])
    resp = client.get(path.format(big=2**40))
    assert resp.status_code in (302, 404)


def test_back_office_promotion_form_and_report_refuse_out_of_range_input(app, db_session, world):
    client = as_user(app, world["staff"]["manager"])
    resp = client.post(
        "/admin/promotions/new/",
        data={
            "csrf_token": csrf_token(client),
            "name": "Enormous",
            "description": "",
            "kind": "percent",
            "value_text": "15",
            "active": "y",
            "priority": "0",
            "min_subtotal": "9" * 30,
        },
    )
    assert resp.status_code == 200 and "Enter a price like 19.99 (at most" in resp.get_data(as_text=True)
    assert db_session.scalar(select(Promotion).where(Promotion.name == "Enormous")) is None
    report = client.get("/admin/promotion-report/?from=9999-12-31&to=9999-12-31", follow_redirects=True)
    assert report.status_code == 200 and "years 2000 to 9000" in report.get_data(as_text=True)


# -- item 9a: staff accounts are not customers -------------------------------------------------------------
@pytest.mark.parametrize("role", ["support", "manager"])
def test_staff_accounts_cannot_be_opened_as_customers(app, client, world, role):
    browser = as_user(app, world["staff"][role])
    staff_id, shopper_id = world["staff"]["admin"].id, world["customer"].id
    assert browser.get(f"/admin/customers/details/?id={shopper_id}").status_code == 200
    page = browser.get(f"/admin/customers/details/?id={staff_id}")
    assert page.status_code == 404 and "admin@example.com" not in page.get_data(as_text=True)
    assert "admin@example.com" not in browser.get("/admin/customers/?search=admin").get_data(as_text=True)
    assert api(client, "get", f"/api/v1/admin/customers/{staff_id}", world["staff"][role]).status_code == 404


# -- item 9b: webhooks signed in the future ------------------------------------------------------------
@pytest.fixture
def stripe_events(app, monkeypatch):
    monkeypatch.setitem(app.config, "STRIPE_WEBHOOK_SECRET", "whsec_x")
    with FakeStripe(webhook_secret="whsec_x") as fake:
        yield fake


def post_event(client, fake, seconds_ahead: int):
    body, header = fake.event(
        "customer.created", {"id": "cus_1", "object": "customer"}, timestamp=int(time.time()) + seconds_ahead
    )
    return client.post(
        "/webhooks/stripe", data=body, content_type="application/json", headers={"Stripe-Signature": header}
    )


def test_webhooks_signed_more_than_five_minutes_ahead_are_refused(client, db_session, stripe_events):
    resp = post_event(client, stripe_events, 600)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_signature"
    assert count(db_session, WebhookEvent) == 0
    assert post_event(client, stripe_events, 240).status_code == 200  # a clock a little fast is fine
    assert count(db_session, WebhookEvent) == 1


# -- item 9c: money in another currency ----------------------------------------------------------------
@pytest.mark.parametrize(
    "body,field",
    [
        ({"amount": {"amount": 500, "currency": "EUR"}}, "amount"),
        ({"amount": 500, "currency": "EUR"}, "currency"),
    ],
)
def test_a_refund_in_another_currency_is_422_and_refunds_nothing(client, db_session, world, body, field):
    order = make_order(db_session, world)
    resp = api(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/refunds",
        world["staff"]["support"],
        {**body, "reason": "wrong size"},
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert "EUR" not in fields_of(resp)[field] and "USD" in fields_of(resp)[field]
    assert count(db_session, Refund) == 0


@pytest.mark.parametrize(
    "change,field",
    [
        (
            {"variants": [{"sku": "EUR-1", "options": {}, "price": {"amount": 1000, "currency": "EUR"}}]},
            "variants[0].price",
        ),
        (
            {
                "variants": [
                    {
                        "sku": "EUR-1",
                        "options": {},
                        "price": 1000,
                        "compare_at_price": {"amount": 2000, "currency": "GBP"},
                    }
                ]
            },
            "variants[0].compare_at_price",
        ),
        ({"currency": "EUR"}, "currency"),
    ],
)
def test_a_product_priced_in_another_currency_is_422(client, db_session, world, change, field):
    before = count(db_session, Product)
    resp = api(client, "post", "/api/v1/admin/products", world["staff"]["manager"], {**PRODUCT, **change})
    assert field in fields_of(resp)
    assert count(db_session, Product) == before


def test_a_coupon_in_another_currency_is_422(client, db_session, world):
    body = {"code": "EUROFF", "kind": "fixed", "value": 500, "currency": "EUR"}
    resp = api(client, "post", "/api/v1/admin/coupons", world["staff"]["manager"], body)
    assert "currency" in fields_of(resp)
    resp = api(
        client,
        "post",
        "/api/v1/admin/coupons",
        world["staff"]["manager"],
        {**body, "currency": "USD", "min_subtotal": {"amount": 5000, "currency": "EUR"}},
    )
    assert "min_subtotal" in fields_of(resp)
    assert count(db_session, Promotion) == 0
    created = api(
        client,
        "post",
        "/api/v1/admin/coupons",
        world["staff"]["manager"],
        {**body, "currency": "USD", "value": {"amount": 500, "currency": "USD"}},
    )
    assert created.status_code == 201 and created.get_json()["currency"] == "USD"


# -- item 9d: /readyz details for operators only -------------------------------------------------------
def test_readyz_details_only_for_the_allow_list(app, client, monkeypatch):
    local = client.get("/readyz")
    assert local.status_code == 200 and set(local.get_json()["checks"]) == {"database", "redis", "search"}
    outside = client.get("/readyz", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert outside.status_code == 200 and outside.get_json() == {"status": "ready"}
    assert "latency" not in outside.get_data(as_text=True)
    monkeypatch.setitem(app.config, "READYZ_DETAILS_ALLOW", [ipaddress.ip_network("203.0.113.0/24")])
    assert "checks" in client.get("/readyz", environ_base={"REMOTE_ADDR": "203.0.113.9"}).get_json()
    assert "checks" not in client.get("/readyz").get_json()


def test_readyz_behind_a_proxy_judges_the_forwarded_client():
    from shop import create_app
    from tests.conftest import config_for

    proxied = create_app(config_for(PROXY_COUNT=1)).test_client()
    resp = proxied.get("/readyz", headers={"X-Forwarded-For": "203.0.113.9"})
    assert resp.status_code == 200 and resp.get_json() == {"status": "ready"}
    assert "checks" in proxied.get("/readyz", headers={"X-Forwarded-For": "127.0.0.1"}).get_json()


def test_readyz_when_unavailable_says_only_so_to_outsiders():
    from shop import create_app
    from tests.conftest import config_for

    broken = create_app(config_for(REDIS_URL="redis://127.0.0.1:1/0")).test_client()
    resp = broken.get("/readyz", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert resp.status_code == 503 and resp.get_json() == {"status": "unavailable"}


# -- item 9e: uploaded images are re-encoded -----------------------------------------------------------
POLYGLOT_TAIL = b"<html><body><script>alert(document.cookie)</script></body></html>"


@pytest.fixture
def uploads(app, client, world, tmp_path, monkeypatch):
    monkeypatch.setitem(app.config, "UPLOAD_DIR", str(tmp_path / "uploads"))

    def put(data: bytes, content_type: str = "image/png"):
        signed = api(
            client,
            "post",
            "/api/v1/admin/uploads",
            world["staff"]["manager"],
            {"filename": "shirt.png", "content_type": content_type},
        ).get_json()
        return signed, client.put(urlsplit(signed["upload_url"]).path, data=data, headers=signed["headers"])

    put.dir = tmp_path / "uploads"
    return put


def stored_files(directory) -> list:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def test_a_png_with_html_appended_is_stored_without_it(client, uploads):
    signed, resp = uploads(tiny_png(4, 4) + POLYGLOT_TAIL)
    assert resp.status_code == 201
    served = client.get(signed["public_url"])
    assert served.status_code == 200 and served.mimetype == "image/png"
    assert b"<script" not in served.data and b"<html" not in served.data
    assert pixels(served.data) == pixels(tiny_png(4, 4))
    stored = stored_files(uploads.dir)  # the upload and its resized copies
    assert stored and all(b"<script" not in f.read_bytes() for f in stored)


@pytest.mark.parametrize(
    "data,content_type",
    [
        (b"\x89PNG\r\n\x1a\n" + POLYGLOT_TAIL, "image/png"),
        (b"\xff\xd8\xff\xe0" + POLYGLOT_TAIL, "image/jpeg"),
        (b"GIF89a" + POLYGLOT_TAIL, "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBP" + POLYGLOT_TAIL, "image/webp"),
    ],
)
def test_html_behind_an_image_signature_is_refused_and_nothing_stored(uploads, data, content_type):
    _, resp = uploads(data, content_type)
    assert resp.status_code == 415 and resp.get_json()["error"]["code"] == "unsupported_media_type"
    assert stored_files(uploads.dir) == []


def test_images_with_too_many_pixels_are_refused(app, uploads, monkeypatch):
    monkeypatch.setitem(app.config, "UPLOAD_MAX_PIXELS", 100)
    _, resp = uploads(tiny_png(11, 10))
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "image_too_large"
    assert stored_files(uploads.dir) == []
