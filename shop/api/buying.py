"""/api/v1 carts, checkout and orders (API.md: Cart, Checkout and orders)."""

from __future__ import annotations

from flask import g, request

from shop import geo, idempotency, pricing, ratelimit
from shop.api import bp
from shop.api.auth import bearer_user, json_body, login_required
from shop.api.params import Params
from shop.cart import services as carts
from shop.checkout import services as checkout
from shop.errors import ApiError, ValidationError
from shop.money import money
from shop.orders import services as orders
from shop.orders.models import Order


def order_json(order: Order, access_token: str | None = None) -> dict:
    cur = order.currency
    body = {
        "id": order.id,
        "number": order.number,
        "status": order.status,
        "email": order.email,
        "currency": cur,
        "items": [
            {
                "sku": line.sku,
                "name": line.name,
                "options": line.options,
                "quantity": line.quantity,
                "unit_price": money(line.unit_price, cur),
                "line_total": money(line.line_total, cur),
                "list_price": money(line.list_price, cur),
            }
            for line in order.lines
        ],
        "subtotal": money(order.subtotal, cur),
        "discount": money(order.discount, cur),
        "shipping": money(order.shipping, cur),
        "tax": money(order.tax, cur),
        "total": money(order.total, cur),
        "shipping_method": order.shipping_method,
        "shipping_address": order.shipping_address,
        "billing_address": order.billing_address,
        "events": [
            {"status": e.to_status, "from": e.from_status, "at": e.at.isoformat(), "actor": e.actor, "note": e.note}
            for e in order.events
        ],
        "created_at": order.created_at.isoformat(),
    }
    if order.tracking_number:  # set when it was shipped with tracking
        body["tracking"] = {
            "carrier": order.tracking_carrier,
            "number": order.tracking_number,
            "url": order.tracking_url,
        }
    if access_token:
        body["access_token"] = access_token  # shown once, to the guest who placed the order
    return body


def _cart(cart_id, for_update=False):
    return carts.for_reader(
        cart_id, user=bearer_user(), token=request.headers.get("X-Cart-Token"), for_update=for_update
    )


def _cart_to_change(cart_id):
    """The cart, locked, for a write: cart writes count against RATE_CART_WRITES_PER_IP (429 beyond)."""
    ratelimit.enforce(
        "RATE_CART_WRITES_PER_IP",
        message="Too many changes to carts from your network just now; slow down and try again in a moment.",
    )
    return _cart(cart_id, for_update=True)


@bp.post("/v1/carts")
def create_cart():
    cart = carts.create(bearer_user())
    return carts.serialize(cart), 201


@bp.get("/v1/carts/<cart_id>")
def get_cart(cart_id):
    """The cart priced now; `?shipping_method=&country=&region=` prices its shipping and tax for that destination
    (the same quote the checkout will make)."""
    p = Params(request.args)
    method = p.choice("shipping_method", tuple(pricing.SHIPPING_METHODS), None)
    country, region = p.str("country", max_len=2), p.str("region", max_len=80)
    p.raise_if_invalid()
    destination, problems = geo.address_problems({"country": country, "region": region}, pricing.tax_table().rates)
    if region and not country:
        problems["region"] = "needs a country"
    if problems:
        raise ValidationError(problems, "Some query parameters are not valid.")
    cart = _cart(cart_id)
    user = bearer_user()
    return carts.serialize(
        cart,
        carts.quote(
            cart,
            shipping_method=method,
            country=destination["country"],
            region=destination["region"],
            user=user,
            email=user.email if user else None,
        ),
    )


@bp.post("/v1/carts/<cart_id>/items")
def add_item(cart_id):
    data = json_body()
    cart = carts.add_item(_cart_to_change(cart_id), data.get("sku"), data.get("quantity", 1))
    return carts.serialize(cart), 201


@bp.patch("/v1/carts/<cart_id>/items/<int:item_id>")
def update_item(cart_id, item_id):
    cart = carts.set_quantity(_cart_to_change(cart_id), item_id, json_body().get("quantity"))
    return carts.serialize(cart)


@bp.delete("/v1/carts/<cart_id>/items/<int:item_id>")
def delete_item(cart_id, item_id):
    return carts.serialize(carts.remove_item(_cart_to_change(cart_id), item_id))


@bp.post("/v1/carts/<cart_id>/coupon")
def apply_coupon(cart_id):
    data = json_body()
    cart = carts.apply_coupon(
        _cart_to_change(cart_id), data.get("code"), request.remote_addr or "unknown", bearer_user()
    )
    return carts.serialize(cart)


@bp.delete("/v1/carts/<cart_id>/coupon")
def remove_coupon(cart_id):
    return carts.serialize(carts.remove_coupon(_cart_to_change(cart_id)))


@bp.post("/v1/carts/merge")
@login_required
def merge_carts():
    return carts.serialize(carts.merge(json_body().get("guest_cart_token"), g.api_user))


@bp.post("/v1/checkout")
def place_order():
    data = json_body()
    user = bearer_user()
    key = request.headers.get("Idempotency-Key")
    if not key:
        raise ApiError(400, "idempotency_key_required", "Send an Idempotency-Key header (a UUID) with checkout.")
    scope = f"checkout:{user.id if user else request.headers.get('X-Cart-Token', '')[:40]}"
    with idempotency.once(scope, key, data) as claim:  # a business refusal (409) is the key's answer too
        if claim.repeat:
            return claim.repeat[1], claim.repeat[0]
        placed = checkout.place_order(
            cart_id=data.get("cart_id"),
            cart_token=request.headers.get("X-Cart-Token"),
            user=user,
            email=data.get("email"),
            shipping_address=data.get("shipping_address"),
            billing_address=data.get("billing_address"),
            shipping_method=data.get("shipping_method"),
            claim=claim.ids,
        )
        body = {
            "order": order_json(placed.order, placed.access_token),
            "payment": {k: v for k, v in placed.payment.items() if v is not None},
        }
        claim.answer(201, body)
    return body, 201


@bp.get("/v1/orders")
@login_required
def my_orders():
    p = Params(request.args)
    page, per_page = p.int("page", 1, lo=1, hi=100_000), p.int("per_page", 20, lo=1, hi=100)
    p.raise_if_invalid()
    items, total = orders.of_user(g.api_user.id, page, per_page)
    return {"items": [order_json(o) for o in items], "page": page, "per_page": per_page, "total": total}


def _order(order_id):
    return orders.for_reader(order_id, user=bearer_user(), token=request.headers.get("X-Order-Token"))


@bp.get("/v1/orders/<int:order_id>")
def get_order(order_id):
    return order_json(_order(order_id))


@bp.post("/v1/orders/<int:order_id>/pay")
def pay_order(order_id):
    """Pay again: a new payment attempt for a pending order whose stock is still held (after a decline, say).
    201 {order, payment}; 409 not_payable (no longer pending) or hold_expired; 503 when the provider is down."""
    from shop.payments import services as payments

    order = _order(order_id)
    answer = payments.pay_again(order.id)
    return {"order": order_json(_order(order_id)), "payment": {k: v for k, v in answer.items() if v is not None}}, 201


@bp.post("/v1/orders/<int:order_id>/cancel")
def cancel_order(order_id):
    order = orders.cancel_by_customer(_order(order_id))
    return order_json(orders.for_reader(order.id, user=bearer_user(), token=request.headers.get("X-Order-Token")))
