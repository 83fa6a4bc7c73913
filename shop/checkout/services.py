"""Checkout: one transaction turns an open cart into a pending order with its stock held, then the
payment is opened with the provider after the commit.

Every price and total is recomputed here from the catalogue; nothing the client sends sets one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from shop import clock, geo, idempotency, pricing, ratelimit
from shop.accounts.services import clean_address, normalise_email
from shop.cart import services as carts
from shop.cart.models import Cart, CartItem, CartStatus
from shop.catalog.models import Variant
from shop.checkout import holds
from shop.errors import Conflict, Invalid, ValidationError
from shop.extensions import db
from shop.inventory import gate as stock_gate
from shop.inventory import services as inventory
from shop.orders import services as orders
from shop.orders.models import Order
from shop.payments import services as payments
from shop.payments.gateways import gateway
from shop.payments.models import Payment, PaymentStatus
from shop.promotions import services as promotions
from shop.telemetry import metrics


class CheckoutErrorCode(StrEnum):
    CART_EMPTY = "cart_empty"
    NO_LONGER_SOLD = "no_longer_sold"


@dataclass
class Placed:
    order: Order
    access_token: str | None
    payment: payments.PaymentAnswer


def validate(
    email: Any, shipping_address: Any, billing_address: Any, shipping_method: Any
) -> tuple[str, dict[str, Any], dict[str, Any] | None, str]:
    fields: dict[str, str] = {}
    try:
        email = normalise_email(email)
    except ValidationError as exc:
        fields.update(exc.details["fields"])
    rates = pricing.tax_table().rates
    try:
        shipping_address = clean_address(shipping_address)
    except ValidationError as exc:
        fields.update({f"shipping_address.{k}": v for k, v in exc.details["fields"].items()})
    else:  # a country that exists, and a region the tax table knows where tax depends on it
        shipping_address, problems = geo.address_problems(shipping_address, rates)
        fields.update({f"shipping_address.{k}": v for k, v in problems.items()})
    if billing_address is not None:
        try:
            billing_address = clean_address(billing_address)
        except ValidationError as exc:
            fields.update({f"billing_address.{k}": v for k, v in exc.details["fields"].items()})
        else:
            billing_address, problems = geo.address_problems(billing_address, rates)
            fields.update({f"billing_address.{k}": v for k, v in problems.items()})
    method = shipping_method or "standard"
    if not isinstance(method, str) or method not in pricing.SHIPPING_METHODS:
        fields["shipping_method"] = f"must be one of {', '.join(pricing.SHIPPING_METHODS)}"
    if fields:
        raise ValidationError(fields)
    return email, shipping_address, billing_address, method


def refuse_if_sold_out(
    scope: str,
    key: str,
    body: Any,
    *,
    cart_id: Any,
    cart_token: str | None,
    user: Any,
    email: Any,
    shipping_address: Any,
    billing_address: Any = None,
    shipping_method: Any = None,
) -> None:
    """The flash sale's cheap refusal, before place_order() under idempotency.once(): a cart holding a variant the
    stock gate knows to be sold out is answered 409 out_of_stock without the claim's lock connection, the cart's row
    lock or pricing, and the refusal is stored as the key's answer (idempotency.refuse_at_once), as the usual way
    stores it. Returns without a word when the gate says nothing, or the key is not new: the usual way decides."""
    if not stock_gate.enabled():
        return
    validate(email, shipping_address, billing_address, shipping_method)  # a 422 first, as on the usual way
    try:
        cart_uuid = uuid.UUID(str(cart_id))
    except ValueError:
        return
    rows = db.session.execute(  # the cart and its items' variants in one read, no ORM objects
        select(Cart.user_id, Cart.token, Cart.status, CartItem.variant_id, Variant.sku)
        .outerjoin(CartItem, CartItem.cart_id == Cart.id)
        .outerjoin(Variant, Variant.id == CartItem.variant_id)
        .where(Cart.id == cart_uuid)
    ).all()
    if not rows or rows[0].status != CartStatus.OPEN:
        return  # the usual way answers 404 or 409 cart_closed
    if not carts.may_read(rows[0].user_id, rows[0].token, user=user, token=cart_token):
        return
    items = [(row.variant_id, row.sku) for row in rows if row.variant_id is not None]
    gated = stock_gate.sold_out(variant_id for variant_id, _ in items)
    if not gated:
        return
    # Counted here as on the usual way; a request this path hands on below (rare: a copy at work) is counted twice.
    ratelimit.enforce(
        "RATE_CHECKOUTS_PER_IP", message="Too many orders placed from your network just now; try again later."
    )
    refusal = inventory.OutOfStock({sku: 0 for variant_id, sku in items if variant_id in gated})
    if idempotency.refuse_at_once(scope, key, body, refusal):
        metrics.CHECKOUTS_STARTED.inc()
        raise refusal


def place_order(
    *,
    cart_id: Any,
    cart_token: str | None,
    user: Any,
    email: Any,
    shipping_address: Any,
    billing_address: Any = None,
    shipping_method: Any = None,
    claim: idempotency.Claim | None = None,
    hosted: bool = False,
) -> Placed:
    """Cart -> pending order + reservations + payment, then open the payment with the provider.

    `hosted`: the shopper pays on the provider's own page (the storefront): in Stripe mode a Checkout Session, whose
    address is the answer's redirect_url; API clients get a PaymentIntent's client_secret instead.

    `claim` is the request's idempotency claim, held by this request (shop.idempotency). The
    order is recorded on it in the checkout's own transaction, so a copy that takes over after this one
    died without answering resumes that order (resume()) instead of refusing the converted cart."""
    email, shipping_address, billing_address, method = validate(
        email, shipping_address, billing_address, shipping_method
    )
    if claim is not None:
        resumed = resume(claim)
        if resumed is not None:
            return resumed
    ratelimit.enforce(
        "RATE_CHECKOUTS_PER_IP", message="Too many orders placed from your network just now; try again later."
    )
    metrics.CHECKOUTS_STARTED.inc()
    client = holds.Client(ip=ratelimit.client_ip(), email=email, user_id=user.id if user else None)
    # The cart row is locked so one cart cannot become two orders, whatever arrives together.
    cart = carts.for_reader(cart_id, user=user, token=cart_token, for_update=True)
    if cart.status != CartStatus.OPEN:
        raise carts.CartClosed("This cart was already checked out; start a new one.")
    # The stock gate (shop.inventory.gate): a variant known to be sold out is refused here, before pricing and before
    # the promotions' and the variants' row locks that the buyers who can still win are queueing for. It only refuses.
    gated = stock_gate.sold_out(item.variant_id for item in cart.items)
    if gated:
        raise inventory.OutOfStock({item.variant.sku: 0 for item in cart.items if item.variant_id in gated})
    at = clock.now()
    live = promotions.live_automatic(at)  # read once: the sale prices and the discounts see the same promotions
    lines = carts.priced_lines(cart, live=live)
    # Lock order everywhere in checkout: cart -> promotions -> variants (shop.promotions.services).
    # A code that fails now (used up meanwhile, ...) is 409 naming the rule, before anything is written.
    applied = (
        promotions.price_for_checkout(cart, lines, user=user, email=email, shipping_method=method, at=at, live=live)
        if lines
        else promotions.Applied()
    )
    totals = carts.quote(
        cart,
        shipping_method=method,
        country=shipping_address["country"],
        region=shipping_address.get("region"),
        lines=lines,
        applied=applied,
    ).totals
    if not totals.lines:
        raise Invalid(CheckoutErrorCode.CART_EMPTY, "The cart is empty.", {"fields": {"cart_id": "has no items"}})
    priced = {line.variant_id for line in totals.lines}
    gone = [item.variant.sku for item in cart.items if item.variant_id not in priced]
    if gone:
        raise Conflict(
            CheckoutErrorCode.NO_LONGER_SOLD,
            "Some items are no longer for sale; remove them to continue.",
            {"skus": gone},
        )
    wanted: dict[int, int] = {}
    for line in totals.lines:
        wanted[line.variant_id] = wanted.get(line.variant_id, 0) + line.quantity
    # Lock order: cart -> promotions -> the client's hold locks (advisory, shop.checkout.holds) -> variants.
    holds.lock(client)  # this client's checkouts count their unpaid holds one at a time
    holds.check(client, wanted)  # 409 hold_limit_reached past the client's share
    order, token = orders.new_order(
        user_id=user.id if user else None,
        email=email,
        currency=cart.currency,
        totals=totals,
        shipping_method=method,
        shipping_address=shipping_address,
        billing_address=billing_address,
        cart_id=cart.id,
        client_ip=client.ip,
    )
    waived = (
        pricing.shipping_cost(method, totals.subtotal - totals.discount, current_app.config["FREE_SHIPPING_THRESHOLD"])
        if applied.free_shipping
        else 0
    )
    promotions.record(order, applied, user_id=user.id if user else None, email=email, shipping_waived=waived)
    provider = gateway().name
    payment = Payment(
        order_id=order.id,
        provider=provider,
        amount=order.total,
        currency=order.currency,
        flow="checkout" if hosted and provider == "stripe" else "intent",
    )
    db.session.add(payment)
    cart.status = CartStatus.CONVERTED
    if claim is not None:
        idempotency.record(claim, order_id=order.id, access_token=token)
    db.session.flush()
    prepared = payments.prepare(payment)  # what the provider is sent, read before the commit expires the rows
    # The stock last: the variant rows are locked (FOR NO KEY UPDATE, id order), checked and reserved just before the
    # commit, so a flash sale's buyers queue on the hot row for a few statements, not for the whole order. Their
    # lock does not conflict with the KEY SHARE locks the order lines' foreign keys took above. OutOfStock here
    # rolls everything back: nothing is written.
    inventory.reserve(order.id, wanted, current_app.config["RESERVATION_TTL_SECONDS"])
    order_id, payment_id, cart_id = order.id, payment.id, cart.id
    db.session.commit()
    metrics.ORDERS_PLACED.inc()
    try:
        started = payments.start(payment_id, prepared=prepared)
    except payments.PaymentUnavailable:
        _reopen(cart_id, order_id)  # the shopper keeps their cart and may try again
        db.session.commit()
        raise
    return Placed(order=_placed_order(order_id), access_token=token, payment=started)


def _placed_order(order_id: int) -> Order:
    """The order as it stands now, with its lines and history, for the answer (one query)."""
    return db.session.get_one(
        Order, order_id, options=[joinedload(Order.lines), joinedload(Order.events)], populate_existing=True
    )


def resume(claim: idempotency.Claim) -> Placed | None:
    """The order an earlier copy of this claim committed before dying without an answer, its payment
    finished starting if it was left `creating`; None when there is none (or it failed: start over)."""
    made = idempotency.made(claim)
    order = db.session.get(Order, made["order_id"]) if made.get("order_id") else None
    if order is None:
        return None
    payment = db.session.scalar(select(Payment).where(Payment.order_id == order.id).order_by(Payment.id.desc()))
    if payment is None:
        return None
    if payment.status == PaymentStatus.FAILED:
        # Its payment could not be started, so the order was cancelled: the original answer was a 503 and the
        # shopper may try again. Finish what that copy had left (reopening the cart) and place the order afresh.
        _reopen(order.cart_id, order.id)
        idempotency.forget_made(claim)
        db.session.commit()
        return None
    order_id, token = order.id, made.get("access_token")
    if payment.status == PaymentStatus.CREATING:
        try:
            started = payments.start(payment.id)
        except payments.PaymentUnavailable:
            _reopen(order.cart_id, order_id)
            idempotency.forget_made(claim)
            db.session.commit()
            raise
    else:
        started = payments.payment_answer(payment)
    return Placed(order=db.session.get_one(Order, order_id), access_token=token, payment=started)


def _reopen(cart_id: Any, order_id: int) -> None:
    """Give the shopper back the cart that order `order_id` converted, unless a later order has taken it since.
    Locked and re-read (populate_existing): this session may still hold the cart as it converted it."""
    if not cart_id:
        return
    cart = db.session.scalar(
        select(Cart)
        .where(Cart.id == uuid.UUID(str(cart_id)))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    later = db.session.scalar(select(Order.id).where(Order.cart_id == str(cart_id), Order.id > order_id).limit(1))
    if cart is not None and cart.status == CartStatus.CONVERTED and later is None:
        cart.status = CartStatus.OPEN
