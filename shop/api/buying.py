"""/api/v1 carts, checkout and orders (API.md: Cart, Checkout and orders)."""

from __future__ import annotations

from flask import g, request

from shop import geo, idempotency, pricing, ratelimit
from shop.api import bp, schemas
from shop.api.auth import bearer_user, json_body, login_required
from shop.api.contract import PAGE, PER_PAGE, header, operation, parse, parse_body, path, query
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


CART = path("cart_id", {"type": "string", "format": "uuid"})
CART_TOKEN = header("X-Cart-Token", "a guest cart's token")
ORDER_TOKEN = header("X-Order-Token", "a guest order's access token")
IDEMPOTENCY_KEY = header(
    "Idempotency-Key",
    "a repeat with the same key and body returns the first answer, with no second effect; missing: 400 "
    "idempotency_key_required; not 8 to 255 characters: 422 (a UUID is ideal)",
    required=True,
    schema={"type": "string", "minLength": 8, "maxLength": 255},
)
NO_CART = "cart_not_found: no such cart, or not yours"
NO_ORDER = "order_not_found: no such order, or not yours"
CART_WRITES_LIMITED = "rate_limited: too many cart changes from this IP (Retry-After)"
PAID = (
    "stripe: `client_secret` for Stripe.js; test: `redirect_url` to the test payment page. An attempt still open "
    "is answered again, not doubled"
)


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
@operation(
    "A new cart (a bearer's cart is bound to the user)",
    tags=["cart"],
    responses={201: schemas.Cart, 429: "rate_limited: too many new carts from this IP (Retry-After)"},
)
def create_cart():
    cart = carts.create(bearer_user())
    return carts.serialize(cart), 201


@bp.get("/v1/carts/<cart_id>")
@operation(
    "A cart, priced now (with shipping and tax for a destination when one is given)",
    tags=["cart"],
    params=[
        CART,
        CART_TOKEN,
        query(
            "shipping_method",
            {"type": "string", "enum": list(pricing.SHIPPING_METHODS)},
            "price this shipping method (no shipping without it)",
        ),
        query(
            "country",
            {"type": "string", "maxLength": 2},
            "ISO 3166-1 alpha-2 code: price the tax of this country (no tax without it)",
        ),
        query(
            "region", {"type": "string", "maxLength": 80}, "the region (e.g. CA) where the country's tax depends on it"
        ),
    ],
    responses={
        200: schemas.Cart,
        404: NO_CART,
        422: "validation_failed: a shipping method, country or region that is not known",
    },
)
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
@operation(
    "Add units of a SKU",
    tags=["cart"],
    params=[CART, CART_TOKEN],
    body=schemas.AddItem,
    responses={
        201: schemas.Cart,
        404: NO_CART,
        409: "out_of_stock beyond availability; cart_full: the cart has CART_MAX_LINES lines; cart_closed",
        422: "validation_failed: an unknown SKU, or a quantity below 1 or above 100",
        429: CART_WRITES_LIMITED,
    },
)
def add_item(cart_id):
    body = parse_body(schemas.AddItem)
    cart = carts.add_item(_cart_to_change(cart_id), body.sku, body.quantity)
    return carts.serialize(cart), 201


@bp.patch("/v1/carts/<cart_id>/items/<int:item_id>")
@operation(
    "Change a line's quantity",
    tags=["cart"],
    params=[CART, CART_TOKEN],
    body=schemas.Quantity,
    responses={
        200: schemas.Cart,
        404: "cart_not_found or item_not_found",
        409: "out_of_stock; cart_closed",
        422: "validation_failed: quantity below 1 or above 100",
        429: CART_WRITES_LIMITED,
    },
)
def update_item(cart_id, item_id):
    cart = carts.set_quantity(_cart_to_change(cart_id), item_id, parse_body(schemas.Quantity).quantity)
    return carts.serialize(cart)


@bp.delete("/v1/carts/<cart_id>/items/<int:item_id>")
@operation(
    "Remove a line",
    tags=["cart"],
    params=[CART, CART_TOKEN],
    responses={
        200: schemas.Cart,
        404: "cart_not_found or item_not_found",
        409: "cart_closed",
        429: CART_WRITES_LIMITED,
    },
)
def delete_item(cart_id, item_id):
    return carts.serialize(carts.remove_item(_cart_to_change(cart_id), item_id))


@bp.post("/v1/carts/<cart_id>/coupon")
@operation(
    "Apply a coupon code (checked against every rule; attempts are rate limited)",
    tags=["cart"],
    params=[CART, CART_TOKEN],
    body=schemas.CouponCode,
    responses={
        200: schemas.Cart,
        404: NO_CART,
        409: "cart_closed",
        422: "`code` names the failed rule: coupon_not_found, coupon_expired, coupon_not_started, coupon_min_subtotal, "
        "coupon_exhausted, coupon_customer_limit, coupon_first_order_only, coupon_not_applicable, "
        "coupon_not_combinable; or validation_failed",
        429: "rate_limited: too many attempts per cart or per IP, or cart changes per IP (Retry-After, RateLimit-*)",
    },
)
def apply_coupon(cart_id):
    code = parse_body(schemas.CouponCode).code
    cart = carts.apply_coupon(_cart_to_change(cart_id), code, request.remote_addr or "unknown", bearer_user())
    return carts.serialize(cart)


@bp.delete("/v1/carts/<cart_id>/coupon")
@operation(
    "Remove the cart's coupon code",
    tags=["cart"],
    params=[CART, CART_TOKEN],
    responses={200: schemas.Cart, 404: NO_CART, 409: "cart_closed", 429: CART_WRITES_LIMITED},
)
def remove_coupon(cart_id):
    return carts.serialize(carts.remove_coupon(_cart_to_change(cart_id)))


@bp.post("/v1/carts/merge")
@operation(
    "Merge a guest cart into the bearer's cart (quantities added, capped by stock)",
    tags=["cart"],
    body=schemas.GuestCart,
    responses={
        200: schemas.Cart,
        404: "cart_not_found: no such guest cart",
        422: "validation_failed: guest_cart_token missing",
    },
)
@login_required
def merge_carts():
    return carts.serialize(carts.merge(parse_body(schemas.GuestCart).guest_cart_token, g.api_user))


@bp.post("/v1/checkout")
@operation(
    "Turn a cart into a pending order with reserved stock and a payment",
    tags=["checkout"],
    params=[IDEMPOTENCY_KEY, CART_TOKEN],
    body=schemas.CheckoutIn,
    description=PAID,
    responses={
        201: schemas.Placed,
        400: "idempotency_key_required: no Idempotency-Key; malformed_request",
        404: NO_CART,
        409: "out_of_stock (details.skus), cart_closed, request_in_progress, or the cart's coupon now failing a rule "
        "(coupon_exhausted, coupon_customer_limit, ...), or hold_limit_reached (details.limit: orders, units or "
        "sku_share): this client's unpaid orders already hold its share of stock; or no_longer_sold (details.skus: "
        "taken off sale since they were added); no order is made",
        422: "validation_failed (details.fields), cart_empty, or idempotency_key_reused",
        429: "rate_limited: too many checkouts from this IP (Retry-After)",
        503: "payment_unavailable: the provider cannot be reached; stock released, cart kept",
    },
)
def place_order():
    raw = json_body()  # 400 for a body that is not a JSON object, then 400 for a missing key, then 422 for fields
    key = request.headers.get("Idempotency-Key")
    if not key:
        raise ApiError(400, "idempotency_key_required", "Send an Idempotency-Key header (a UUID) with checkout.")
    data = parse(schemas.CheckoutIn, raw).model_dump(exclude_unset=True)
    user = bearer_user()
    scope = f"checkout:{user.id if user else request.headers.get('X-Cart-Token', '')[:40]}"
    details = {
        "cart_id": data.get("cart_id"),
        "cart_token": request.headers.get("X-Cart-Token"),
        "user": user,
        "email": data.get("email"),
        "shipping_address": data.get("shipping_address"),
        "billing_address": data.get("billing_address"),
        "shipping_method": data.get("shipping_method"),
    }
    checkout.refuse_if_sold_out(scope, key, data, **details)  # a flash sale's late buyers: 409, stored for the key
    with idempotency.once(scope, key, data) as claim:  # a business refusal (409) is the key's answer too
        if claim.repeat:
            return claim.repeat[1], claim.repeat[0]
        placed = checkout.place_order(**details, claim=claim)
        body = {
            "order": order_json(placed.order, placed.access_token),
            "payment": {k: v for k, v in placed.payment.items() if v is not None},
        }
        claim.answer(201, body)
    return body, 201


@bp.get("/v1/orders")
@operation(
    "The user's orders, newest first",
    tags=["orders"],
    params=[PAGE, PER_PAGE],
    responses={200: schemas.OrderPage, 422: "validation_failed: a query parameter"},
)
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
@operation(
    "An order (its owner, or a guest with X-Order-Token)",
    tags=["orders"],
    params=[ORDER_TOKEN],
    responses={200: schemas.Order, 404: NO_ORDER},
)
def get_order(order_id):
    return order_json(_order(order_id))


@bp.post("/v1/orders/<int:order_id>/pay")
@operation(
    "Pay again: a new payment attempt for a pending order while its stock is held (after a decline)",
    tags=["orders"],
    params=[ORDER_TOKEN],
    description=PAID,
    responses={
        201: schemas.Placed,
        404: NO_ORDER,
        409: "not_payable (the order is no longer pending), hold_expired (its items are no longer held: check out "
        "again) or payment_processing (a bank payment is on its way)",
        503: "payment_unavailable: the payment provider cannot be reached; the order and its hold stay",
    },
)
def pay_order(order_id):
    """Pay again: a new payment attempt for a pending order whose stock is still held (after a decline, say).
    201 {order, payment}; 409 not_payable (no longer pending) or hold_expired; 503 when the provider is down."""
    from shop.payments import services as payments

    order = _order(order_id)
    answer = payments.pay_again(order.id)
    return {"order": order_json(_order(order_id)), "payment": {k: v for k, v in answer.items() if v is not None}}, 201


@bp.post("/v1/orders/<int:order_id>/cancel")
@operation(
    "Cancel before shipping",
    tags=["orders"],
    params=[ORDER_TOKEN],
    responses={200: schemas.Order, 404: NO_ORDER, 409: "invalid_transition: already shipped"},
)
def cancel_order(order_id):
    order = orders.cancel_by_customer(_order(order_id))
    return order_json(orders.for_reader(order.id, user=bearer_user(), token=request.headers.get("X-Order-Token")))
