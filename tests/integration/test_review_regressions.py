"""Regressions of bugs the code reviews found: each of these once answered 500 or lost something."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.factories import make_category, make_product, make_user
from tests.integration.test_buying_api import ADDRESS, guest_cart, send


@pytest.mark.parametrize(
    "path", ["/p/%00", "/api/v1/products/%00", "/search?q=%00", "/api/v1/search?category=%00", "/c/men?colour=%00"]
)
def test_nul_bytes_are_refused_with_400(client, path):
    resp = client.get(path)
    assert resp.status_code == 400


def test_prices_beyond_the_integer_columns_are_refused_not_500(client, db_session):
    make_category(slug="big")
    assert client.get("/api/v1/products?min_price=3000000000").status_code == 422
    page = client.get("/products?min_price=30000000&max_price=1e999")
    assert page.status_code == 200 and "was ignored" in page.get_data(as_text=True)


def test_ids_beyond_the_integer_columns_are_404(client):
    assert client.get("/api/v1/orders/99999999999999999999999").status_code == 404


def test_cancelling_a_paid_order_puts_its_units_back(client, db_session, redis_client):
    from shop.payments import services as payments
    from shop.payments.models import Payment

    cat = make_category(slug="restock")
    variant = make_product(cat, sizes=("M",), colours=("Red",), stock=5).variants[0]
    cart = guest_cart(client, variant.sku, 2)
    placed = send(
        client,
        "post",
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": "a@example.com", "shipping_address": ADDRESS},
        **{"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())},
    ).get_json()["order"]
    payment = db_session.query(Payment).filter_by(order_id=placed["id"]).one()
    payments.on_succeeded({"id": payment.provider_id, "amount": payment.amount})
    db_session.commit()
    db_session.refresh(variant)
    assert (variant.on_hand, variant.reserved) == (3, 0)
    resp = client.post(f"/api/v1/orders/{placed['id']}/cancel", headers={"X-Order-Token": placed["access_token"]})
    assert resp.status_code == 200
    db_session.refresh(variant)
    assert (variant.on_hand, variant.reserved) == (5, 0)


def test_a_cart_in_use_is_not_abandoned(client, db_session):
    from shop.cart.models import Cart

    cat = make_category(slug="busy")
    variant = make_product(cat, sizes=("M",), colours=("Red",), stock=5).variants[0]
    cart = guest_cart(client, variant.sku, 1)
    row = db_session.get(Cart, uuid.UUID(cart["id"]))
    row.updated_at = datetime.now(UTC) - timedelta(days=40)
    db_session.commit()
    send(
        client,
        "post",
        f"/api/v1/carts/{cart['id']}/items",
        {"sku": variant.sku, "quantity": 1},
        **{"X-Cart-Token": cart["token"]},
    )
    db_session.expire_all()
    assert db_session.get(Cart, uuid.UUID(cart["id"])).updated_at > datetime.now(UTC) - timedelta(minutes=1)


def test_api_answers_about_carts_are_private(client, db_session):
    resp = client.post("/api/v1/carts")
    assert resp.headers["Cache-Control"] == "private, no-store"
    catalogue = client.get("/api/v1/categories")
    assert catalogue.headers["Cache-Control"].startswith("public")


def test_production_refuses_the_test_gateway(monkeypatch):
    from config import get_config

    monkeypatch.setenv("SECRET_KEY", "x" * 40)
    monkeypatch.setenv("DATABASE_URL", "postgres://x@y/z")
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("ALLOW_TEST_PAYMENTS", raising=False)
    with pytest.raises(RuntimeError, match="payment provider"):
        get_config("production").validate()


def test_only_one_reindex_runs_at_a_time(app, db_session, redis_client):
    from shop.search import engine, jobs

    with app.app_context():
        lock = redis_client.lock(f"search:reindex:{engine.alias_name()}", timeout=60)
        assert lock.acquire(blocking=False)
        try:
            assert jobs.reindex() == {"skipped": "another reindex is running"}
        finally:
            lock.release()


def test_every_attempt_counts_toward_the_login_limit(app, client, db_session, redis_client):
    make_user("lim@example.com")
    limit = app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]
    statuses = [
        send(
            client, "post", "/api/v1/auth/token", {"email": "lim@example.com", "password": f"wrong-{i}-guess"}
        ).status_code
        for i in range(limit + 3)
    ]
    assert statuses.count(401) == limit and statuses[limit:] == [429] * 3


def test_nul_in_json_and_form_bodies_is_400(client, db_session):
    resp = client.post(
        "/api/v1/auth/register",
        data='{"email": "a\\u0000b@example.com", "password": "long enough pw"}',
        content_type="application/json",
    )
    assert resp.status_code == 400
    assert client.post("/account/login", data={"email": "a\x00b@example.com", "password": "x"}).status_code == 400


def test_promotion_dates_out_of_range_are_422(client, db_session, redis_client):
    from tests.integration.test_buying_api import bearer

    manager = make_user(role="manager")
    resp = send(
        client,
        "post",
        "/api/v1/admin/coupons",
        {"code": "Y10K", "kind": "percent", "value": 10, "ends_at": "9999-12-31T23:59:59-05:00"},
        **bearer(manager),
    )
    assert resp.status_code == 422 and "ends_at" in resp.get_json()["error"]["details"]["fields"]
    assert client.get("/api/v1/admin/reports/promotions?to=9999-12-31", headers=bearer(manager)).status_code == 422
