"""The pure promotion evaluator: every rule, the error codes, selection, and its properties."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shop.promotions import rules
from shop.promotions.rules import CartSnapshot, History, Line, Rule, evaluate, evaluate_code

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


def cart(*lines, shipping=595):
    return CartSnapshot(tuple(lines), shipping)


def line(variant=1, price=1000, qty=1, product=None, categories=(1,)):
    return Line(variant, product or variant * 10, frozenset(categories), qty, price)


def only(rule, snapshot, history=History()):
    return evaluate(snapshot, [rule], history, NOW)


def total(found):
    return sum(d.amount for d in found)


def test_percent_fixed_and_free_shipping():
    c = cart(line(1, 1000, 2), line(2, 500))
    assert total(only(Rule(1, "percent", 10), c)) == 250
    assert total(only(Rule(1, "fixed", 700), c)) == 700
    assert total(only(Rule(1, "fixed", 99_999), c)) == 2500  # never more than the goods
    [free] = only(Rule(1, "free_shipping"), c)
    assert free.amount == 595 and free.applies_to_shipping == 595 and free.applies_to_lines == ()
    assert rules.goods_discount(only(Rule(1, "free_shipping"), c)) == 0


def test_fixed_amount_is_spread_exactly_over_eligible_lines():
    [d] = only(Rule(1, "fixed", 100), cart(line(1, 333), line(2, 333), line(3, 334)))
    assert sum(a for _, a in d.applies_to_lines) == 100 and all(a >= 33 for _, a in d.applies_to_lines)


def test_applies_to_categories_products_variants_with_exclusions():
    c = cart(line(1, 1000, categories=(5, 1)), line(2, 2000, categories=(6,)), line(3, 4000, product=99))
    assert total(only(Rule(1, "percent", 10, applies_to={"categories": [5]}), c)) == 100
    assert total(only(Rule(1, "percent", 10, applies_to={"products": [99]}), c)) == 400
    assert total(only(Rule(1, "percent", 10, applies_to={"variants": [2]}), c)) == 200
    assert total(only(Rule(1, "percent", 10, excludes={"variants": [3]}), c)) == 300
    assert (
        total(only(Rule(1, "percent", 10, applies_to={"categories": [1, 6]}, excludes={"products": [20]}), c)) == 500
    )  # line 2 (product 20) excluded


def test_the_date_window():
    c = cart(line())
    assert rules.check(Rule(1, "percent", 10, starts_at=NOW + HOUR), c, History(), NOW) == rules.NOT_STARTED
    assert rules.check(Rule(1, "percent", 10, ends_at=NOW), c, History(), NOW) == rules.EXPIRED
    assert rules.check(Rule(1, "percent", 10, starts_at=NOW, ends_at=NOW + HOUR), c, History(), NOW) is None
    assert rules.check(Rule(1, "percent", 10, active=False), c, History(), NOW) == rules.EXPIRED


def test_minimum_subtotal():
    r = Rule(1, "fixed", 500, min_subtotal=3000)
    assert rules.check(r, cart(line(price=2999)), History(), NOW) == rules.MIN_SUBTOTAL
    assert rules.check(r, cart(line(price=1500, qty=2)), History(), NOW) is None


def test_usage_limits_total_per_code_and_per_customer():
    c = cart(line())
    assert rules.check(Rule(1, "percent", 10, usage_limit=3), c, History(uses={1: 3}), NOW) == rules.EXHAUSTED
    assert rules.check(Rule(1, "percent", 10, usage_limit=3), c, History(uses={1: 2}), NOW) is None
    assert rules.check(Rule(1, "percent", 10, usage_limit=0), c, History(), NOW) == rules.EXHAUSTED
    single = Rule(1, "percent", 10, code="ONE-1", code_id=7, code_usage_limit=1)
    assert rules.check(single, c, History(code_uses={7: 1}), NOW) == rules.EXHAUSTED
    assert rules.check(single, c, History(code_uses={8: 1}), NOW) is None
    mine = Rule(1, "percent", 10, per_customer_limit=1)
    assert rules.check(mine, c, History(customer_uses={1: 1}), NOW) == rules.CUSTOMER_LIMIT
    # a guest whose e-mail is not known yet: checked at checkout
    assert rules.check(mine, c, History(customer_uses={1: 1}, known_customer=False), NOW) is None


def test_first_order_only():
    r = Rule(1, "percent", 10, first_order_only=True)
    assert rules.check(r, cart(line()), History(orders_before=1), NOW) == rules.FIRST_ORDER_ONLY
    assert rules.check(r, cart(line()), History(orders_before=0), NOW) is None


def test_not_applicable_when_nothing_eligible():
    r = Rule(1, "percent", 10, applies_to={"products": [42]})
    assert rules.check(r, cart(line()), History(), NOW) == rules.NOT_APPLICABLE
    assert rules.check(Rule(1, "percent", 10), cart(), History(), NOW) == rules.NOT_APPLICABLE


def test_the_best_exclusive_beats_a_weaker_one_and_stackables_add_up():
    c = cart(line(1, 10_000))
    a, b = Rule(1, "percent", 10), Rule(2, "fixed", 1500)
    assert [d.promotion_id for d in evaluate(c, [a, b], History(), NOW)] == [2]
    s1, s2 = Rule(3, "percent", 10, stackable=True), Rule(4, "fixed", 1000, stackable=True)
    found = evaluate(c, [s1, s2], History(), NOW)
    assert {d.promotion_id for d in found} == {3, 4} and total(found) == 2000
    # the exclusive 15 off loses to the stack's 20 off; a 25% exclusive wins over it
    assert total(evaluate(c, [b, s1, s2], History(), NOW)) == 2000
    assert [d.promotion_id for d in evaluate(c, [Rule(5, "percent", 25), s1, s2], History(), NOW)] == [5]


def test_ties_go_to_priority_then_lowest_id():
    c = cart(line(1, 1000))
    low, high = Rule(1, "fixed", 100, priority=0), Rule(2, "fixed", 100, priority=5)
    assert [d.promotion_id for d in evaluate(c, [low, high], History(), NOW)] == [2]
    assert [d.promotion_id for d in evaluate(c, [Rule(9, "fixed", 100), Rule(3, "fixed", 100)], History(), NOW)] == [3]


def test_stacked_discounts_never_exceed_the_goods():
    c = cart(line(1, 1000))
    found = evaluate(c, [Rule(1, "percent", 80, stackable=True), Rule(2, "fixed", 900, stackable=True)], History(), NOW)
    assert rules.goods_discount(found) == 1000


def test_a_code_error_names_the_rule_and_a_losing_code_is_not_combinable():
    c = cart(line(1, 1000))
    with pytest.raises(rules.CodeRejected) as exc:
        evaluate_code(c, Rule(1, "percent", 10, code="X", ends_at=NOW - HOUR), [], History(), NOW)
    assert exc.value.code == "coupon_expired"
    sale = Rule(2, "percent", 30, automatic=True)
    with pytest.raises(rules.CodeRejected) as exc:
        evaluate_code(c, Rule(1, "percent", 10, code="X"), [sale], History(), NOW)
    assert exc.value.code == "coupon_not_combinable"
    found = evaluate_code(
        c,
        Rule(1, "percent", 10, code="X", stackable=True),
        [Rule(2, "percent", 30, automatic=True, stackable=True)],
        History(),
        NOW,
    )
    assert {d.promotion_id for d in found} == {1, 2} and total(found) == 400
    assert {d.code for d in found} == {"X", None}


def test_each_error_code_is_stable():
    assert set(rules.MESSAGES) == {
        "coupon_not_found",
        "coupon_expired",
        "coupon_not_started",
        "coupon_min_subtotal",
        "coupon_exhausted",
        "coupon_customer_limit",
        "coupon_first_order_only",
        "coupon_not_applicable",
        "coupon_not_combinable",
    }


def test_the_sale_price_of_a_product_page():
    sale = Rule(1, "percent", 20, automatic=True, starts_at=NOW - HOUR, ends_at=NOW + HOUR)
    unit = line(1, 2500)
    assert rules.sale_price(2500, unit, [sale], NOW)[0] == 2000
    assert rules.sale_price(2500, unit, [sale], NOW + 2 * HOUR) is None
    assert rules.sale_price(2500, unit, [Rule(1, "percent", 20, automatic=True, min_subtotal=5000)], NOW) is None


# -- properties -----------------------------------------------------------------------------------

lines_st = st.lists(
    st.tuples(st.integers(1, 100_000), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)), min_size=0, max_size=5
).map(lambda raw: tuple(Line(i + 1, p, frozenset({c}), q, price) for i, (price, q, p, c) in enumerate(raw)))
spec_st = st.fixed_dictionaries(
    {},
    optional={
        "categories": st.lists(st.integers(1, 4), max_size=2),
        "products": st.lists(st.integers(1, 4), max_size=2),
        "variants": st.lists(st.integers(1, 5), max_size=2),
    },
)


@st.composite
def rule_st(draw, rid):
    kind = draw(st.sampled_from(("percent", "fixed", "free_shipping")))
    value = {"percent": draw(st.integers(1, 100)), "fixed": draw(st.integers(0, 200_000)), "free_shipping": 0}[kind]
    return Rule(
        rid,
        kind,
        value,
        stackable=draw(st.booleans()),
        priority=draw(st.integers(-2, 2)),
        min_subtotal=draw(st.none() | st.integers(0, 50_000)),
        applies_to=draw(spec_st),
        excludes=draw(spec_st),
        usage_limit=draw(st.none() | st.integers(0, 3)),
    )


rules_st = st.integers(0, 6).flatmap(lambda n: st.tuples(*[rule_st(i + 1) for i in range(n)]))
history_st = st.builds(History, uses=st.dictionaries(st.integers(1, 6), st.integers(0, 3)))


@settings(max_examples=300, deadline=None)
@given(lines_st, st.integers(0, 2000), rules_st, history_st)
def test_a_discount_never_exceeds_what_it_applies_to_and_totals_stay_non_negative(lines, shipping, rule_list, history):
    c = CartSnapshot(lines, shipping)
    found = evaluate(c, list(rule_list), history, NOW)
    per_line: dict[int, int] = {}
    for d in found:
        assert d.amount == sum(a for _, a in d.applies_to_lines) + d.applies_to_shipping and d.amount > 0
        for variant_id, amount in d.applies_to_lines:
            assert amount >= 0
            per_line[variant_id] = per_line.get(variant_id, 0) + amount
    totals = {x.variant_id: x.total for x in lines}
    for variant_id, amount in per_line.items():
        assert amount <= totals[variant_id]
    assert rules.goods_discount(found) <= c.subtotal
    assert 0 <= rules.shipping_discount(found) <= shipping
    assert c.subtotal - rules.goods_discount(found) + shipping - rules.shipping_discount(found) >= 0


@settings(max_examples=300, deadline=None)
@given(lines_st, st.integers(0, 2000), rules_st, history_st, st.randoms(use_true_random=False))
def test_the_outcome_does_not_depend_on_the_order_the_rules_are_listed(lines, shipping, rule_list, history, rnd):
    c = CartSnapshot(lines, shipping)
    shuffled = list(rule_list)
    rnd.shuffle(shuffled)

    def key(found):
        return sorted((d.promotion_id, d.amount, d.applies_to_lines, d.applies_to_shipping) for d in found)

    assert key(evaluate(c, list(rule_list), history, NOW)) == key(evaluate(c, shuffled, history, NOW))
