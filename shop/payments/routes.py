"""The built-in test gateway's payment page: a person approves or declines; the decision then
reaches the shop's own webhook as a signed event, through the job queue, like Stripe's would."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, redirect, render_template, request
from itsdangerous import BadSignature, URLSafeSerializer
from rq import Retry

from shop.accounts.forms import ActionForm
from shop.afterwards import after_commit
from shop.extensions import db
from shop.orders.models import Order
from shop.payments.gateways import PaymentRef, webhook_secret
from shop.payments.jobs import deliver_signed_event, test_event
from shop.payments.models import Payment, PaymentStatus
from shop.security import external_url

bp = Blueprint("payments", __name__)


def _signer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="shop.test-gateway.pay")


def pay_url(payment: PaymentRef) -> str:
    return external_url("payments.test_pay", payment_id=payment.id, t=_signer().dumps(payment.id))


def _payment(payment_id: int) -> Payment:
    try:
        if _signer().loads(request.args.get("t", "")) != payment_id:
            abort(404)
    except BadSignature:
        abort(404)
    payment = db.session.get(Payment, payment_id)
    if payment is None or payment.provider != "test" or current_app.config["PAYMENT_PROVIDER"] != "test":
        abort(404)
    return payment


def deliver_test_event(url: str, event: dict) -> int:
    """RQ job: the test gateway's signed event, signed in the worker (which has the app's settings), so
    the signing secret never sits in the outbox table."""
    return deliver_signed_event(url, event, webhook_secret())


@bp.route("/pay/test/<int:payment_id>", methods=["GET", "POST"])
def test_pay(payment_id: int):
    payment = _payment(payment_id)
    order = db.session.get(Order, payment.order_id)
    form = ActionForm()
    closed = (PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.SUCCEEDED)
    if request.method == "POST" and payment.status in closed:
        # A closed attempt (declined, replaced by "Pay again", or paid): deciding again must not pay twice.
        from flask import flash

        from shop.orders.services import order_link

        flash("This payment attempt is closed. Your order page shows what to do next.", "info")
        return redirect(order_link(order), 303)
    if request.method == "POST" and form.validate_on_submit():
        outcome = "approve" if request.form.get("decision") == "approve" else "decline"
        event = test_event(payment.provider_id, payment, outcome)
        # The shop's own address, never the Host the browser sent: the worker POSTs there (no SSRF).
        # Recorded in the outbox (the decision is not lost while Redis is away); the secret is not stored.
        after_commit(
            "default",
            deliver_test_event,
            external_url("webhooks.stripe_webhook"),
            event,
            retry=Retry(max=5, interval=[2, 5, 15, 60, 300]),
        )
        if outcome == "decline":
            # The gateway is the shop's own: a decline is known now, so "Pay again" pressed before the event has
            # travelled makes a new attempt instead of showing this closed one again. (The event then changes nothing.)
            from shop.orders.services import lock
            from shop.payments.services import LIVE, lock_payment

            lock(order.id)
            decided = lock_payment(payment.id)
            if decided.status in LIVE:
                decided.status = PaymentStatus.FAILED
                decided.failure_reason = event["data"]["object"]["last_payment_error"]["message"]
        db.session.commit()
        # Back to the order with its signed link: the shopper may have reached this page at another host
        # name than the shop's (PUBLIC_BASE_URL), where their session, and the guest's key in it, is unknown.
        from shop.orders.services import order_link

        return redirect(order_link(order, paid=outcome), 303)
    resp = current_app.make_response(render_template("payments/test_pay.html", payment=payment, order=order, form=form))
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
