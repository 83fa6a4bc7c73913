"""The local Stripe (tests/fakes/stripe.py) itself: hosted Checkout, its page, events and their delivery,
disputes and refund statuses, driven as the shop drives them. The API through the official SDK, the page
through plain HTTP, and the webhooks received by a small server that checks every signature with the SDK.

The other tests rely on this fake behaving as Stripe does, so these tests pin what they rely on."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest
import stripe

from tests.fakes.serving import ServedInThread
from tests.fakes.stripe import FakeStripe

SECRET_KEY, WEBHOOK_SECRET = "sk_test_x", "whsec_checkout"
SUCCESS_URL = "http://shop.test/checkout/done?session_id={CHECKOUT_SESSION_ID}"
CANCEL_URL = "http://shop.test/checkout/payment"


class Receiver(ServedInThread):
    """The shop's webhook endpoint as Stripe sees it: answers 200 to events whose signature verifies (400 to
    the others), or 500 while `fail_first[type]` says to refuse that many more deliveries of a type."""

    def __init__(self, secret: str):
        self.events: list = []  # verified stripe.Event objects, in arrival order
        self.refused_signatures = 0
        self.fail_first: dict[str, int] = {}
        lock, receiver = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                try:
                    event = stripe.Webhook.construct_event(body, self.headers.get("Stripe-Signature", ""), secret)
                except (stripe.SignatureVerificationError, ValueError):
                    with lock:
                        receiver.refused_signatures += 1
                    status = 400
                else:
                    with lock:
                        if receiver.fail_first.get(event.type):
                            receiver.fail_first[event.type] -= 1
                            status = 500
                        else:
                            receiver.events.append(event)
                            status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}/webhooks/stripe"

    def types(self) -> list[str]:
        return [e.type for e in self.events]


@pytest.fixture
def receiver():
    with Receiver(WEBHOOK_SECRET) as served:
        yield served


@pytest.fixture
def fake(receiver):
    with FakeStripe(SECRET_KEY, webhook_secret=WEBHOOK_SECRET, webhook_url=receiver.url) as served:
        yield served
    assert receiver.refused_signatures == 0


@pytest.fixture
def client(fake):
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": fake.url}, max_network_retries=0)


def session_params(**overrides) -> dict:
    params = {
        "mode": "payment",
        "success_url": SUCCESS_URL,
        "cancel_url": CANCEL_URL,
        "customer_email": "ada@example.com",
        "client_reference_id": "order-7",
        "metadata": {"order_id": "7"},
        "payment_intent_data": {"metadata": {"order_id": "7", "payment_id": "3"}},
        "line_items": [
            {
                "price_data": {"currency": "usd", "unit_amount": 2500, "product_data": {"name": "Tee, M, Black"}},
                "quantity": 2,
            }
        ],
        "expires_at": int(time.time()) + 3600,
    }
    params.update(overrides)
    return params


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 303 itself is what the test looks at


_opener = urllib.request.build_opener(_NoRedirect)


def page(url: str, outcome: str | None = None) -> tuple[int, str | None, str]:
    """GET the hosted page, or POST an outcome on it as its form does: (status, Location, HTML)."""
    data = urlencode({"outcome": outcome}).encode() if outcome else None
    request = urllib.request.Request(url, data=data, method="POST" if outcome else "GET")
    try:
        with _opener.open(request, timeout=10) as resp:
            return resp.status, resp.headers.get("Location"), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Location"), err.read().decode()


def delivered(fake, receiver) -> list[str]:
    assert fake.wait_delivered(5)
    return receiver.types()


# -- sessions ---------------------------------------------------------------------------------------
def test_a_session_with_a_coupon_and_shipping_totals_like_stripe(fake, client):
    coupon = client.v1.coupons.create(
        params={"amount_off": 500, "currency": "usd", "duration": "once", "max_redemptions": 1, "name": "Five off"}
    )
    assert (coupon.object, coupon.amount_off, coupon.valid, coupon.times_redeemed) == ("coupon", 500, True, 0)
    shipping = {
        "shipping_rate_data": {
            "display_name": "Standard",
            "type": "fixed_amount",
            "fixed_amount": {"amount": 499, "currency": "usd"},
        }
    }
    session = client.v1.checkout.sessions.create(
        params=session_params(discounts=[{"coupon": coupon.id}], shipping_options=[shipping])
    )
    assert session.id.startswith("cs_test_") and session.object == "checkout.session"
    assert (session.amount_subtotal, session.amount_total) == (5000, 5000 - 500 + 499)
    assert session.total_details.to_dict() == {"amount_discount": 500, "amount_shipping": 499, "amount_tax": 0}
    assert (session.status, session.payment_status, session.payment_intent) == ("open", "unpaid", None)
    assert session.url == f"{fake.url}/c/pay/{session.id}" and session.livemode is False
    assert (session.customer_email, session.client_reference_id, session.metadata.to_dict()) == (
        "ada@example.com",
        "order-7",
        {"order_id": "7"},
    )
    items = client.v1.checkout.sessions.line_items.list(session.id).data
    assert [(i.description, i.quantity, i.amount_subtotal, i.amount_discount) for i in items] == [
        ("Tee, M, Black", 2, 5000, 500)
    ]

    status, _, html = page(session.url)
    assert status == 200 and "<title>Pay Test shop</title>" in html
    for shown in (
        "Tee, M, Black",
        "$50.00",
        "−$5.00",
        "Shipping (Standard)",
        "$49.99",
        "ada@example.com",
        f'href="{CANCEL_URL}">← Back',
        ">Pay</button>",
        ">Pay (card declined)</button>",
        ">Pay with 3-D Secure</button>",
        ">Pay by bank (succeeds later)</button>",
        ">Pay by bank (fails later)</button>",
    ):
        assert shown in html
    assert "<script" not in html

    page(session.url, "approve")
    assert client.v1.coupons.retrieve(coupon.id).valid is False  # its one redemption is used
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.create(params=session_params(discounts=[{"coupon": coupon.id}]))
    assert refused.value.code == "coupon_expired"


def test_a_coupon_never_takes_more_than_the_goods_and_leaves_shipping(client):
    coupon = client.v1.coupons.create(params={"amount_off": 10_000, "currency": "usd", "duration": "once"})
    shipping = {
        "shipping_rate_data": {
            "display_name": "Express",
            "type": "fixed_amount",
            "fixed_amount": {"amount": 1500, "currency": "usd"},
        }
    }
    session = client.v1.checkout.sessions.create(
        params=session_params(discounts=[{"coupon": coupon.id}], shipping_options=[shipping])
    )
    assert (session.total_details.amount_discount, session.amount_total) == (5000, 1500)


def test_the_same_idempotency_key_gives_the_same_session(fake, client):
    params = session_params()
    first = client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "shop-payment-3-1"})
    again = client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "shop-payment-3-1"})
    assert first.id == again.id and len(fake.sessions) == 1


@pytest.mark.parametrize(
    "change,param",
    [
        ({"mode": None}, "mode"),
        ({"line_items": None}, "line_items"),
        ({"success_url": None}, "success_url"),
        (
            {
                "line_items": [
                    {
                        "price_data": {"currency": "usd", "unit_amount": "12.5", "product_data": {"name": "Tee"}},
                        "quantity": 1,
                    }
                ]
            },
            "line_items[0][price_data][unit_amount]",
        ),
        (
            {
                "line_items": [
                    {
                        "price_data": {"currency": "usd", "unit_amount": 2500, "product_data": {"name": "Tee"}},
                        "quantity": 0,
                    }
                ]
            },
            "line_items[0][quantity]",
        ),
        ({"expires_at": int(time.time()) + 29 * 60}, "expires_at"),
        ({"expires_at": int(time.time()) + 25 * 3600}, "expires_at"),
        ({"discounts": [{"coupon": "NOPE"}]}, "discounts[0][coupon]"),
    ],
)
def test_invalid_session_parameters_are_refused_like_stripe(fake, client, change, param):
    params = {k: v for k, v in {**session_params(), **change}.items() if v is not None}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.create(params=params)
    assert refused.value.http_status == 400 and refused.value.param == param
    assert fake.sessions == {}


# -- paying on the hosted page ----------------------------------------------------------------------
def test_approve_sends_stripes_events_in_order_and_returns_the_shopper(fake, client, receiver):
    session = client.v1.checkout.sessions.create(params=session_params())
    status, location, _ = page(session.url, "approve")
    assert status == 303 and location == f"http://shop.test/checkout/done?session_id={session.id}"

    assert delivered(fake, receiver) == ["payment_intent.succeeded", "charge.succeeded", "checkout.session.completed"]
    intent_event, charge_event, completed = receiver.events
    paid = client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.status, paid.payment_status, paid.url) == ("complete", "paid", None)
    assert completed.data.object.payment_intent == paid.payment_intent == intent_event.data.object.id
    assert completed.data.object.payment_status == "paid" and completed.data.object.client_reference_id == "order-7"
    intent = client.v1.payment_intents.retrieve(paid.payment_intent)
    assert (intent.status, intent.amount, intent.metadata.to_dict()) == (
        "succeeded",
        5000,
        {"order_id": "7", "payment_id": "3"},
    )
    assert charge_event.data.object.id == intent.latest_charge and charge_event.data.object.amount == 5000
    assert all(e.api_version == "2025-08-27.basil" and e.livemode is False for e in receiver.events)

    refund = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 2000})  # refundable as usual
    assert refund.status == "succeeded"
    assert delivered(fake, receiver)[-1] == "charge.refunded"
    assert receiver.events[-1].data.object.amount_refunded == 2000

    status, _, html = page(session.url, "approve")  # a second click on a paid page charges nothing
    assert status == 200 and "already been paid" in html
    assert len(fake.intents) == 1 and len(fake.charges) == 1


def test_a_declined_card_leaves_the_session_open_to_pay_again(fake, client, receiver):
    session = client.v1.checkout.sessions.create(params=session_params())
    status, _, html = page(session.url, "decline")
    assert status == 200 and "Your card was declined. Try another card." in html and 'role="alert"' in html
    assert delivered(fake, receiver) == ["payment_intent.payment_failed"]
    error = receiver.events[0].data.object.last_payment_error
    assert (error.code, error.decline_code, error.message) == (
        "card_declined",
        "generic_decline",
        "Your card was declined.",
    )
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"

    status, _, html = page(session.url, "3ds")
    assert status == 200 and "Complete authentication" in html and ">Complete</button>" in html
    page(session.url, "3ds_fail")
    status, location, _ = page(session.url, "3ds_complete")
    assert status == 303 and session.id in location
    assert delivered(fake, receiver) == [
        "payment_intent.payment_failed",
        "payment_intent.payment_failed",
        "payment_intent.succeeded",
        "charge.succeeded",
        "checkout.session.completed",
    ]
    assert len({e.data.object.id for e in receiver.events[:3]}) == 1  # one PaymentIntent for every attempt
    assert client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"


@pytest.mark.parametrize(
    "outcome,later,status",
    [
        ("bank_ok", ["payment_intent.succeeded", "checkout.session.async_payment_succeeded"], "paid"),
        ("bank_fail", ["payment_intent.payment_failed", "checkout.session.async_payment_failed"], "unpaid"),
    ],
)
def test_a_bank_payment_completes_unpaid_and_settles_later(fake, client, receiver, outcome, later, status):
    session = client.v1.checkout.sessions.create(params=session_params())
    code, location, _ = page(session.url, outcome)
    assert code == 303 and session.id in location
    assert delivered(fake, receiver) == ["checkout.session.completed"]
    assert receiver.events[0].data.object.payment_status == "unpaid"
    submitted = client.v1.checkout.sessions.retrieve(session.id)
    assert (submitted.status, submitted.payment_status) == ("complete", "unpaid")
    assert client.v1.payment_intents.retrieve(submitted.payment_intent).status == "processing"

    fake.settle_bank(session.id)
    assert delivered(fake, receiver)[1:] == later
    assert client.v1.checkout.sessions.retrieve(session.id).payment_status == status
    intent = client.v1.payment_intents.retrieve(submitted.payment_intent)
    assert intent.status == ("succeeded" if outcome == "bank_ok" else "requires_payment_method")


# -- expiry -----------------------------------------------------------------------------------------
def test_an_open_session_expires_once_and_its_page_charges_nothing(fake, client, receiver):
    session = client.v1.checkout.sessions.create(params=session_params())
    expired = client.v1.checkout.sessions.expire(session.id)
    assert (expired.status, expired.url) == ("expired", None)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.expire(session.id)
    assert refused.value.http_status == 400
    assert refused.value.user_message == "Only Checkout Sessions with a status of `open` can be expired."

    status, _, html = page(session.url, "approve")
    assert status == 200 and "This payment page has expired" in html and f'href="{CANCEL_URL}"' in html
    assert fake.intents == {} and fake.charges == {}
    assert delivered(fake, receiver) == ["checkout.session.expired"]
    assert receiver.events[0].data.object.id == session.id


def test_a_session_past_its_time_or_abandoned_expires_with_one_event(fake, client, receiver):
    late = client.v1.checkout.sessions.create(params=session_params())
    abandoned = client.v1.checkout.sessions.create(params=session_params())
    fake.clock_offset = 2 * 3600  # the shopper comes back two hours later
    assert client.v1.checkout.sessions.retrieve(late.id).status == "expired"
    assert "<h1>This payment page has expired</h1>" in page(late.url)[2]
    fake.clock_offset = 0
    fake.expire_session(abandoned.id)  # Stripe's own timer
    assert delivered(fake, receiver) == ["checkout.session.expired", "checkout.session.expired"]
    assert [e.data.object.id for e in receiver.events] == [late.id, abandoned.id]


# -- disputes and refunds ---------------------------------------------------------------------------
def paid_intent(client, amount=2500, quantity=2) -> str:
    items = [
        {
            "price_data": {"currency": "usd", "unit_amount": amount, "product_data": {"name": "Tee"}},
            "quantity": quantity,
        }
    ]
    session = client.v1.checkout.sessions.create(params=session_params(line_items=items))
    page(session.url, "approve")
    return client.v1.checkout.sessions.retrieve(session.id).payment_intent


@pytest.mark.parametrize("outcome,refundable", [("won", 5000), ("lost", 0)])
def test_a_disputed_charge_refuses_refunds_until_the_dispute_closes(fake, client, receiver, outcome, refundable):
    intent_id = paid_intent(client)
    dispute = fake.dispute(intent_id, reason="fraudulent")
    assert dispute["id"].startswith("dp_") and (dispute["status"], dispute["amount"]) == ("needs_response", 5000)
    assert dispute["evidence_details"]["due_by"] > time.time() and dispute["is_charge_refundable"] is False
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 1000})
    assert refused.value.code == "charge_disputed"

    fake.close_dispute(dispute["id"], outcome)
    assert delivered(fake, receiver)[-2:] == ["charge.dispute.created", "charge.dispute.closed"]
    created, closed = receiver.events[-2:]
    assert created.data.object.payment_intent == intent_id and created.data.object.reason == "fraudulent"
    assert closed.data.object.status == outcome
    if refundable:
        assert client.v1.refunds.create(params={"payment_intent": intent_id}).amount == refundable
    else:
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 1000})


def test_a_pending_refund_that_fails_gives_the_money_back_to_the_charge(fake, client, receiver):
    intent_id = paid_intent(client)
    fake.refund_status = "pending"
    refund = client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 3000})
    assert refund.status == "pending"
    with pytest.raises(stripe.InvalidRequestError):  # only 2000 is left while it is pending
        client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 3000})
    assert "charge.refunded" not in delivered(fake, receiver)

    fake.settle_refund(refund.id, "failed")
    assert delivered(fake, receiver)[-1] == "charge.refund.updated"
    updated = receiver.events[-1].data.object
    assert (updated.id, updated.status, updated.failure_reason) == (refund.id, "failed", "expired_or_canceled_card")
    assert client.v1.refunds.retrieve(refund.id).status == "failed"

    again = client.v1.refunds.create(params={"payment_intent": intent_id})  # the whole amount is refundable again
    assert again.amount == 5000
    fake.settle_refund(again.id, "succeeded")
    assert delivered(fake, receiver)[-2:] == ["charge.refund.updated", "charge.refunded"]
    assert receiver.events[-1].data.object.refunded is True


# -- delivery ---------------------------------------------------------------------------------------
def test_duplicated_and_reversed_deliveries(fake, client, receiver):
    fake.duplicate_deliveries = True
    paid_intent(client)
    made = [e["id"] for e in fake.events]
    assert [e.id for e in (receiver.events if fake.wait_delivered(5) else [])] == [
        made[0],
        made[0],
        made[1],
        made[1],
        made[2],
        made[2],
    ]

    fake.duplicate_deliveries = False
    receiver.events.clear()
    fake.reverse_next(3)
    paid_intent(client)
    assert delivered(fake, receiver) == ["checkout.session.completed", "charge.succeeded", "payment_intent.succeeded"]


def test_a_refused_delivery_is_retried_and_held_events_wait(fake, client, receiver):
    receiver.fail_first["checkout.session.completed"] = 1
    paid_intent(client)
    assert delivered(fake, receiver) == ["payment_intent.succeeded", "charge.succeeded", "checkout.session.completed"]
    completed = fake.events[2]["id"]
    assert [d.status for d in fake.deliveries if d.event_id == completed] == [500, 200]

    fake.hold_deliveries()
    session = client.v1.checkout.sessions.create(params=session_params())
    client.v1.checkout.sessions.expire(session.id)
    assert not fake.wait_delivered(0.3) and receiver.types()[-1] == "checkout.session.completed"
    fake.release_deliveries()
    assert delivered(fake, receiver)[-1] == "checkout.session.expired"


def test_events_made_before_a_webhook_url_are_recorded_only(receiver):
    with FakeStripe(SECRET_KEY, webhook_secret=WEBHOOK_SECRET) as fake:
        client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": fake.url}, max_network_retries=0)
        first = client.v1.checkout.sessions.create(params=session_params())
        client.v1.checkout.sessions.expire(first.id)
        fake.webhook_url = receiver.url
        fake.delivery_delay = 0.2  # the shopper is back before the webhook
        second = client.v1.checkout.sessions.create(params=session_params())
        page(second.url, "approve")
        assert receiver.events == []
        assert fake.wait_delivered(5)
    assert fake.event_types()[0] == "checkout.session.expired" and fake.events[0]["pending_webhooks"] == 0
    assert receiver.types() == ["payment_intent.succeeded", "charge.succeeded", "checkout.session.completed"]
    assert fake.events[0]["request"]["id"].startswith("req_")  # made by the expire API call


# -- the account -----------------------------------------------------------------------------------
def test_the_account_and_its_webhook_endpoints(fake, client):
    account = client.v1.accounts.retrieve_current()
    assert (account.object, account.charges_enabled, account.details_submitted, account.default_currency) == (
        "account",
        True,
        True,
        "usd",
    )
    assert account.settings.dashboard.display_name == "Test shop"
    assert client.v1.webhook_endpoints.list().data == []
    fake.add_webhook_endpoint("https://shop.example/webhooks/stripe", ["checkout.session.completed"])
    fake.add_webhook_endpoint("https://old.example/webhooks/stripe", ["*"], status="disabled")
    endpoints = client.v1.webhook_endpoints.list()
    assert [(e.url, e.status, e.api_version) for e in endpoints.data] == [
        ("https://shop.example/webhooks/stripe", "enabled", "2025-08-27.basil"),
        ("https://old.example/webhooks/stripe", "disabled", "2025-08-27.basil"),
    ]
    assert endpoints.data[0].enabled_events == ["checkout.session.completed"]
