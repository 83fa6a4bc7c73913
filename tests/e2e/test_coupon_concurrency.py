"""Coupon redemption under simultaneous checkouts, over real HTTP and real commits.

(a) a code limited to 3 uses, 30 checkouts with it at once: exactly 3 orders, each discounted, and 3
    redemptions. The other 27 are refused with 409 `coupon_exhausted` and make no order (the
    shopper is told why and may remove the code and buy at the full price).
(b) a code limited to 1 use per customer, 10 checkouts at once by one customer (the same e-mail,
    written differently, from 10 different guest carts): exactly 1 order with it, 9 refused with
    409 `coupon_customer_limit`.
"""

import threading
import uuid

import psycopg
import pytest

from tests.e2e.test_accounts_live import all_at_once, call
from tests.e2e.test_buying_concurrency import ADDRESS, _next, post


@pytest.fixture
def shop(committed_db):
    import os

    from redis import Redis

    from shop import create_app
    from shop.extensions import db
    from shop.promotions.models import Promotion, PromotionCode
    from tests.conftest import LiveServer, config_for
    from tests.factories import make_category, make_product

    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    app = create_app(config_for(committed_db))
    with app.app_context():
        cat = make_category("Sale", slug="sale")
        product = make_product(cat, "Hot Item", slug="hot-item", sizes=("M",), colours=("Red",), price=2500, stock=100)
        three = Promotion(name="Three uses", kind="percent", value=20, usage_limit=3)
        three.codes = [PromotionCode(code="THREE")]
        once = Promotion(name="Once each", kind="fixed", value=500, per_customer_limit=1)
        once.codes = [PromotionCode(code="ONCE")]
        db.session.add_all([three, once])
        db.session.commit()
        sku, ids = product.variants[0].sku, {"THREE": three.id, "ONCE": once.id}
    with LiveServer(app) as server:
        server.database_url, server.sku, server.promotions = committed_db, sku, ids
        yield server


def cart_with_code(server, code):
    _, cart = call(f"{server.url}/api/v1/carts", {})
    h = {"X-Cart-Token": cart["token"]}
    assert post(server, f"/api/v1/carts/{cart['id']}/items", {"sku": server.sku, "quantity": 1}, h)[0] == 201
    status, body = post(server, f"/api/v1/carts/{cart['id']}/coupon", {"code": code}, h)
    assert status == 200 and body["discount"]["amount"] > 0, body
    return cart


def checkout(server, cart, email):
    return post(
        server,
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": email, "shipping_address": ADDRESS},
        {"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())},
    )


def counts(server, promotion_id):
    with psycopg.connect(server.database_url) as conn:
        active = conn.execute(
            "SELECT count(*) FROM redemption WHERE promotion_id = %s AND status = 'active'", (promotion_id,)
        ).fetchone()[0]
        orders = conn.execute('SELECT count(*) FROM "order" WHERE discount > 0').fetchone()[0]
        all_orders = conn.execute('SELECT count(*) FROM "order"').fetchone()[0]
        reserved = conn.execute("SELECT reserved FROM variant WHERE sku = %s", (server.sku,)).fetchone()[0]
    return active, orders, all_orders, reserved


def test_a_code_limited_to_three_uses_is_redeemed_exactly_three_times_by_thirty_checkouts(shop):
    carts = [cart_with_code(shop, "THREE") for _ in range(30)]
    it, lock = iter(carts), threading.Lock()
    results = all_at_once(30, lambda: checkout(shop, _next(it, lock), f"buyer{uuid.uuid4().hex[:8]}@example.com"))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 3, [r for r in results if r[0] not in (201, 409)][:3]
    assert statuses.count(409) == 27
    assert all(body["error"]["code"] == "coupon_exhausted" for status, body in results if status == 409)
    assert all(body["order"]["discount"]["amount"] == 500 for status, body in results if status == 201)
    assert counts(shop, shop.promotions["THREE"]) == (3, 3, 3, 3)


def test_a_per_customer_limit_holds_under_simultaneous_checkouts_by_one_customer(shop):
    carts = [cart_with_code(shop, "ONCE") for _ in range(10)]
    emails = iter([f"{'Same' if i % 2 else 'same'}@Example.com" for i in range(10)])
    it, lock = iter(carts), threading.Lock()
    results = all_at_once(10, lambda: checkout(shop, _next(it, lock), _next(emails, lock)))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 1, results
    assert sorted(body["error"]["code"] for status, body in results if status != 201) == ["coupon_customer_limit"] * 9
    assert counts(shop, shop.promotions["ONCE"]) == (1, 1, 1, 1)
