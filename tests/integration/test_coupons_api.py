"""Coupons through the API: applying and removing, every error code, throttling, the discount in the
cart and the order, and uses given back on cancellation and on expiry."""

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shop import clock
from tests.factories import make_category, make_product, make_user
from tests.integration.test_buying_api import ADDRESS, bearer, checkout, guest_cart, send

NOW = datetime.now(UTC)


@pytest.fixture
def shelf(db_session, redis_client):
    tees = make_category("Tees", slug="tees")
    mugs = make_category("Mugs", slug="mugs")
    tee = make_product(tees, "Tee", slug="tee", sizes=("M",), colours=("Red",), price=2000, stock=50)
    mug = make_product(mugs, "Mug", slug="mug", sizes=(), colours=("White",), price=1000, stock=50)
    return {"tee": tee.variants[0], "mug": mug.variants[0], "tees": tees, "mugs": mugs}


def promo(code=None, *, kind="percent", value=10, **kw):
    from shop.extensions import db
    from shop.promotions.models import Promotion, PromotionCode

    p = Promotion(name=kw.pop("name", f"Promo {code}"), kind=kind, value=value, **kw)
    if code:
        p.codes = [PromotionCode(code=code, usage_limit=kw.get("code_usage_limit"))]
    db.session.add(p)
    db.session.flush()
    return p


def apply(client, cart, code, **headers):
    tok = {"X-Cart-Token": cart["token"]} if cart.get("token") else {}
    return send(client, "post", f"/api/v1/carts/{cart['id']}/coupon", {"code": code}, **tok, **headers)


def error(resp):
    return resp.status_code, resp.get_json()["error"]["code"]


def user_checkout(client, cart, headers, email):
    import uuid

    return send(
        client,
        "post",
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": email, "shipping_address": ADDRESS},
        **headers,
        **{"Idempotency-Key": str(uuid.uuid4())},
    )


def redemptions(db_session, promotion_id):
    from shop.promotions.models import Redemption

    db_session.expire_all()
    return db_session.query(Redemption).filter_by(promotion_id=promotion_id).order_by(Redemption.id).all()


def test_apply_and_remove_a_code(client, shelf):
    promo("SAVE10", value=10)
    cart = guest_cart(client, shelf["tee"].sku, 2)
    resp = apply(client, cart, "save10")  # codes are case-insensitive
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["coupon_code"] == "SAVE10" and body["discount"]["amount"] == 400
    assert body["subtotal"]["amount"] == 4000 and body["total"]["amount"] == 3600
    assert body["discounts"][0]["code"] == "SAVE10" and "10% off" in body["discounts"][0]["reason"]
    again = client.get(f"/api/v1/carts/{cart['id']}", headers={"X-Cart-Token": cart["token"]}).get_json()
    assert again["discount"]["amount"] == 400
    removed = send(client, "delete", f"/api/v1/carts/{cart['id']}/coupon", **{"X-Cart-Token": cart["token"]})
    assert removed.status_code == 200
    assert removed.get_json()["coupon_code"] is None and removed.get_json()["discount"]["amount"] == 0


def test_someone_elses_cart_is_404_and_a_missing_code_is_422(client, shelf):
    cart = guest_cart(client, shelf["tee"].sku)
    assert send(client, "post", f"/api/v1/carts/{cart['id']}/coupon", {"code": "X"}).status_code == 404
    assert apply(client, cart, "").status_code == 422
    assert apply(client, cart, None).status_code == 422


def test_each_failed_rule_is_named(client, shelf, db_session):
    promo("OLD", ends_at=NOW - timedelta(days=1))
    promo("SOON", starts_at=NOW + timedelta(days=1))
    promo("OFF", active=False)
    promo("BIG", min_subtotal=10_000)
    promo("NONE", usage_limit=0)
    promo("MUGS", applies_to={"categories": [shelf["mugs"].id]})
    promo("FIRST", first_order_only=True)
    promo("ONCE", per_customer_limit=1)
    cart = guest_cart(client, shelf["tee"].sku)
    assert error(apply(client, cart, "NOPE")) == (422, "coupon_not_found")
    assert error(apply(client, cart, "OLD")) == (422, "coupon_expired")
    assert error(apply(client, cart, "OFF")) == (422, "coupon_expired")
    assert error(apply(client, cart, "SOON")) == (422, "coupon_not_started")
    assert error(apply(client, cart, "BIG")) == (422, "coupon_min_subtotal")
    assert error(apply(client, cart, "NONE")) == (422, "coupon_exhausted")
    assert error(apply(client, cart, "MUGS")) == (422, "coupon_not_applicable")
    # a better automatic sale that does not stack
    promo(None, value=50, automatic=True, name="Half price")
    promo("TEN", value=10)
    assert error(apply(client, cart, "TEN")) == (422, "coupon_not_combinable")

    # customer rules: a signed-in shopper who already ordered with the code
    from shop.promotions.models import Promotion

    db_session.query(Promotion).filter_by(automatic=True).delete()
    user = make_user("repeat@example.com")
    h = bearer(user)
    mine = send(client, "post", "/api/v1/carts", **h).get_json()
    send(client, "post", f"/api/v1/carts/{mine['id']}/items", {"sku": shelf["tee"].sku, "quantity": 1}, **h)
    assert apply(client, mine, "ONCE", **h).status_code == 200
    assert user_checkout(client, mine, h, "repeat@example.com").status_code == 201
    mine = send(client, "post", "/api/v1/carts", **h).get_json()
    send(client, "post", f"/api/v1/carts/{mine['id']}/items", {"sku": shelf["tee"].sku, "quantity": 1}, **h)
    assert error(apply(client, mine, "ONCE", **h)) == (422, "coupon_customer_limit")
    assert error(apply(client, mine, "FIRST", **h)) == (422, "coupon_first_order_only")


def test_a_guest_cannot_dodge_a_per_customer_limit_with_another_cart(client, shelf, db_session):
    p = promo("ONCE", per_customer_limit=1)
    first = guest_cart(client, shelf["tee"].sku)
    assert apply(client, first, "ONCE").status_code == 200
    assert checkout(client, first, email="Dodger@Example.com").status_code == 201
    second = guest_cart(client, shelf["tee"].sku)
    assert apply(client, second, "ONCE").status_code == 200  # the e-mail is not known yet
    resp = checkout(client, second, email="dodger@example.COM")
    assert error(resp) == (409, "coupon_customer_limit")
    assert [r.email for r in redemptions(db_session, p.id)] == ["dodger@example.com"]


def test_repeated_bad_codes_are_429_per_cart(client, shelf):
    cart = guest_cart(client, shelf["tee"].sku)
    codes = [apply(client, cart, f"GUESS{i}").status_code for i in range(10)]
    assert codes == [422] * 10
    resp = apply(client, cart, "GUESS-MORE")
    assert resp.status_code == 429 and resp.get_json()["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) > 0
    assert resp.headers["RateLimit-Limit"] == "10" and resp.headers["RateLimit-Remaining"] == "0"
    promo("REAL")
    assert apply(client, cart, "REAL").status_code == 429  # even a good code, until the window ends
    other = guest_cart(client, shelf["tee"].sku)
    assert apply(client, other, "REAL").status_code == 200


def test_repeated_bad_codes_are_429_per_ip(client, app, shelf, monkeypatch):
    monkeypatch.setitem(app.config, "COUPON_ATTEMPTS_PER_IP", 12)
    statuses = []
    for _ in range(4):
        cart = guest_cart(client, shelf["tee"].sku)
        statuses += [apply(client, cart, f"GUESS{i}").status_code for i in range(4)]
    assert statuses == [422] * 12 + [429] * 4
    resp = apply(client, guest_cart(client, shelf["tee"].sku), "ANY")
    assert resp.status_code == 429 and "Retry-After" in resp.headers


def test_good_codes_do_not_count_as_guesses(client, shelf):
    promo("REAL")
    cart = guest_cart(client, shelf["tee"].sku)
    assert all(apply(client, cart, "REAL").status_code == 200 for _ in range(15))


def test_the_discount_reaches_the_order_and_a_redemption_is_recorded(client, shelf, db_session):
    p = promo("FIVE", kind="fixed", value=500, usage_limit=5)
    cart = guest_cart(client, shelf["tee"].sku, 2)
    apply(client, cart, "FIVE")
    order = checkout(client, cart).get_json()["order"]
    # 4000 - 500 = 3500 goods; CA tax 7.25% on 3500 = 254; standard shipping 595 (under 75.00)
    assert (order["subtotal"]["amount"], order["discount"]["amount"], order["shipping"]["amount"]) == (4000, 500, 595)
    assert order["tax"]["amount"] == 254 and order["total"]["amount"] == 3500 + 595 + 254
    [r] = redemptions(db_session, p.id)
    assert (r.order_id, r.discount, r.status, r.email, r.code_id) == (
        order["id"],
        500,
        "active",
        "ann@example.com",
        p.codes[0].id,
    )


def test_free_shipping_and_an_automatic_category_sale(client, shelf, db_session):
    promo("SHIPFREE", kind="free_shipping", value=0, stackable=True)
    promo(None, value=20, automatic=True, stackable=True, applies_to={"categories": [shelf["tees"].id]})
    cart = guest_cart(client, shelf["tee"].sku)
    send(
        client,
        "post",
        f"/api/v1/carts/{cart['id']}/items",
        {"sku": shelf["mug"].sku, "quantity": 1},
        **{"X-Cart-Token": cart["token"]},
    )
    body = apply(client, cart, "SHIPFREE").get_json()
    # the sale is the tee's price (20% off the tee only, as on its product page), not a discount
    tee = next(i for i in body["items"] if i["sku"] == shelf["tee"].sku)
    assert (tee["unit_price"]["amount"], tee["list_price"]["amount"]) == (1600, 2000)
    assert body["discount"]["amount"] == 0 and body["subtotal"]["amount"] == 2600
    order = checkout(client, cart).get_json()["order"]
    assert order["discount"]["amount"] == 0 and order["shipping"]["amount"] == 0
    assert order["subtotal"]["amount"] == 2600


def test_a_code_used_up_meanwhile_is_409_at_checkout_with_no_order(client, shelf, db_session):
    from shop.orders.models import Order

    p = promo("LAST", usage_limit=1)
    a, b = guest_cart(client, shelf["tee"].sku), guest_cart(client, shelf["tee"].sku)
    assert apply(client, a, "LAST").status_code == 200 and apply(client, b, "LAST").status_code == 200
    assert checkout(client, a).status_code == 201
    before = db_session.query(Order).count()
    assert error(checkout(client, b)) == (409, "coupon_exhausted")
    assert db_session.query(Order).count() == before and len(redemptions(db_session, p.id)) == 1
    db_session.refresh(shelf["tee"])
    assert shelf["tee"].reserved == 1
    # without the code the shopper can buy at the full price
    send(client, "delete", f"/api/v1/carts/{b['id']}/coupon", **{"X-Cart-Token": b["token"]})
    assert checkout(client, b).get_json()["order"]["discount"]["amount"] == 0


def test_cancellation_gives_the_use_back(client, shelf, db_session):
    p = promo("ONE", usage_limit=1)
    cart = guest_cart(client, shelf["tee"].sku)
    apply(client, cart, "ONE")
    order = checkout(client, cart).get_json()["order"]
    other = guest_cart(client, shelf["tee"].sku)
    assert error(apply(client, other, "ONE")) == (422, "coupon_exhausted")
    assert (
        client.post(
            f"/api/v1/orders/{order['id']}/cancel", headers={"X-Order-Token": order["access_token"]}
        ).status_code
        == 200
    )
    [r] = redemptions(db_session, p.id)
    assert r.status == "released" and r.released_at is not None
    assert apply(client, other, "ONE").status_code == 200
    assert checkout(client, other).get_json()["order"]["discount"]["amount"] == 200


def test_an_expired_reservation_gives_the_use_back(client, shelf, db_session):
    from shop.orders.jobs import expire_reservations

    p = promo("ONE", usage_limit=1)
    cart = guest_cart(client, shelf["tee"].sku)
    apply(client, cart, "ONE")
    order = checkout(client, cart).get_json()["order"]
    assert expire_reservations(now=datetime.now(UTC) + timedelta(hours=2)) == 1
    [r] = redemptions(db_session, p.id)
    assert (r.order_id, r.status) == (order["id"], "released")
    other = guest_cart(client, shelf["tee"].sku)
    assert apply(client, other, "ONE").status_code == 200


def test_single_use_codes_of_a_batch(client, shelf, db_session):
    from shop.extensions import db
    from shop.promotions.models import Promotion, PromotionCode

    p = Promotion(name="Batch", kind="fixed", value=300)
    p.codes = [PromotionCode(code="B-1", usage_limit=1), PromotionCode(code="B-2", usage_limit=1)]
    db.session.add(p)
    db.session.flush()
    first = guest_cart(client, shelf["tee"].sku)
    apply(client, first, "B-1")
    assert checkout(client, first).status_code == 201
    assert error(apply(client, guest_cart(client, shelf["tee"].sku), "b-1")) == (422, "coupon_exhausted")
    assert apply(client, guest_cart(client, shelf["tee"].sku), "B-2").status_code == 200


# -- the storefront -------------------------------------------------------------------------------


def test_the_cart_page_applies_and_removes_a_code_and_says_why_one_fails(client, db_session, redis_client):
    from tests.integration.test_storefront_cart import add, form_post, text

    cat = make_category("Tops", slug="tops")
    product = make_product(cat, "Field Tee", slug="field-tee", sizes=("M",), colours=("Black",), price=2500, stock=10)
    promo("TENOFF", value=10)
    promo("BIGONLY", min_subtotal=100_000)
    add(client, product.variants[0].sku, 2)
    page = text(client.get("/cart"))
    assert 'name="code"' in page and 'action="/cart/coupon"' in page
    resp = form_post(client, "/cart/coupon", {"code": "bigonly"}, page="/cart")
    assert resp.status_code == 303
    page = text(client.get("/cart"))
    assert "was not applied" in page and "needs a subtotal of at least $1,000.00" in page
    form_post(client, "/cart/coupon", {"code": "NOPE"}, page="/cart")
    assert "There is no such code." in text(client.get("/cart"))
    form_post(client, "/cart/coupon", {"code": "tenoff"}, page="/cart")
    page = text(client.get("/cart"))
    assert "TENOFF" in page, re.findall(r'class="flash[^"]*"[^>]*>(.*?)<', page, re.S)
    assert "−$5.00" in page and "$50.95" in page  # 50.00 - 5.00 + 5.95 standard shipping
    form_post(client, "/cart/coupon/remove", {}, page="/cart")
    page = text(client.get("/cart"))
    assert "was removed" in page and 'data-testid="cart-discount-line"' not in page
    # without the CSRF token nothing happens
    assert client.post("/cart/coupon", data={"code": "TENOFF"}).status_code == 400


def test_a_flash_sale_shows_on_the_product_page_from_its_start_to_its_end(
    client, db_session, redis_client, monkeypatch
):
    from tests.integration.test_storefront_cart import text

    cat = make_category("Tops", slug="tops")
    product = make_product(cat, "Field Tee", slug="field-tee", sizes=("M",), colours=("Black",), price=2500, stock=10)
    start, end = NOW + timedelta(hours=1), NOW + timedelta(hours=3)
    promo(
        None,
        value=20,
        automatic=True,
        name="Flash sale",
        starts_at=start,
        ends_at=end,
        applies_to={"products": [product.id]},
    )
    before = client.get("/p/field-tee")
    assert "$25.00" in text(before) and "sale-countdown" not in text(before)
    # the page is in the catalogue cache now; the sale must still appear when it starts
    assert "s-maxage=" in before.headers["Cache-Control"]
    monkeypatch.setattr(clock, "now", lambda: start + timedelta(minutes=1))
    during = text(client.get("/p/field-tee"))
    assert "$20.00" in during and "<s>$25.00</s>" in during and "Flash sale ends" in during
    assert f'data-ends-at="{end.isoformat()}"' in during
    # and it is in the cart too
    cart = guest_cart(client, product.variants[0].sku, 1)
    assert cart["items"][0]["unit_price"]["amount"] == 2000 and cart["items"][0]["list_price"]["amount"] == 2500
    assert cart["discount"]["amount"] == 0
    monkeypatch.setattr(clock, "now", lambda: end)
    after = text(client.get("/p/field-tee"))
    assert "$20.00" not in after and "sale-countdown" not in after
