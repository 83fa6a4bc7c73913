"""Every listed domain event is published by the flow that causes it, in that flow's transaction, with the envelope
and the data docs/events.md promises, and without personal data. Stock events come once per variant and transaction;
stock.low once per crossing of the threshold; the "alerts" group mails the managers once per event."""

import json
import threading
import uuid
from datetime import UTC

import pytest
import stripe
from sqlalchemy import select

from shop import events
from shop.extensions import db
from shop.outbox import OutboxJob
from tests.factories import make_category, make_product, make_user
from tests.integration.test_buying_api import bearer, checkout, guest_cart, send, shelf  # noqa: F401 - a fixture

PERSONAL = ("ann@example.com", "Ann Buyer", "1 Main St", "Springfield", "12345")


def published(*types: str) -> list[dict]:
    """The envelopes of the events recorded in the outbox (of `types`, when given), in the order written."""
    query = select(OutboxJob).where(OutboxJob.kind == "event").order_by(OutboxJob.id)
    if types:
        query = query.where(OutboxJob.function.in_(types))
    return [row.kwargs for row in db.session.scalars(query)]


def of_order(order_id: int) -> list[str]:
    return [e["type"] for e in published() if e["type"].startswith("order.") and e["data"]["order_id"] == order_id]


def assert_envelope(env: dict, type_: str, aggregate_type: str, aggregate_id) -> None:
    assert set(env) == {"id", "type", "version", "occurred_at", "aggregate", "data"}
    assert env["type"] == type_ and env["version"] == events.TYPES[type_]
    assert env["aggregate"] == {"type": aggregate_type, "id": str(aggregate_id)}
    assert uuid.UUID(env["id"]) and env["occurred_at"].endswith("+00:00")
    assert set(env["data"]) == {f.split("[")[0] for f in events.DATA_FIELDS[type_]}
    row = db.session.scalar(
        select(OutboxJob).where(OutboxJob.kind == "event", OutboxJob.kwargs["id"].astext == env["id"])
    )
    assert (row.key, row.function, row.queue) == (f"{aggregate_type}:{aggregate_id}", type_, "shop.events")


def webhook(client, order_id: int, outcome: str):
    """The test gateway's signed decision for the order's payment, posted to the shop's webhook."""
    from shop.payments.gateways import webhook_secret
    from shop.payments.jobs import test_event
    from shop.payments.models import Payment

    payment = db.session.scalar(select(Payment).where(Payment.order_id == order_id).order_by(Payment.id.desc()))
    body = json.dumps(test_event(payment.provider_id, payment, outcome))
    resp = client.post(
        "/webhooks/stripe",
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, webhook_secret())},
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return payment


# -- orders, payments, refunds ---------------------------------------------------------------------------------
def test_a_paid_order_publishes_each_step_with_its_snapshot_and_no_personal_data(client, shelf, db_session):
    from shop.orders import services as orders
    from shop.payments import services as payments

    m = shelf["M"]
    placed = checkout(client, guest_cart(client, m.sku, 2)).get_json()["order"]
    order_id = placed["id"]
    [env] = published("order.placed")
    assert_envelope(env, "order.placed", "order", order_id)
    data = env["data"]
    assert data["created_at"].endswith("+00:00")
    assert {k: v for k, v in data.items() if k != "created_at"} == {
        "order_id": order_id,
        "number": placed["number"],
        "status": "pending",
        "currency": "USD",
        "subtotal": 4000,
        "discount": 0,
        "shipping": 595,
        "tax": 290,
        "total": 4885,
        "refunded": 0,
        "customer_id": None,
        "lines": [{"sku": m.sku, "quantity": 2, "unit_price": 2000}],
    }
    [held] = published("stock.changed")
    assert_envelope(held, "stock.changed", "variant", m.id)
    assert held["data"] == {
        "variant_id": m.id,
        "sku": m.sku,
        "product_id": m.product_id,
        "on_hand": 5,
        "reserved": 2,
        "available": 3,
    }

    payment = webhook(client, order_id, "approve")
    [paid] = published("payment.succeeded")
    assert_envelope(paid, "payment.succeeded", "payment", payment.id)
    assert paid["data"] == {
        "payment_id": payment.id,
        "order_id": order_id,
        "amount": 4885,
        "currency": "USD",
        "provider": "test",
        "flow": "intent",
        "status": "succeeded",
    }
    [confirmed] = published("order.confirmed")
    assert confirmed["data"]["status"] == "confirmed" and confirmed["data"]["refunded"] == 0
    assert published("stock.changed")[-1]["data"] == {**held["data"], "on_hand": 3, "reserved": 0, "available": 3}

    for target in ("processing", "shipped", "delivered"):
        orders.transition(order_id, target, "staff@example.com")
    assert of_order(order_id) == ["order.placed", "order.confirmed", "order.shipped", "order.delivered"]

    payments.refund(order_id, 500, "scuffed", "support@example.com")  # a partial refund
    [partial] = published("refund.succeeded")
    assert partial["data"]["amount"] == 500 and partial["data"]["order_id"] == order_id
    assert_envelope(partial, "refund.succeeded", "refund", partial["data"]["refund_id"])
    refunded = published("order.refunded")
    assert [(e["data"]["status"], e["data"]["refunded"]) for e in refunded] == [("delivered", 500)]

    orders.transition(order_id, "returned", "support@example.com")
    payments.refund(order_id, None, "returned", "support@example.com")  # the rest: the order becomes refunded
    assert [e["data"]["amount"] for e in published("refund.succeeded")] == [500, 4385]
    assert [(e["data"]["status"], e["data"]["refunded"]) for e in published("order.refunded")] == [
        ("delivered", 500),
        ("refunded", 4885),
    ]
    assert of_order(order_id) == [
        "order.placed",
        "order.confirmed",
        "order.shipped",
        "order.delivered",
        "order.refunded",
        "order.refunded",
    ]

    everything = published()
    assert len({e["id"] for e in everything}) == len(everything)
    text = json.dumps(everything)
    assert not [p for p in PERSONAL if p in text]  # no e-mail, name or address leaves the shop in an event


def test_a_declined_payment_and_cancellations_publish_failed_and_cancelled(client, shelf, db_session):
    from shop.orders import services as orders
    from shop.payments import services as payments

    m = shelf["M"]
    first = checkout(client, guest_cart(client, m.sku, 1)).get_json()["order"]
    payment = webhook(client, first["id"], "decline")
    [failed] = published("payment.failed")
    assert_envelope(failed, "payment.failed", "payment", payment.id)
    assert failed["data"]["status"] == "failed" and "declined" in failed["data"]["reason"]
    assert published("payment.succeeded") == []
    cancelled = client.post(f"/api/v1/orders/{first['id']}/cancel", headers={"X-Order-Token": first["access_token"]})
    assert cancelled.status_code == 200
    [unpaid] = published("order.cancelled")
    assert_envelope(unpaid, "order.cancelled", "order", first["id"])
    assert unpaid["data"]["was_paid"] is False and unpaid["data"]["status"] == "cancelled"
    assert published("stock.changed")[-1]["data"]["reserved"] == 0  # the hold went back

    second = checkout(client, guest_cart(client, m.sku, 1)).get_json()["order"]
    webhook(client, second["id"], "approve")
    orders.transition(second["id"], "cancelled", "support@example.com", "out of stock at the warehouse")
    paid_cancel = published("order.cancelled")[-1]["data"]
    assert paid_cancel["order_id"] == second["id"] and paid_cancel["was_paid"] is True
    assert published("stock.changed")[-1]["data"]["on_hand"] == 5  # back on the shelf
    payments.refund_remaining_job(second["id"], "cancelled", "system")  # the job its cancel recorded
    last = published("order.refunded")[-1]["data"]
    assert (last["order_id"], last["status"], last["refunded"]) == (second["id"], "cancelled", last["total"])


def test_a_checkout_that_fails_and_a_rolled_back_change_publish_nothing(client, shelf, db_session):
    from shop.inventory import services as inventory

    m = shelf["M"]
    cart = guest_cart(client, m.sku, 3)
    inventory.set_on_hand(m.id, 2)  # fewer than the cart wants, after it was filled
    before = published()
    resp = checkout(client, cart)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "out_of_stock"
    assert published() == before  # no order.placed, no stock moved

    m.on_hand = 0
    m.product.name = "Renamed"
    db_session.flush()
    db_session.rollback()
    make_user()  # an unrelated change commits afterwards: nothing of the rolled-back one comes back with it
    db_session.commit()
    assert published() == before


# -- stock -----------------------------------------------------------------------------------------------------
@pytest.fixture
def warehouse(db_session, redis_client):
    cat = make_category("Socks", slug="socks")
    product = make_product(cat, "Sock", slug="sock", sizes=("M",), colours=(), stock=10)
    variant = product.variants[0]
    variant.low_stock_threshold = 3
    db_session.commit()
    return variant


def test_stock_low_fires_once_when_availability_crosses_the_threshold(client, warehouse, db_session):
    manager = make_user(role="manager")
    for on_hand in (5, 3, 2, 8, 1):  # 10 -> 5: no; -> 3: low; -> 2: already low; -> 8: up; -> 1: low again
        resp = send(
            client, "put", f"/api/v1/admin/variants/{warehouse.id}/stock", {"on_hand": on_hand}, **bearer(manager)
        )
        assert resp.status_code == 200
    assert [e["data"]["on_hand"] for e in published("stock.changed")] == [5, 3, 2, 8, 1]
    lows = published("stock.low")
    assert [e["data"]["on_hand"] for e in lows] == [3, 1]
    assert_envelope(lows[0], "stock.low", "variant", warehouse.id)
    assert lows[0]["data"]["threshold"] == 3 and lows[0]["data"]["available"] == 3
    assert published("product.updated") == []  # a stock count is not a catalogue edit


def test_one_stock_event_per_variant_per_transaction_and_none_when_it_ends_where_it_began(warehouse, db_session):
    warehouse.on_hand = 7
    db_session.flush()
    warehouse.on_hand = 6
    db_session.commit()
    assert [e["data"]["on_hand"] for e in published("stock.changed")] == [6]
    warehouse.on_hand = 9
    db_session.flush()
    warehouse.on_hand = 6
    db_session.commit()
    assert len(published("stock.changed")) == 1


def test_concurrent_sales_publish_one_stock_change_each_and_one_low(committed_db, redis_client):
    from shop import create_app
    from shop.inventory import services as inventory
    from tests.conftest import config_for

    shop = create_app(config_for(committed_db))
    with shop.app_context():
        variant = make_product(make_category(), sizes=("M",), stock=10).variants[0]
        variant.low_stock_threshold = 3
        db.session.commit()
        vid = variant.id
    start, sold = threading.Barrier(8), []

    def sell_one():
        with shop.app_context():
            start.wait()
            sold.append(inventory.take_now({vid: 1}))
            db.session.commit()

    threads = [threading.Thread(target=sell_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with shop.app_context():
        changes = published("stock.changed")
        lows = published("stock.low")
        db.engine.dispose()
    assert sold == [True] * 8
    assert sorted(e["data"]["on_hand"] for e in changes) == [2, 3, 4, 5, 6, 7, 8, 9]  # each sale once
    assert [e["data"]["on_hand"] for e in lows] == [3]  # only the sale that crossed 4 -> 3


# -- the "order-mails" consumer group ----------------------------------------------------------------------------
def test_order_mails_are_sent_from_the_order_events_once_each(client, shelf, db_session, redis_client):
    from shop import consumers
    from shop import stream as streams
    from shop.orders import mails as order_mails
    from shop.orders import services as orders
    from shop.payments import services as payments

    assert consumers.load_groups()["order-mails"].handler is order_mails.order_status_mail
    order_id = checkout(client, guest_cart(client, shelf["M"].sku, 2)).get_json()["order"]["id"]
    webhook(client, order_id, "approve")
    orders.transition(order_id, "processing", "staff@example.com")
    orders.transition(order_id, "shipped", "staff@example.com", note="Left the dock")
    orders.transition(order_id, "delivered", "staff@example.com")
    assert not [m for m in ("order.confirmed", "order.shipped", "order.delivered") if mails(m)]  # events first
    assert consumers.drain(["order-mails"]) == 3
    sent = {name: mails(name) for name in ("order.confirmed", "order.shipped", "order.delivered")}
    assert {name: [to for to, _ in got] for name, got in sent.items()} == {name: ["ann@example.com"] for name in sent}
    assert sent["order.confirmed"][0][1]["status"] == "confirmed"  # what it announced, though delivered by now
    assert sent["order.shipped"][0][1]["shipping_note"] == "Left the dock"
    assert sent["order.delivered"][0][1]["total"] == "$48.85"

    # Delivered again (a relay that died before marking its rows): applied once, no second mail.
    again = [(f"order:{order_id}", env) for env in published("order.confirmed", "order.shipped")]
    streams.current().publish(again)
    assert consumers.drain(["order-mails"]) == 0
    assert len(mails("order.confirmed")) == len(mails("order.shipped")) == 1
    # An event older than the group's limit (a long outage, or the group's first start over months of events) is
    # not mailed: the same shipment, announced four days ago under another id.
    from datetime import datetime, timedelta, timezone

    [shipped_event] = published("order.shipped")
    old = {**shipped_event, "id": str(uuid.uuid4()), "occurred_at": (datetime.now(UTC) - timedelta(days=4)).isoformat()}
    streams.current().publish([(f"order:{order_id}", old)])
    assert consumers.drain(["order-mails"]) == 0
    assert len(mails("order.shipped")) == 1

    payments.refund(order_id, 500, "scuffed", "support@example.com")  # partial: payments mails it, with its amount
    assert consumers.drain(["order-mails"]) == 1  # its order.refunded is applied, and mails nothing more
    [(_, partial)] = mails("order.refunded")
    assert partial["refund"] == "$5.00"
    orders.transition(order_id, "returned", "support@example.com")
    payments.refund(order_id, None, "returned", "support@example.com")  # the rest: the order becomes refunded
    assert consumers.drain(["order-mails"]) == 1
    assert [payload.get("refund") for _, payload in mails("order.refunded")] == ["$5.00", None]


# -- the "alerts" consumer group -------------------------------------------------------------------------------
def mails(event_name: str) -> list[tuple]:
    rows = db.session.scalars(
        select(OutboxJob)
        .where(OutboxJob.function == "shop.notifications.jobs.send_notification")
        .order_by(OutboxJob.id)
    )
    return [(row.args[1], row.args[2]) for row in rows if row.args[0] == event_name]


def test_the_alerts_group_mails_active_managers_once_per_stock_low(warehouse, db_session, redis_client):
    from shop import consumers
    from shop.inventory import alerts
    from shop.inventory import services as inventory
    from shop.inventory.jobs import REPORTED_KEY

    boss, deputy = make_user(role="manager"), make_user(role="manager")
    gone = make_user(role="manager")
    gone.is_active_account = False
    make_user(role="warehouse")
    inventory.set_on_hand(warehouse.id, 2)
    [low] = published("stock.low")
    assert "shop.inventory.alerts" in consumers.CONSUMER_MODULES  # `python worker.py events` runs the group
    assert consumers.GROUPS["alerts"].handler is alerts.low_stock_alert
    assert consumers.drain(["alerts"]) == 1  # through the stream: stock.changed is not the group's
    sent = mails("inventory.low_stock")
    assert sorted(to for to, _ in sent) == sorted([boss.email, deputy.email])
    assert sent[0][1]["lines"] == [
        {"sku": warehouse.sku, "product_name": "Sock", "options": "size M", "available": 2, "threshold": 3}
    ]
    assert redis_client.hget(REPORTED_KEY, str(warehouse.id)) == b"low"  # the hourly scan does not list it again
    assert consumers.handle("alerts", low) is False  # redelivered: already had it
    assert consumers.drain(["alerts"]) == 0
    assert consumers.handle("alerts", published("stock.changed")[-1]) is False  # not a type it wants
    assert len(mails("inventory.low_stock")) == 2

    warehouse.product.status = "draft"
    db_session.commit()
    inventory.set_on_hand(warehouse.id, 9)
    inventory.set_on_hand(warehouse.id, 0)
    assert consumers.drain(["alerts"]) == 1
    assert len(mails("inventory.low_stock")) == 2  # nobody can buy a draft: no mail


# -- catalogue ---------------------------------------------------------------------------------------------------
def test_products_created_updated_and_deleted_through_the_shops_paths(client, db_session, redis_client):
    from shop.catalog import services as catalog
    from shop.catalog.models import Product

    manager = make_user(role="manager")
    make_category("Hats", slug="hats")
    resp = send(
        client,
        "post",
        "/api/v1/admin/products",
        {
            "category": "hats",
            "name": "Cap",
            "slug": "cap",
            "status": "active",
            "options": [{"name": "colour", "values": ["Red", "Blue"]}],
            "variants": [
                {"sku": "CAP-RED", "price": 1500, "options": {"colour": "Red"}, "on_hand": 4},
                {"sku": "CAP-BLUE", "price": 1700, "options": {"colour": "Blue"}},
            ],
        },
        **bearer(manager),
    )
    assert resp.status_code == 201, resp.get_json()
    product = db_session.scalar(select(Product).where(Product.slug == "cap"))
    [created] = published("product.created")
    assert_envelope(created, "product.created", "product", product.id)
    ids = {v.sku: v.id for v in product.variants}
    assert created["data"] == {
        "product_id": product.id,
        "slug": "cap",
        "name": "Cap",
        "status": "active",
        "price_min": 1500,
        "currency": "USD",
        "variants": [
            {"id": ids["CAP-RED"], "sku": "CAP-RED", "price": 1500},
            {"id": ids["CAP-BLUE"], "sku": "CAP-BLUE", "price": 1700},
        ],
    }
    assert published("stock.changed") == []  # a new variant's opening stock is not a change

    product.name = "Baseball cap"
    catalog.add_variant_matrix(product, [("colour", ["Red", "Blue", "Green"])], price_amount=1900, sku_prefix="CAP")
    db_session.commit()  # two kinds of change in one transaction: one event
    [updated] = published("product.updated")
    assert updated["data"]["name"] == "Baseball cap"
    assert [v["sku"] for v in updated["data"]["variants"]] == ["CAP-RED", "CAP-BLUE", "CAP-GREEN"]

    db_session.delete(product)  # as the back-office's delete does
    db_session.commit()
    [deleted] = published("product.deleted")
    assert_envelope(deleted, "product.deleted", "product", product.id)
    assert deleted["data"] == {"product_id": product.id, "slug": "cap"}
    assert len(published("product.updated")) == 1 and published("stock.changed") == []


def test_seeded_products_each_publish_one_product_event(db_session, redis_client):
    from shop.catalog.models import Product, Variant
    from shop.catalog.seed import seed_demo

    seed_demo(4, echo=lambda *a, **k: None)
    products = published("product.created")
    assert published("product.updated") == []
    ids = db_session.scalars(select(Product.id).order_by(Product.id)).all()
    assert sorted(int(e["aggregate"]["id"]) for e in products) == ids
    for env in products:
        skus = db_session.scalars(select(Variant.sku).where(Variant.product_id == env["data"]["product_id"])).all()
        assert sorted(v["sku"] for v in env["data"]["variants"]) == sorted(skus)


# -- customers -----------------------------------------------------------------------------------------------------
def test_a_shopper_signing_up_publishes_customer_created_and_staff_do_not(client, db_session, redis_client):
    from shop.accounts.services import create_staff

    resp = send(
        client,
        "post",
        "/api/v1/auth/register",
        {"email": "newbie@example.com", "password": "correct horse battery", "name": "New Bie"},
    )
    assert resp.status_code == 201, resp.get_json()
    [env] = published("customer.created")
    customer_id = resp.get_json()["id"]
    assert_envelope(env, "customer.created", "customer", customer_id)
    assert env["data"]["customer_id"] == customer_id and env["data"]["created_at"].endswith("+00:00")
    assert "newbie" not in json.dumps(env) and "Bie" not in json.dumps(env)
    create_staff("picker@example.com", "warehouse", "correct horse battery")
    assert len(published("customer.created")) == 1


def test_deleting_a_product_in_the_back_office_removes_it_and_publishes_product_deleted(app, db_session, redis_client):
    """The back-office's delete (Flask-Admin) goes through the audit hook, which once read a deferred column of the
    row being deleted and failed the delete."""
    from shop.catalog.models import Product
    from tests.integration.test_permissions import as_user, csrf_token

    category = make_category()
    product = make_product(category, name="Old mug", slug="old-mug", sizes=("One",))
    staff = make_user(email="cat@example.com", role="manager")
    db_session.commit()
    product_id = product.id
    client = as_user(app, staff)
    resp = client.post("/admin/products/delete/", data={"csrf_token": csrf_token(client), "id": product_id})
    assert resp.status_code == 302
    db_session.expunge_all()
    assert db_session.get(Product, product_id) is None
    [deleted] = published("product.deleted")
    assert deleted["data"] == {"product_id": product_id, "slug": "old-mug"}
