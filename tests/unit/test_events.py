"""shop.events: receivers run in the shop's lock order, a False answer is a veto, and every envelope is versioned."""

import pytest
from blinker import Namespace

from shop import events


def test_receivers_run_in_lock_order_whatever_order_they_connected_in():
    signal, calls = Namespace().signal("test"), []

    @events.ranked(200)
    def later(sender, **kw):
        calls.append("later")

    @events.ranked("inventory")
    def stock(sender, **kw):
        calls.append("inventory")

    @events.ranked("promotions")
    def coupons(sender, **kw):
        calls.append("promotions")

    def plain(sender, **kw):
        calls.append("plain")

    for fn in (later, stock, plain, coupons):
        signal.connect(fn)
    events.emit(signal, object())
    assert calls == ["promotions", "inventory", "plain", "later"]


def test_a_false_answer_vetoes():
    signal = Namespace().signal("veto")
    assert events.may_proceed(signal, 1) is True  # nobody listening: go ahead

    def no(sender, **kw):
        return False

    def fine(sender, **kw):
        return None

    signal.connect(fine)
    assert events.may_proceed(signal, 1) is True
    signal.connect(no)
    assert events.may_proceed(signal, 1) is False


def test_the_envelope_names_a_known_type_its_version_and_aggregate():
    env = events.envelope("order.cancelled", "order", 7, {"number": "S-1"})
    assert env["type"] == "order.cancelled" and env["version"] == 1
    assert env["aggregate"] == {"type": "order", "id": "7"} and env["data"] == {"number": "S-1"}
    assert env["id"] != events.envelope("order.cancelled", "order", 7, {})["id"]
    with pytest.raises(ValueError):
        events.envelope("order.exploded", "order", 7, {})


def test_cancelling_an_order_reaches_every_domain_that_cares():
    """payments (refund), inventory (stock) and promotions (coupon uses) each connected their own receiver."""
    import shop.inventory.services  # noqa: F401
    import shop.payments.services  # noqa: F401
    import shop.promotions.services  # noqa: F401 - imported for its receivers

    names = [fn.__module__ for fn in events.order_cancelled.receivers_for(object())]
    assert {"shop.inventory.services", "shop.payments.services", "shop.promotions.services"} <= set(names)
    assert "shop.payments.services" in [fn.__module__ for fn in events.order_cancelling.receivers_for(1)]
