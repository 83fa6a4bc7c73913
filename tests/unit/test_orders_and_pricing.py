"""Pure rules: the order state machine and the money of an order."""

import pytest

from shop.orders import states
from shop.pricing import PricedLine, TaxTable, shipping_cost, totals

ALL_MOVES = [(a, b) for a in states.STATUSES for b in states.STATUSES]
ALLOWED = {
    ("pending", "confirmed"),
    ("confirmed", "processing"),
    ("processing", "shipped"),
    ("shipped", "delivered"),
    ("pending", "cancelled"),
    ("confirmed", "cancelled"),
    ("processing", "cancelled"),
    ("delivered", "returned"),
    ("returned", "refunded"),
}


@pytest.mark.parametrize("current,target", ALL_MOVES)
def test_state_machine_allows_exactly_the_contracts_moves(current, target):
    if (current, target) in ALLOWED:
        states.check(current, target)
    else:
        with pytest.raises(states.InvalidTransition):
            states.check(current, target)


def test_staff_may_never_confirm_or_refund_by_hand():
    assert states.staff_permission("confirmed") is None and states.staff_permission("refunded") is None
    assert states.staff_permission("shipped").value == "orders.fulfil"
    assert states.staff_permission("returned").value == "orders.cancel"


def line(price, qty=1, vid=1):
    return PricedLine(variant_id=vid, sku=f"S{vid}", name="x", options={}, quantity=qty, unit_price=price)


def test_totals_add_up_in_minor_units():
    t = totals(
        [line(1999, 2), line(500, 1, 2)], shipping_method="standard", country="US", region="CA", free_standard_over=7500
    )
    assert t.subtotal == 4498 and t.shipping == 595
    assert t.tax == (4498 * 725 + 5000) // 10000 == 326
    assert t.total == 4498 + 595 + 326


def test_free_standard_shipping_from_the_threshold_but_not_express():
    assert shipping_cost("standard", 7499, 7500) == 595
    assert shipping_cost("standard", 7500, 7500) == 0
    assert shipping_cost("express", 100000, 7500) == 1995


def test_discount_never_exceeds_the_goods_and_tax_is_on_goods_after_discount():
    t = totals([line(1000)], shipping_method=None, country="GB", discount=5000)
    assert t.discount == 1000 and t.tax == 0 and t.total == 0
    t = totals([line(1000)], shipping_method=None, country="GB", discount=200)
    assert t.tax == 160 and t.total == 960


def test_tax_table_prefers_region_then_country_then_default():
    table = TaxTable({"US-CA": 725, "US": 100, "*": 50})
    assert table.rate("us", "ca") == 725 and table.rate("US", "NV") == 100 and table.rate("FR") == 50
    assert table.tax(1, "US", "CA") == 0 and table.tax(100, "US", "CA") == 7  # rounded half up
