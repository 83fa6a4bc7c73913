"""Payment gateways: Stripe (PaymentIntents for API clients, hosted Checkout Sessions for the storefront) through
the official SDK, and the built-in test gateway.

Both start a payment and refund one; both report outcomes the same way, as Stripe-shaped events
signed with the webhook secret and posted to /webhooks/stripe. No gateway call ever runs inside an
open database transaction: callers commit first.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import current_app

if TYPE_CHECKING:
    from stripe.params import RefundCreateParams
    from stripe.params.checkout import SessionCreateParams, SessionCreateParamsLineItem

    from shop.payments.models import Payment, Refund


@dataclass(frozen=True)
class PaymentRef:
    """What a gateway needs of a payment, copied out of the session before the provider call."""

    id: int
    order_id: int
    amount: int
    currency: str
    provider_id: str | None
    created_at: datetime | None  # None until the row is flushed
    flow: str = "intent"
    checkout_session_id: str | None = None

    @classmethod
    def of(cls, payment: Payment) -> PaymentRef:
        return cls(
            payment.id,
            payment.order_id,
            payment.amount,
            payment.currency,
            payment.provider_id,
            payment.created_at,
            payment.flow or "intent",
            payment.checkout_session_id,
        )


@dataclass(frozen=True)
class CheckoutRequest:
    """What a hosted Checkout Session shows, copied from the order before the provider call: the order's own lines
    and totals (the review page's), so Stripe's page charges exactly the order's total."""

    number: str
    email: str
    lines: tuple[tuple[str, int, int], ...]  # (name, unit_amount, quantity)
    shipping: int
    shipping_label: str
    discount: int
    tax: int
    success_url: str
    cancel_url: str
    expires_at: int  # Unix seconds


# Stripe keeps a Checkout Session open at least 30 minutes; a minute more, so clock skew never makes it refuse one.
CHECKOUT_SESSION_SECONDS = 31 * 60


@dataclass(frozen=True)
class RefundRef:
    id: int
    amount: int
    created_at: datetime | None  # None until the row is flushed

    @classmethod
    def of(cls, refund: Refund) -> RefundRef:
        return cls(refund.id, refund.amount, refund.created_at)


@dataclass
class Started:
    provider_id: str | None
    client_secret: str | None = None
    redirect_url: str | None = None
    checkout_session_id: str | None = None
    expires_at: int | None = None  # Unix seconds, for a Checkout Session


@dataclass
class Session:
    """A Checkout Session as Stripe reports it (the fields the shop acts on)."""

    id: str
    status: str  # open, complete, expired
    payment_status: str  # paid, unpaid, no_payment_required
    payment_intent: str | None
    url: str | None
    amount_total: int | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, obj: Any) -> Session:
        """From an event's object (a dict) or the SDK's StripeObject."""
        get: Callable[..., Any] = (
            obj.get if isinstance(obj, dict) else (lambda name, default=None: getattr(obj, name, default))
        )
        intent = get("payment_intent")
        if intent is not None and not isinstance(intent, str):  # expanded
            intent = intent["id"] if isinstance(intent, dict) else intent.id
        metadata = get("metadata") or {}
        metadata = metadata.to_dict() if hasattr(metadata, "to_dict") else metadata  # the SDK's StripeObject
        return cls(
            str(get("id")),
            str(get("status") or ""),
            str(get("payment_status") or ""),
            intent,
            get("url"),
            get("amount_total"),
            dict(metadata),
        )


@dataclass
class Refunded:
    provider_refund_id: str
    status: str | None  # succeeded, pending, requires_action, failed, canceled (Stripe's Refund.status is nullable)


def webhook_secret() -> str:
    """The secret that signs events: Stripe's endpoint secret, or one derived for the test gateway."""
    configured = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if configured:
        return configured
    digest = hmac.new(current_app.config["SECRET_KEY"].encode(), b"shop.test-gateway.webhook", hashlib.sha256)
    return "whsec_test_" + digest.hexdigest()


def _stamp(row: PaymentRef | RefundRef) -> str:
    """Row ids repeat across databases (a reset staging shop on the same Stripe account); the
    creation time in microseconds keeps idempotency keys from colliding while staying stable."""
    return str(int(row.created_at.timestamp() * 1_000_000)) if row.created_at else "0"


class ProviderRefused(Exception):
    """The provider understood the request and said no (a card error, an invalid request)."""


class StripeGateway:
    name = "stripe"

    def __init__(self, config: Mapping[str, Any]) -> None:
        import stripe

        # A short timeout: a hung provider must not hold a web worker for minutes.
        self.client = stripe.StripeClient(
            config["STRIPE_SECRET_KEY"],
            base_addresses={"api": config["STRIPE_API_BASE"]},
            max_network_retries=2,
            http_client=stripe.RequestsClient(timeout=10),
        )

    def start(self, payment: PaymentRef, checkout: CheckoutRequest | None = None) -> Started:
        if payment.flow == "checkout":
            if checkout is None:
                raise ValueError(f"payment {payment.id} is a Checkout Session: its order (CheckoutRequest) is needed")
            return self._start_checkout(payment, checkout)
        # The idempotency key makes a retried call (after a timeout, say) return the same intent.
        intent = self.client.v1.payment_intents.create(
            params={
                "amount": payment.amount,
                "currency": payment.currency.lower(),
                "metadata": {"order_id": str(payment.order_id), "payment_id": str(payment.id)},
                "automatic_payment_methods": {"enabled": True},
            },
            options={"idempotency_key": f"shop-payment-{payment.id}-{_stamp(payment)}"},
        )
        return Started(provider_id=intent.id, client_secret=intent.client_secret)

    def _start_checkout(self, payment: PaymentRef, order: CheckoutRequest) -> Started:
        """A hosted Checkout Session for the order: its lines, shipping and tax as line items and a shipping rate, its
        discount as a single-use coupon. Stripe computes the same total; a session that would charge anything else
        is refused here (and expired at Stripe) rather than shown."""
        stamp, currency = _stamp(payment), payment.currency.lower()
        metadata = {"order_id": str(payment.order_id), "payment_id": str(payment.id), "order_number": order.number}
        items: list[SessionCreateParamsLineItem] = [
            {
                "price_data": {"currency": currency, "unit_amount": unit, "product_data": {"name": name[:250]}},
                "quantity": quantity,
            }
            for name, unit, quantity in order.lines
        ]
        if order.tax:
            items.append(
                {
                    "price_data": {"currency": currency, "unit_amount": order.tax, "product_data": {"name": "Tax"}},
                    "quantity": 1,
                }
            )
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": items,
            "customer_email": order.email,
            "client_reference_id": order.number,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": order.success_url,
            "cancel_url": order.cancel_url,
            "expires_at": order.expires_at,
            "shipping_options": [
                {
                    "shipping_rate_data": {
                        "type": "fixed_amount",
                        "display_name": order.shipping_label[:100],
                        "fixed_amount": {"amount": order.shipping, "currency": currency},
                    }
                }
            ],
        }
        if order.discount:
            coupon = self.client.v1.coupons.create(
                params={
                    "amount_off": order.discount,
                    "currency": currency,
                    "duration": "once",
                    "max_redemptions": 1,
                    "name": f"Order {order.number} discount"[:40],
                    "metadata": metadata,
                },
                options={"idempotency_key": f"shop-coupon-{payment.id}-{stamp}"},
            )
            params["discounts"] = [{"coupon": coupon.id}]
        session = self.client.v1.checkout.sessions.create(
            params=params, options={"idempotency_key": f"shop-checkout-{payment.id}-{stamp}-{order.expires_at}"}
        )
        if session.amount_total != payment.amount:
            self.expire_session(session.id)
            raise ValueError(f"Stripe computed {session.amount_total} for order {order.number}, not {payment.amount}")
        return Started(
            provider_id=None, redirect_url=session.url, checkout_session_id=session.id, expires_at=session.expires_at
        )

    def session(self, session_id: str) -> Session:
        return Session.of(self.client.v1.checkout.sessions.retrieve(session_id))

    def expire_session(self, session_id: str) -> Session:
        """Close an open session so nobody can pay on it any more. Stripe refuses (InvalidRequestError) a session
        that is no longer open: callers then read it to learn whether it was paid."""
        return Session.of(self.client.v1.checkout.sessions.expire(session_id))

    def refund(self, payment: PaymentRef, refund: RefundRef) -> Refunded:
        params: RefundCreateParams = {
            "amount": refund.amount,
            "metadata": {"order_id": str(payment.order_id), "refund_id": str(refund.id)},
        }
        if payment.provider_id is not None:  # (the SDK leaves a None out of the request all the same)
            params["payment_intent"] = payment.provider_id
        result = self.client.v1.refunds.create(
            params=params, options={"idempotency_key": f"shop-refund-{refund.id}-{_stamp(refund)}"}
        )
        return Refunded(provider_refund_id=result.id, status=result.status)


class TestGateway:
    """Offline payments: a page where a person approves or declines, then a signed event to our webhook."""

    name = "test"

    def start(self, payment: PaymentRef, checkout: CheckoutRequest | None = None) -> Started:
        from shop.payments.routes import pay_url

        return Started(provider_id=f"pi_test_{uuid.uuid4().hex[:24]}", redirect_url=pay_url(payment))

    def refund(self, payment: PaymentRef, refund: RefundRef) -> Refunded:
        return Refunded(provider_refund_id=f"re_test_{uuid.uuid4().hex[:24]}", status="succeeded")

    # Hosted Checkout Sessions are Stripe's only (the "checkout" flow is chosen only when PAYMENT_PROVIDER is
    # stripe): one left from before the provider was changed cannot be read or closed here. Callers treat this as
    # any provider failure.
    def session(self, session_id: str) -> Session:
        raise ProviderRefused(f"the test gateway has no Checkout Session {session_id}")

    def expire_session(self, session_id: str) -> Session:
        raise ProviderRefused(f"the test gateway has no Checkout Session {session_id}")


def gateway() -> StripeGateway | TestGateway:
    provider = current_app.config["PAYMENT_PROVIDER"]
    if provider == "stripe":
        return StripeGateway(current_app.config)
    if provider == "test":
        return TestGateway()
    raise RuntimeError(f"PAYMENT_PROVIDER must be stripe or test, not {provider!r}")
