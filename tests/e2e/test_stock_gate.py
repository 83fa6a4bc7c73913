"""The stock gate (shop/inventory/gate.py) on a live shop with real commits: buyers of a sold-out variant are refused
without waiting for its row lock, the gate never sells what PostgreSQL does not have, and every unit given back
(a cancelled order, a stock count raised, a flag whose removal was lost) is sold again."""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest
from redis import Redis
from sqlalchemy.engine import make_url

from tests.e2e.test_accounts_live import all_at_once
from tests.e2e.test_buying_concurrency import ADDRESS, _next, checkout, hot_item_shop, new_cart_with, post, stock


@pytest.fixture
def shop(committed_db):
    with hot_item_shop(committed_db, STOCK_GATE_SECONDS=2) as server:
        server.flag = f"stock:soldout:{make_url(committed_db).database}:{server.variant_id}"
        server.redis = Redis.from_url(os.environ["REDIS_URL"])
        yield server


def sell_all(server, n=7) -> list[dict]:
    orders = []
    for _ in range(n):
        status, body = checkout(server, new_cart_with(server))
        assert status == 201, body
        orders.append(body["order"])
    return orders


def cancel(server, order) -> None:
    status, body = post(server, f"/api/v1/orders/{order['id']}/cancel", {}, {"X-Order-Token": order["access_token"]})
    assert status == 200, body


class RowLock:
    """The variant's row held FOR NO KEY UPDATE by another connection, as a checkout holds it."""

    def __init__(self, server):
        self.conn = psycopg.connect(server.database_url)
        self.conn.execute("SELECT id FROM variant WHERE id = %s FOR NO KEY UPDATE", (server.variant_id,))

    def release(self):
        self.conn.rollback()
        self.conn.close()


def in_background(fn):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("answer", fn()), daemon=True)
    thread.start()
    return thread, result


def test_a_sold_out_variant_is_refused_without_waiting_for_its_row(shop):
    late, later = new_cart_with(shop), new_cart_with(shop)  # filled while there was stock
    sell_all(shop)
    assert shop.redis.exists(shop.flag)  # the seventh sale's commit left 0 available: the gate closed
    lock = RowLock(shop)  # a checkout in flight holds the row
    try:
        thread, result = in_background(lambda: checkout(shop, late))
        thread.join(30)
        assert not thread.is_alive(), "the sold-out buyer waited for the row lock"
        status, body = result["answer"]
        assert status == 409 and body["error"]["code"] == "out_of_stock"
        assert body["error"]["details"] == {"skus": [shop.sku], "available": {shop.sku: 0}}
        # Without the flag the same buyer queues behind the lock, and learns the same thing once it is free.
        shop.redis.delete(shop.flag)
        thread, result = in_background(lambda: checkout(shop, later))
        thread.join(1.5)
        assert thread.is_alive()
    finally:
        lock.release()
    thread.join(30)
    assert result["answer"][0] == 409 and shop.redis.exists(shop.flag)  # and it closed the gate again
    assert stock(shop) == (7, 7)


def test_units_given_back_are_sold_again_at_once(shop):
    waiting = [new_cart_with(shop) for _ in range(6)]  # filled while there was stock
    orders = sell_all(shop)
    assert checkout(shop, waiting[0])[0] == 409
    cancel(shop, orders[0])  # its hold released: the commit opens the gate
    assert not shop.redis.exists(shop.flag)
    assert checkout(shop, waiting[1])[0] == 201
    assert checkout(shop, waiting[2])[0] == 409
    from shop.extensions import db
    from shop.inventory.services import set_on_hand

    with shop.app.app_context():
        set_on_hand(shop.variant_id, 9)  # a stock count: two more on the shelf
        db.session.remove()
    assert [checkout(shop, cart)[0] for cart in waiting[3:]] == [201, 201, 409]
    assert stock(shop) == (9, 9)


def test_a_flag_whose_removal_was_lost_lapses(shop):
    shop.redis.set(shop.flag, 1, ex=2)  # as if the commit that freed units could not reach Redis
    assert checkout(shop, new_cart_with(shop))[0] == 409  # wrongly refused, for at most STOCK_GATE_SECONDS
    time.sleep(2.2)
    assert checkout(shop, new_cart_with(shop))[0] == 201


def test_two_waves_of_buyers_take_exactly_the_stock_each_time(shop):
    """60 buyers at once for 7 units: 7 orders, 53 refusals, never more; the 7 cancelled, 60 more buyers at once
    take exactly the 7 again: the gate neither oversells nor keeps sellable units off sale."""
    for wave in (1, 2):
        carts = [new_cart_with(shop) for _ in range(60)]
        results = all_at_once(60, lambda c=iter(carts), lock=threading.Lock(): checkout(shop, _next(c, lock)))
        statuses = sorted(status for status, _ in results)
        assert statuses.count(201) == 7 and statuses.count(409) == 53, (wave, statuses)
        assert stock(shop) == (7, 7)
        if wave == 1:
            for status, body in results:
                if status == 201:
                    cancel(shop, body["order"])
            assert stock(shop) == (7, 0)


def stored_answers(server, cart) -> list[tuple]:
    """The Idempotency-Key rows of this guest cart's checkouts: (status_code, error code)."""
    with psycopg.connect(server.database_url) as conn:
        return conn.execute(
            "SELECT status_code, response->'error'->>'code' FROM idempotency_key WHERE scope = %s",
            (f"checkout:{cart['token'][:40]}",),
        ).fetchall()


def orders_of(server) -> int:
    with psycopg.connect(server.database_url) as conn:
        return conn.execute("SELECT count(*) FROM order_line WHERE variant_id = %s", (server.variant_id,)).fetchone()[0]


def test_a_refusal_by_the_gate_is_the_keys_answer_like_any_refusal(shop):
    late = new_cart_with(shop)
    orders = sell_all(shop)
    status, first = checkout(shop, late, key="flash-key-0001")
    assert status == 409 and first["error"]["code"] == "out_of_stock"
    assert stored_answers(shop, late) == [(409, "out_of_stock")]
    cancel(shop, orders[0])  # a unit on sale again
    # The same request again gets its first answer, and buys nothing; a new key is a new request, which buys.
    assert checkout(shop, late, key="flash-key-0001") == (409, first)
    assert orders_of(shop) == 7
    status, body = post(
        shop,
        "/api/v1/checkout",
        {"cart_id": late["id"], "email": "someone.else@example.com", "shipping_address": ADDRESS},
        {"X-Cart-Token": late["token"], "Idempotency-Key": "flash-key-0001"},
    )
    assert status == 422 and body["error"]["code"] == "idempotency_key_reused"
    assert checkout(shop, late, key="flash-key-0002")[0] == 201
    assert orders_of(shop) == 8


def test_copies_of_a_refused_checkout_at_once_store_one_answer_and_never_step_past_a_copy_at_work(shop):
    late = new_cart_with(shop)
    sell_all(shop)
    # A copy of the request already at work holds the key's liveness lock (shop.idempotency): the gate's cheap way
    # must not answer for it, whatever the gate says.
    from shop.idempotency import _lock_key

    held = psycopg.connect(shop.database_url)
    held.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(f"checkout:{late['token'][:40]}", "flash-key-0003"),))
    try:
        status, body = checkout(shop, late, key="flash-key-0003")
        assert status == 409 and body["error"]["code"] == "request_in_progress"
        assert stored_answers(shop, late) == []
    finally:
        held.rollback()
        held.close()
    # Twenty copies at once: every one is refused, one answer is stored, and every out_of_stock is that answer.
    results = all_at_once(20, lambda: checkout(shop, late, key="flash-key-0004"))
    assert {status for status, _ in results} == {409}
    codes = sorted(body["error"]["code"] for _, body in results)
    assert set(codes) <= {"out_of_stock", "request_in_progress"} and "out_of_stock" in codes, codes
    assert stored_answers(shop, late) == [(409, "out_of_stock")]
    refusals = [body for _, body in results if body["error"]["code"] == "out_of_stock"]
    assert all(body == refusals[0] for body in refusals), refusals
    assert orders_of(shop) == 7 and stock(shop) == (7, 7)


def test_the_gates_cheap_way_holds_a_cart_to_its_token(shop):
    late = new_cart_with(shop)
    sell_all(shop)
    stranger = {"id": late["id"], "token": "not-" + late["token"][4:]}
    status, body = checkout(shop, stranger, key="flash-key-0005")
    assert status == 404 and body["error"]["code"] == "cart_not_found"
    assert stored_answers(shop, stranger) == [] and stored_answers(shop, late) == []
    assert checkout(shop, late, key="flash-key-0005")[0] == 409
