"""Unpaid-hold limits under simultaneous checkouts, over real HTTP and real commits.

One client (one IP, fresh carts and e-mails, each cart a different SKU, so no variant lock makes them
queue) sends 12 checkouts at once with HOLD_MAX_ORDERS_PER_IP=3: exactly 3 orders hold stock, the other
9 are refused with 409 hold_limit_reached. The client's advisory lock in checkout is what makes the count
exact (shop.checkout.holds).
"""

import threading
import uuid

import psycopg
import pytest

from tests.e2e.test_accounts_live import all_at_once, call
from tests.e2e.test_buying_concurrency import ADDRESS, _next, post

SKUS = 12


@pytest.fixture
def shop(committed_db):
    import os

    from redis import Redis

    from shop import create_app
    from shop.extensions import db
    from tests.conftest import LiveServer, config_for
    from tests.factories import make_category, make_product

    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    app = create_app(config_for(committed_db, HOLD_MAX_ORDERS_PER_IP=3))
    with app.app_context():
        cat = make_category("Sale", slug="sale")
        product = make_product(cat, "Many", slug="many", sizes=[str(n) for n in range(SKUS)], colours=("Red",), stock=5)
        db.session.commit()
        skus = [v.sku for v in product.variants]
    with LiveServer(app) as server:
        server.database_url, server.skus = committed_db, skus
        yield server


def cart_with(server, sku):
    _, cart = call(f"{server.url}/api/v1/carts", {})
    assert (
        post(server, f"/api/v1/carts/{cart['id']}/items", {"sku": sku, "quantity": 1}, {"X-Cart-Token": cart["token"]})[
            0
        ]
        == 201
    )
    return cart


def checkout(server, cart):
    return post(
        server,
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": f"b{uuid.uuid4().hex[:8]}@example.com", "shipping_address": ADDRESS},
        {"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())},
    )


@pytest.mark.parametrize("attempt", range(3))
def test_simultaneous_checkouts_of_one_client_stop_exactly_at_its_hold_limit(shop, attempt):
    carts = [cart_with(shop, sku) for sku in shop.skus]
    it, lock = iter(carts), threading.Lock()
    results = all_at_once(SKUS, lambda: checkout(shop, _next(it, lock)))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 3, results
    assert [body["error"]["code"] for status, body in results if status != 201] == ["hold_limit_reached"] * 9
    with psycopg.connect(shop.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM \"order\" WHERE status = 'pending'").fetchone()[0] == 3
        assert conn.execute("SELECT sum(reserved) FROM variant").fetchone()[0] == 3
