"""The sales read model (issue 13, CQRS): the sales report and the dashboard read `sales_order`, a projection the
"sales" consumer group keeps from the order.* events, and it agrees with the report computed from the order tables,
after a replay too, whatever order and however often the events arrive.

Orders are placed through the real checkout, paid through the test gateway's success, moved by orders.services,
refunded by payments.services; their events go outbox -> relay -> Redis stream -> consumer group (consumers.drain).
"""

from __future__ import annotations

import queue
import random
import re
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, update

from shop.extensions import db
from shop.orders.models import Order
from shop.outbox import OutboxJob
from shop.payments.models import Payment
from shop.reports import services as reports
from shop.reports.models import SalesOrder
from tests.factories import make_category, make_product, make_user
from tests.integration.test_jobs import work
from tests.integration.test_order_links import buy

UTC = UTC


@pytest.fixture
def shelf(db_session, redis_client):
    cat = make_category("Tees", slug="tees")
    tee = make_product(cat, "Tee", slug="tee", sizes=("M",), colours=("Red",), price=2000, stock=200)
    analyst = make_user("analyst@example.com", role="analyst")
    db_session.commit()
    return {"variant": tee.variants[0], "analyst": analyst}


def consume() -> int:
    """Deliver every pending event to the "sales" group, as `python worker.py relay` and `events` do."""
    from shop import consumers

    return consumers.drain(["sales"])


def project(*orders_) -> None:
    """Orders written straight to the tables (test_backoffice_orders.make_order) into the read model: the event of
    their status that the real flow would have published, consumed."""
    from shop.orders import services as orders

    for order in orders_:
        orders.publish_event(order, orders.STATUS_EVENT.get(order.status, "order.placed"))
    consume()


def order_events(order_id: int | None = None) -> list[dict]:
    """The envelopes of the order.* events recorded in the outbox (all, or one order's), in the order written."""
    envelopes = db.session.scalars(
        select(OutboxJob.kwargs)
        .where(OutboxJob.kind == "event", OutboxJob.function.like("order.%"))
        .order_by(OutboxJob.id)
    ).all()
    return [e for e in envelopes if order_id is None or e["data"]["order_id"] == order_id]


def pay(order_id: int) -> None:
    from shop.payments import services as payments

    payment = db.session.scalar(select(Payment).where(Payment.order_id == order_id))
    assert (
        payments.on_succeeded({"id": payment.provider_id, "amount": payment.amount}).startswith("confirmed")
        or db.session.get(Order, order_id).status == "confirmed"
    )
    db.session.commit()


def move(order_id: int, *targets: str) -> None:
    from shop.orders import services as orders

    for target in targets:
        orders.transition(order_id, target, "staff@example.com")


def refund(order_id: int, amount: int | None) -> None:
    from shop.payments import services as payments

    payments.refund(order_id, amount, "scuffed", "support@example.com")


def placed_days_ago(client, shelf, days: int, quantity: int = 1) -> int:
    """An order placed through checkout, then dated `days` back (as if placed then; before anything else
    happens to it, so its later events carry that date)."""
    order_id = buy(client, shelf["variant"].sku, quantity)["order"]["id"]
    if days:
        db.session.execute(
            update(Order).where(Order.id == order_id).values(created_at=Order.created_at - timedelta(days=days))
        )
        db.session.commit()
    return order_id


def shop_history(client, shelf, redis_client) -> dict:
    """Orders over several days in every state the report tells apart; returns their ids by name."""
    o = {}
    o["delivered"] = placed_days_ago(client, shelf, 0, 2)
    pay(o["delivered"])
    move(o["delivered"], "processing", "shipped", "delivered")
    o["partly_refunded"] = placed_days_ago(client, shelf, 0)
    pay(o["partly_refunded"])
    refund(o["partly_refunded"], 500)
    refund(o["partly_refunded"], 250)
    o["returned_refunded"] = placed_days_ago(client, shelf, 1, 3)
    pay(o["returned_refunded"])
    move(o["returned_refunded"], "processing", "shipped", "delivered", "returned")
    refund(o["returned_refunded"], None)  # all of it: the order becomes refunded
    o["unpaid_cancelled"] = placed_days_ago(client, shelf, 1)
    move(o["unpaid_cancelled"], "cancelled")
    o["paid_cancelled"] = placed_days_ago(client, shelf, 3, 2)
    pay(o["paid_cancelled"])
    move(o["paid_cancelled"], "cancelled")
    work(redis_client, "default")  # the refund job the cancellation queued
    o["pending"] = placed_days_ago(client, shelf, 3)
    o["long_ago"] = placed_days_ago(client, shelf, 40)
    pay(o["long_ago"])
    db.session.expire_all()
    return o


def report(start, end) -> tuple[dict, dict]:
    return reports.sales_from_read_model(start, end), reports.sales_from_orders(start, end)


def api_report(app, analyst, query: str = "") -> dict:
    from tests.integration.test_permissions import token_for

    resp = app.test_client().get(
        f"/api/v1/admin/reports/sales{query}", headers={"Authorization": f"Bearer {token_for(analyst)}"}
    )
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


# -- the report from the read model ---------------------------------------------------------------------------------
def test_the_report_from_the_read_model_equals_the_one_from_the_order_tables(app, client, shelf, redis_client):
    o = shop_history(client, shelf, redis_client)
    today = datetime.now(UTC).date()
    before = api_report(app, shelf["analyst"])
    assert before["totals"] == [] and before["days"] == []  # nothing consumed yet: the API reads the read model

    assert consume() == len(order_events())
    totals = {name: db.session.get(Order, oid).total for name, oid in o.items()}
    for start, end in [
        (today - timedelta(days=29), today),
        (today - timedelta(days=60), today),
        (today - timedelta(days=1), today - timedelta(days=1)),
        (today, today),
        (today - timedelta(days=2), today - timedelta(days=2)),
    ]:
        mine, theirs = report(start, end)
        assert mine == theirs, (start, end)

    body = api_report(app, shelf["analyst"])
    assert body == reports.sales_from_orders(today - timedelta(days=29), today)
    [usd] = body["totals"]
    sold = ("delivered", "partly_refunded", "returned_refunded")
    assert usd["orders"] == 3 and usd["revenue"]["amount"] == sum(totals[k] for k in sold)
    refunded = 750 + totals["returned_refunded"] + totals["paid_cancelled"]
    assert usd["refunded"] == {"amount": refunded, "currency": "USD"}
    assert usd["net"]["amount"] == usd["revenue"]["amount"] - refunded
    assert [(d["date"], d["orders"]) for d in body["days"]] == [
        ((today - timedelta(days=1)).isoformat(), 1),
        (today.isoformat(), 2),
    ]
    wide = api_report(app, shelf["analyst"], f"?from={today - timedelta(days=60)}&to={today}")
    assert wide["totals"][0]["orders"] == 4  # the order of 40 days ago
    rows = {r.order_id: r for r in db.session.scalars(select(SalesOrder))}
    assert (rows[o["returned_refunded"]].status, rows[o["paid_cancelled"]].sold) == ("refunded", False)


def test_the_dashboard_counts_todays_sold_orders_from_the_read_model(app, client, shelf, redis_client):
    from tests.integration.test_permissions import as_user

    o = shop_history(client, shelf, redis_client)
    consume()
    html = as_user(app, shelf["analyst"]).get("/admin/").get_data(as_text=True)
    today = db.session.get(Order, o["delivered"]).total + db.session.get(Order, o["partly_refunded"]).total
    assert "2 orders" in html and f"${today / 100:,.2f}" in html


# -- replay ---------------------------------------------------------------------------------------------------------
def test_replay_rebuilds_the_read_model_from_the_stream(app, client, shelf, redis_client):
    shop_history(client, shelf, redis_client)
    consume()
    today = datetime.now(UTC).date()
    wide = (today - timedelta(days=60), today)
    right = reports.sales_from_orders(*wide)
    # The projection goes wrong (a bug, a restore): rows lost, amounts off.
    db.session.execute(update(SalesOrder).where(SalesOrder.day >= today - timedelta(days=1)).values(total=1))
    old = db.session.scalar(select(SalesOrder.order_id).where(SalesOrder.day < today - timedelta(days=30)))
    db.session.execute(SalesOrder.__table__.delete().where(SalesOrder.day == today - timedelta(days=3)))
    db.session.commit()
    assert reports.sales_from_read_model(*wide) != right

    runner = app.test_cli_runner()
    since = (today - timedelta(days=3)).isoformat()
    result = runner.invoke(args=["events", "replay", "--from", since])
    assert result.exit_code == 0, result.output
    assert "order rows deleted" in result.output and "matches the order tables" in result.output
    assert reports.sales_from_read_model(*wide) == right
    assert db.session.get(SalesOrder, old) is not None  # created before --from: kept as it was

    db.session.execute(SalesOrder.__table__.delete())
    db.session.commit()
    result = runner.invoke(args=["events", "replay", "--from", "start"])
    assert result.exit_code == 0, result.output
    assert reports.sales_from_read_model(*wide) == right
    again = runner.invoke(args=["events", "replay", "--from", "start"])  # replaying twice changes nothing
    assert again.exit_code == 0 and reports.sales_from_read_model(*wide) == right


def test_replay_refuses_a_bad_from_and_changes_nothing(app, client, shelf, redis_client):
    order_id = placed_days_ago(client, shelf, 0)
    pay(order_id)
    consume()
    before = db.session.get(SalesOrder, order_id).status
    result = app.test_cli_runner().invoke(args=["events", "replay", "--from", "yesterday"])
    assert result.exit_code == 2 and "ISO date" in result.output
    assert db.session.get(SalesOrder, order_id).status == before == "confirmed"


# -- redelivery and out-of-order delivery ---------------------------------------------------------------------------
def test_redelivered_and_reordered_events_leave_the_projection_right(app, client, shelf, redis_client):
    from shop import consumers

    order_id = placed_days_ago(client, shelf, 0, 2)
    pay(order_id)
    refund(order_id, 300)
    move(order_id, "processing", "shipped", "delivered", "returned")
    refund(order_id, None)
    envelopes = order_events(order_id)
    assert [e["type"] for e in envelopes][0] == "order.placed" and len(envelopes) >= 5
    # The newest first, then every one again: the later snapshot stays, each event is applied once.
    applied = [consumers.handle("sales", e) for e in reversed(envelopes)]
    applied += [consumers.handle("sales", e) for e in envelopes]
    assert applied.count(True) == len(envelopes)
    row = db.session.get(SalesOrder, order_id)
    order = db.session.get(Order, order_id)
    assert (row.status, row.sold, row.total, row.refunded) == ("refunded", True, order.total, order.total)
    assert row.event_id == envelopes[-1]["id"]
    # Even an older snapshot applied after the claim was forgotten (a replay) leaves the newer one.
    reports.apply(envelopes[1])
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(SalesOrder, order_id).event_id == envelopes[-1]["id"]
    today = datetime.now(UTC).date()
    assert reports.sales_from_read_model(today, today) == reports.sales_from_orders(today, today)


def test_an_event_without_a_readable_snapshot_is_skipped_not_retried_for_ever(app, db_session, caplog):
    from shop import consumers
    from shop.events import envelope

    broken = envelope("order.confirmed", "order", 424242, {"order_id": 424242})
    assert consumers.handle("sales", broken) is True  # claimed: never delivered again
    assert db_session.get(SalesOrder, 424242) is None
    assert "no readable order snapshot" in caplog.text


# -- concurrency ----------------------------------------------------------------------------------------------------
def test_consumers_applying_one_orders_events_at_once_keep_the_latest_exactly_once(committed_db):
    """Four consumers of the group apply every event of 12 orders twice, shuffled, at once (as Redis Streams
    consumers of one group may): each event is applied exactly once, and each order keeps its latest snapshot."""
    from shop import consumers, create_app
    from tests.conftest import config_for

    app = create_app(config_for(committed_db))
    with app.app_context():
        cat = make_category("Tees", slug="tees")
        tee = make_product(cat, "Tee", slug="tee", sizes=("M",), colours=("Red",), price=2000, stock=100)
        variant = tee.variants[0]
        db.session.commit()
        client = app.test_client()
        ids = []
        for n in range(12):
            order_id = buy(client, variant.sku, 1 + n % 3)["order"]["id"]
            ids.append(order_id)
            pay(order_id)
            if n % 3 == 0:
                move(order_id, "processing", "shipped")
            elif n % 3 == 1:
                refund(order_id, 100 + n)
            else:
                move(order_id, "cancelled")
        envelopes = order_events()
        expected = {}
        for e in envelopes:
            expected[e["data"]["order_id"]] = e  # the last written per order is its latest
        deliveries = envelopes * 2
        random.Random(13).shuffle(deliveries)
        db.session.remove()

    work_queue: queue.Queue = queue.Queue()
    for e in deliveries:
        work_queue.put(e)
    applied, errors = [], []
    start = threading.Barrier(4)

    def consumer_thread():
        with app.app_context():
            start.wait()
            while True:
                try:
                    e = work_queue.get_nowait()
                except queue.Empty:
                    return
                try:
                    applied.append(consumers.handle("sales", e))
                except Exception as exc:  # noqa: BLE001 - collected for the assertion
                    errors.append(exc)

    threads = [threading.Thread(target=consumer_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert applied.count(True) == len(envelopes) and applied.count(False) == len(envelopes)
    with app.app_context():
        rows = {r.order_id: r for r in db.session.scalars(select(SalesOrder))}
        assert set(rows) == set(ids)
        for order_id, e in expected.items():
            assert (rows[order_id].event_id, rows[order_id].status, rows[order_id].refunded) == (
                e["id"],
                e["data"]["status"],
                e["data"]["refunded"],
            )
        today = datetime.now(UTC).date()
        assert reports.sales_from_read_model(today, today) == reports.sales_from_orders(today, today)
        db.session.remove()
        db.engine.dispose()


def test_the_report_keeps_its_validation(app, shelf):
    from tests.integration.test_permissions import token_for

    h = {"Authorization": f"Bearer {token_for(shelf['analyst'])}"}
    c = app.test_client()
    assert c.get("/api/v1/admin/reports/sales?from=2026-13-01", headers=h).status_code == 422
    resp = c.get("/api/v1/admin/reports/sales?from=2026-02-01&to=2026-01-01", headers=h)
    assert resp.status_code == 422 and resp.get_json()["error"]["details"]["fields"]["from"]


def test_events_status_shows_the_outbox_backlog_and_the_groups(app, client, shelf, redis_client):
    order_id = placed_days_ago(client, shelf, 0)
    pay(order_id)
    runner = app.test_cli_runner()
    waiting = db.session.scalar(
        select(func.count()).select_from(OutboxJob).where(OutboxJob.kind == "event", OutboxJob.dispatched_at.is_(None))
    )
    before = runner.invoke(args=["events", "status"])
    assert before.exit_code == 0, before.output
    assert re.search(rf"^  event +{waiting} ", before.output, re.M), before.output
    consume()
    after = runner.invoke(args=["events", "status"])
    assert after.exit_code == 0 and not re.search(r"^  event ", after.output, re.M), after.output
    assert re.search(rf"^  sales +{len(order_events(order_id))} ", after.output, re.M), after.output


def test_replay_keeps_the_orders_the_stream_no_longer_holds(app, client, shelf, redis_client):
    """A stream trimmed past an order (EVENT_STREAM_MAXLEN, Kafka's retention) cannot rebuild it: replay leaves
    its row alone instead of deleting what it cannot put back."""
    order_id = placed_days_ago(client, shelf, 0)
    pay(order_id)
    consume()
    redis_client.delete(app.config["EVENT_STREAM_TOPIC"])  # every event of it trimmed away
    today = datetime.now(UTC).date()
    right = reports.sales_from_orders(today, today)
    result = app.test_cli_runner().invoke(args=["events", "replay", "--from", "start"])
    assert result.exit_code == 0, result.output
    assert db.session.get(SalesOrder, order_id) is not None
    assert reports.sales_from_read_model(today, today) == right and right["totals"][0]["orders"] == 1


def test_the_migration_fills_the_read_model_with_the_orders_from_before_it():
    """Orders placed before the event backbone have no events: migration 0015 takes them from the order tables, so
    the report shows last month the day after the upgrade."""
    import os

    import psycopg
    from flask_migrate import upgrade

    from shop import create_app
    from tests.conftest import _server_url, config_for
    from tests.integration.test_backoffice_orders import make_order

    base, name = os.environ["DATABASE_URL"], "shop_read_model_upgrade"
    with psycopg.connect(_server_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    shop = create_app(config_for(_server_url(base, name)))
    with shop.app_context():
        upgrade(revision="0014_partner_webhooks")
        product = make_product(make_category("Tops", slug="tops"), "Tee", slug="tee", stock=10)
        world = {"variant": product.variants[0], "customer": make_user("shopper@example.com")}
        days_ago = datetime.now(UTC) - timedelta(days=12)
        kept = [
            make_order(db.session, world, "delivered", total=5500, created_at=days_ago),
            make_order(db.session, world, "confirmed", total=2000),
            make_order(db.session, world, "cancelled", total=7700),
            make_order(db.session, world, "pending", paid=False, total=900),
        ]
        db.session.execute(update(Payment).where(Payment.order_id == kept[0].id).values(refunded_amount=1500))
        db.session.commit()
        upgrade()
        today = datetime.now(UTC).date()
        month = (today - timedelta(days=29), today)
        assert db.session.scalar(select(func.count()).select_from(SalesOrder)) == 4
        got, right = reports.sales_from_read_model(*month), reports.sales_from_orders(*month)
        assert got == right
        assert got["totals"][0]["orders"] == 2 and got["totals"][0]["refunded"]["amount"] == 1500
        db.session.remove()
        db.engine.dispose()
    with psycopg.connect(_server_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
