"""Every order state move under simultaneous requests, over real HTTP and real commits (issue 9, item 1).

For each move, requests released together by a barrier: exactly one wins, the others get 409 and
change nothing, the move writes one event, and stock (on hand, reserved) ends exact. The waiters
must see the status the winner committed, not the copy of the order they read before the lock.

Concurrent checkouts of one cart are covered in test_buying_concurrency (the same checkout sent
many times at once makes one order), expiry racing payment there too.
"""

import os
import re
import threading
import uuid

import psycopg
import pytest
import requests
from redis import Redis

from tests.conftest import LiveServer, config_for
from tests.e2e.test_accounts_live import all_at_once
from tests.e2e.test_buying_concurrency import (
    checkout,
    deliver_success,
    expire_now,
    new_cart_with,
    post,
    refund_jobs,
    stock,
)

STOCK, UNITS = 30, 3
STAFF = ("warehouse", "support", "manager")


@pytest.fixture
def shop(committed_db):
    """A live shop with one SKU (30 on hand) and staff of three roles holding API tokens."""
    from shop import create_app
    from shop.accounts.tokens import issue_pair
    from shop.extensions import db
    from tests.factories import make_category, make_product, make_user

    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    app = create_app(config_for(committed_db))
    with app.app_context():
        product = make_product(
            make_category("Tees", slug="tees"),
            "Plain Tee",
            slug="plain-tee",
            sizes=("M",),
            colours=("Blue",),
            price=2000,
            stock=STOCK,
        )
        staff = {role: make_user(f"{role}@example.com", role=role) for role in STAFF}
        db.session.commit()
        tokens = {role: issue_pair(user)["access_token"] for role, user in staff.items()}
        sku, variant_id = product.variants[0].sku, product.variants[0].id
    with LiveServer(app) as server:
        server.app, server.database_url, server.sku, server.variant_id = app, committed_db, sku, variant_id
        server.tokens = tokens
        yield server


def place(server, *, paid=True) -> dict:
    """A guest order of UNITS units through the real checkout, paid by the signed provider event."""
    status, placed = checkout(server, new_cart_with(server, UNITS))
    assert status == 201, placed
    if paid:
        assert deliver_success(server, placed["order"]["id"]) == 200
    return placed["order"]


def cancel(server, order):
    return post(server, f"/api/v1/orders/{order['id']}/cancel", {}, {"X-Order-Token": order["access_token"]})


def staff_post(server, role, path, body, **headers):
    return post(server, path, body, {"Authorization": f"Bearer {server.tokens[role]}", **headers})


def move(server, order_id, target, role="manager"):
    return staff_post(server, role, f"/api/v1/admin/orders/{order_id}/transition", {"status": target})


def db_row(server, sql, *args):
    with psycopg.connect(server.database_url) as conn:
        return conn.execute(sql, args).fetchone()


def status_of(server, order_id) -> str:
    return db_row(server, 'SELECT status FROM "order" WHERE id = %s', order_id)[0]


def events_to(server, order_id, status) -> int:
    """How many moves into `status` the order's history records (a note that keeps the status is no move)."""
    return db_row(
        server,
        "SELECT count(*) FROM order_event WHERE order_id = %s AND to_status = %s "
        "AND from_status IS DISTINCT FROM to_status",
        order_id,
        status,
    )[0]


def refunds(server, order_id):
    """(succeeded refund rows, their sum, payment.refunded_amount, payment.amount)."""
    return db_row(
        server,
        "SELECT count(r.id) FILTER (WHERE r.status = 'succeeded'), "
        "coalesce(sum(r.amount) FILTER (WHERE r.status = 'succeeded'), 0), p.refunded_amount, "
        "p.amount FROM payment p LEFT JOIN refund r ON r.payment_id = p.id "
        "WHERE p.order_id = %s GROUP BY p.id",
        order_id,
    )


def run_refund_jobs(server) -> list[str]:
    """Run the queued refund jobs' functions directly, one after another, as a worker would."""
    with server.app.app_context():
        return [job.func(*job.args, **job.kwargs) for job in refund_jobs()]


def one_winner(results, winner=200, codes=("invalid_transition",)):
    """Exactly one `winner` status; every other answer a 409 with one of `codes`."""
    statuses = sorted(status for status, _ in results)
    assert statuses == [winner] + [409] * (len(results) - 1), results
    assert {body["error"]["code"] for status, body in results if status == 409} <= set(codes), results


# -- customers cancelling -------------------------------------------------------------------------
def test_simultaneous_api_cancels_of_a_paid_order_put_the_units_back_once_and_refund_once(shop):
    order = place(shop)
    assert stock(shop) == (STOCK - UNITS, 0)
    results = all_at_once(8, lambda: cancel(shop, order))
    # answers, cancel events, (on hand, reserved), refund jobs: all at once, so a failure shows the whole damage
    seen = (
        sorted(status for status, _ in results),
        events_to(shop, order["id"], "cancelled"),
        stock(shop),
        len(refund_jobs()),
    )
    assert seen == ([200] + [409] * 7, 1, (STOCK, 0), 1)  # stock not STOCK + 7 * UNITS
    one_winner(results)
    assert [body["status"] for status, body in results if status == 200] == ["cancelled"]
    assert run_refund_jobs(shop) == ["refunded"]
    assert refunds(shop, order["id"]) == (
        1,
        order["total"]["amount"],
        order["total"]["amount"],
        order["total"]["amount"],
    )


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def test_simultaneous_storefront_cancel_forms_cancel_once(shop):
    order = place(shop)
    tabs = []
    for _ in range(6):  # the guest's order page open in six browsers, each with its own form token
        tab = requests.Session()
        page = tab.get(f"{shop.url}/orders/{order['id']}", params={"token": order["access_token"]}, timeout=30)
        assert page.status_code == 200 and "Cancel this order" in page.text
        tabs.append((tab, csrf_of(page.text)))
    it, lock = iter(tabs), threading.Lock()

    def submit():
        with lock:
            tab, token = next(it)
        return tab.post(f"{shop.url}/orders/{order['id']}/cancel", data={"csrf_token": token}, timeout=60)

    pages = all_at_once(6, submit)
    assert all(p.status_code == 200 for p in pages)  # each followed its redirect back to the order page
    told = [("Your order is cancelled." in p.text, "can no longer be cancelled" in p.text) for p in pages]
    assert sorted(told) == [(False, True)] * 5 + [(True, False)], told
    assert events_to(shop, order["id"], "cancelled") == 1
    assert stock(shop) == (STOCK, 0)
    assert len(refund_jobs()) == 1


def test_simultaneous_cancels_of_an_unpaid_order_release_its_hold_once(shop):
    order = place(shop, paid=False)
    assert stock(shop) == (STOCK, UNITS)
    one_winner(all_at_once(6, lambda: cancel(shop, order)))
    assert events_to(shop, order["id"], "cancelled") == 1
    assert stock(shop) == (STOCK, 0)
    assert (
        db_row(shop, "SELECT count(*) FROM reservation WHERE order_id = %s AND status = 'released'", order["id"])[0]
        == 1
    )
    assert refund_jobs() == []


# -- staff moves ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "before,target,role,on_hand",
    [
        ((), "processing", "warehouse", STOCK - UNITS),
        (("processing",), "shipped", "warehouse", STOCK - UNITS),
        (("processing", "shipped"), "delivered", "warehouse", STOCK - UNITS),
        (("processing",), "cancelled", "support", STOCK),
    ],
)
def test_simultaneous_staff_moves_have_one_winner(shop, before, target, role, on_hand):
    order_id = place(shop)["id"]
    for step in before:
        assert move(shop, order_id, step)[0] == 200
    one_winner(all_at_once(6, lambda: move(shop, order_id, target, role)))
    assert status_of(shop, order_id) == target
    assert events_to(shop, order_id, target) == 1
    assert stock(shop) == (on_hand, 0)
    assert len(refund_jobs()) == (1 if target == "cancelled" else 0)


def test_simultaneous_staff_refunds_never_exceed_the_payment(shop):
    order = place(shop)
    total = order["total"]["amount"]
    path = f"/api/v1/admin/orders/{order['id']}/refunds"
    results = all_at_once(
        6,
        lambda: staff_post(
            shop, "support", path, {"amount": total, "reason": "asked"}, **{"Idempotency-Key": str(uuid.uuid4())}
        ),
    )
    one_winner(results, winner=201, codes=("refund_pending", "nothing_to_refund"))
    assert refunds(shop, order["id"]) == (1, total, total, total)


# -- a cancel racing the system -------------------------------------------------------------------
def together(*fns):
    """Run each function in its own thread, released together; their results in the same order."""
    it, lock = iter(enumerate(fns)), threading.Lock()

    def run():
        with lock:
            i, fn = next(it)
        return i, fn()

    return [result for _, result in sorted(all_at_once(len(fns), run), key=lambda r: r[0])]


@pytest.mark.parametrize("attempt", range(3))
def test_a_cancel_racing_the_payment_ends_cancelled_with_the_stock_back_and_one_refund(shop, attempt):
    order = place(shop, paid=False)
    paid, cancelled = together(lambda: deliver_success(shop, order["id"]), lambda: cancel(shop, order))
    assert paid == 200 and cancelled[0] == 200, cancelled  # pending and confirmed orders may both be cancelled
    assert status_of(shop, order["id"]) == "cancelled"
    assert events_to(shop, order["id"], "cancelled") == 1
    assert stock(shop) == (STOCK, 0)  # whether the payment took the hold first or came after the cancel
    assert len(refund_jobs()) == 1  # the money goes back either way


@pytest.mark.parametrize("attempt", range(3))
def test_reservation_expiry_racing_a_cancel_cancels_once(shop, attempt):
    order = place(shop, paid=False)
    expired, (status, body) = together(lambda: expire_now(shop), lambda: cancel(shop, order))
    assert (expired, status) in ((1, 409), (0, 200)), (expired, status, body)
    assert status_of(shop, order["id"]) == "cancelled"
    assert events_to(shop, order["id"], "cancelled") == 1
    assert stock(shop) == (STOCK, 0)
    assert refund_jobs() == []
