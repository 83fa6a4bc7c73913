"""Checkout: one transaction turns an open cart into a pending order with its stock held, then the
payment is opened with the provider after the commit.

Every price and total is recomputed here from the catalogue; nothing the client sends sets one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select

from shop import ratelimit
from shop.accounts.services import clean_address, normalise_email
from shop.cart import services as carts
from shop.cart.models import Cart
from shop.checkout import holds, pricing
from shop.errors import ApiError, ValidationError
from shop.extensions import db
from shop.inventory import services as inventory
from shop.orders import services as orders
from shop.orders.models import Order
from shop.payments import services as payments
from shop.payments.gateways import gateway
from shop.payments.models import Payment
from shop.promotions import services as promotions


@dataclass
class Placed:
    order: Order
    access_token: str | None
    payment: dict


def tax_table() -> pricing.TaxTable:
    raw = current_app.config.get("TAX_RATES")
    return pricing.TaxTable(json.loads(raw) if raw else None)


def validate(email, shipping_address, billing_address, shipping_method) -> tuple[str, dict, dict | None, str]:
    fields = {}
    try:
        email = normalise_email(email)
    except ValidationError as exc:
        fields.update(exc.details["fields"])
    try:
        shipping_address = clean_address(shipping_address)
    except ValidationError as exc:
        fields.update({f"shipping_address.{k}": v for k, v in exc.details["fields"].items()})
    if billing_address is not None:
        try:
            billing_address = clean_address(billing_address)
        except ValidationError as exc:
            fields.update({f"billing_address.{k}": v for k, v in exc.details["fields"].items()})
    method = shipping_method or "standard"
    if not isinstance(method, str) or method not in pricing.SHIPPING_METHODS:
        fields["shipping_method"] = f"must be one of {', '.join(pricing.SHIPPING_METHODS)}"
    if fields:
        raise ValidationError(fields)
    return email, shipping_address, billing_address, method


def quote(cart: Cart, shipping_method: str = "standard", country: str | None = None, region: str | None = None,
          *, applied=None, lines=None, user=None, email=None):
    """The cart's totals with its discount (`applied`, else priced now without locks, for display)."""
    from shop.promotions import services as promotions

    lines = carts.priced_lines(cart) if lines is None else lines
    if applied is None:
        applied = promotions.cart_discount(cart, lines, user=user, email=email, shipping_method=shipping_method)
    return pricing.totals(lines, shipping_method=shipping_method, country=country, region=region,
                          discount=applied.goods, free_shipping=applied.free_shipping,
                          tax_table=tax_table(), free_standard_over=current_app.config["FREE_SHIPPING_THRESHOLD"])


def place_order(*, cart_id, cart_token: str | None, user, email, shipping_address, billing_address=None,
                shipping_method=None) -> Placed:
    """Cart -> pending order + reservations + payment, then open the payment with the provider."""
    email, shipping_address, billing_address, method = validate(email, shipping_address, billing_address,
                                                                shipping_method)
    ratelimit.enforce("RATE_CHECKOUTS_PER_IP", message="Too many orders placed from your network just now; "
                                                       "try again later.")
    client = holds.Client(ip=ratelimit.client_ip(), email=email, user_id=user.id if user else None)
    # The cart row is locked so one cart cannot become two orders, whatever arrives together.
    cart = carts.for_reader(cart_id, user=user, token=cart_token, for_update=True)
    if cart.status != "open":
        raise ApiError(409, "cart_closed", "This cart was already checked out; start a new one.")
    lines = carts.priced_lines(cart)
    # Lock order everywhere in checkout: cart -> promotions -> variants (shop.promotions.services).
    # A code that fails now (used up meanwhile, ...) is 409 naming the rule, before anything is written.
    applied = promotions.price_for_checkout(cart, lines, user=user, email=email, shipping_method=method) \
        if lines else promotions.Applied()
    totals = quote(cart, method, shipping_address["country"], shipping_address.get("region"), applied=applied,
                   lines=lines)
    if not totals.lines:
        raise ApiError(422, "cart_empty", "The cart is empty.", {"fields": {"cart_id": "has no items"}})
    priced = {line.variant_id for line in totals.lines}
    gone = [item.variant.sku for item in cart.items if item.variant_id not in priced]
    if gone:
        raise ApiError(409, "no_longer_sold", "Some items are no longer for sale; remove them to continue.",
                       {"skus": gone})
    wanted: dict[int, int] = {}
    for line in totals.lines:
        wanted[line.variant_id] = wanted.get(line.variant_id, 0) + line.quantity
    # Lock the variants (FOR UPDATE, id order) before inserting order lines: the lines' foreign keys
    # take KEY SHARE locks on those rows, and upgrading from them later deadlocks concurrent checkouts.
    # Lock order: cart -> promotions -> the client's hold locks (advisory, shop.checkout.holds) -> variants.
    holds.lock(client)  # this client's checkouts count their unpaid holds one at a time
    variants = inventory.check_available(wanted)  # raises OutOfStock before anything is written
    holds.check(client, wanted, variants)  # 409 hold_limit_reached past the client's share
    order, token = orders.new_order(user_id=user.id if user else None, email=email, currency=cart.currency,
                                    totals=totals, shipping_method=method, shipping_address=shipping_address,
                                    billing_address=billing_address, cart_id=cart.id)
    waived = pricing.shipping_cost(method, totals.subtotal - totals.discount,
                                   current_app.config["FREE_SHIPPING_THRESHOLD"]) if applied.free_shipping else 0
    order.client_ip = client.ip
    promotions.record(order, applied, user_id=user.id if user else None, email=email, shipping_waived=waived)
    inventory.reserve(order.id, wanted, current_app.config["RESERVATION_TTL_SECONDS"])
    payment = Payment(order_id=order.id, provider=gateway().name, amount=order.total, currency=order.currency)
    db.session.add(payment)
    cart.status = "converted"
    db.session.commit()
    try:
        started = payments.start(payment.id)
    except payments.PaymentUnavailable:
        # Locked and re-read (populate_existing): this session still holds the cart it converted.
        reopen = db.session.scalar(select(Cart).where(Cart.id == cart.id).with_for_update()
                                   .execution_options(populate_existing=True))
        reopen.status = "open"  # the shopper keeps their cart and may try again
        db.session.commit()
        raise
    return Placed(order=db.session.get(Order, order.id), access_token=token, payment=started)
