"""One price story and real countries (issue 11, items 4, 5 and 9 in part).

A flash-sale item costs the same on its product page, in the cart, on the checkout review, on the order and in the
API (the sale price as the line's unit price, "was … save …" beside it, the catalogue price kept as list_price);
coupons stay in the order's discount. Countries are ISO 3166-1 codes chosen by name; where tax depends on the region
(US states) the region is a known one; the API refuses anything else with 422 naming the field.
"""

import re
import uuid
from datetime import UTC

import pytest
from sqlalchemy import select

from shop.orders.models import Order
from shop.payments.models import Payment
from shop.promotions.models import Redemption
from tests.factories import make_category, make_product
from tests.integration.test_buying_api import ADDRESS, guest_cart, send
from tests.integration.test_coupons_api import apply, error, promo
from tests.integration.test_storefront_cart import add, details, form_post, place, text


@pytest.fixture
def hoodie(db_session, redis_client):
    """An $86.99 hoodie under a 20% flash sale ($69.60: 8699 - 8699 * 20 // 100), and a $12.00 mug not on sale."""
    clothing = make_category("Clothing", slug="clothing")
    kitchen = make_category("Kitchen", slug="kitchen")
    hoodie = make_product(
        clothing, "Trail Hoodie", slug="field-tee", sizes=("M",), colours=("Grey",), price=8699, stock=20
    )
    mug = make_product(kitchen, "Camp Mug", slug="camp-mug", sizes=(), colours=("White",), price=1200, stock=20)
    sale = promo(None, value=20, automatic=True, name="Flash sale", applies_to={"categories": [clothing.id]})
    db_session.commit()
    return {"hoodie": hoodie, "sku": hoodie.variants[0].sku, "mug": mug.variants[0].sku, "sale": sale}


def cell(html: str, testid: str) -> str:
    m = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</(?:td|dd|p|div)>', html, re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", m.group(1))).strip() if m else ""


def test_a_sale_item_costs_the_same_on_the_product_page_cart_review_and_order(client, hoodie, db_session):
    page = text(client.get("/p/field-tee"))
    assert "$69.60" in page and "$86.99" in page

    add(client, hoodie["sku"], 1)
    cart = text(client.get("/cart"))
    price = cell(cart, "cart-unit-price")
    assert price.startswith("$69.60") and "was $86.99, save $17.39" in price
    assert 'data-testid="cart-discount-line"' not in cart  # the sale is the price, not a discount line
    assert cell(cart, "cart-subtotal") == "$69.60"
    assert re.search(
        r'<img class="cart-thumb" src="/media/placeholder/\d+/item\.svg" alt="Trail Hoodie photo 1" '
        r'width="64" height="64"',
        cart,
    )

    assert details(client).status_code == 303  # Los Angeles, CA, US
    review = text(client.get("/checkout/review"))
    unit = cell(review, "review-unit-price")
    assert unit.startswith("$69.60") and "was $86.99, save $17.39" in unit
    assert cell(review, "review-subtotal") == "$69.60" and 'data-testid="review-discount"' not in review
    assert cell(review, "review-tax") == "$5.05"  # 7.25% of $69.60, rounded half up
    assert cell(review, "review-total") == "$80.60"  # 69.60 + 5.95 standard shipping + 5.05 tax

    _, resp = place(client)
    assert resp.status_code == 303
    order = db_session.scalar(select(Order).order_by(Order.id.desc()))
    db_session.refresh(order)
    [line] = order.lines
    assert (line.unit_price, line.list_price, line.line_total) == (6960, 8699, 6960)
    assert (order.subtotal, order.discount, order.shipping, order.tax, order.total) == (6960, 0, 595, 505, 8060)
    payment = db_session.scalar(select(Payment).where(Payment.order_id == order.id))
    assert payment.amount == order.total
    # the sale still counts in its promotion's report: what it took off the line
    redemption = db_session.scalar(select(Redemption).where(Redemption.order_id == order.id))
    assert (redemption.promotion_id, redemption.discount) == (hoodie["sale"].id, 1739)


def test_the_api_prices_sale_lines_at_the_sale_price_and_keeps_coupons_in_the_discount(client, hoodie, db_session):
    cart = guest_cart(client, hoodie["sku"], 3)
    [item] = cart["items"]
    # three at the product page's price (3 x 69.60), not 20% of the line total (208.78)
    assert (item["unit_price"]["amount"], item["list_price"]["amount"], item["line_total"]["amount"]) == (
        6960,
        8699,
        20880,
    )
    assert cart["discount"]["amount"] == 0 and cart["discounts"] == [] and cart["subtotal"]["amount"] == 20880

    # an exclusive code takes nothing off an item at an exclusive sale price...
    promo("TENOFF", value=10)
    assert error(apply(client, cart, "TENOFF")) == (422, "coupon_not_combinable")
    # ...but applies to the rest of the cart, and stays the order's discount
    tok = {"X-Cart-Token": cart["token"]}
    send(client, "post", f"/api/v1/carts/{cart['id']}/items", {"sku": hoodie["mug"], "quantity": 1}, **tok)
    body = apply(client, cart, "TENOFF").get_json()
    mug = next(i for i in body["items"] if i["sku"] == hoodie["mug"])
    assert mug["list_price"] is None and mug["unit_price"]["amount"] == 1200
    assert body["subtotal"]["amount"] == 22080 and body["discount"]["amount"] == 120

    resp = send(
        client,
        "post",
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": "sale@example.com", "shipping_address": {**ADDRESS, "region": "New York"}},
        **tok,
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert resp.status_code == 201, resp.get_json()
    order = resp.get_json()["order"]
    lines = {i["sku"]: i for i in order["items"]}
    assert lines[hoodie["sku"]]["unit_price"]["amount"] == 6960
    assert lines[hoodie["sku"]]["list_price"]["amount"] == 8699 and lines[hoodie["mug"]]["list_price"] is None
    money = {k: order[k]["amount"] for k in ("subtotal", "discount", "shipping", "tax", "total")}
    assert money == {"subtotal": 22080, "discount": 120, "shipping": 0, "tax": 878, "total": 22838}  # NY 4%
    assert order["shipping_address"]["region"] == "NY"  # a state's name is taken and kept as its code
    assert money["subtotal"] - money["discount"] + money["shipping"] + money["tax"] == money["total"]
    paid = db_session.scalar(select(Payment).where(Payment.order_id == order["id"]))
    assert paid.amount == money["total"]


def test_cart_review_page_and_order_agree_to_the_cent_under_the_shops_own_tax_table(
    client, hoodie, db_session, app, monkeypatch
):
    """One quote function prices the API's cart, the storefront's cart and review pages and the order: with the
    shop's TAX_RATES (California at 8.25% here, not the built-in 7.25%), a sale line, a coupon and a taxed
    address, every one shows the same subtotal, discount, shipping, tax and total."""
    import json

    monkeypatch.setitem(app.config, "TAX_RATES", json.dumps({"*": 0, "US-CA": 825, "GB": 2000}))
    promo("TENOFF", value=10)
    fields = ("subtotal", "discount", "shipping", "tax", "total")

    # the API's cart, priced for Los Angeles with standard shipping, then checked out
    cart = guest_cart(client, hoodie["sku"], 1)
    tok = {"X-Cart-Token": cart["token"]}
    send(client, "post", f"/api/v1/carts/{cart['id']}/items", {"sku": hoodie["mug"], "quantity": 2}, **tok)
    assert apply(client, cart, "TENOFF").status_code == 200
    resp = client.get(f"/api/v1/carts/{cart['id']}?shipping_method=standard&country=US&region=CA", headers=tok)
    assert resp.status_code == 200, resp.get_json()
    quoted = {k: resp.get_json()[k]["amount"] for k in fields}
    goods = 6960 + 2 * 1200 - 240  # the sale price, two mugs, 10% off the mugs (the sale is exclusive)
    assert quoted == {
        "subtotal": 9360,
        "discount": 240,
        "shipping": 0,
        "tax": (goods * 825 + 5000) // 10000,
        "total": goods + (goods * 825 + 5000) // 10000,
    }
    # without a destination the cart shows no shipping and no tax (known at checkout)
    bare = client.get(f"/api/v1/carts/{cart['id']}", headers=tok).get_json()
    assert (bare["shipping"]["amount"], bare["tax"]["amount"], bare["total"]["amount"]) == (0, 0, goods)
    placed = send(
        client,
        "post",
        "/api/v1/checkout",
        {
            "cart_id": cart["id"],
            "email": "tax@example.com",
            "shipping_address": {**ADDRESS, "region": "CA"},
            "shipping_method": "standard",
        },
        **tok,
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert placed.status_code == 201, placed.get_json()
    assert {k: placed.get_json()["order"][k]["amount"] for k in fields} == quoted

    # the storefront: the same goods and code, cart page, review page (Los Angeles, CA) and order
    add(client, hoodie["sku"], 1)
    add(client, hoodie["mug"], 2)
    form_post(client, "/cart/coupon", {"code": "TENOFF"}, page="/cart")
    page = text(client.get("/cart"))
    assert cell(page, "cart-subtotal") == "$93.60"
    assert details(client).status_code == 303
    review = text(client.get("/checkout/review"))
    shown = {k: cell(review, f"review-{k}") for k in ("subtotal", "tax", "total")}
    assert shown == {
        "subtotal": "$93.60",
        "tax": f"${quoted['tax'] / 100:.2f}",
        "total": f"${quoted['total'] / 100:.2f}",
    }
    _, resp = place(client)
    assert resp.status_code == 303
    order = db_session.scalar(select(Order).order_by(Order.id.desc()))
    db_session.refresh(order)
    assert {k: getattr(order, k) for k in fields} == quoted


@pytest.mark.parametrize(
    "query,field",
    [
        ("country=XX", "country"),
        ("country=US&region=Calif", "region"),
        ("shipping_method=teleport", "shipping_method"),
        ("region=CA", "region"),
        ("country=USA", "country"),
    ],
)
def test_a_cart_priced_for_an_unknown_destination_is_422_naming_the_field(client, hoodie, query, field):
    cart = guest_cart(client, hoodie["mug"], 1)
    resp = client.get(f"/api/v1/carts/{cart['id']}?{query}", headers={"X-Cart-Token": cart["token"]})
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "validation_failed" and list(err["details"]["fields"]) == [field]


def test_a_minimum_subtotal_code_names_the_minimum(client, hoodie):
    promo("BIG50", min_subtotal=5000)
    cart = guest_cart(client, hoodie["mug"], 1)
    resp = apply(client, cart, "BIG50")
    assert error(resp) == (422, "coupon_min_subtotal")
    body = resp.get_json()["error"]
    assert body["message"] == "This code needs a subtotal of at least $50.00."
    assert body["details"]["min_subtotal"] == {"amount": 5000, "currency": "USD"}

    add(client, hoodie["mug"], 1)
    form_post(client, "/cart/coupon", {"code": "big50"}, page="/cart")
    page = text(client.get("/cart"))
    assert "The code BIG50 was not applied: This code needs a subtotal of at least $50.00." in page
    # the coupon input is labelled and styled like the other inputs
    assert re.search(r'<label for="coupon-code">Discount code</label>', page)
    assert re.search(r'<input type="text" id="coupon-code" name="code"[^>]*class="text-input"', page)
    assert "/static/cart.css" in page


@pytest.mark.parametrize(
    "address,field",
    [
        ({"country": "XX"}, "shipping_address.country"),
        ({"country": "UN"}, "shipping_address.country"),
        ({"country": "US", "region": "ZZ"}, "shipping_address.region"),
        ({"country": "US", "region": "Calif"}, "shipping_address.region"),
    ],
)
def test_the_api_refuses_unknown_countries_and_regions(client, hoodie, db_session, address, field):
    cart = guest_cart(client, hoodie["mug"], 1)
    before = db_session.query(Order).count()
    resp = send(
        client,
        "post",
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": "x@example.com", "shipping_address": {**ADDRESS, **address}},
        **{"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())},
    )
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "validation_failed" and list(err["details"]["fields"]) == [field]
    assert db_session.query(Order).count() == before


def test_the_api_refuses_an_unknown_billing_country(client, hoodie):
    cart = guest_cart(client, hoodie["mug"], 1)
    resp = send(
        client,
        "post",
        "/api/v1/checkout",
        {
            "cart_id": cart["id"],
            "email": "x@example.com",
            "shipping_address": ADDRESS,
            "billing_address": {**ADDRESS, "country": "XX"},
        },
        **{"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())},
    )
    assert resp.status_code == 422 and "billing_address.country" in resp.get_json()["error"]["details"]["fields"]


def test_checkout_country_is_a_select_by_name_and_tax_follows_it(client, hoodie):
    add(client, hoodie["mug"], 1)
    page = text(client.get("/checkout"))
    select_ = re.search(r'<select[^>]*id="country"[^>]*>(.*?)</select>', page, re.S)
    assert select_ and 'autocomplete="shipping country"' in select_.group(0)
    assert '<option value="GB">United Kingdom</option>' in select_.group(1)
    assert '<option value="DE">Germany</option>' in select_.group(1)
    assert select_.group(1).index('value="US"') < select_.group(1).index('value="AD"')  # main countries first
    state = re.search(r'<select[^>]*id="state"[^>]*>(.*?)</select>', page, re.S)
    assert state and '<option value="CA">California</option>' in state.group(1)
    assert '<label for="state">State (US addresses)</label>' in page

    # United Kingdom: 20% VAT; no state needed
    assert details(client, country="GB", region="", state="", city="Leeds", postal_code="LS1 1AA").status_code == 303
    review = text(client.get("/checkout/review"))
    assert cell(review, "review-tax") == "$2.40" and "United Kingdom" in cell(review, "review-address")

    # a country that does not exist, or a US address without a known state, is refused on the form
    bad = details(client, country="XX")
    assert bad.status_code == 422 and re.search(r'id="country-error">[^<]+<', text(bad))
    no_state = details(client, country="US", region="", state="")
    assert no_state.status_code == 422 and "Choose a state" in text(no_state)
    # the state select (what address.js shows for the US) sets the tax: New York 4%
    assert details(client, country="US", region="", state="NY").status_code == 303
    assert cell(text(client.get("/checkout/review")), "review-tax") == "$0.48"


def test_saved_addresses_take_the_country_from_the_select(client, db_session):
    from tests.factories import make_user
    from tests.integration.test_storefront_cart import log_in

    make_user("sel@example.com")
    log_in(client, "sel@example.com")
    page = text(client.get("/account"))
    assert re.search(r'<select[^>]*id="addr-country"[^>]*name="addr-country"', page)
    assert '<option value="GB">United Kingdom</option>' in page


def test_offers_on_top_of_sale_prices_follow_the_sale_being_stackable_or_not():
    """Pure rules: a line at an exclusive sale price takes no other offer; at a stackable one, stackable offers."""
    from datetime import datetime, timezone

    from shop.promotions import rules

    now = datetime(2026, 12, 2, tzinfo=UTC)

    def cart(sale_stackable):
        return rules.CartSnapshot(
            (rules.Line(1, 10, frozenset({1}), 1, 8000, sale_stackable), rules.Line(2, 20, frozenset({2}), 1, 2000))
        )

    stacking = rules.Rule(7, "percent", 10, stackable=True, code="TEN", code_id=1)
    alone = rules.Rule(8, "percent", 10, code="SOLO", code_id=2)
    history = rules.History()
    # a stackable sale: a stackable code adds 10% to both lines; an exclusive one only to the line not on sale
    assert rules.goods_discount(rules.evaluate_code(cart(True), stacking, [], history, now)) == 1000
    assert rules.goods_discount(rules.evaluate_code(cart(True), alone, [], history, now)) == 200
    # an exclusive sale: no code adds to it
    assert rules.goods_discount(rules.evaluate_code(cart(False), stacking, [], history, now)) == 200
    only_sale = rules.CartSnapshot((rules.Line(1, 10, frozenset({1}), 1, 8000, False),))
    with pytest.raises(rules.CodeRejected) as refused:
        rules.evaluate_code(only_sale, stacking, [], history, now)
    assert refused.value.code == rules.NOT_COMBINABLE
    # the sale rule itself: an automatic percentage without conditions or limits; a limited one stays a discount
    assert rules.is_sale_rule(rules.Rule(9, "percent", 20, automatic=True))
    assert not rules.is_sale_rule(rules.Rule(9, "percent", 20, automatic=True, usage_limit=100))


def test_a_saved_us_address_without_a_state_is_not_used_with_no_tax(client, hoodie, db_session):
    from shop.accounts import services as accounts
    from tests.factories import make_user
    from tests.integration.test_storefront_cart import log_in

    user = make_user("nostate@example.com")
    saved = accounts.add_address(user, {**ADDRESS, "region": ""})
    log_in(client, "nostate@example.com")
    add(client, hoodie["mug"], 1)
    resp = form_post(
        client,
        "/checkout/review",
        {"email": "nostate@example.com", "saved_address": str(saved.id), "shipping_method": "standard"},
        page="/checkout",
    )
    assert resp.status_code == 422 and "That saved address has no state" in text(resp)
