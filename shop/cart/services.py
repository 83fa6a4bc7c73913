"""Cart rules: prices are always the catalogue's current ones (at the sale price the product page shows, while
an automatic sale covers a line); quantities never exceed what can be bought."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import contains_eager

from shop import pricing, ratelimit
from shop.cart.models import Cart, CartItem, CartStatus
from shop.catalog.models import Product, Variant, utcnow
from shop.errors import Conflict, NotFound, ValidationError
from shop.extensions import db
from shop.inventory.services import OutOfStock
from shop.money import money
from shop.telemetry import metrics

MAX_QUANTITY = 100


class CartErrorCode(StrEnum):
    NOT_FOUND = "cart_not_found"
    CLOSED = "cart_closed"
    FULL = "cart_full"
    ITEM_NOT_FOUND = "item_not_found"
    SKU_NOT_FOUND = "sku_not_found"


class CartNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__(CartErrorCode.NOT_FOUND, "No such cart.")


class CartClosed(Conflict):
    def __init__(self, message: str = "This cart was already checked out or merged; start a new one.") -> None:
        super().__init__(CartErrorCode.CLOSED, message)


def _quantity(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_QUANTITY:
        raise ValidationError({"quantity": f"must be a whole number from 1 to {MAX_QUANTITY}"})
    return value


def create(user: Any = None) -> Cart:
    """A new cart; a user's open cart is reused (one per user). New guest carts count against
    RATE_CART_CREATES_PER_IP (429 rate_limited beyond); a user has one open cart, a new one only after a
    checkout (itself rate-limited)."""
    if user is not None:
        existing = open_cart_of(user.id)
        if existing:
            return existing
    else:
        ratelimit.enforce(
            "RATE_CART_CREATES_PER_IP",
            message="Too many new carts from your network just now; keep using the one you have, or try again later.",
        )
    cart = Cart(user_id=user.id if user else None, currency=current_app.config["SHOP_CURRENCY"])
    db.session.add(cart)
    try:
        db.session.commit()
    except IntegrityError:  # the same user created one at the same moment: use that one
        db.session.rollback()
        theirs = open_cart_of(user.id)
        return theirs if theirs is not None else create(user)  # (already checked out: a new one after all)
    metrics.CARTS_CREATED.inc()
    return cart


def open_cart_of(user_id: int) -> Cart | None:
    return db.session.scalar(select(Cart).where(Cart.user_id == user_id, Cart.status == CartStatus.OPEN))


def for_reader(cart_id: Any, *, user: Any = None, token: str | None = None, for_update: bool = False) -> Cart:
    """The cart if the bearer owns it or the guest token matches; 404 otherwise."""
    try:
        cart_uuid = uuid.UUID(str(cart_id))
    except ValueError:
        raise CartNotFound() from None
    stmt = select(Cart).where(Cart.id == cart_uuid)
    if for_update:  # re-read under the lock, not the copy this session may already hold
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    cart = db.session.scalar(stmt)
    if cart is None or not may_read(cart.user_id, cart.token, user=user, token=token):
        raise CartNotFound()
    return cart


def may_read(owner_id: int | None, cart_token: str, *, user: Any = None, token: str | None = None) -> bool:
    """Whether the bearer (`user`) or the guest holding `token` may use a cart of owner `owner_id` and token
    `cart_token`: an account's cart is its owner's alone, a guest cart its token's."""
    if owner_id is not None:
        return user is not None and owner_id == user.id
    return isinstance(token, str) and token.isascii() and hmac.compare_digest(cart_token.encode(), token.encode())


def _lock(cart: Cart) -> Cart:
    """Re-read the cart and its lines under a row lock: changes to one cart happen one at a time."""
    locked = db.session.scalar(
        select(Cart).where(Cart.id == cart.id).with_for_update().execution_options(populate_existing=True)
    )
    if locked is None:  # deleted meanwhile (a purge of abandoned carts)
        raise CartNotFound()
    db.session.expire(locked, ["items"])
    locked.updated_at = utcnow()  # a cart in use is not abandoned (shop.cart.jobs)
    return locked


def _variant_by_sku(sku: Any) -> Variant:
    if not isinstance(sku, str) or not sku or len(sku) > 64:
        raise ValidationError({"sku": "is required"})
    variant = db.session.scalar(select(Variant).join(Product).where(Variant.sku == sku, Product.status == "active"))
    if variant is None:
        raise NotFound(CartErrorCode.SKU_NOT_FOUND, f"No product for sale has the SKU {sku!r}.", {"sku": sku})
    return variant


def _cart_full(max_lines: int) -> Conflict:
    return Conflict(
        CartErrorCode.FULL,
        f"A cart holds at most {max_lines} different items; remove one first.",
        {"max_lines": max_lines},
    )


def _out_of_stock(variant: Variant, asked: int) -> OutOfStock:
    return OutOfStock(
        {variant.sku: variant.available},
        f"Only {variant.available} of {variant.sku} can be bought now.",
        requested=asked,
    )


def add_item(cart: Cart, sku: Any, quantity: Any) -> Cart:
    """Add units of a SKU (on top of what the cart holds); 409 beyond what is available."""
    quantity = _quantity(quantity)
    variant = _variant_by_sku(sku)
    cart = _lock(cart)
    _require_open(cart)
    line = next((i for i in cart.items if i.variant_id == variant.id), None)
    max_lines = current_app.config["CART_MAX_LINES"]
    if line is None and max_lines and len(cart.items) >= max_lines:  # counted under the cart's lock
        raise _cart_full(max_lines)
    total = (line.quantity if line else 0) + quantity
    if total > MAX_QUANTITY:
        raise ValidationError({"quantity": f"a cart holds at most {MAX_QUANTITY} of one item"})
    if total > variant.available:
        raise _out_of_stock(variant, total)
    if line:
        line.quantity = total
    else:
        cart.items.append(CartItem(variant_id=variant.id, quantity=quantity))
    db.session.commit()
    return cart


def set_quantity(cart: Cart, item_id: int, quantity: Any) -> Cart:
    quantity = _quantity(quantity)
    cart = _lock(cart)
    _require_open(cart)
    line = next((i for i in cart.items if i.id == item_id), None)
    if line is None:
        raise NotFound(CartErrorCode.ITEM_NOT_FOUND, "No such item in this cart.")
    if quantity > line.variant.available:
        raise _out_of_stock(line.variant, quantity)
    line.quantity = quantity
    db.session.commit()
    return cart


def remove_item(cart: Cart, item_id: int) -> Cart:
    cart = _lock(cart)
    _require_open(cart)
    line = next((i for i in cart.items if i.id == item_id), None)
    if line is None:
        raise NotFound(CartErrorCode.ITEM_NOT_FOUND, "No such item in this cart.")
    cart.items.remove(line)
    db.session.commit()
    return cart


def merge(guest_token: str, user: Any) -> Cart:
    """Move a guest cart's lines into the user's open cart: quantities added, capped by availability."""
    if not isinstance(guest_token, str) or not guest_token:
        raise ValidationError({"guest_cart_token": "is required"})
    guest_id = db.session.scalar(select(Cart.id).where(Cart.token == guest_token, Cart.user_id.is_(None)))
    if guest_id is None:
        raise CartNotFound()
    target_id = create(user).id  # may commit: done before any lock is taken
    # Both carts locked in one transaction, in id order, so two merges at once cannot deadlock.
    locked = {
        c.id: c
        for c in db.session.scalars(
            select(Cart)
            .where(Cart.id.in_([guest_id, target_id]))
            .order_by(Cart.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    guest, target = locked[guest_id], locked[target_id]
    db.session.expire(target, ["items"])
    if guest.status != CartStatus.OPEN:
        return target
    max_lines = current_app.config["CART_MAX_LINES"]
    for line in guest.items:
        mine = next((i for i in target.items if i.variant_id == line.variant_id), None)
        wanted = min((mine.quantity if mine else 0) + line.quantity, MAX_QUANTITY, line.variant.available)
        if wanted <= 0 or (mine is None and max_lines and len(target.items) >= max_lines):
            continue  # nothing left to add, or the cart is full (lines beyond the cap stay out)
        if mine:
            mine.quantity = wanted
        else:
            target.items.append(CartItem(variant_id=line.variant_id, quantity=wanted))
    guest.status = CartStatus.MERGED
    db.session.commit()
    return target


def _require_open(cart: Cart) -> None:
    if cart.status != CartStatus.OPEN:
        raise CartClosed()


def apply_coupon(cart: Cart, code: Any, ip: str, user: Any = None) -> Cart:
    """Put a discount code on the cart (locked: one change to a cart at a time) once promotions has checked it
    against every rule; 422 naming the failed rule."""
    from shop.promotions import services as promotions

    cart = _lock(cart)
    if cart.status != CartStatus.OPEN:
        raise CartClosed()
    cart.coupon_code = promotions.check_code(cart, priced_lines(cart), code, ip, user)
    db.session.commit()
    return cart


def remove_coupon(cart: Cart) -> Cart:
    cart = _lock(cart)
    if cart.status != CartStatus.OPEN:
        raise CartClosed()
    cart.coupon_code = None
    db.session.commit()
    return cart


def priced_lines(cart: Cart, live: list[Any] | None = None) -> list[pricing.PricedLine]:
    """The cart's lines at today's prices: the catalogue's, or the live automatic sale's (the product page's
    price, with the catalogue price kept as the line's list_price). One query for variants and products.
    `live`: the live automatic promotions, when the caller has read them already."""
    from shop.promotions import services as promotions

    ids = [i.variant_id for i in cart.items]
    variants = (
        {
            v.id: v
            for v in db.session.scalars(
                select(Variant)
                .join(Product)
                .where(Variant.id.in_(ids), Product.status == "active")
                .options(contains_eager(Variant.product))
            )
        }
        if ids
        else {}
    )
    lines = []
    for item in cart.items:
        v = variants.get(item.variant_id)
        if v is None:  # taken off sale since it was added: not sold, not priced
            continue
        lines.append(
            pricing.PricedLine(
                variant_id=v.id,
                sku=v.sku,
                name=v.product.name,
                options=dict(v.options),
                quantity=item.quantity,
                unit_price=v.price_amount,
            )
        )
    return promotions.with_sale_prices(lines, live=live)


def thumbnails(variant_ids: Iterable[int]) -> dict[int, dict[str, str]]:
    """{variant id: {"path", "alt"}}: the picture of each variant's product to show beside its line (the first
    image of the variant's option value, e.g. its colour, else the product's first image)."""
    from shop.catalog.models import ProductImage

    ids = sorted(set(variant_ids))
    if not ids:
        return {}
    variants = {v.id: v for v in db.session.scalars(select(Variant).where(Variant.id.in_(ids)))}
    product_ids = {v.product_id for v in variants.values()}
    images: dict[int, list[Any]] = {}
    for img in db.session.scalars(
        select(ProductImage)
        .where(ProductImage.product_id.in_(product_ids))
        .order_by(ProductImage.product_id, ProductImage.position, ProductImage.id)
    ):
        images.setdefault(img.product_id, []).append(img)
    out = {}
    for vid, v in variants.items():
        pics = images.get(v.product_id) or []
        values = {str(x) for x in (v.options or {}).values()}
        pick = (
            next((i for i in pics if getattr(i, "option_value", None) in values), None)
            or next((i for i in pics if not getattr(i, "option_value", None)), None)
            or (pics[0] if pics else None)
        )
        if pick is not None:
            out[vid] = {"path": pick.path, "alt": pick.alt or ""}
    return out


@dataclass(frozen=True)
class Quote:
    """A cart priced once: its lines at today's prices, the discount that applies and the money."""

    lines: list[pricing.PricedLine]
    applied: Any  # shop.promotions.services.Applied
    totals: pricing.Totals


def quote(
    cart: Cart,
    *,
    shipping_method: str | None = None,
    country: str | None = None,
    region: str | None = None,
    user: Any = None,
    email: str | None = None,
    lines: list[pricing.PricedLine] | None = None,
    applied: Any = None,
) -> Quote:
    """The one way a cart is priced: the cart page, the API's cart, the checkout review and the order all call it,
    so they agree to the cent. Without a shipping method the cart shows no shipping; without a country, no tax
    (both are known at checkout). `lines` and `applied`, when given, are what the caller priced under its own
    locks (the checkout); otherwise they are priced now without locks, for display."""
    from shop.promotions import services as promotions

    lines = priced_lines(cart) if lines is None else lines
    if applied is None:
        applied = promotions.cart_discount(cart, lines, user=user, email=email, shipping_method=shipping_method)
    totals = pricing.totals(
        lines,
        shipping_method=shipping_method,
        country=country,
        region=region,
        discount=applied.goods,
        free_shipping=applied.free_shipping,
        tax_table=pricing.tax_table(),
        free_standard_over=current_app.config["FREE_SHIPPING_THRESHOLD"],
    )
    return Quote(lines=list(totals.lines), applied=applied, totals=totals)


def serialize(cart: Cart, priced: Quote | None = None) -> dict[str, Any]:
    """The contract's cart object, priced by quote() (now, with its promotions, unless `priced` is given)."""
    priced = priced or quote(cart)
    lines, applied, t = priced.lines, priced.applied, priced.totals
    by_variant = {i.variant_id: i for i in cart.items}
    cur = cart.currency
    return {
        "id": str(cart.id),
        "token": cart.token if cart.user_id is None else None,
        "currency": cur,
        "items": [
            {
                "id": by_variant[line.variant_id].id,
                "variant_id": line.variant_id,
                "sku": line.sku,
                "name": line.name,
                "options": line.options,
                "quantity": line.quantity,
                "unit_price": money(line.unit_price, cur),
                "line_total": money(line.line_total, cur),
                "list_price": money(line.list_price, cur),
            }
            for line in lines
        ],
        "subtotal": money(t.subtotal, cur),
        "discount": money(t.discount, cur),
        "shipping": money(t.shipping, cur),
        "tax": money(t.tax, cur),
        "total": money(t.total, cur),
        "coupon_code": cart.coupon_code,
        "coupon_error": applied.error,
        "discounts": [
            {
                "promotion_id": d.promotion_id,
                "code": d.code,
                "amount": money(d.amount, cur),
                "reason": d.reason,
                "free_shipping": d.applies_to_shipping > 0,
            }
            for d in applied.lines
        ],
    }
