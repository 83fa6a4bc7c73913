"""Order links and order mails (issue 11): signed "See your order" links that open one order in any browser,
"Pay again" after a declined card while the stock is held, the history links, the cancel confirmation, and
order mails with the whole money breakdown, the address, thumbnails and links at PUBLIC_BASE_URL."""

from __future__ import annotations

import email
import json
import re
import threading
import uuid
from email import policy
from html import unescape
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from tests.conftest import config_for, local_path
from tests.factories import make_category, make_product, make_user

ADDRESS = {
    "name": "Ann Buyer",
    "line1": "1 Main St",
    "city": "Springfield",
    "region": "IL",
    "postal_code": "62704",
    "country": "US",
}


@pytest.fixture
def shelf(db_session, redis_client):
    cat = make_category("Tees", slug="tees")
    tee = make_product(cat, "Tee", slug="tee", sizes=("M",), colours=("Red",), price=2000, stock=5)
    db_session.commit()
    return tee.variants[0]


def send(client, method, path, body=None, **headers):
    return getattr(client, method)(
        path, data=json.dumps(body) if body is not None else None, content_type="application/json", headers=headers
    )


def buy(client, sku, quantity=2, email_="ann@example.com", user=None):
    """A pending order placed through the API (a guest unless `user`); returns its JSON."""
    headers = {}
    if user is not None:
        from shop.accounts.tokens import issue_pair

        headers["Authorization"] = f"Bearer {issue_pair(user)['access_token']}"
    cart = send(client, "post", "/api/v1/carts", **headers).get_json()
    token = {"X-Cart-Token": cart["token"]} if cart.get("token") else {}
    assert (
        send(
            client, "post", f"/api/v1/carts/{cart['id']}/items", {"sku": sku, "quantity": quantity}, **token, **headers
        ).status_code
        == 201
    )
    resp = send(
        client,
        "post",
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": email_, "shipping_address": ADDRESS},
        **token,
        **headers,
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert resp.status_code == 201, resp.get_json()
    placed = resp.get_json()
    if placed["order"].get("access_token"):  # the guest's browser keeps its key, as after the checkout page
        assert client.get(f"/orders/{placed['order']['id']}?token={placed['order']['access_token']}").status_code == 200
    return placed


def text(resp) -> str:
    return unescape(resp.get_data(as_text=True))


def csrf(client) -> str:
    return client.get("/csrf-token").get_json()["csrf_token"]


def order_row(db_session, order_id):
    from shop.orders.models import Order

    return db_session.get(Order, order_id, populate_existing=True)


def decline(db_session, order_id):
    """The provider's "payment_failed" event for the order's latest payment, applied as the webhook does."""
    from shop.payments import services as payments
    from shop.payments.models import Payment

    attempt = db_session.scalar(select(Payment).where(Payment.order_id == order_id).order_by(Payment.id.desc()))
    payments.on_failed({"id": attempt.provider_id, "last_payment_error": {"message": "Your card was declined."}})
    db_session.commit()


def rendered(app, event, to, payload):
    from shop.notifications.jobs import render

    message = render(event, to, payload)
    return message.text, message.html


# ------------------------------------------------------------------------------------ signed links
def test_the_mail_link_opens_that_order_in_a_fresh_browser_and_nothing_else(app, client, shelf, db_session):
    from shop.orders import services as orders

    placed = buy(client, shelf.sku)
    other = buy(client, shelf.sku, 1, email_="bo@example.com")
    order = order_row(db_session, placed["order"]["id"])
    link = orders.mail_payload(order)["link"]
    assert link.startswith(app.config["PUBLIC_BASE_URL"] + f"/orders/{order.id}?k=")

    fresh = app.test_client()  # another browser: no session, no guest token, not logged in
    opened = fresh.get(local_path(link))
    assert opened.status_code == 303 and urlsplit(opened.headers["Location"]).path == f"/orders/{order.id}"
    assert "k=" not in opened.headers["Location"]  # the key leaves the address bar
    page = fresh.get(f"/orders/{order.id}")
    assert page.status_code == 200 and order.number in text(page) and "Pending" in text(page)
    # That browser sees that order and no other, and the key does not open another order.
    assert fresh.get(f"/orders/{other['order']['id']}").status_code == 404
    key = re.search(r"k=([^&]+)", link).group(1)
    forged = fresh.get(f"/orders/{other['order']['id']}?k={key}")
    assert forged.status_code == 404 and "This order link does not work" in text(forged)
    assert "your order history" in text(forged) and other["order"]["number"] not in text(forged)
    tampered = app.test_client().get(f"/orders/{order.id}?k={key[:-3]}xyz")
    assert tampered.status_code == 404 and "This order link does not work" in text(tampered)
    assert "log in" in text(tampered)
    # Logging out at that browser leaves it no key: the next person there cannot open the order.
    assert fresh.post("/account/logout", data={"csrf_token": csrf(fresh)}).status_code == 302
    assert fresh.get(f"/orders/{order.id}").status_code == 404


def test_an_expired_link_says_so_and_what_to_do(app, client, shelf, db_session, monkeypatch):
    import itsdangerous.timed

    from shop.orders import services as orders

    placed = buy(client, shelf.sku)
    order = order_row(db_session, placed["order"]["id"])
    real_time = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real_time() - 31 * 24 * 3600)
    old_link = orders.order_link(order)
    monkeypatch.setattr(itsdangerous.timed.time, "time", real_time)
    expired = app.test_client().get(local_path(old_link))
    assert expired.status_code == 410
    page = text(expired)
    assert "This order link has expired" in page and "30 days" in page
    assert "/account/orders" in page and "Reply to any of our e-mails" in page
    # The guest's own browser (it keeps the order's key from the checkout) just shows the order.
    assert client.get(local_path(old_link)).headers["Location"].endswith(f"/orders/{order.id}")
    assert client.get(f"/orders/{order.id}").status_code == 200
    monkeypatch.setitem(app.config, "ORDER_LINK_MAX_AGE_DAYS", 60)  # configurable
    assert app.test_client().get(local_path(old_link)).status_code == 303


def test_the_test_gateway_sends_a_guest_back_to_an_order_page_that_opens(app, client, shelf, db_session):
    placed = buy(client, shelf.sku)
    pay = local_path(placed["payment"]["redirect_url"])
    shopper = app.test_client()  # e.g. the pay page was reached at another host name: no session here
    resp = shopper.post(pay, data={"csrf_token": csrf(shopper), "decision": "decline"})
    assert resp.status_code in (302, 303)
    back = shopper.get(local_path(resp.headers["Location"]), follow_redirects=True)
    assert back.status_code == 200 and placed["order"]["number"] in text(back)


# ------------------------------------------------------------------------------------------ pay again
def test_a_declined_payment_can_be_paid_again_while_the_items_are_held(app, client, shelf, db_session):
    from shop.payments.models import Payment

    placed = buy(client, shelf.sku)
    order_id = placed["order"]["id"]
    decline(db_session, order_id)
    page = text(client.get(f"/orders/{order_id}"))
    assert "The payment was declined" in page and "Pay again" in page
    held = re.search(r"Your items are held until (\d\d:\d\d) UTC \((\d+) minutes?\)", page)
    assert held and 13 <= int(held.group(2)) <= 15  # RESERVATION_TTL_SECONDS is 15 minutes

    resp = client.post(f"/orders/{order_id}/pay", data={"csrf_token": csrf(client)})
    assert resp.status_code == 303 and "/pay/test/" in resp.headers["Location"]
    attempts = db_session.scalars(select(Payment).where(Payment.order_id == order_id).order_by(Payment.id)).all()
    assert [p.status for p in attempts] == ["failed", "requires_payment"]
    assert f"/pay/test/{attempts[1].id}?" in resp.headers["Location"]
    shelf_row = db_session.get(type(shelf), shelf.id, populate_existing=True)
    assert shelf_row.reserved == 2  # the same hold, not a second one
    # Pressing again before paying answers the same attempt.
    again = client.post(f"/orders/{order_id}/pay", data={"csrf_token": csrf(client)})
    assert again.headers["Location"].split("?")[0] == resp.headers["Location"].split("?")[0]
    assert db_session.scalar(select(func.count()).select_from(Payment).where(Payment.order_id == order_id)) == 2
    # The declined attempt's page cannot be approved any more: only the new attempt takes money.
    closed = client.post(
        local_path(placed["payment"]["redirect_url"]), data={"csrf_token": csrf(client), "decision": "approve"}
    )
    assert closed.status_code == 303
    closed = client.get(local_path(closed.headers["Location"]), follow_redirects=True)
    assert "This payment attempt is closed." in text(closed) and placed["order"]["number"] in text(closed)


def test_an_api_client_pays_again_after_a_decline(client, shelf, db_session):
    """POST /api/v1/orders/{id}/pay: a guest with its X-Order-Token gets a new attempt on the same hold."""
    from shop.payments.models import Payment

    placed = buy(client, shelf.sku)
    order_id, key = placed["order"]["id"], {"X-Order-Token": placed["order"]["access_token"]}
    assert (
        send(client, "post", f"/api/v1/orders/{order_id}/pay", **key).get_json()["payment"]["id"]
        == placed["payment"]["id"]
    )  # the first attempt is still open: answered again, not doubled
    decline(db_session, order_id)
    assert send(client, "post", f"/api/v1/orders/{order_id}/pay").status_code == 404  # no key: not yours
    resp = send(client, "post", f"/api/v1/orders/{order_id}/pay", **key)
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["order"]["status"] == "pending" and body["payment"]["id"] != placed["payment"]["id"]
    assert f"/pay/test/{body['payment']['id']}?" in body["payment"]["redirect_url"]
    attempts = db_session.scalars(select(Payment.status).where(Payment.order_id == order_id).order_by(Payment.id))
    assert list(attempts) == ["failed", "requires_payment"]
    assert db_session.get(type(shelf), shelf.id, populate_existing=True).reserved == 2  # the same hold
    assert send(client, "post", f"/api/v1/orders/{order_id}/cancel", **key).status_code == 200
    refused = send(client, "post", f"/api/v1/orders/{order_id}/pay", **key)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_payable"


def paid_twice(client, shelf, db_session):
    """An order whose declined first attempt is paid after all, beside the "Pay again" attempt that confirmed it:
    (order id, first payment, second payment), the first's refund queued but not run."""
    from shop.payments import services as payments
    from shop.payments.models import Payment

    placed = buy(client, shelf.sku)
    order_id = placed["order"]["id"]
    decline(db_session, order_id)
    client.post(f"/orders/{order_id}/pay", data={"csrf_token": csrf(client)})
    first, second = db_session.scalars(select(Payment).where(Payment.order_id == order_id).order_by(Payment.id)).all()
    assert payments.on_succeeded({"id": second.provider_id, "amount": second.amount}) == "confirmed"
    db_session.commit()
    assert payments.on_succeeded({"id": first.provider_id, "amount": first.amount}) == "refunding: order already paid"
    db_session.commit()
    return order_id, first, second


def test_a_declined_attempt_paid_after_all_beside_pay_again_is_given_back(app, client, shelf, db_session):
    """Stripe lets a declined PaymentIntent be confirmed again: if both attempts succeed, the order is paid once."""
    from shop.payments import services as payments
    from shop.payments.models import Payment, Refund

    order_id, first, second = paid_twice(client, shelf, db_session)
    assert (
        payments.refund_remaining_job(order_id, "The order was already paid", "system", payment_id=first.id)
        == "refunded"
    )
    [refund] = db_session.scalars(select(Refund).join(Payment).where(Payment.order_id == order_id)).all()
    assert (refund.payment_id, refund.amount, refund.status) == (first.id, first.amount, "succeeded")
    assert order_row(db_session, order_id).status == "confirmed"
    assert payments.refundable(db_session.get(Payment, second.id, populate_existing=True)) == second.amount
    # A refund staff make later comes out of the payment that stands, not the one already given back.
    partial = payments.refund(order_id, 100, "A scuffed box", "support@example.com")
    assert (partial.payment_id, partial.amount) == (second.id, 100)


def test_cancelling_an_order_paid_twice_refunds_both_payments_whatever_runs_first(app, client, shelf, db_session):
    """The late duplicate's own refund has not run yet when the order is cancelled: the cancellation refunds the
    payment that stands (not the duplicate), and the duplicate's refund still gives its money back."""
    from shop.orders import services as orders
    from shop.payments import services as payments

    order_id, first, second = paid_twice(client, shelf, db_session)
    orders.transition(order_id, "cancelled", "support@example.com", "customer asked")
    db_session.commit()
    # The cancellation's refund job (no payment named) runs before the duplicate's.
    assert payments.refund_remaining_job(order_id, "Order cancelled", "support@example.com") == "refunded"
    assert (
        payments.refund_remaining_job(order_id, "The order was already paid", "system", payment_id=first.id)
        == "refunded"
    )
    for p in (first, second):
        db_session.refresh(p)
    assert (first.refunded_amount, second.refunded_amount) == (first.amount, second.amount)
    assert payments.refund_remaining_job(order_id, "Order cancelled", "support@example.com") == "nothing to refund"


def test_pay_again_is_refused_once_the_hold_has_run_out(app, client, shelf, db_session):
    from sqlalchemy import update

    from shop.inventory.models import Reservation

    placed = buy(client, shelf.sku)
    order_id = placed["order"]["id"]
    decline(db_session, order_id)
    db_session.execute(
        update(Reservation)
        .where(Reservation.order_id == order_id)
        .values(expires_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 1))
    )
    db_session.commit()
    page = text(client.get(f"/orders/{order_id}"))
    assert "Pay again" not in page and "no longer held" in page
    resp = client.post(f"/orders/{order_id}/pay", data={"csrf_token": csrf(client)}, follow_redirects=True)
    assert resp.status_code == 200 and "no longer held for you" in text(resp)
    # Someone else's order cannot be paid (or even seen) from this browser.
    assert app.test_client().post(f"/orders/{order_id}/pay").status_code in (400, 404)


def test_two_pay_again_at_once_make_one_new_attempt(committed_db, redis_client):
    """Real commits on PostgreSQL: two threads press "Pay again" together; the order lock lets one through."""
    from shop import create_app
    from shop.extensions import db
    from shop.payments import services as payments
    from shop.payments.models import Payment

    app = create_app(config_for(committed_db))
    with app.app_context():
        cat = make_category("Tees", slug="tees")
        variant = make_product(cat, "Tee", slug="tee", sizes=("M",), colours=("Red",), stock=5).variants[0]
        db.session.commit()
        placed = buy(app.test_client(), variant.sku)
        order_id = placed["order"]["id"]
        attempt = payments.latest(order_id)
        payments.on_failed({"id": attempt.provider_id})
        db.session.commit()

    barrier, answers, errors = threading.Barrier(2), [], []

    def press():
        with app.app_context():
            try:
                barrier.wait(5)
                answers.append(payments.pay_again(order_id))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=press) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with app.app_context():
        rows = db.session.scalars(select(Payment).where(Payment.order_id == order_id).order_by(Payment.id)).all()
        assert [p.status for p in rows] == ["failed", "requires_payment"]
        assert {a["id"] for a in answers} == {rows[1].id}
        db.engine.dispose()


# ------------------------------------------------------------------------ history, cancel, thank you
def test_order_history_is_linked_from_the_account_and_the_order_page(app, client, shelf, db_session):
    from tests.integration.test_storefront_cart import log_in  # the storefront's log-in form

    user = make_user("owner@example.com")
    db_session.commit()
    placed = buy(client, shelf.sku, user=user)
    log_in(client, user.email)
    assert 'href="/account/orders"' in client.get("/account").get_data(as_text=True)
    page = client.get(f"/orders/{placed['order']['id']}").get_data(as_text=True)
    assert 'href="/account/orders">All your orders</a>' in page
    guest = buy(app.test_client(), shelf.sku, 1, email_="g@example.com")
    link = app.test_client()
    from shop.orders import services as orders

    link.get(local_path(orders.order_link(order_row(db_session, guest["order"]["id"]))))
    assert "All your orders" not in link.get(f"/orders/{guest['order']['id']}").get_data(as_text=True)


def test_cancelling_asks_to_confirm_without_javascript(app, client, shelf, db_session):
    placed = buy(client, shelf.sku)
    order_id = placed["order"]["id"]
    html = client.get(f"/orders/{order_id}").get_data(as_text=True)
    # The button only opens the question (a closed <details>); the form that cancels sits inside it.
    ask = re.search(
        r'<details class="order-cancel"[^>]*>\s*<summary[^>]*>Cancel this order</summary>(.*?)</details>', html, re.S
    )
    assert ask and f'action="/orders/{order_id}/cancel"' in ask.group(1)
    assert f"Cancel order {placed['order']['number']}?" in ask.group(1) and "Yes, cancel the order" in ask.group(1)
    assert html.count(f'action="/orders/{order_id}/cancel"') == 1  # no one-press form outside the question
    assert order_row(db_session, order_id).status == "pending"
    done = client.post(f"/orders/{order_id}/cancel", data={"csrf_token": csrf(client)}, follow_redirects=True)
    assert "Your order is cancelled." in text(done) and order_row(db_session, order_id).status == "cancelled"


def test_after_paying_the_page_says_thank_you_and_where_the_mail_went(app, client, shelf, db_session):
    from shop.orders import services as orders

    placed = buy(client, shelf.sku, email_="annabel@example.com")
    order = order_row(db_session, placed["order"]["id"])
    orders.transition(order.id, "confirmed", "test")
    page = re.sub(r"<[^>]+>", "", text(client.get(f"/orders/{order.id}?paid=approve")))
    assert "Thank you for your order!" in page and "We e-mailed a confirmation to a***@example.com" in page
    assert "Springfield, IL 62704" in page  # US: ZIP after the city and state


# ------------------------------------------------------------------------------------------- mails
def test_order_mails_show_the_whole_breakdown_the_address_and_thumbnails(app, client, shelf, db_session):
    from shop.orders import services as orders

    placed = buy(client, shelf.sku, 2)
    order = order_row(db_session, placed["order"]["id"])
    order.lines[0].list_price = 2500  # an automatic sale took $5 off (OrderLine.list_price, helper B)
    payload = orders.mail_payload(order)
    plain, html = rendered(app, "order.confirmed", order.email, payload)
    # 2 x $20.00 = $40.00; standard shipping $5.95; Illinois has no tax in the default table.
    for needed in (
        "2 x Tee",
        "at $20.00",
        "(sale; was $25.00)",
        "Subtotal: $40.00",
        "Shipping (standard): $5.95",
        "Tax: $0.00",
        "Total: $45.95",
        "Springfield, IL 62704",
        "1 Main St",
    ):
        assert needed in plain, needed
    assert order.subtotal - order.discount + order.shipping + order.tax == order.total
    for needed in ("$20.00", "<s>$25.00</s>", "Subtotal", "$40.00", "$5.95", "$45.95", "Springfield, IL 62704"):
        assert needed in html, needed
    images = re.findall(r'<img src="([^"]+)"', html)
    assert images and all(src.startswith(app.config["PUBLIC_BASE_URL"] + "/media/") for src in images)
    # A guest has no account to speak of.
    assert "account" not in plain.lower() and "your The Shop account" not in html
    assert "an order was placed with this address" in html


def test_the_shipped_mail_carries_what_staff_wrote_about_the_parcel(app, client, shelf, db_session):
    from shop.orders import services as orders

    placed = buy(client, shelf.sku)
    order = order_row(db_session, placed["order"]["id"])
    for status in ("confirmed", "processing"):
        orders.transition(order.id, status, "staff@example.com")
    order = order_row(db_session, order.id)
    order.status = "shipped"
    payload = {**orders.mail_payload(order), "shipping_note": "UPS 1Z999AA10123456784"}
    plain, html = rendered(app, "order.shipped", order.email, payload)
    assert "UPS 1Z999AA10123456784" in plain and "Tracking your parcel" in html
    payload["tracking"] = {"carrier": "UPS", "number": "1Z9", "url": "https://ups.example/1Z9"}
    plain, html = rendered(app, "order.shipped", order.email, payload)
    assert "Tracking: UPS 1Z9 https://ups.example/1Z9" in plain and 'href="https://ups.example/1Z9"' in html


def test_links_in_job_sent_mails_start_with_the_public_base_url(app, shelf, db_session, tmp_path, monkeypatch):
    """Mails are rendered by the workers, outside any request: every link and image is at PUBLIC_BASE_URL,
    whatever host a request came in on."""
    from shop.notifications.jobs import send_notification
    from shop.orders import services as orders

    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", "http://127.0.0.1:5401")
    monkeypatch.setitem(app.config, "MAIL_DIR", str(tmp_path))
    placed = buy(app.test_client(), shelf.sku)
    order = order_row(db_session, placed["order"]["id"])
    with app.test_request_context("/", base_url="http://localhost:5000"):  # a request at another host
        payload = orders.mail_payload(order)
    with app.app_context():  # as the mail worker runs it
        name = send_notification("order.confirmed", order.email, payload, key=f"t:{uuid.uuid4()}")
    msg = email.message_from_bytes((tmp_path / name).read_bytes(), policy=policy.default)
    html = msg.get_body(("html",)).get_content()
    assert re.search(r'<img src="http://127\.0\.0\.1:5401/media/', html)  # product thumbnails, absolute
    urls = re.findall(r'(?:href|src)="([^"]+)"', html) + re.findall(
        r"https?://\S+", msg.get_body(("plain",)).get_content()
    )
    assert urls and all(u.startswith("http://127.0.0.1:5401/") for u in urls), urls


def test_make_run_gives_every_process_the_port_it_serves_as_public_base_url(tmp_path):
    from shop.devstack import Stack, shop_env

    stack = Stack(tmp_path)
    assert shop_env(stack, "127.0.0.1", 5401, {})["PUBLIC_BASE_URL"] == "http://127.0.0.1:5401"
    assert shop_env(stack, "0.0.0.0", 5401, {"PUBLIC_BASE_URL": ""})["PUBLIC_BASE_URL"] == "http://127.0.0.1:5401"
    kept = shop_env(stack, "127.0.0.1", 5401, {"PUBLIC_BASE_URL": "https://shop.example.com"})
    assert kept["PUBLIC_BASE_URL"] == "https://shop.example.com"
