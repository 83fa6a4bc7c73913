"""Payment gateways: Stripe PaymentIntents through the official SDK, and the built-in test gateway.

Both start a payment and refund one; both report outcomes the same way, as Stripe-shaped events
signed with the webhook secret and posted to /webhooks/stripe. No gateway call ever runs inside an
open database transaction: callers commit first.
"""
from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass

from flask import current_app


@dataclass(frozen=True)
class PaymentRef:
    """What a gateway needs of a payment, copied out of the session before the provider call."""

    id: int
    order_id: int
    amount: int
    currency: str
    provider_id: str | None
    created_at: object

    @classmethod
    def of(cls, payment) -> "PaymentRef":
        return cls(payment.id, payment.order_id, payment.amount, payment.currency, payment.provider_id,
                   payment.created_at)


@dataclass(frozen=True)
class RefundRef:
    id: int
    amount: int
    created_at: object

    @classmethod
    def of(cls, refund) -> "RefundRef":
        return cls(refund.id, refund.amount, refund.created_at)


@dataclass
class Started:
    provider_id: str
    client_secret: str | None = None
    redirect_url: str | None = None


@dataclass
class Refunded:
    provider_refund_id: str
    status: str  # succeeded, pending, failed


def webhook_secret() -> str:
    """The secret that signs events: Stripe's endpoint secret, or one derived for the test gateway."""
    configured = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if configured:
        return configured
    digest = hmac.new(current_app.config["SECRET_KEY"].encode(), b"shop.test-gateway.webhook", hashlib.sha256)
    return "whsec_test_" + digest.hexdigest()


def _stamp(row) -> str:
    """Row ids repeat across databases (a reset staging shop on the same Stripe account); the
    creation time in microseconds keeps idempotency keys from colliding while staying stable."""
    return str(int(row.created_at.timestamp() * 1_000_000)) if row.created_at else "0"


class ProviderRefused(Exception):
    """The provider understood the request and said no (a card error, an invalid request)."""


class StripeGateway:
    name = "stripe"

    def __init__(self, config):
        import stripe

        # A short timeout: a hung provider must not hold a web worker for minutes.
        self.client = stripe.StripeClient(config["STRIPE_SECRET_KEY"],
                                          base_addresses={"api": config["STRIPE_API_BASE"]},
                                          max_network_retries=2, http_client=stripe.RequestsClient(timeout=10))

    def start(self, payment) -> Started:
        # The idempotency key makes a retried call (after a timeout, say) return the same intent.
        intent = self.client.v1.payment_intents.create(
            params={"amount": payment.amount, "currency": payment.currency.lower(),
                    "metadata": {"order_id": str(payment.order_id), "payment_id": str(payment.id)},
                    "automatic_payment_methods": {"enabled": True}},
            options={"idempotency_key": f"shop-payment-{payment.id}-{_stamp(payment)}"})
        return Started(provider_id=intent.id, client_secret=intent.client_secret)

    def refund(self, payment, refund) -> Refunded:
        result = self.client.v1.refunds.create(
            params={"payment_intent": payment.provider_id, "amount": refund.amount,
                    "metadata": {"order_id": str(payment.order_id), "refund_id": str(refund.id)}},
            options={"idempotency_key": f"shop-refund-{refund.id}-{_stamp(refund)}"})
        return Refunded(provider_refund_id=result.id, status=result.status)


class TestGateway:
    """Offline payments: a page where a person approves or declines, then a signed event to our webhook."""

    name = "test"

    def start(self, payment) -> Started:
        from shop.payments.routes import pay_url

        return Started(provider_id=f"pi_test_{uuid.uuid4().hex[:24]}", redirect_url=pay_url(payment))

    def refund(self, payment, refund) -> Refunded:
        return Refunded(provider_refund_id=f"re_test_{uuid.uuid4().hex[:24]}", status="succeeded")


def gateway():
    provider = current_app.config["PAYMENT_PROVIDER"]
    if provider == "stripe":
        return StripeGateway(current_app.config)
    if provider == "test":
        return TestGateway()
    raise RuntimeError(f"PAYMENT_PROVIDER must be stripe or test, not {provider!r}")
