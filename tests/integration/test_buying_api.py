"""Carts, checkout and orders through the API: ownership, tampering, merging, replays, cancellation."""

import json
import uuid

import pytest
from rq import Queue

from shop import consumers
from tests.factories import make_category, make_product, make_user

ADDRESS = {
    "name": "Ann Buyer",
    "line1": "1 Main St",
    "city": "Springfield",
    "region": "CA",
    "postal_code": "12345",
    "country": "US",
}


@pytest.fixture
def shelf(db_session, redis_client):
    cat = make_category("Tees", slug="tees")
    tee = make_product(
        cat, "Tee", slug="tee", sizes=("M", "L"), colours=("Red",), price=2000, stock={("M", "Red"): 5, ("L", "Red"): 1}
    )
    return {v.options["size"]: v for v in tee.variants}


def send(client, method, path, body=None, **headers):
    return getattr(client, method)(
        path, data=json.dumps(body) if body is not None else None, content_type="application/json", headers=headers
    )


def bearer(user):
    from shop.accounts.tokens import issue_pair

    return {"Authorization": f"Bearer {issue_pair(user)['access_token']}"}


def guest_cart(client, sku, quantity=1):
    cart = send(client, "post", "/api/v1/carts").get_json()
    resp = send(
        client,
        "post",
        f"/api/v1/carts/{cart['id']}/items",
        {"sku": sku, "quantity": quantity},
        **{"X-Cart-Token": cart["token"]},
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def checkout(client, cart, key=None, **extra):
    body = {"cart_id": cart["id"], "email": "ann@example.com", "shipping_address": ADDRESS, **extra}
    return send(
        client,
        "post",
        "/api/v1/checkout",
        body,
        **{"X-Cart-Token": cart.get("token") or "", "Idempotency-Key": key or str(uuid.uuid4())},
    )


def test_cart_prices_come_from_the_catalogue_and_quantities_are_checked(client, shelf):
    cart = guest_cart(client, shelf["M"].sku, 2)
    [line] = cart["items"]
    assert line["unit_price"] == {"amount": 2000, "currency": "USD"} and cart["subtotal"]["amount"] == 4000
    token = {"X-Cart-Token": cart["token"]}
    too_many = send(
        client, "post", f"/api/v1/carts/{cart['id']}/items", {"sku": shelf["M"].sku, "quantity": 4}, **token
    )
    assert too_many.status_code == 409 and too_many.get_json()["error"]["code"] == "out_of_stock"
    for bad in (0, 101, -1, "2", None):
        resp = send(
            client, "post", f"/api/v1/carts/{cart['id']}/items", {"sku": shelf["M"].sku, "quantity": bad}, **token
        )
        assert resp.status_code == 422, bad
    assert (
        send(client, "post", f"/api/v1/carts/{cart['id']}/items", {"sku": "NOPE", "quantity": 1}, **token).status_code
        == 404
    )
    item = line["id"]
    assert (
        send(client, "patch", f"/api/v1/carts/{cart['id']}/items/{item}", {"quantity": 5}, **token).get_json()["items"][
            0
        ]["quantity"]
        == 5
    )
    assert send(client, "delete", f"/api/v1/carts/{cart['id']}/items/{item}", **token).get_json()["items"] == []


def test_someone_elses_cart_is_404(client, shelf, db_session):
    cart = guest_cart(client, shelf["M"].sku)
    assert client.get(f"/api/v1/carts/{cart['id']}").status_code == 404
    assert client.get(f"/api/v1/carts/{cart['id']}", headers={"X-Cart-Token": "wrong"}).status_code == 404
    assert client.get("/api/v1/carts/not-a-uuid").status_code == 404
    owner, other = make_user(), make_user()
    mine = send(client, "post", "/api/v1/carts", **bearer(owner)).get_json()
    assert mine["token"] is None
    assert client.get(f"/api/v1/carts/{mine['id']}", headers=bearer(other)).status_code == 404
    assert client.get(f"/api/v1/carts/{mine['id']}", headers=bearer(owner)).status_code == 200


def test_guest_cart_merges_into_the_users_cart_capped_by_stock(client, shelf, db_session):
    user = make_user()
    h = bearer(user)
    mine = send(client, "post", "/api/v1/carts", **h).get_json()
    send(client, "post", f"/api/v1/carts/{mine['id']}/items", {"sku": shelf["M"].sku, "quantity": 4}, **h)
    guest = guest_cart(client, shelf["M"].sku, 3)
    send(
        client,
        "post",
        f"/api/v1/carts/{guest['id']}/items",
        {"sku": shelf["L"].sku, "quantity": 1},
        **{"X-Cart-Token": guest["token"]},
    )
    merged = send(client, "post", "/api/v1/carts/merge", {"guest_cart_token": guest["token"]}, **h)
    assert merged.status_code == 200
    quantities = {i["sku"]: i["quantity"] for i in merged.get_json()["items"]}
    assert quantities == {shelf["M"].sku: 5, shelf["L"].sku: 1}  # 4 + 3 capped at the 5 in stock
    again = send(client, "post", "/api/v1/carts/merge", {"guest_cart_token": guest["token"]}, **h)
    assert {i["sku"]: i["quantity"] for i in again.get_json()["items"]} == quantities  # merged once
    assert send(client, "post", "/api/v1/carts/merge", {"guest_cart_token": "nope"}, **h).status_code == 404
    assert send(client, "post", "/api/v1/carts/merge", {"guest_cart_token": guest["token"]}).status_code == 401


def test_checkout_recomputes_every_price_whatever_the_client_sends(client, shelf):
    cart = guest_cart(client, shelf["M"].sku, 2)
    resp = checkout(
        client,
        cart,
        total={"amount": 1, "currency": "USD"},
        unit_price=1,
        items=[{"sku": shelf["M"].sku, "quantity": 2, "unit_price": {"amount": 1}}],
    )
    assert resp.status_code == 201, resp.get_json()
    order = resp.get_json()["order"]
    assert order["items"][0]["unit_price"]["amount"] == 2000
    assert order["subtotal"]["amount"] == 4000 and order["shipping"]["amount"] == 595
    assert order["tax"]["amount"] == 290  # 7.25% California on 40.00
    assert order["total"]["amount"] == 4000 + 595 + 290
    assert resp.get_json()["payment"]["provider"] == "test" and "redirect_url" in resp.get_json()["payment"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"email": "nope"}, "email"),
        ({"shipping_address": {"name": "x"}}, "shipping_address.line1"),
        ({"shipping_method": "teleport"}, "shipping_method"),
        ({"shipping_address": "a string"}, "shipping_address"),
    ],
)
def test_checkout_validation_is_422_and_writes_nothing(client, shelf, db_session, body, field):
    from sqlalchemy import func, select

    from shop.orders.models import Order

    cart = guest_cart(client, shelf["M"].sku)
    resp = send(
        client,
        "post",
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": "ann@example.com", "shipping_address": ADDRESS, **body},
        **{"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())},
    )
    assert resp.status_code == 422 and field in resp.get_json()["error"]["details"]["fields"]
    assert db_session.scalar(select(func.count()).select_from(Order)) == 0
    assert checkout(client, cart).status_code == 201  # the cart is still usable


def test_checkout_needs_an_idempotency_key_and_replays_with_it(client, shelf):
    cart = guest_cart(client, shelf["M"].sku)
    no_key = send(
        client,
        "post",
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": "a@example.com", "shipping_address": ADDRESS},
        **{"X-Cart-Token": cart["token"]},
    )
    assert no_key.status_code == 400 and no_key.get_json()["error"]["code"] == "idempotency_key_required"
    # The missing key is the first thing said, whatever else is wrong with the body.
    bad_body = send(client, "post", "/api/v1/checkout", {"cart_id": cart["id"], "shipping_method": "teleport"})
    assert bad_body.status_code == 400 and bad_body.get_json()["error"]["code"] == "idempotency_key_required"
    key = str(uuid.uuid4())
    first, second = checkout(client, cart, key), checkout(client, cart, key)
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json()
    other_body = checkout(client, cart, key, shipping_method="express")
    assert other_body.status_code == 422 and other_body.get_json()["error"]["code"] == "idempotency_key_reused"
    assert checkout(client, cart).get_json()["error"]["code"] == "cart_closed"


def test_orders_belong_to_their_owner_or_the_guest_token(client, shelf, db_session):
    cart = guest_cart(client, shelf["M"].sku)
    placed = checkout(client, cart).get_json()["order"]
    token = placed["access_token"]
    assert client.get(f"/api/v1/orders/{placed['id']}").status_code == 404
    assert client.get(f"/api/v1/orders/{placed['id']}", headers={"X-Order-Token": "guess"}).status_code == 404
    got = client.get(f"/api/v1/orders/{placed['id']}", headers={"X-Order-Token": token}).get_json()
    assert got["number"] == placed["number"] and "access_token" not in got
    owner, stranger = make_user(), make_user()
    h = bearer(owner)
    my_cart = send(client, "post", "/api/v1/carts", **h).get_json()
    send(client, "post", f"/api/v1/carts/{my_cart['id']}/items", {"sku": shelf["L"].sku, "quantity": 1}, **h)
    mine = send(
        client,
        "post",
        "/api/v1/checkout",
        {"cart_id": my_cart["id"], "email": "o@example.com", "shipping_address": ADDRESS},
        **{**h, "Idempotency-Key": str(uuid.uuid4())},
    ).get_json()["order"]
    assert "access_token" not in mine
    assert client.get(f"/api/v1/orders/{mine['id']}", headers=bearer(stranger)).status_code == 404
    listing = client.get("/api/v1/orders", headers=h).get_json()
    assert [o["id"] for o in listing["items"]] == [mine["id"]] and listing["total"] == 1


def test_cancellation_frees_stock_and_is_409_once_shipped(client, app, shelf, db_session, redis_client):
    from shop.orders import services as orders
    from shop.payments import services as payments
    from shop.payments.models import Payment

    cart = guest_cart(client, shelf["M"].sku, 2)
    placed = checkout(client, cart).get_json()["order"]
    h = {"X-Order-Token": placed["access_token"]}
    db_session.refresh(shelf["M"])
    assert shelf["M"].reserved == 2
    cancelled = client.post(f"/api/v1/orders/{placed['id']}/cancel", headers=h)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    db_session.refresh(shelf["M"])
    assert (shelf["M"].on_hand, shelf["M"].reserved) == (5, 0)
    assert client.post(f"/api/v1/orders/{placed['id']}/cancel", headers=h).status_code == 409

    cart = guest_cart(client, shelf["M"].sku, 1)
    placed = checkout(client, cart).get_json()["order"]
    payment = db_session.query(Payment).filter_by(order_id=placed["id"]).one()
    payments.on_succeeded({"id": payment.provider_id, "amount": payment.amount})
    db_session.commit()
    for target in ("processing", "shipped"):
        orders.transition(placed["id"], target, "picker@example.com")
    consumers.drain(["order-mails"])  # the mails are sent from the order's events
    mail = [j.args[0] for j in Queue("mail", connection=redis_client).jobs]
    assert mail.count("order.confirmed") == 1 and mail.count("order.shipped") == 1
    late = client.post(f"/api/v1/orders/{placed['id']}/cancel", headers={"X-Order-Token": placed["access_token"]})
    assert late.status_code == 409 and late.get_json()["error"]["code"] == "invalid_transition"
    events = client.get(f"/api/v1/orders/{placed['id']}", headers={"X-Order-Token": placed["access_token"]}).get_json()[
        "events"
    ]
    assert [e["status"] for e in events] == ["pending", "confirmed", "processing", "shipped"]
    assert events[-1]["actor"] == "picker@example.com"
