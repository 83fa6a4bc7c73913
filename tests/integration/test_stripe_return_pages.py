"""The way back from Stripe's hosted Checkout page (/checkout/return/<order id>): the order's owner is told where
their payment stands (confirming…, a bank payment on its way, or on to the order page), and whoever else holds the
URL (a forwarded link, a screenshot, a shared computer's history) learns nothing of the order.

In test mode (PAYMENT_PROVIDER=test) sync_checkout asks no provider: it answers from the database, which the tests
move with the shop's own webhook handlers (payments.on_checkout_completed)."""

from __future__ import annotations

import json
import re
import uuid
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import local_path
from tests.factories import make_category, make_product

ADDRESS = {
    "name": "Ann Buyer",
    "line1": "1 Main St",
    "city": "Springfield",
    "region": "IL",
    "postal_code": "62704",
    "country": "US",
}
SESSION = "cs_test_abc"
NEUTRAL = "If you just paid, your confirmation is on its way to your e-mail; open your order from that mail."


@pytest.fixture
def shelf(db_session, redis_client):
    cat = make_category("Tees", slug="tees")
    tee = make_product(cat, "Harbour Tee", slug="harbour-tee", sizes=("M",), colours=("Red",), price=2000, stock=5)
    db_session.commit()
    return tee.variants[0]


def send(client, method, path, body=None, **headers):
    return getattr(client, method)(
        path, data=json.dumps(body) if body is not None else None, content_type="application/json", headers=headers
    )


@pytest.fixture
def order(client, shelf, db_session):
    """A guest's pending order placed in `client`'s browser (which keeps the order's key, as after the checkout
    page), paid on a hosted Checkout Session that has not been reported yet."""
    from shop.orders.models import Order
    from shop.payments.models import Payment

    cart = send(client, "post", "/api/v1/carts").get_json()
    token = {"X-Cart-Token": cart["token"]}
    assert (
        send(
            client, "post", f"/api/v1/carts/{cart['id']}/items", {"sku": shelf.sku, "quantity": 2}, **token
        ).status_code
        == 201
    )
    resp = send(
        client,
        "post",
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": "ann@example.com", "shipping_address": ADDRESS},
        **token,
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert resp.status_code == 201, resp.get_json()
    placed = resp.get_json()["order"]
    assert client.get(f"/orders/{placed['id']}?token={placed['access_token']}").status_code == 200
    row = db_session.get(Order, placed["id"])
    db_session.add(
        Payment(
            order_id=row.id,
            flow="checkout",
            checkout_session_id=SESSION,
            provider="stripe",
            status="requires_payment",
            amount=row.total,
            currency=row.currency,
        )
    )
    db_session.commit()
    return row


def back_url(order_id: int, result: str = "paid", session_id: str = SESSION) -> str:
    return f"/checkout/return/{order_id}?result={result}&session_id={session_id}"


def text(resp) -> str:
    return unescape(resp.get_data(as_text=True))


def stripe_reports(db_session, order, payment_status: str) -> None:
    """checkout.session.completed for the order's session, applied as the webhook does."""
    from shop.payments import services as payments

    payments.on_checkout_completed(
        {
            "id": SESSION,
            "status": "complete",
            "payment_status": payment_status,
            "payment_intent": "pi_from_checkout",
            "amount_total": order.total,
            "metadata": {"order_id": str(order.id)},
        }
    )
    db_session.commit()


def assert_private(resp) -> None:
    assert resp.headers["Cache-Control"] == "private, no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"  # the URL holds the session id


def assert_neutral(resp, order) -> None:
    from shop.money import format_money

    page = text(resp)
    assert resp.status_code == 200 and NEUTRAL in page
    for secret in (
        order.number,
        "ann@example.com",
        "a***@",
        "example.com",
        "Harbour",
        "Ann Buyer",
        "Springfield",
        format_money(order.total, order.currency),
    ):
        assert secret not in page
    assert "confirming.js" not in page and "Check again" not in page
    assert_private(resp)


# ------------------------------------------------------------------------------------------- the owner
def test_the_owner_back_from_paying_is_told_the_order_is_being_confirmed(client, order):
    resp = client.get(back_url(order.id))
    assert resp.status_code == 200
    assert_private(resp)
    page = text(resp)
    assert "Payment received — confirming your order…" in page and order.number in page
    # "Check again" is the same URL: it works without JavaScript.
    again = re.search(r'<a href="([^"]+)" data-testid="check-again">Check again</a>', page)
    assert again and again.group(1) == back_url(order.id)
    # The status line is a live region; the only script is a static file (the CSP forbids inline ones).
    assert re.search(r'id="confirming-status"[^>]*aria-live="polite"', page, re.S)
    assert '<script src="/static/confirming.js" defer></script>' in page
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
    # The poll's address is in the page, for this order and this session.
    state_url = re.search(r'data-state-url="([^"]+)"', page).group(1)
    assert state_url == f"/checkout/return/{order.id}/state?session_id={SESSION}"
    assert client.get(state_url).get_json() == {"state": "waiting"}


def order_page_after(client, resp, order, paid: str) -> str:
    """The return page sent the owner (privately) to their order page with `paid=<paid>`: that page's text."""
    assert resp.status_code == 303
    assert_private(resp)
    location = urlsplit(resp.headers["Location"])
    assert location.path == f"/orders/{order.id}" and parse_qs(location.query) == {"paid": [paid]}
    return text(client.get(local_path(resp.headers["Location"])))


def test_a_confirmed_order_goes_straight_to_its_order_page_with_the_thanks(client, order, db_session):
    stripe_reports(db_session, order, "paid")
    resp = client.get(back_url(order.id))
    page = order_page_after(client, resp, order, "approve")
    assert "Thank you for your order!" in page and "Confirmed" in page


def test_the_confirming_page_polls_a_state_that_changes_when_the_webhook_arrives(client, order, db_session):
    state_url = f"/checkout/return/{order.id}/state?session_id={SESSION}"
    resp = client.get(state_url)
    assert resp.status_code == 200 and resp.get_json() == {"state": "waiting"}
    assert_private(resp)
    stripe_reports(db_session, order, "paid")
    assert client.get(state_url).get_json() == {"state": "confirmed"}


def test_a_bank_payment_on_its_way_gets_its_own_page_and_no_second_pay_button(client, order, db_session):
    stripe_reports(db_session, order, "unpaid")  # submitted on Stripe's page, the bank pays in days
    resp = client.get(back_url(order.id))
    assert resp.status_code == 200
    page = text(resp)
    assert "Your bank payment is on its way" in page and order.number in page and "$" in page
    assert "What happens next" in page and "e-mail" in page and "confirming.js" not in page
    assert client.get(f"/checkout/return/{order.id}/state?session_id={SESSION}").get_json() == {"state": "processing"}
    link = re.search(r'<a class="button" href="([^"]+)">See your order</a>', page).group(1)
    order_page = text(client.get(link))
    assert "Your bank payment is on its way" in order_page and "Pay now" not in order_page


def test_an_order_cancelled_meanwhile_goes_to_its_order_page(client, order, db_session):
    from shop.orders import services as orders
    from shop.orders import states

    orders.move(db_session.get(type(order), order.id), states.CANCELLED, "system", "Hold ran out")
    db_session.commit()
    resp = client.get(back_url(order.id))
    assert resp.status_code == 303 and urlsplit(resp.headers["Location"]).path == f"/orders/{order.id}"
    assert "Cancelled" in text(client.get(local_path(resp.headers["Location"])))
    assert client.get(f"/checkout/return/{order.id}/state?session_id={SESSION}").get_json() == {"state": "cancelled"}


def test_leaving_stripes_page_goes_back_to_the_order_with_its_items_held_and_pay_now(client, order):
    resp = client.get(back_url(order.id, "back"))
    page = order_page_after(client, resp, order, "back")
    assert "You left the payment page" in page and "Nothing was charged." in page
    held = re.search(r"Your items are held for you until (\d\d:\d\d) UTC \((\d+) minutes?\)", page)
    assert held and 13 <= int(held.group(2)) <= 15
    form = re.search(rf'<form method="post" action="/orders/{order.id}/pay">.*?</form>', page, re.S).group(0)
    assert ">Pay now</button>" in form
    assert "The payment was declined" not in page
    # Stripe fills the session id into the success address only: "← Back" comes without one.
    plain = client.get(f"/checkout/return/{order.id}?result=back")
    assert plain.status_code == 303 and plain.headers["Location"] == resp.headers["Location"]


def test_a_guest_who_opened_the_order_from_its_mail_is_the_owner_too(app, order):
    from shop.orders import services as orders

    mailed = app.test_client()  # another browser, where the order was opened from its mail's link
    assert mailed.get(local_path(orders.order_link(order))).status_code == 303
    page = text(mailed.get(back_url(order.id)))
    assert "Payment received — confirming your order…" in page and order.number in page


# -------------------------------------------------------------------------------------- anyone else
def test_another_browser_with_the_same_url_learns_nothing_of_the_order(app, order):
    stranger = app.test_client()  # the URL forwarded, or read off a screenshot
    assert_neutral(stranger.get(back_url(order.id)), order)
    assert_neutral(stranger.get(back_url(order.id, "back")), order)  # no redirect to the order either
    assert_neutral(stranger.get(f"/checkout/return/{order.id}?result=back"), order)
    resp = stranger.get(f"/checkout/return/{order.id}/state?session_id={SESSION}")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    assert set(resp.get_json()["error"]) == {"code", "message", "details"}
    assert order.number not in resp.get_data(as_text=True)


def test_the_owner_with_a_wrong_or_missing_session_id_gets_the_neutral_page(client, order):
    assert_neutral(client.get(back_url(order.id, session_id="cs_test_other")), order)
    assert_neutral(client.get(f"/checkout/return/{order.id}?result=paid"), order)
    assert_neutral(client.get(back_url(order.id, "back", session_id="cs_test_other")), order)
    assert client.get(f"/checkout/return/{order.id}/state?session_id=cs_test_other").status_code == 404
    assert client.get(f"/checkout/return/{order.id}/state").status_code == 404


def test_a_missing_order_answers_like_someone_elses(client, order):
    missing, theirs = client.get(back_url(order.id + 1000)), text(client.get(back_url(order.id, session_id="x")))
    assert missing.status_code == 200 and text(missing) == theirs
    assert client.get(f"/checkout/return/{order.id + 1000}/state?session_id={SESSION}").status_code == 404
