"""The unpaid-hold rule of checkout (shop.checkout.holds.problem), without a database."""

from dataclasses import replace

from shop.checkout.holds import Client, Held, Limits, problem

OFF = Limits(orders=0, orders_per_ip=0, units=0, units_per_ip=0, sku_share_percent=0, sku_min_units=5)
STOCK = {1: ("TEE-M", 100), 2: ("TEE-L", 8)}


def held(order_id, variant_id, quantity, ip="198.51.100.7", email="a@example.com", user_id=None):
    return Held(order_id, ip, email, user_id, variant_id, quantity)


def test_no_limit_set_refuses_nothing():
    client = Client("198.51.100.7", "a@example.com", None)
    assert problem(client, [held(n, 1, 50) for n in range(9)], {1: 100}, STOCK, OFF, 15) is None


def test_a_sku_share_is_a_percent_of_stock_on_hand_with_a_floor_for_small_stocks():
    limits = replace(OFF, sku_share_percent=25)
    client = Client("198.51.100.7", "new@example.com", None)
    assert problem(client, [held(1, 1, 20)], {1: 5}, STOCK, limits, 15) is None  # 25 of 100
    refused = problem(client, [held(1, 1, 20)], {1: 6}, STOCK, limits, 15)
    assert refused.code == "hold_limit_reached" and refused.details["allowed"] == {"TEE-M": 25}
    assert problem(client, [], {2: 5}, STOCK, limits, 15) is None  # 25% of 8 is 2; the floor is 5
    assert problem(client, [], {2: 6}, STOCK, limits, 15).details["skus"] == ["TEE-L"]


def test_each_identity_is_counted_on_its_own_with_its_own_limit():
    limits = replace(OFF, orders=1, orders_per_ip=3)
    other_ip_same_email = Client("203.0.113.9", "a@example.com", None)
    assert problem(other_ip_same_email, [held(1, 1, 1)], {1: 1}, STOCK, limits, 15).details["limit"] == "orders"
    same_ip_new_email = Client("198.51.100.7", "b@example.com", None)
    assert (
        problem(
            same_ip_new_email,
            [held(1, 1, 1, email="x@example.com"), held(2, 1, 1, email="y@example.com")],
            {1: 1},
            STOCK,
            limits,
            15,
        )
        is None
    )
    three = [held(n, 1, 1, email=f"{n}@example.com") for n in range(3)]
    assert problem(same_ip_new_email, three, {1: 1}, STOCK, limits, 15).details == {
        "limit": "orders",
        "held": 3,
        "allowed": 3,
    }
    account = Client(None, "c@example.com", 7)
    assert (
        problem(
            account, [held(1, 2, 1, ip=None, email="old@example.com", user_id=7)], {1: 1}, STOCK, limits, 15
        ).details["limit"]
        == "orders"
    )
