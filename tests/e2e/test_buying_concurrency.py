"""The money path under simultaneous requests, on real PostgreSQL with real commits.

(a) 50 checkouts at once for a SKU with 7 in stock: exactly 7 orders, stock never below zero.
(c) a reservation expiring at the moment its payment succeeds: whichever takes the order lock
    first wins, and the end state is one of exactly two consistent ones:
      - payment first: order confirmed, stock decremented once, nothing released;
      - expiry first: order cancelled, stock back on the shelf, the payment refunded in full.
"""

import json
import os
import threading
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
import stripe
from redis import Redis

from tests.conftest import LiveServer, config_for
from tests.e2e.test_accounts_live import all_at_once, call

ADDRESS = {"name": "Ann Buyer", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}


@contextmanager
def hot_item_shop(database_url: str, **settings):
    """A live shop over `database_url` selling one SKU with 7 units (Redis flushed first)."""
    from shop import create_app
    from shop.extensions import db
    from tests.factories import make_category, make_product

    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    app = create_app(config_for(database_url, **settings))
    with app.app_context():
        cat = make_category("Sale", slug="sale")
        product = make_product(cat, "Hot Item", slug="hot-item", sizes=("M",), colours=("Red",), price=2500, stock=7)
        db.session.commit()
        sku, variant_id = product.variants[0].sku, product.variants[0].id
    with LiveServer(app) as server:
        server.app, server.database_url, server.sku, server.variant_id = app, database_url, sku, variant_id
        yield server


@pytest.fixture
def shop(committed_db):
    with hot_item_shop(committed_db) as server:
        yield server


def stock(server):
    with psycopg.connect(server.database_url) as conn:
        return conn.execute("SELECT on_hand, reserved FROM variant WHERE id = %s", (server.variant_id,)).fetchone()


def new_cart_with(server, quantity=1):
    _, cart = call(f"{server.url}/api/v1/carts", {})
    req_headers = {"X-Cart-Token": cart["token"]}
    status, body = post(
        server, f"/api/v1/carts/{cart['id']}/items", {"sku": server.sku, "quantity": quantity}, req_headers
    )
    assert status == 201, body
    return cart


def post(server, path, body, headers=None):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{server.url}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def checkout(server, cart, key=None):
    return post(
        server,
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": "buyer@example.com", "shipping_address": ADDRESS},
        {"X-Cart-Token": cart["token"], "Idempotency-Key": key or str(uuid.uuid4())},
    )


def test_fifty_simultaneous_checkouts_of_seven_units_make_exactly_seven_orders(shop):
    carts = [new_cart_with(shop) for _ in range(50)]
    results = all_at_once(50, lambda c=iter(carts), lock=threading.Lock(): checkout(shop, _next(c, lock)))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 7, results[:2]
    assert statuses.count(409) == 43
    assert all(
        body["error"]["code"] == "out_of_stock" and shop.sku in body["error"]["details"]["skus"]
        for status, body in results
        if status == 409
    )
    on_hand, reserved = stock(shop)
    assert (on_hand, reserved) == (7, 7)
    with psycopg.connect(shop.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM \"order\" WHERE status = 'pending'").fetchone()[0] == 7
        assert (
            conn.execute("SELECT coalesce(sum(quantity), 0) FROM reservation WHERE status = 'active'").fetchone()[0]
            == 7
        )


def _next(iterator, lock):
    with lock:
        return next(iterator)


def test_the_same_checkout_sent_many_times_at_once_makes_one_order(shop):
    cart = new_cart_with(shop, 2)
    key = str(uuid.uuid4())
    results = all_at_once(10, lambda: checkout(shop, cart, key))
    created = [body for status, body in results if status == 201]
    others = sorted(status for status, _ in results if status != 201)
    assert len({b["order"]["id"] for b in created}) == 1  # every 201 is the same order, replayed
    assert set(others) <= {409}  # copies that arrived while the first was running
    assert stock(shop) == (7, 2)
    status, replay = checkout(shop, cart, key)  # afterwards: the first answer, again
    assert status == 201 and replay["order"]["id"] == created[0]["order"]["id"]


def deliver_success(server, order_id):
    """The test gateway's succeeded event for this order's payment, signed, posted to the webhook."""
    from shop.payments.gateways import webhook_secret
    from shop.payments.jobs import test_event
    from shop.payments.models import Payment

    with server.app.test_request_context():
        from shop.extensions import db

        payment = db.session.query(Payment).filter_by(order_id=order_id).one()
        event = test_event(payment.provider_id, payment, "approve")
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(body, webhook_secret())
        db.session.remove()
    import urllib.request

    req = urllib.request.Request(
        f"{server.url}/webhooks/stripe",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": header},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status


def expire_now(server):
    from shop.orders.jobs import expire_reservations

    with server.app.app_context():
        return expire_reservations(now=datetime.now(UTC) + timedelta(hours=1))


def order_state(server, order_id):
    with psycopg.connect(server.database_url) as conn:
        status = conn.execute('SELECT status FROM "order" WHERE id = %s', (order_id,)).fetchone()[0]
        payment = conn.execute("SELECT status FROM payment WHERE order_id = %s", (order_id,)).fetchone()[0]
    return status, payment


def refund_jobs():
    from rq import Queue

    redis = Redis.from_url(os.environ["REDIS_URL"])
    return [j for j in Queue("default", connection=redis).jobs if j.func_name.endswith("refund_remaining_job")]


def test_payment_before_expiry_confirms_and_expiry_then_does_nothing(shop):
    status, placed = checkout(shop, new_cart_with(shop, 3))
    order_id = placed["order"]["id"]
    assert deliver_success(shop, order_id) == 200
    assert expire_now(shop) == 0
    assert order_state(shop, order_id) == ("confirmed", "succeeded")
    assert stock(shop) == (4, 0)
    assert refund_jobs() == []


def test_expiry_before_payment_cancels_frees_the_stock_and_refunds_the_late_payment(shop):
    status, placed = checkout(shop, new_cart_with(shop, 3))
    order_id = placed["order"]["id"]
    assert expire_now(shop) == 1
    assert stock(shop) == (7, 0)
    assert deliver_success(shop, order_id) == 200
    assert order_state(shop, order_id) == ("cancelled", "succeeded")
    assert stock(shop) == (7, 0)
    [job] = refund_jobs()
    assert job.args[0] == order_id


@pytest.mark.parametrize("attempt", range(5))
def test_expiry_and_payment_at_the_same_moment_end_consistent(shop, attempt):
    status, placed = checkout(shop, new_cart_with(shop, 3))
    order_id = placed["order"]["id"]
    barrier = threading.Barrier(2)

    def pay():
        barrier.wait()
        return deliver_success(shop, order_id)

    def expire():
        barrier.wait()
        return expire_now(shop)

    results = {}
    threads = [
        threading.Thread(target=lambda: results.__setitem__("pay", pay())),
        threading.Thread(target=lambda: results.__setitem__("expire", expire())),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results["pay"] == 200
    final = order_state(shop, order_id)
    if final == ("confirmed", "succeeded"):
        assert stock(shop) == (4, 0) and results["expire"] == 0 and refund_jobs() == []
    else:
        assert final == ("cancelled", "succeeded")
        assert stock(shop) == (7, 0) and results["expire"] == 1 and len(refund_jobs()) == 1
