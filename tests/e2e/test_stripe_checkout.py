"""The storefront in Stripe mode: "Place order and pay" opens a hosted Checkout Session, and every outcome of
Stripe's page ends in the stated state. Real HTTP all the way: the storefront's forms through a cookie-keeping
client, the official SDK talking to the local Stripe (tests/fakes/stripe.py), which serves the hosted page and
signs and sends its webhooks back to the live shop, in Stripe's order, duplicated or reversed when asked."""

from __future__ import annotations

import html
import itertools
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
import requests
from redis import Redis

from tests.conftest import LiveServer, config_for, stream_topic_for
from tests.e2e.test_stripe_mode import all_at_once
from tests.fakes.stripe import FakeStripe

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY, WEBHOOK_SECRET = "sk_test_checkout", "whsec_checkout"
PRICE, STOCK, QTY = 2500, 10, 2
ADDRESS = {
    "name": "Ada Buyer",
    "line1": "1 Main Street",
    "city": "Springfield",
    "postal_code": "12345",
    "country": "US",
    "state": "NY",
}  # New York: 4% tax in the default table
WAIT_S = 20


# -- set-up ----------------------------------------------------------------------------------------
@pytest.fixture
def shop(committed_db, tmp_path):
    """The shop in Stripe mode, served live, one SKU in stock; the local Stripe sends its webhooks to it."""
    from shop import create_app
    from shop.extensions import db
    from tests.factories import make_category, make_product

    redis = Redis.from_url(os.environ["REDIS_URL"])
    redis.flushdb()
    settings = {"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with FakeStripe(secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET) as fake:
        app = create_app(
            config_for(committed_db, STRIPE_API_BASE=fake.url, MAIL_DIR=str(tmp_path / "mail"), **settings)
        )
        with app.app_context():
            product = make_product(make_category(), sizes=("M",), colours=("Black",), price=PRICE, stock=STOCK)
            sku, variant_id, slug = product.variants[0].sku, product.variants[0].id, product.slug
            db.session.commit()
        with LiveServer(app) as live:
            fake.webhook_url = f"{live.url}/webhooks/stripe"
            yield SimpleNamespace(
                url=live.url,
                app=app,
                fake=fake,
                db=committed_db,
                redis=redis,
                sku=sku,
                variant_id=variant_id,
                slug=slug,
                tmp=tmp_path,
                env={**settings, "STRIPE_API_BASE": fake.url},
            )
            fake.wait_delivered(WAIT_S)
        with app.app_context():
            db.engine.dispose()
    redis.flushdb()


def sql(shop, query, *args):
    with psycopg.connect(shop.db) as conn:
        return conn.execute(query, args).fetchall()


def stock(shop) -> tuple[int, int]:
    return tuple(sql(shop, "SELECT on_hand, reserved FROM variant WHERE id = %s", shop.variant_id)[0])


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', page) or re.search(
        rf'value="([^"]*)"[^>]*name="{name}"', page
    )
    assert found, f"no hidden field {name} in the page"
    return html.unescape(found.group(1))


class Shopper:
    """A browser without JavaScript: keeps cookies, sends the forms' CSRF tokens, does not follow redirects."""

    def __init__(self, shop):
        self.shop, self.http = shop, requests.Session()

    def get(self, path: str, **kw):
        return self.http.get(
            path if path.startswith("http") else self.shop.url + path, allow_redirects=False, timeout=30, **kw
        )

    def post(self, path: str, data: dict, page: str | None = None):
        token = hidden(page if page is not None else self.get(path).text, "csrf_token")
        return self.http.post(
            path if path.startswith("http") else self.shop.url + path,
            data={"csrf_token": token, **data},
            allow_redirects=False,
            timeout=60,
        )

    def place_order(self, quantity: int = QTY) -> requests.Response:
        """Cart -> details -> review -> "Place order and pay": the answer is the redirect to Stripe's page."""
        item = {"sku": self.shop.sku, "quantity": str(quantity)}
        # The product page is cacheable and carries no session token: the shop asks once, on a page that does.
        confirm = self.http.post(f"{self.shop.url}/cart/items", data=item, allow_redirects=False, timeout=30)
        assert confirm.status_code == 200, confirm.text[:500]
        resp = self.post("/cart/items", item, page=confirm.text)
        assert resp.status_code in (302, 303), resp.text[:500]
        details = self.get("/checkout").text
        resp = self.post(
            "/checkout/review",
            {"email": "ada@example.com", "saved_address": "new", "shipping_method": "standard", **ADDRESS},
            page=details,
        )
        assert resp.status_code == 303, resp.text[:2000]
        review = self.get("/checkout/review").text
        resp = self.post(
            "/checkout/place", {"cart_id": hidden(review, "cart_id"), "nonce": hidden(review, "nonce")}, page=review
        )
        assert resp.status_code == 303, resp.text[:2000]
        return resp


def session_id_of(url: str) -> str:
    found = re.search(r"/c/pay/(cs_[A-Za-z0-9_]+)", url)
    assert found, f"not a Stripe Checkout page: {url}"
    return found.group(1)


def on_page(shop, session_id: str, outcome: str) -> requests.Response:
    """The shopper presses a button on Stripe's hosted page."""
    return requests.post(
        f"{shop.fake.url}/c/pay/{session_id}", data={"outcome": outcome}, allow_redirects=False, timeout=30
    )


def stripe_session(shop, session_id: str) -> dict:
    resp = requests.get(
        f"{shop.fake.url}/v1/checkout/sessions/{session_id}",
        timeout=10,
        headers={"Authorization": f"Bearer {SECRET_KEY}"},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def the_order(shop) -> dict:
    rows = sql(shop, 'SELECT id, number, status, total, shipping, tax, discount FROM "order" ORDER BY id')
    assert len(rows) == 1, f"expected one order, found {len(rows)}"
    return dict(zip(("id", "number", "status", "total", "shipping", "tax", "discount"), rows[0]))


def wait_for(predicate, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def order_status(shop) -> str:
    return the_order(shop)["status"]


def run_jobs(shop) -> str:
    """`worker.py events --burst`, then `worker.py --burst`: the real processes apply the events the commits
    published (order mails ...), run the jobs recorded (refunds, mails), then exit."""
    env = {
        **os.environ,
        "DATABASE_URL": shop.db,
        "MAIL_DIR": str(shop.tmp / "mail"),
        "PUBLIC_BASE_URL": shop.url,
        "EVENT_STREAM_TOPIC": stream_topic_for(shop.db),
        **shop.env,
    }
    out = ""
    for args in (["events", "--burst"], ["--burst", "default", "mail"]):
        proc = subprocess.run(
            [sys.executable, "worker.py", *args], cwd=ROOT, timeout=120, capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out += proc.stdout + proc.stderr
    return out


def expire_holds(shop, minutes: int = 16) -> int:
    """The scheduled sweep, run as if `minutes` had passed."""
    from shop.orders.jobs import expire_reservations

    with shop.app.app_context():
        return expire_reservations(now=datetime.now(UTC) + timedelta(minutes=minutes))


# -- placing the order ------------------------------------------------------------------------------
def test_place_order_opens_a_checkout_session_with_the_orders_own_lines_and_totals(shop):
    shopper = Shopper(shop)
    resp = shopper.place_order()
    session_id = session_id_of(resp.headers["Location"])
    order = the_order(shop)
    assert order["status"] == "pending" and order["tax"] > 0
    created = shop.fake.calls("POST", "/v1/checkout/sessions")
    assert len(created) == 1 and created[0].idempotency_key, "one session, created with an idempotency key"
    params = created[0].params
    assert params["mode"] == "payment" and params["client_reference_id"] == order["number"]
    assert params["customer_email"] == "ada@example.com"
    assert params["metadata"]["order_id"] == str(order["id"])
    assert params["payment_intent_data"]["metadata"]["order_id"] == str(order["id"])
    goods = params["line_items"][0]
    assert goods["quantity"] == str(QTY) and goods["price_data"]["unit_amount"] == str(PRICE)
    assert params["line_items"][1]["price_data"]["unit_amount"] == str(order["tax"])  # the tax, as reviewed
    assert params["shipping_options"][0]["shipping_rate_data"]["fixed_amount"]["amount"] == str(order["shipping"])
    assert int(params["expires_at"]) >= time.time() + 30 * 60 - 5, "Stripe keeps a session at least 30 minutes"
    # Back addresses at the shop that carry no key to the order.
    assert "{CHECKOUT_SESSION_ID}" in params["success_url"] and "k=" not in params["success_url"]
    assert params["cancel_url"].startswith(shop.url) and "k=" not in params["cancel_url"]
    assert stripe_session(shop, session_id)["amount_total"] == order["total"]
    assert stock(shop) == (STOCK, QTY)


# -- the outcomes of Stripe's page -----------------------------------------------------------------
def test_approve_confirms_once_though_every_event_arrives_twice_and_out_of_order(shop):
    shop.fake.duplicate_deliveries = True
    shop.fake.reverse_next(3)  # checkout.session.completed arrives before payment_intent.succeeded
    shopper = Shopper(shop)
    session_id = session_id_of(shopper.place_order().headers["Location"])
    paid = on_page(shop, session_id, "approve")
    assert paid.status_code == 303
    back = paid.headers["Location"]
    assert back.startswith(f"{shop.url}/checkout/return/") and f"session_id={session_id}" in back
    shop.fake.wait_delivered(WAIT_S)
    assert order_status(shop) == "confirmed"
    assert stock(shop) == (STOCK - QTY, 0), "the hold became a decrement, once"
    events = sql(shop, "SELECT type, status FROM webhook_event ORDER BY id")
    assert {t for t, _ in events} >= {"payment_intent.succeeded", "checkout.session.completed"}
    assert all(status in ("processed", "ignored") for _, status in events)
    assert sql(shop, "SELECT count(*) FROM order_event WHERE to_status = 'confirmed'")[0][0] == 1
    payment = sql(shop, "SELECT status, provider_id, checkout_session_id FROM payment")
    assert payment == [("succeeded", stripe_session(shop, session_id)["payment_intent"], session_id)]
    # The shopper's return page: the order, confirmed.
    page = shopper.get(back)
    assert page.status_code == 303 and "paid=approve" in page.headers["Location"]


def test_declined_card_then_pay_now_reuses_the_same_page_and_order(shop):
    shopper = Shopper(shop)
    session_id = session_id_of(shopper.place_order().headers["Location"])
    declined = on_page(shop, session_id, "decline")
    assert declined.status_code == 200 and "declined" in declined.text
    shop.fake.wait_delivered(WAIT_S)
    # The shopper gives up on Stripe's page: back at the shop, the order waits with its items held.
    cancel_url = stripe_session(shop, session_id)["cancel_url"]
    back = shopper.get(cancel_url)
    assert back.status_code == 303
    page = shopper.get(back.headers["Location"]).text
    assert "You left the payment page" in page or "declined" in page
    assert stock(shop) == (STOCK, QTY) and order_status(shop) == "pending"
    order = the_order(shop)
    again = shopper.post(f"/orders/{order['id']}/pay", {}, page=page)
    assert again.status_code == 303 and session_id_of(again.headers["Location"]) == session_id, (
        "Pay now opens the same Stripe page"
    )
    assert on_page(shop, session_id, "approve").status_code == 303
    shop.fake.wait_delivered(WAIT_S)
    assert order_status(shop) == "confirmed"
    assert len(shop.fake.calls("POST", "/v1/checkout/sessions")) == 1
    assert sql(shop, "SELECT count(*) FROM payment")[0][0] == 1
    assert stock(shop) == (STOCK - QTY, 0)


def test_three_d_secure_then_approved_confirms(shop):
    session_id = session_id_of(Shopper(shop).place_order().headers["Location"])
    challenge = on_page(shop, session_id, "3ds")
    assert challenge.status_code == 200 and "authentication" in challenge.text.lower()
    assert on_page(shop, session_id, "3ds_complete").status_code == 303
    shop.fake.wait_delivered(WAIT_S)
    assert order_status(shop) == "confirmed"


def test_a_bank_payment_keeps_the_hold_until_the_bank_pays(shop):
    session_id = session_id_of(Shopper(shop).place_order().headers["Location"])
    assert on_page(shop, session_id, "bank_ok").status_code == 303
    shop.fake.wait_delivered(WAIT_S)
    assert sql(shop, "SELECT status FROM payment") == [("processing",)]
    held_until = sql(shop, "SELECT min(expires_at) FROM reservation WHERE status = 'active'")[0][0]
    held_until = held_until if held_until.tzinfo else held_until.replace(tzinfo=UTC)
    assert held_until > datetime.now(UTC) + timedelta(days=4), "the hold waits for the bank"
    assert expire_holds(shop) == 0 and order_status(shop) == "pending"
    assert shop.fake.calls("POST", f"/v1/checkout/sessions/{session_id}/expire") == []
    shop.fake.settle_bank(session_id)
    shop.fake.wait_delivered(WAIT_S)
    assert order_status(shop) == "confirmed" and stock(shop) == (STOCK - QTY, 0)


def test_a_failed_bank_payment_cancels_the_order_and_frees_the_stock(shop):
    session_id = session_id_of(Shopper(shop).place_order().headers["Location"])
    on_page(shop, session_id, "bank_fail")
    shop.fake.wait_delivered(WAIT_S)
    assert order_status(shop) == "pending"
    shop.fake.settle_bank(session_id)
    shop.fake.wait_delivered(WAIT_S)
    assert order_status(shop) == "cancelled" and stock(shop) == (STOCK, 0)
    assert sql(shop, "SELECT status FROM payment") == [("failed",)]


def test_when_the_hold_ends_the_session_is_expired_at_stripe_first_then_the_order_cancelled(shop):
    shopper = Shopper(shop)
    session_id = session_id_of(shopper.place_order().headers["Location"])
    assert expire_holds(shop) == 1
    assert len(shop.fake.calls("POST", f"/v1/checkout/sessions/{session_id}/expire")) == 1
    assert stripe_session(shop, session_id)["status"] == "expired"
    assert order_status(shop) == "cancelled" and stock(shop) == (STOCK, 0)
    shop.fake.wait_delivered(WAIT_S)  # checkout.session.expired: changes nothing more
    assert sql(shop, "SELECT status FROM webhook_event WHERE type = 'checkout.session.expired'") == [("processed",)]
    # The shopper comes back to Stripe's page too late: nothing can be paid there.
    late = on_page(shop, session_id, "approve")
    assert late.status_code == 200 and "expired" in late.text.lower()
    assert sql(shop, "SELECT status FROM payment") == [("cancelled",)]


def test_a_page_paid_just_as_the_hold_ends_confirms_instead_of_cancelling(shop):
    shop.fake.hold_deliveries()  # the webhook is late
    session_id = session_id_of(Shopper(shop).place_order().headers["Location"])
    on_page(shop, session_id, "approve")
    assert expire_holds(shop) == 0, "Stripe refuses to expire a paid session: the shop reads it and confirms"
    assert order_status(shop) == "confirmed" and stock(shop) == (STOCK - QTY, 0)
    shop.fake.release_deliveries()
    shop.fake.wait_delivered(WAIT_S)
    assert order_status(shop) == "confirmed"
    assert sql(shop, "SELECT count(*) FROM refund")[0][0] == 0


def test_a_payment_arriving_after_the_order_was_cancelled_is_refunded_in_full(shop):
    shop.fake.hold_deliveries()
    shopper = Shopper(shop)
    session_id = session_id_of(shopper.place_order().headers["Location"])
    order = the_order(shop)
    # Stripe cannot be asked when the shop cancels (an outage), and the shopper pays meanwhile.
    from shop.orders import services as orders

    on_page(shop, session_id, "approve")
    with shop.app.app_context():
        orders.transition(order["id"], "cancelled", "support@example.com", "Customer phoned")
    shop.fake.release_deliveries()
    shop.fake.wait_delivered(WAIT_S)
    assert order_status(shop) == "cancelled"
    run_jobs(shop)
    refunds = shop.fake.calls("POST", "/v1/refunds")
    assert len(refunds) == 1 and refunds[0].params.get("amount") == str(order["total"])
    assert sql(shop, "SELECT refunded_amount FROM payment") == [(order["total"],)]


def test_the_return_page_never_shows_the_order_to_another_browser(shop):
    shopper = Shopper(shop)
    session_id = session_id_of(shopper.place_order().headers["Location"])
    shop.fake.hold_deliveries()
    back = on_page(shop, session_id, "approve").headers["Location"]
    order = the_order(shop)
    stranger = Shopper(shop).get(back)
    assert stranger.status_code == 200
    assert order["number"] not in stranger.text and "ada@example.com" not in stranger.text
    mine = shopper.get(back)  # the shop asks Stripe itself: confirmed even before the webhook
    assert mine.status_code == 303 and "paid=approve" in mine.headers["Location"]
    shop.fake.release_deliveries()


# -- refunds and disputes ----------------------------------------------------------------------------
def paid_order(shop) -> tuple[dict, str]:
    session_id = session_id_of(Shopper(shop).place_order().headers["Location"])
    on_page(shop, session_id, "approve")
    shop.fake.wait_delivered(WAIT_S)
    assert order_status(shop) == "confirmed"
    return the_order(shop), stripe_session(shop, session_id)["payment_intent"]


def staff_token(shop, role: str) -> str:
    from shop.accounts.tokens import issue_pair
    from shop.extensions import db
    from tests.factories import make_user

    with shop.app.app_context():
        user = make_user(role=role)
        db.session.commit()
        return issue_pair(user)["access_token"]


def staff_refund(shop, order: dict, amount: int, key: str, token: str | None = None) -> requests.Response:
    """A refund through the admin API, as a manager unless another staff token is given."""
    return requests.post(
        f"{shop.url}/api/v1/admin/orders/{order['id']}/refunds",
        timeout=60,
        json={"amount": amount, "reason": "late parcel"},
        headers={"Authorization": f"Bearer {token or staff_token(shop, 'manager')}", "Idempotency-Key": key},
    )


def test_two_staff_refunding_at_once_never_exceed_what_was_captured(shop):
    order, _ = paid_order(shop)
    tokens = [staff_token(shop, "support"), staff_token(shop, "manager")]
    part = order["total"] * 2 // 3  # two of these are more than the payment

    def press(i):
        return staff_refund(shop, order, part, f"refund-key-{i}", tokens[i % 2])

    presses = itertools.count()
    answers = all_at_once(6, lambda: press(next(presses)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 1, [a.text for a in answers]
    assert set(codes) - {201} <= {409, 422}
    assert sql(shop, "SELECT refunded_amount FROM payment") == [(part,)]
    assert sum(int(r.params["amount"]) for r in shop.fake.calls("POST", "/v1/refunds")) == part
    shop.fake.wait_delivered(WAIT_S)  # charge.refunded: in step, never lowered
    assert sql(shop, "SELECT refunded_amount FROM payment") == [(part,)]


def test_staff_refunding_the_same_line_at_once_refund_its_units_once(shop):
    order, _ = paid_order(shop)
    line_id = sql(shop, "SELECT id FROM order_line WHERE order_id = %s", order["id"])[0][0]
    token = staff_token(shop, "manager")
    presses = itertools.count()

    def press():
        return requests.post(
            f"{shop.url}/api/v1/admin/orders/{order['id']}/refunds",
            timeout=60,
            json={"lines": [{"line_id": line_id, "quantity": QTY}], "reason": "never arrived"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"line-refund-{next(presses)}"},
        )

    answers = all_at_once(6, press)
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 1 and set(codes) - {201} <= {409, 422}, [a.text for a in answers]
    won = next(a.json() for a in answers if a.status_code == 201)
    goods = order["total"] - order["shipping"]  # every unit of the only line: the goods with their tax
    assert won["amount"]["amount"] == goods and won["lines"] == [
        {"line_id": line_id, "quantity": QTY, "amount": {"amount": goods, "currency": "USD"}}
    ]
    assert sql(shop, "SELECT sum(quantity) FROM refund_line") == [(QTY,)]
    assert sql(shop, "SELECT refunded_amount FROM payment") == [(goods,)]
    assert sum(int(r.params["amount"]) for r in shop.fake.calls("POST", "/v1/refunds")) == goods


def test_a_refund_pending_at_stripe_that_fails_is_refundable_again(shop):
    order, _ = paid_order(shop)
    shop.fake.refund_status = "pending"
    resp = staff_refund(shop, order, 1000, "pending-refund-1")
    assert resp.status_code == 201, resp.text
    assert sql(shop, "SELECT status FROM refund") == [("processing",)]
    shop.fake.settle_refund(resp.json()["provider_refund_id"], "failed")
    shop.fake.wait_delivered(WAIT_S)
    assert sql(shop, "SELECT status FROM refund") == [("failed",)]
    assert sql(shop, "SELECT refunded_amount FROM payment") == [(0,)]


def test_a_dispute_flags_the_order_mails_managers_refuses_refunds_and_keeps_its_outcome(shop):
    from shop.extensions import db
    from tests.factories import make_user

    with shop.app.app_context():
        make_user("mina@example.com", role="manager", name="Mina Manager")
        db.session.commit()
    order, intent = paid_order(shop)
    dispute = shop.fake.dispute(intent, reason="product_not_received")
    shop.fake.wait_delivered(WAIT_S)
    rows = sql(shop, "SELECT reason, amount, closed_at FROM dispute WHERE order_id = %s", order["id"])
    assert rows == [("product_not_received", order["total"], None)]
    refused = staff_refund(shop, order, 100, "disputed-refund-1", staff_token(shop, "support"))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "payment_disputed"
    run_jobs(shop)
    mails = list((shop.tmp / "mail").glob("*payment.dispute_opened*"))
    assert len(mails) == 1 and order["number"] in mails[0].read_text(errors="replace")
    shop.fake.close_dispute(dispute["id"], "lost")
    shop.fake.wait_delivered(WAIT_S)
    assert sql(shop, "SELECT outcome FROM dispute") == [("lost",)]
    assert sql(shop, "SELECT charged_back FROM payment") == [(order["total"],)]


# -- forged, stale and replayed events -----------------------------------------------------------------
def test_forged_stale_or_replayed_checkout_events_change_nothing(shop):
    session_id = session_id_of(Shopper(shop).place_order().headers["Location"])
    order = the_order(shop)
    completed = {
        **stripe_session(shop, session_id),
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": "pi_forged",
    }
    url = f"{shop.url}/webhooks/stripe"
    forged_body, _ = shop.fake.event("checkout.session.completed", completed)
    forged = requests.post(
        url,
        data=forged_body,
        timeout=10,
        headers={"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}", "Content-Type": "application/json"},
    )
    stale_body, stale_sig = shop.fake.event("checkout.session.completed", completed, timestamp=int(time.time()) - 3600)
    stale = requests.post(
        url, data=stale_body, timeout=10, headers={"Stripe-Signature": stale_sig, "Content-Type": "application/json"}
    )
    assert forged.status_code == 400 and stale.status_code == 400
    assert order_status(shop) == "pending" and stock(shop) == (STOCK, QTY)
    # A genuine event replayed: the second copy has no effect.
    on_page(shop, session_id, "approve")
    shop.fake.wait_delivered(WAIT_S)
    genuine = next(e for e in shop.fake.events if e["type"] == "checkout.session.completed")
    body = json.dumps(genuine)
    import stripe

    replay = requests.post(
        url,
        data=body,
        timeout=10,
        headers={
            "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET),
            "Content-Type": "application/json",
        },
    )
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert order_status(shop) == "confirmed" and stock(shop) == (STOCK - QTY, 0)
    assert (
        sql(shop, "SELECT count(*) FROM order_event WHERE to_status = 'confirmed' AND order_id = %s", order["id"])[0][0]
        == 1
    )


def test_simultaneous_copies_of_checkout_session_completed_confirm_once(shop):
    shop.fake.hold_deliveries()
    session_id = session_id_of(Shopper(shop).place_order().headers["Location"])
    on_page(shop, session_id, "approve")
    completed = next(e for e in shop.fake.events if e["type"] == "checkout.session.completed")
    body = json.dumps(completed)
    import stripe

    def deliver():
        return requests.post(
            f"{shop.url}/webhooks/stripe",
            data=body,
            timeout=60,
            headers={
                "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET),
                "Content-Type": "application/json",
            },
        )

    answers = all_at_once(8, deliver)
    assert [a.status_code for a in answers] == [200] * 8
    assert sorted(a.json()["outcome"] for a in answers).count("processed") == 1
    assert stock(shop) == (STOCK - QTY, 0)
    assert sql(shop, "SELECT count(*) FROM order_event WHERE to_status = 'confirmed'")[0][0] == 1
    shop.fake.release_deliveries()


def post_event(shop, type_: str, obj: dict) -> requests.Response:
    body, signature = shop.fake.event(type_, obj)
    return requests.post(
        f"{shop.url}/webhooks/stripe",
        data=body,
        timeout=30,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


def test_an_event_of_another_shop_on_the_same_stripe_account_changes_nothing(shop):
    """Staging and production may share a Stripe account: every event reaches both, and row ids repeat."""
    session_id = session_id_of(Shopper(shop).place_order().headers["Location"])
    order = the_order(shop)
    payment_id = sql(shop, "SELECT id FROM payment")[0][0]
    theirs = {"payment_id": str(payment_id), "order_id": str(order["id"]), "order_number": "S-ANOTHERSHOP"}
    intent = {
        "id": "pi_of_another_shop",
        "object": "payment_intent",
        "amount": order["total"],
        "currency": "usd",
        "status": "succeeded",
        "metadata": theirs,
    }
    assert post_event(shop, "payment_intent.succeeded", intent).json()["outcome"] == "processed"
    session = {
        **stripe_session(shop, session_id),
        "id": "cs_of_another_shop",
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": "pi_of_another_shop",
        "metadata": theirs,
    }
    assert post_event(shop, "checkout.session.completed", session).status_code == 200
    assert order_status(shop) == "pending" and stock(shop) == (STOCK, QTY)
    assert sql(shop, "SELECT provider_id, checkout_session_id FROM payment") == [(None, session_id)]


def test_a_late_charge_refunded_never_revives_a_refund_that_failed(shop):
    order, intent = paid_order(shop)
    shop.fake.refund_status = "pending"
    resp = staff_refund(shop, order, 1000, "stale-refund-1")
    assert resp.status_code == 201, resp.text
    charge_then = {**shop.fake.charge_object(intent), "amount_refunded": 1000}  # as it stood while pending
    shop.fake.settle_refund(resp.json()["provider_refund_id"], "failed")
    shop.fake.wait_delivered(WAIT_S)
    assert post_event(shop, "charge.refunded", charge_then).status_code == 200  # arrives last
    assert sql(shop, "SELECT status FROM refund") == [("failed",)]
    assert sql(shop, "SELECT refunded_amount FROM payment") == [(0,)]


def test_a_refund_held_up_by_a_dispute_is_made_when_the_dispute_closes(shop):
    order, intent = paid_order(shop)
    dispute = shop.fake.dispute(intent, reason="product_not_received")
    shop.fake.wait_delivered(WAIT_S)
    from shop.orders import services as orders

    with shop.app.app_context():
        orders.transition(order["id"], "cancelled", "support@example.com", "Never shipped")
    run_jobs(shop)  # the cancellation's refund waits: Stripe refuses refunds of a disputed charge
    assert shop.fake.calls("POST", "/v1/refunds") == []
    shop.fake.close_dispute(dispute["id"], "won")
    shop.fake.wait_delivered(WAIT_S)
    run_jobs(shop)
    refunds = shop.fake.calls("POST", "/v1/refunds")
    assert len(refunds) == 1 and refunds[0].params["amount"] == str(order["total"])
    assert sql(shop, "SELECT refunded_amount FROM payment") == [(order["total"],)]
