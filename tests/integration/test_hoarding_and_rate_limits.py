"""Stock hoarding and abuse rates (issue 9, items 4 and 9): one client cannot keep more than its share of
stock reserved by unpaid orders while honest shoppers still buy; carts are capped; cart writes, cart
creation, checkouts, sign-ups, reset requests and verification resends are rate-limited per client.

The limits are off by default under SHOP_ENV=test (every test client is 127.0.0.1); each test here sets
the ones it proves on the shared app's config (monkeypatch restores them).
"""

import json
import re
import uuid
from html import unescape

import pytest
from rq import Queue
from sqlalchemy import func, select

from shop.cart.models import Cart
from tests.factories import make_category, make_product, make_user
from tests.integration.test_buying_api import ADDRESS
from tests.integration.test_storefront_cart import add, details, place, sku, tee  # noqa: F401 (tee: a fixture)

ATTACKER, HONEST = "198.51.100.7", "203.0.113.9"
PASSWORD = "correct horse battery"


@pytest.fixture
def shelf(db_session, redis_client):
    """Three SKUs with 20 units each."""
    cat = make_category("Hot", slug="hot")
    product = make_product(
        cat, "Hot Item", slug="hot-item", sizes=("S", "M", "L"), colours=("Red",), price=1000, stock=20
    )
    return [v.sku for v in product.variants]


@pytest.fixture
def limits(app, monkeypatch):
    """Set some limits for this test only: limits(HOLD_MAX_ORDERS=1, RATE_CHECKOUTS_PER_IP=(2, 600))."""

    def set_(**values):
        for name, value in values.items():
            monkeypatch.setitem(app.config, name, value)

    return set_


def call(client, method, path, body=None, ip="127.0.0.1", **headers):
    return client.open(
        path,
        method=method.upper(),
        data=json.dumps(body) if body is not None else None,
        content_type="application/json",
        headers=headers,
        environ_base={"REMOTE_ADDR": ip},
    )


def new_cart(client, ip, lines):
    """A fresh guest cart from `ip` holding {sku: quantity}."""
    cart = call(client, "post", "/api/v1/carts", ip=ip).get_json()
    for sku_, quantity in lines.items():
        resp = call(
            client,
            "post",
            f"/api/v1/carts/{cart['id']}/items",
            {"sku": sku_, "quantity": quantity},
            ip=ip,
            **{"X-Cart-Token": cart["token"]},
        )
        assert resp.status_code == 201, resp.get_json()
    return cart


def checkout(client, cart, ip, email=None):
    body = {
        "cart_id": cart["id"],
        "email": email or f"x{uuid.uuid4().hex[:8]}@example.com",
        "shipping_address": ADDRESS,
    }
    return call(
        client,
        "post",
        "/api/v1/checkout",
        body,
        ip=ip,
        **{"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())},
    )


def buy(client, ip, lines, email=None):
    return checkout(client, new_cart(client, ip, lines), ip, email)


def available(client, ip=HONEST) -> dict:
    product = call(client, "get", "/api/v1/products/hot-item", ip=ip).get_json()
    return {v["sku"]: v["available"] for v in product["variants"]}


def text(resp) -> str:
    return unescape(resp.get_data(as_text=True))


# ------------------------------------------------------------------------------------ unpaid holds
def test_one_client_cannot_hold_more_than_its_share_while_an_honest_shopper_still_buys(client, shelf, limits):
    limits(HOLD_SKU_SHARE_PERCENT=25, HOLD_SKU_MIN_UNITS=2)  # of 20 on hand: 5 per client
    answers = [buy(client, ATTACKER, {s: 5 for s in shelf}) for _ in range(4)]  # fresh carts and e-mails
    assert [r.status_code for r in answers] == [201, 409, 409, 409]
    refusal = answers[1].get_json()["error"]
    assert refusal["code"] == "hold_limit_reached" and refusal["details"]["skus"] == sorted(shelf)
    assert "at most 5 of" in refusal["message"]
    assert available(client) == {s: 15 for s in shelf}  # the attacker holds 5 of each, not all 20
    honest = buy(client, HONEST, {s: 5 for s in shelf}, "honest@example.com")
    assert honest.status_code == 201
    assert available(client) == {s: 10 for s in shelf}


def test_unpaid_orders_per_ip_are_capped_and_paying_or_cancelling_frees_the_place(client, shelf, limits):
    limits(HOLD_MAX_ORDERS_PER_IP=2)
    first, second = buy(client, ATTACKER, {shelf[0]: 1}), buy(client, ATTACKER, {shelf[1]: 1})
    assert first.status_code == second.status_code == 201
    third = buy(client, ATTACKER, {shelf[2]: 1})
    assert third.status_code == 409
    assert third.get_json()["error"]["details"] == {"limit": "orders", "held": 2, "allowed": 2}
    assert buy(client, HONEST, {shelf[2]: 1}).status_code == 201  # another network is not affected
    order = first.get_json()["order"]
    assert (
        call(
            client,
            "post",
            f"/api/v1/orders/{order['id']}/cancel",
            ip=ATTACKER,
            **{"X-Order-Token": order["access_token"]},
        ).status_code
        == 200
    )
    assert buy(client, ATTACKER, {shelf[2]: 1}).status_code == 201


def test_unpaid_holds_are_counted_per_email_and_per_account_across_networks(client, shelf, limits):
    limits(HOLD_MAX_ORDERS=1, HOLD_MAX_ORDERS_PER_IP=10)
    assert buy(client, ATTACKER, {shelf[0]: 1}, "same@example.com").status_code == 201
    again = buy(client, HONEST, {shelf[1]: 1}, "same@example.com")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "hold_limit_reached"
    assert buy(client, HONEST, {shelf[1]: 1}, "other@example.com").status_code == 201


def test_units_held_unpaid_per_ip_are_capped(client, shelf, limits):
    limits(HOLD_MAX_UNITS_PER_IP=6)
    assert buy(client, ATTACKER, {shelf[0]: 4}).status_code == 201
    over = buy(client, ATTACKER, {shelf[1]: 3})
    assert over.status_code == 409 and over.get_json()["error"]["details"]["limit"] == "units"
    assert buy(client, ATTACKER, {shelf[1]: 2}).status_code == 201


def test_the_storefront_says_why_an_order_over_the_hold_limit_is_refused(client, redis_client, tee, limits):
    limits(HOLD_MAX_ORDERS_PER_IP=1)
    add(client, sku(tee, "M"), 1)
    details(client)
    _, resp = place(client)
    assert "/pay/test/" in resp.headers["Location"]
    add(client, sku(tee, "M"), 1)  # a second order while the first is unpaid
    details(client)
    _, resp = place(client)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/cart")
    page = text(client.get("/cart"))
    assert (
        "We could not place this order: You already have 1 unpaid order holding stock. Unpaid orders are released after 15 minutes"
        in page
    )


# ------------------------------------------------------------------------------------- cart caps
def test_a_51st_line_is_refused(client, db_session, redis_client):
    cat = make_category("Many", slug="many")
    product = make_product(cat, "Many", slug="many", sizes=[str(n) for n in range(17)], colours=("A", "B", "C"))
    skus = [v.sku for v in product.variants]
    assert len(skus) == 51
    cart = new_cart(client, HONEST, {s: 1 for s in skus[:50]})
    resp = call(
        client,
        "post",
        f"/api/v1/carts/{cart['id']}/items",
        {"sku": skus[50], "quantity": 1},
        ip=HONEST,
        **{"X-Cart-Token": cart["token"]},
    )
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "cart_full"
    more = call(
        client,
        "post",
        f"/api/v1/carts/{cart['id']}/items",
        {"sku": skus[0], "quantity": 2},
        ip=HONEST,
        **{"X-Cart-Token": cart["token"]},
    )
    assert more.status_code == 201 and len(more.get_json()["items"]) == 50  # more of a line already there is fine


# ------------------------------------------------------------------------------------ request rates
def assert_rate_limited(resp):
    assert resp.status_code == 429, resp.get_data(as_text=True)[:300]
    assert resp.get_json()["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) > 0 and resp.headers["RateLimit-Remaining"] == "0"


def test_rapid_cart_writes_get_429_with_retry_after(client, shelf, limits):
    limits(RATE_CART_WRITES_PER_IP=(3, 60))
    cart = call(client, "post", "/api/v1/carts", ip=ATTACKER).get_json()
    token = {"X-Cart-Token": cart["token"]}
    writes = [
        call(
            client, "post", f"/api/v1/carts/{cart['id']}/items", {"sku": shelf[0], "quantity": 1}, ip=ATTACKER, **token
        )
        for _ in range(4)
    ]
    assert [r.status_code for r in writes[:3]] == [201, 201, 201]
    assert_rate_limited(writes[3])
    assert (
        call(client, "get", f"/api/v1/carts/{cart['id']}", ip=ATTACKER, **token).get_json()["items"][0]["quantity"] == 3
    )
    assert new_cart(client, HONEST, {shelf[0]: 1})  # another network still writes


def test_checkouts_per_ip_are_limited(client, shelf, limits):
    limits(RATE_CHECKOUTS_PER_IP=(2, 600))
    assert [buy(client, ATTACKER, {shelf[0]: 1}).status_code for _ in range(2)] == [201, 201]
    assert_rate_limited(buy(client, ATTACKER, {shelf[0]: 1}))
    assert buy(client, HONEST, {shelf[0]: 1}).status_code == 201


def test_the_storefront_says_when_too_many_orders_came_from_one_network(client, redis_client, tee, limits):
    limits(RATE_CHECKOUTS_PER_IP=(1, 600))
    add(client, sku(tee, "M"), 1)
    details(client)
    assert "/pay/test/" in place(client)[1].headers["Location"]
    add(client, sku(tee, "M"), 1)
    details(client)
    _, resp = place(client)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/checkout/review")
    page = text(client.get("/checkout/review"))
    assert "Too many orders placed from your network just now. Please wait about 10 minutes and try again." in page


def test_cart_creation_is_rate_limited_in_the_api(client, db_session, redis_client, limits):
    limits(RATE_CART_CREATES_PER_IP=(3, 3600))
    answers = [call(client, "post", "/api/v1/carts", ip=ATTACKER) for _ in range(4)]
    assert [r.status_code for r in answers[:3]] == [201, 201, 201]
    assert_rate_limited(answers[3])
    assert call(client, "post", "/api/v1/carts", ip=HONEST).status_code == 201
    assert db_session.scalar(select(func.count()).select_from(Cart)) == 4


def test_the_storefront_guest_cart_creation_is_rate_limited(app, client, tee, db_session, limits):
    limits(RATE_CART_CREATES_PER_IP=(1, 3600))
    add(client, sku(tee, "M"), 1)  # the first visitor gets a cart
    other = app.test_client()  # another visitor on the same network
    resp = add(other, sku(tee, "M"), 1)
    assert resp.status_code == 303
    page = text(other.get("/cart"))
    assert "Too many new carts from your network just now. Please wait about 60 minutes and try again." in page
    assert db_session.scalar(select(func.count()).select_from(Cart)) == 1


def test_rapid_cart_changes_in_the_storefront_get_a_message(client, redis_client, tee, limits):
    limits(RATE_CART_WRITES_PER_IP=(2, 60))
    add(client, sku(tee, "M"), 1)
    add(client, sku(tee, "M"), 1)
    add(client, sku(tee, "M"), 1)
    page = text(client.get("/cart"))
    assert "You are changing your cart very quickly. Please wait" in page
    assert re.search(r'name="quantity"[^>]*value="2"', page)


def token_of(html: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def form_post(client, path, data, ip="127.0.0.1"):
    html = client.get(path, environ_base={"REMOTE_ADDR": ip}).get_data(as_text=True)
    return client.post(path, data={"csrf_token": token_of(html), **data}, environ_base={"REMOTE_ADDR": ip})


def test_sign_ups_are_rate_limited_per_ip_in_the_api_and_the_storefront(app, client, db_session, redis_client, limits):
    limits(RATE_SIGNUPS_PER_IP=(2, 3600))
    answers = [
        call(
            client, "post", "/api/v1/auth/register", {"email": f"bot{n}@example.com", "password": PASSWORD}, ip=ATTACKER
        )
        for n in range(3)
    ]
    assert [r.status_code for r in answers[:2]] == [201, 201]
    assert_rate_limited(answers[2])
    page = form_post(
        app.test_client(),
        "/account/signup",
        {"email": "bot9@example.com", "password": PASSWORD, "confirm": PASSWORD},
        ip=ATTACKER,
    )
    assert page.status_code == 429 and int(page.headers["Retry-After"]) > 0
    assert "Too many sign-ups from your network just now. Please wait" in text(page)
    assert (
        call(
            client, "post", "/api/v1/auth/register", {"email": "real@example.com", "password": PASSWORD}, ip=HONEST
        ).status_code
        == 201
    )


def reset_answers(client, email, times):
    return [form_post(client, "/account/reset", {"email": email}) for _ in range(times)]


def without_csrf(page: str) -> str:
    """The page with its CSRF token blanked: the token carries the second it was signed, not the account."""
    return re.sub(r'(name="csrf_token"[^>]*value=")[^"]*', r"\1", page)


def test_reset_requests_are_limited_per_address_without_revealing_accounts(
    app, client, db_session, redis_client, limits
):
    limits(RATE_RESETS_PER_EMAIL=(2, 3600))
    make_user("known@example.com")
    known = reset_answers(client, "known@example.com", 3)
    unknown = reset_answers(client, "unknown@example.com", 3)
    assert [r.status_code for r in known] == [r.status_code for r in unknown] == [200, 200, 429]
    assert without_csrf(text(known[2])).replace("known@", "X@") == without_csrf(text(unknown[2])).replace(
        "unknown@", "X@"
    )
    assert "Too many password-reset requests just now. Please wait" in text(known[2])
    mails = [job for job in Queue("mail", connection=redis_client).jobs if job.args[0] == "account.password_reset"]
    assert len(mails) == 2  # the third request mailed nothing


def test_reset_requests_are_limited_per_ip(client, db_session, redis_client, limits):
    limits(RATE_RESETS_PER_IP=(3, 3600))
    answers = [form_post(client, "/account/reset", {"email": f"n{n}@example.com"}, ip=ATTACKER) for n in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert form_post(client, "/account/reset", {"email": "n9@example.com"}, ip=HONEST).status_code == 200


def test_verification_resends_are_rate_limited(client, db_session, redis_client, limits):
    limits(RATE_VERIFY_RESENDS_PER_USER=(2, 3600))
    make_user("new@example.com", verified=False)
    form_post(client, "/account/login", {"email": "new@example.com", "password": PASSWORD})
    for _ in range(3):
        html = client.get("/account").get_data(as_text=True)
        resp = client.post("/account/verify/resend", data={"csrf_token": token_of(html)})
    assert resp.status_code == 302
    assert "We sent confirmation links a moment ago. Please wait" in text(client.get("/account"))
    mails = [job for job in Queue("mail", connection=redis_client).jobs if job.args[0] == "account.verify_email"]
    assert len(mails) == 2


def test_rate_limits_fail_open_while_redis_is_down(committed_db):
    from shop import create_app
    from tests.conftest import config_for

    app = create_app(config_for(committed_db, REDIS_URL="redis://127.0.0.1:1/0", RATE_CART_CREATES_PER_IP=(1, 3600)))
    client = app.test_client()
    assert [client.post("/api/v1/carts").status_code for _ in range(2)] == [201, 201]  # shopping goes on
