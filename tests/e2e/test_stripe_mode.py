"""PAYMENT_PROVIDER=stripe end to end: the real app over HTTP with real commits, the official SDK talking
to a local Stripe (tests/fakes/stripe.py), and signed webhooks posted back the way Stripe sends them."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from types import SimpleNamespace

import psycopg
import pytest
from redis import Redis
from rq import Queue

from tests.conftest import LiveServer, config_for
from tests.fakes.stripe import FakeStripe

SECRET_KEY = "sk_test_x"
WEBHOOK_SECRET = "whsec_x"
PRICE, STOCK, QTY = 2500, 10, 2
ADDRESS = {
    "name": "Ada Buyer",
    "line1": "1 Main Street",
    "city": "Springfield",
    "postal_code": "12345",
    "country": "US",
}


# -- set-up ----------------------------------------------------------------------------------------
@pytest.fixture
def shop(committed_db, tmp_path):
    """The shop in Stripe mode over a committed database with one SKU in stock, served live."""
    from shop import create_app
    from shop.extensions import db
    from tests.factories import make_category, make_product

    redis = Redis.from_url(os.environ["REDIS_URL"])
    redis.flushdb()
    with FakeStripe(secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET) as fake:
        app = create_app(
            config_for(
                committed_db,
                PAYMENT_PROVIDER="stripe",
                STRIPE_SECRET_KEY=SECRET_KEY,
                STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                STRIPE_API_BASE=fake.url,
                MAIL_DIR=str(tmp_path / "mail"),
            )
        )
        with app.app_context():
            product = make_product(make_category(), sizes=("M",), colours=("Black",), price=PRICE, stock=STOCK)
            variant = product.variants[0]
            sku, variant_id = variant.sku, variant.id
            db.session.commit()
        with LiveServer(app) as live:
            yield SimpleNamespace(
                url=live.url, app=app, fake=fake, db=committed_db, redis=redis, sku=sku, variant_id=variant_id
            )
        with app.app_context():
            db.engine.dispose()
    redis.flushdb()


def call(url, body=None, method="POST", headers=None, raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null"), dict(err.headers)


def all_at_once(n, fn):
    """Run fn() in n threads released together; return their results."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:  # noqa: BLE001 - the assertion shows it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return results


def sql(shop, query, *args):
    with psycopg.connect(shop.db) as conn:
        return conn.execute(query, args).fetchall()


def stock(shop) -> tuple[int, int]:
    return tuple(sql(shop, "SELECT on_hand, reserved FROM variant WHERE id = %s", shop.variant_id)[0])


def mail_jobs(shop, event: str | None = None) -> list:
    from shop import consumers

    with shop.app.app_context():
        consumers.drain(["order-mails"])  # order mails are sent from the order's events
    jobs = Queue("mail", connection=shop.redis).get_jobs()
    return [j for j in jobs if event is None or (j.args and j.args[0] == event)]


def checkout(shop, quantity=QTY, key=None):
    """A guest buys `quantity` of the SKU through the API: (status, body, headers, cart)."""
    status, cart, _ = call(f"{shop.url}/api/v1/carts")
    assert status == 201, cart
    headers = {"X-Cart-Token": cart["token"]}
    status, body, _ = call(
        f"{shop.url}/api/v1/carts/{cart['id']}/items", {"sku": shop.sku, "quantity": quantity}, headers=headers
    )
    assert status == 201, body
    status, body, resp_headers = call(
        f"{shop.url}/api/v1/checkout",
        {"cart_id": cart["id"], "email": "ada@example.com", "shipping_address": ADDRESS},
        headers={**headers, "Idempotency-Key": key or str(uuid.uuid4())},
    )
    return status, body, resp_headers, cart


def placed(shop, quantity=QTY):
    status, body, _, _ = checkout(shop, quantity)
    assert status == 201, body
    intent_id = body["payment"]["client_secret"].split("_secret_")[0]
    return body["order"], intent_id


def deliver(shop, body: bytes, signature: str | None):
    headers = {"Stripe-Signature": signature} if signature is not None else {}
    return call(f"{shop.url}/webhooks/stripe", raw=body, headers=headers)


def get_order(shop, order):
    status, body, _ = call(
        f"{shop.url}/api/v1/orders/{order['id']}", method="GET", headers={"X-Order-Token": order["access_token"]}
    )
    assert status == 200, body
    return body


def staff_token(shop, role: str) -> str:
    from shop.accounts.tokens import issue_pair
    from shop.extensions import db
    from tests.factories import make_user

    with shop.app.app_context():
        user = make_user(role=role)
        db.session.commit()
        return issue_pair(user)["access_token"]


# -- checkout --------------------------------------------------------------------------------------
def test_checkout_creates_a_payment_intent_for_the_order_total(shop):
    status, body, _, cart = checkout(shop, key="checkout-key-0001")
    assert status == 201, body
    order, payment = body["order"], body["payment"]
    total = order["total"]["amount"]
    assert total == QTY * PRICE + 595  # standard shipping below the free threshold, no US tax without a region
    assert order["status"] == "pending"
    assert payment["provider"] == "stripe"

    created = shop.fake.calls("POST", "/v1/payment_intents")
    assert len(created) == 1
    call_ = created[0]
    assert call_.status == 200
    assert call_.params["amount"] == str(total)
    assert call_.params["currency"] == "usd"
    assert call_.params["metadata"]["order_id"] == str(order["id"])
    assert call_.params["metadata"]["payment_id"] == str(payment["id"])
    assert call_.idempotency_key.startswith(f"shop-payment-{payment['id']}-")  # id + creation stamp
    assert call_.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    intent = shop.fake.intents[payment["client_secret"].split("_secret_")[0]]
    assert payment["client_secret"] == intent["client_secret"]
    assert intent["amount"] == total
    assert "redirect_url" not in payment
    assert stock(shop) == (STOCK, QTY)  # held, not yet taken
    assert sql(shop, "SELECT provider_id, status FROM payment") == [(intent["id"], "requires_payment")]

    # The same checkout again with the same key: the first answer, no second intent or order.
    status, again, _ = call(
        f"{shop.url}/api/v1/checkout",
        {"cart_id": cart["id"], "email": "ada@example.com", "shipping_address": ADDRESS},
        headers={"X-Cart-Token": cart["token"], "Idempotency-Key": "checkout-key-0001"},
    )
    assert status == 201
    assert again["order"]["id"] == order["id"] and again["payment"] == payment
    assert len(shop.fake.calls("POST", "/v1/payment_intents")) == 1
    assert sql(shop, 'SELECT count(*) FROM "order"') == [(1,)]


# -- webhooks --------------------------------------------------------------------------------------
def test_succeeded_event_confirms_the_order_and_takes_the_stock_once(shop):
    order, intent_id = placed(shop)
    body, signature = shop.fake.event("payment_intent.succeeded", shop.fake.succeed(intent_id))

    status, answer, _ = deliver(shop, body, signature)
    assert status == 200, answer
    seen = get_order(shop, order)
    assert seen["status"] == "confirmed"
    confirmations = [e for e in seen["events"] if e["status"] == "confirmed"]
    assert len(confirmations) == 1 and confirmations[0]["actor"] == "stripe"
    assert stock(shop) == (STOCK - QTY, 0)
    assert sql(shop, "SELECT status FROM payment") == [("succeeded",)]

    # Stripe delivers again (it does, at least once): 200, nothing more.
    status, answer, _ = deliver(shop, body, signature)
    assert status == 200, answer
    assert stock(shop) == (STOCK - QTY, 0)
    assert len([e for e in get_order(shop, order)["events"] if e["status"] == "confirmed"]) == 1
    assert len(mail_jobs(shop, "order.confirmed")) == 1
    assert sql(shop, "SELECT count(*) FROM webhook_event") == [(1,)]


@pytest.mark.parametrize("tamper", ["wrong_secret", "edited_body", "stale", "no_header", "garbage_header"])
def test_bad_or_stale_signature_is_400_and_changes_nothing(shop, tamper):
    order, intent_id = placed(shop)
    intent = shop.fake.succeed(intent_id)
    body, signature = shop.fake.event("payment_intent.succeeded", intent)
    if tamper == "wrong_secret":
        body, signature = shop.fake.event("payment_intent.succeeded", intent, secret="whsec_someone_else")
    elif tamper == "edited_body":
        body = body.replace(str(intent["amount"]).encode(), b"1")
    elif tamper == "stale":  # signed correctly, but 5 minutes and 1 second ago
        body, signature = shop.fake.event("payment_intent.succeeded", intent, timestamp=int(time.time()) - 301)
    elif tamper == "no_header":
        signature = None
    elif tamper == "garbage_header":
        signature = "t=abc,v1=zzz"

    status, answer, _ = deliver(shop, body, signature)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_signature"
    assert get_order(shop, order)["status"] == "pending"
    assert stock(shop) == (STOCK, QTY)
    assert sql(shop, "SELECT status FROM payment") == [("requires_payment",)]
    assert sql(shop, "SELECT count(*) FROM webhook_event") == [(0,)]
    assert mail_jobs(shop) == []


def test_twenty_simultaneous_copies_of_one_event_apply_once(shop):
    order, intent_id = placed(shop)
    body, signature = shop.fake.event("payment_intent.succeeded", shop.fake.succeed(intent_id))

    results = all_at_once(20, lambda: deliver(shop, body, signature))

    statuses = [r[0] if isinstance(r, tuple) else repr(r) for r in results]
    assert statuses == [200] * 20, [r for r in results if not isinstance(r, tuple) or r[0] != 200][:3]
    seen = get_order(shop, order)
    assert seen["status"] == "confirmed"
    assert len([e for e in seen["events"] if e["status"] == "confirmed"]) == 1
    assert stock(shop) == (STOCK - QTY, 0)
    assert len(mail_jobs(shop, "order.confirmed")) == 1
    assert len(mail_jobs(shop)) == 1
    assert sql(shop, "SELECT count(*), min(status) FROM webhook_event") == [(1, "processed")]
    assert sql(shop, "SELECT count(*) FROM reservation WHERE status = 'consumed'") == [(1,)]


def test_payment_failed_after_succeeded_changes_nothing(shop):
    order, intent_id = placed(shop)
    succeeded = shop.fake.succeed(intent_id)
    failed = {
        **succeeded,
        "status": "requires_payment_method",
        "last_payment_error": {"type": "card_error", "code": "card_declined", "message": "Your card was declined."},
    }
    status, answer, _ = deliver(shop, *shop.fake.event("payment_intent.succeeded", succeeded))
    assert status == 200, answer
    before = get_order(shop, order)

    status, answer, _ = deliver(shop, *shop.fake.event("payment_intent.payment_failed", failed))
    assert status == 200, answer
    after = get_order(shop, order)
    assert after["status"] == "confirmed"
    assert after["events"] == before["events"]
    assert stock(shop) == (STOCK - QTY, 0)
    assert sql(shop, "SELECT status, failure_reason FROM payment") == [("succeeded", None)]
    assert len(mail_jobs(shop)) == 1
    assert sql(shop, "SELECT type, status FROM webhook_event ORDER BY id") == [
        ("payment_intent.succeeded", "processed"),
        ("payment_intent.payment_failed", "processed"),
    ]


# -- refunds ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["support", "manager"])
def test_staff_refund_calls_stripe_once_per_idempotency_key(shop, role):
    order, intent_id = placed(shop)
    deliver(shop, *shop.fake.event("payment_intent.succeeded", shop.fake.succeed(intent_id)))
    token = staff_token(shop, role)
    url = f"{shop.url}/api/v1/admin/orders/{order['id']}/refunds"
    auth = {"Authorization": f"Bearer {token}"}

    first = call(url, {"amount": 1000, "reason": "Scuffed box"}, headers={**auth, "Idempotency-Key": "refund-key-0001"})
    assert first[0] == 201, first[1]
    refunds = shop.fake.calls("POST", "/v1/refunds")
    assert len(refunds) == 1
    assert refunds[0].params["payment_intent"] == intent_id
    assert refunds[0].params["amount"] == "1000"
    assert refunds[0].idempotency_key.startswith(f"shop-refund-{first[1]['id']}-")
    assert refunds[0].status == 200
    assert first[1]["provider_refund_id"] == next(iter(shop.fake.refunds))
    assert first[1]["refunded_total"]["amount"] == 1000

    # The script retries (a timeout, say): same key, same body -> the first answer, no second refund.
    again = call(url, {"amount": 1000, "reason": "Scuffed box"}, headers={**auth, "Idempotency-Key": "refund-key-0001"})
    assert again[:2] == first[:2]
    assert len(shop.fake.calls("POST", "/v1/refunds")) == 1
    assert sql(shop, "SELECT count(*), sum(amount) FROM refund") == [(1, 1000)]
    assert sql(shop, "SELECT refunded_amount FROM payment") == [(1000,)]

    # More than is left is refused by the shop before Stripe is asked.
    total = order["total"]["amount"]
    over = call(url, {"amount": total, "reason": "All of it"}, headers={**auth, "Idempotency-Key": "refund-key-0002"})
    assert over[0] == 422, over[1]
    assert len(shop.fake.calls("POST", "/v1/refunds")) == 1

    # The rest, with a new key, is a second refund at Stripe.
    rest = call(
        url, {"amount": total - 1000, "reason": "All of it"}, headers={**auth, "Idempotency-Key": "refund-key-0003"}
    )
    assert rest[0] == 201, rest[1]
    assert len(shop.fake.calls("POST", "/v1/refunds")) == 2
    assert shop.fake.charges[shop.fake.intents[intent_id]["latest_charge"]]["amount_refunded"] == total


def test_refund_is_forbidden_to_the_warehouse(shop):
    order, intent_id = placed(shop)
    deliver(shop, *shop.fake.event("payment_intent.succeeded", shop.fake.succeed(intent_id)))
    status, body, _ = call(
        f"{shop.url}/api/v1/admin/orders/{order['id']}/refunds",
        {"amount": 100, "reason": "x"},
        headers={"Authorization": f"Bearer {staff_token(shop, 'warehouse')}", "Idempotency-Key": "refund-key-0009"},
    )
    assert status == 403, body
    assert shop.fake.calls("POST", "/v1/refunds") == []


# -- outages ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("outage", ["refused", "errors"])
def test_stripe_down_at_checkout_is_503_and_frees_the_stock(shop, outage):
    if outage == "refused":
        shop.fake.stop()
    else:
        shop.fake.fail_next = 3  # the first try and the SDK's two retries all get a 500

    status, body, headers, cart = checkout(shop)
    assert status == 503, body
    assert body["error"]["code"] == "payment_unavailable"
    assert headers.get("Retry-After") == "30"
    assert stock(shop) == (STOCK, 0)
    assert sql(shop, 'SELECT status FROM "order"') == [("cancelled",)]
    assert sql(shop, "SELECT status FROM payment") == [("failed",)]
    assert sql(shop, "SELECT status FROM reservation") == [("released",)]
    assert mail_jobs(shop) == []
    if outage == "errors":
        tries = shop.fake.calls("POST", "/v1/payment_intents")
        assert len(tries) == 3
        assert len({t.idempotency_key for t in tries}) == 1  # the SDK's retries reuse the key

        # Stripe is back: the shopper's cart was kept and a new attempt goes through.
        status, again, _ = call(
            f"{shop.url}/api/v1/checkout",
            {"cart_id": cart["id"], "email": "ada@example.com", "shipping_address": ADDRESS},
            headers={"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())},
        )
        assert status == 201, again
        assert stock(shop) == (STOCK, QTY)


# -- many buyers, one SKU --------------------------------------------------------------------------
def test_simultaneous_checkouts_of_one_sku_sell_exactly_the_stock(shop):
    """Regression: order lines (FK -> KEY SHARE on the variant) inserted before the variant's FOR UPDATE
    made concurrent checkouts of one SKU deadlock into 500s."""
    buyers, units = 10, 4
    with psycopg.connect(shop.db) as conn:
        conn.execute("UPDATE variant SET on_hand = %s WHERE id = %s", (units, shop.variant_id))
    carts = []
    for _ in range(buyers):
        status, cart, _ = call(f"{shop.url}/api/v1/carts")
        status, body, _ = call(
            f"{shop.url}/api/v1/carts/{cart['id']}/items",
            {"sku": shop.sku, "quantity": 1},
            headers={"X-Cart-Token": cart["token"]},
        )
        assert status == 201, body
        carts.append(cart)
    tickets = iter(range(buyers))

    def buy():
        cart = carts[next(tickets)]
        return call(
            f"{shop.url}/api/v1/checkout",
            {"cart_id": cart["id"], "email": "ada@example.com", "shipping_address": ADDRESS},
            headers={"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())},
        )

    results = all_at_once(buyers, buy)
    statuses = sorted(r[0] if isinstance(r, tuple) else repr(r) for r in results)
    assert statuses == [201] * units + [409] * (buyers - units), [r[1] for r in results if r[0] not in (201, 409)][:2]
    assert all(r[1]["error"]["code"] == "out_of_stock" for r in results if r[0] == 409)
    assert stock(shop) == (units, units)
    assert len(shop.fake.calls("POST", "/v1/payment_intents")) == units


def test_out_of_stock_checkout_leaves_no_order_behind(shop):
    """Regression: the 409 answer is stored by idempotency.finish(), whose commit used to commit the
    half-built pending order too (no reservation, no payment, never expired)."""
    with psycopg.connect(shop.db) as conn:
        conn.execute("UPDATE variant SET on_hand = 2 WHERE id = %s", (shop.variant_id,))
    carts = []
    for _ in range(2):  # both fill their carts while 2 are still available
        status, cart, _ = call(f"{shop.url}/api/v1/carts")
        status, body, _ = call(
            f"{shop.url}/api/v1/carts/{cart['id']}/items",
            {"sku": shop.sku, "quantity": 2},
            headers={"X-Cart-Token": cart["token"]},
        )
        assert status == 201, body
        carts.append(cart)
    answers = [
        call(
            f"{shop.url}/api/v1/checkout",
            {"cart_id": cart["id"], "email": "ada@example.com", "shipping_address": ADDRESS},
            headers={"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())},
        )
        for cart in carts
    ]
    assert [a[0] for a in answers] == [201, 409]
    assert answers[1][1]["error"]["code"] == "out_of_stock"
    assert stock(shop) == (2, 2)
    assert sql(shop, 'SELECT count(*) FROM "order"') == [(1,)]
