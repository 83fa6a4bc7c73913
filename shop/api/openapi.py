"""The OpenAPI 3.1 description of /api/v1. Every endpoint the API serves is described here; a test
checks that the app's routes and this document name the same paths."""

from __future__ import annotations

from functools import lru_cache

from shop.accounts.models import ROLES
from shop.catalog.queries import MAX_PER_PAGE, SORTS
from shop.events import TYPES
from shop.orders.states import CUSTOMER_SERVICE, FULFILMENT, OrderStatus
from shop.pricing import SHIPPING_METHODS
from shop.search.services import SORTS as SEARCH_SORTS

STAFF_MOVES = [status for status in OrderStatus if status in FULFILMENT | CUSTOMER_SERVICE]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SCHEMAS = {
    "Money": {
        "type": "object",
        "required": ["amount", "currency"],
        "properties": {
            "amount": {"type": "integer", "description": "minor units (cents)"},
            "currency": {"type": "string", "example": "USD"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "example": "validation_failed"},
                    "message": {"type": "string"},
                    "details": {"type": "object", "description": "for 422: {fields: {name: problem}}"},
                },
            }
        },
    },
    "Category": {
        "type": "object",
        "required": ["id", "slug", "name", "parent_id"],
        "properties": {
            "id": {"type": "integer"},
            "slug": {"type": "string"},
            "name": {"type": "string"},
            "parent_id": {"type": ["integer", "null"]},
        },
    },
    "ProductSummary": {
        "type": "object",
        "required": ["id", "slug", "name", "price_from", "image_url", "in_stock"],
        "properties": {
            "id": {"type": "integer"},
            "slug": {"type": "string"},
            "name": {"type": "string"},
            "brand": {"type": "string"},
            "price_from": {"oneOf": [_ref("Money"), {"type": "null"}]},
            "image_url": {"type": ["string", "null"]},
            "in_stock": {"type": "boolean"},
        },
    },
    "ProductPage": {
        "type": "object",
        "required": ["items", "page", "per_page", "total"],
        "properties": {
            "items": {"type": "array", "items": _ref("ProductSummary")},
            "page": {"type": "integer"},
            "per_page": {"type": "integer"},
            "total": {"type": "integer"},
        },
    },
    "Variant": {
        "type": "object",
        "required": ["id", "sku", "options", "price", "available"],
        "properties": {
            "id": {"type": "integer"},
            "sku": {"type": "string"},
            "options": {"type": "object", "additionalProperties": {"type": "string"}, "example": {"size": "M"}},
            "price": _ref("Money"),
            "compare_at_price": {"oneOf": [_ref("Money"), {"type": "null"}]},
            "available": {"type": "integer", "minimum": 0, "description": "on hand minus live reservations"},
            "weight_grams": {"type": "integer"},
        },
    },
    "Product": {
        "type": "object",
        "required": ["id", "slug", "name", "description", "category", "images", "options", "variants"],
        "properties": {
            "id": {"type": "integer"},
            "slug": {"type": "string"},
            "name": {"type": "string"},
            "brand": {"type": "string"},
            "description": {"type": "string"},
            "category": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "slug": {"type": "string"}, "name": {"type": "string"}},
            },
            "attributes": {"type": "object"},
            "images": {"type": "array", "items": {"type": "string"}},
            "image_alts": {"type": "array", "items": {"type": "string"}},
            "options": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "values": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
            "variants": {"type": "array", "items": _ref("Variant")},
        },
    },
}

SCHEMAS.update(
    {
        "User": {
            "type": "object",
            "required": ["id", "email", "name"],
            "properties": {
                "id": {"type": "integer"},
                "email": {"type": "string", "format": "email"},
                "name": {"type": "string"},
            },
        },
        "Me": {
            "allOf": [
                {"$ref": "#/components/schemas/User"},
                {
                    "type": "object",
                    "properties": {
                        "roles": {"type": "array", "items": {"type": "string", "enum": list(ROLES)}},
                        "email_verified": {"type": "boolean"},
                    },
                },
            ]
        },
        "TokenPair": {
            "type": "object",
            "required": ["access_token", "refresh_token", "token_type", "expires_in"],
            "properties": {
                "access_token": {"type": "string"},
                "refresh_token": {"type": "string"},
                "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer", "description": "seconds (900)"},
            },
        },
        "Address": {
            "type": "object",
            "required": ["name", "line1", "city", "postal_code", "country"],
            "properties": {
                "id": {"type": "integer", "readOnly": True},
                "name": {"type": "string"},
                "line1": {"type": "string"},
                "line2": {"type": ["string", "null"]},
                "city": {"type": "string"},
                "region": {
                    "type": ["string", "null"],
                    "description": "at checkout, for a country whose tax depends on the "
                    'region (the US by default): its ISO 3166-2 code within the country ("CA"; a name or "US-CA" '
                    "is taken too and stored as the code); an unknown one is 422 naming the field",
                },
                "postal_code": {"type": "string"},
                "country": {
                    "type": "string",
                    "minLength": 2,
                    "maxLength": 2,
                    "description": "ISO 3166-1 alpha-2; at checkout an unknown code is 422 validation_failed with "
                    'details.fields naming it ("shipping_address.country")',
                },
                "phone": {"type": ["string", "null"]},
            },
        },
        "NewProduct": {
            "type": "object",
            "required": ["category", "name", "variants"],
            "properties": {
                "category": {"oneOf": [{"type": "integer"}, {"type": "string"}], "description": "id or slug"},
                "name": {"type": "string"},
                "slug": {"type": "string"},
                "brand": {"type": "string"},
                "description": {"type": "string"},
                "status": {"enum": ["draft", "active"], "default": "draft"},
                "attributes": {"type": "object"},
                "options": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "values": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
                "variants": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["sku", "price"],
                        "properties": {
                            "sku": {"type": "string"},
                            "options": {"type": "object", "additionalProperties": {"type": "string"}},
                            "price": {"oneOf": [{"$ref": "#/components/schemas/Money"}, {"type": "integer"}]},
                            "compare_at_price": {
                                "oneOf": [{"$ref": "#/components/schemas/Money"}, {"type": "integer"}]
                            },
                            "on_hand": {"type": "integer", "minimum": 0},
                            "weight_grams": {"type": "integer", "minimum": 0},
                        },
                    },
                },
                "images": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"url": {"type": "string"}, "alt": {"type": "string"}}},
                },
            },
        },
        "Upload": {
            "type": "object",
            "required": ["upload_url", "method", "headers", "public_url"],
            "properties": {
                "upload_url": {"type": "string"},
                "method": {"const": "PUT"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "public_url": {"type": "string"},
                "key": {"type": "string", "description": "pass as an image url/path"},
                "expires_in": {"type": "integer"},
            },
        },
    }
)

SCHEMAS.update(
    {
        "CartItem": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "variant_id": {"type": "integer"},
                "sku": {"type": "string"},
                "name": {"type": "string"},
                "options": {"type": "object"},
                "quantity": {"type": "integer"},
                "unit_price": {
                    "$ref": "#/components/schemas/Money",
                    "description": "the price paid per unit: the sale "
                    "price while an automatic sale covers the item (as on the product page)",
                },
                "line_total": {"$ref": "#/components/schemas/Money"},
                "list_price": {
                    "oneOf": [{"$ref": "#/components/schemas/Money"}, {"type": "null"}],
                    "description": "on sale: the catalogue price per unit before the sale; else null",
                },
            },
        },
        "Cart": {
            "type": "object",
            "required": ["id", "currency", "items", "subtotal", "total"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "token": {"type": ["string", "null"], "description": "guests: send it back as X-Cart-Token"},
                "currency": {"type": "string"},
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/CartItem"}},
                **{
                    k: {"$ref": "#/components/schemas/Money"}
                    for k in ("subtotal", "discount", "shipping", "tax", "total")
                },
                "coupon_code": {"type": ["string", "null"]},
                "coupon_error": {
                    "type": ["string", "null"],
                    "description": "why the cart's code gives nothing now (a coupon_* code), else null",
                },
                "discounts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "promotion_id": {"type": "integer"},
                            "code": {"type": ["string", "null"]},
                            "amount": {"$ref": "#/components/schemas/Money"},
                            "reason": {"type": "string"},
                            "free_shipping": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "OrderEvent": {
            "type": "object",
            "properties": {
                "status": {"type": "string"},
                "from": {"type": ["string", "null"]},
                "at": {"type": "string"},
                "actor": {"type": "string"},
                "note": {"type": "string"},
            },
        },
        "Order": {
            "type": "object",
            "required": ["id", "number", "status", "items", "total", "events"],
            "properties": {
                "id": {"type": "integer"},
                "number": {"type": "string"},
                "status": {"enum": list(OrderStatus)},
                "email": {"type": ["string", "null"]},
                "currency": {"type": "string"},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "sku": {"type": "string"},
                            "name": {"type": "string"},
                            "options": {"type": "object"},
                            "quantity": {"type": "integer"},
                            "unit_price": {"$ref": "#/components/schemas/Money"},
                            "line_total": {"$ref": "#/components/schemas/Money"},
                            "list_price": {
                                "oneOf": [{"$ref": "#/components/schemas/Money"}, {"type": "null"}],
                                "description": "bought on sale: the price per unit before the sale; else null",
                            },
                        },
                    },
                },
                **{
                    k: {"$ref": "#/components/schemas/Money"}
                    for k in ("subtotal", "discount", "shipping", "tax", "total")
                },
                "shipping_method": {"type": "string"},
                "shipping_address": {"type": ["object", "null"]},
                "billing_address": {"type": ["object", "null"]},
                "access_token": {"type": "string", "description": "guests only, in the checkout answer, once"},
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/OrderEvent"}},
                "tracking": {
                    "type": "object",
                    "properties": {
                        "carrier": {"type": "string"},
                        "number": {"type": "string"},
                        "url": {"type": ["string", "null"]},
                    },
                    "description": "once shipped with tracking (carrier, number, link to the carrier's page)",
                },
                "created_at": {"type": "string"},
            },
        },
    }
)

SCHEMAS.update(
    {
        "Dispute": {
            "type": "object",
            "required": ["id", "amount", "reason", "status", "opened_at"],
            "properties": {
                "id": {"type": "integer"},
                "amount": {"$ref": "#/components/schemas/Money"},
                "reason": {
                    "type": "string",
                    "description": "Stripe's reason code, e.g. fraudulent, product_not_received",
                },
                "status": {
                    "type": "string",
                    "description": "Stripe's dispute status, e.g. needs_response, under_review, won, lost",
                },
                "outcome": {
                    "type": ["string", "null"],
                    "enum": ["won", "lost", "warning_closed", None],
                    "description": "once closed",
                },
                "evidence_due_by": {
                    "type": ["string", "null"],
                    "description": "respond in the Stripe dashboard before",
                },
                "opened_at": {"type": "string"},
                "closed_at": {"type": ["string", "null"]},
            },
        },
        "StaffOrder": {
            "description": "An order as the admin API shows it: the Order, plus what the role may see",
            "allOf": [
                {"$ref": "#/components/schemas/Order"},
                {
                    "type": "object",
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "id": {
                                        "type": "integer",
                                        "description": "the line's id (lines[].line_id of a refund by line)",
                                    },
                                    "refunded_quantity": {
                                        "type": "integer",
                                        "description": "payments roles: units already refunded by line",
                                    },
                                },
                            },
                        },
                        "disputed": {
                            "type": "boolean",
                            "description": "payments roles only: the order has an open dispute (a "
                            "chargeback); refunds are refused until it closes",
                        },
                        "payments": {
                            "type": "array",
                            "description": "payments roles only",
                            "items": {"type": "object"},
                        },
                        "disputes": {
                            "type": "array",
                            "description": "payments roles only: open and closed disputes, oldest first",
                            "items": {"$ref": "#/components/schemas/Dispute"},
                        },
                    },
                },
            ],
        },
    }
)

COMMON_ERRORS = {
    "400": _error("malformed_request: a body that is not a JSON object, a NUL byte in the request"),
    "405": _error("method not allowed"),
    "500": _error("unexpected error, logged with its request id"),
}
AUTH_ERRORS = {"401": _error("no, bad, expired or revoked bearer token"), **COMMON_ERRORS}
STAFF_ERRORS = {**AUTH_ERRORS, "403": _error("your role does not allow this (details.permission)")}
BEARER = [{"bearer": []}]


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _obj(*required: str, **props) -> dict:
    return {"type": "object", "required": list(required), "properties": props}


def _page(item: dict) -> dict:
    return _obj(
        "items",
        "page",
        "per_page",
        "total",
        items={"type": "array", "items": item},
        page={"type": "integer"},
        per_page={"type": "integer"},
        total={"type": "integer"},
    )


ACCOUNT_PATHS = {
    "/v1/auth/register": {
        "post": {
            "summary": "Create a shopper account (a verification link is mailed)",
            "tags": ["accounts"],
            "requestBody": _body(
                _obj(
                    "email",
                    "password",
                    email={"type": "string"},
                    password={"type": "string", "minLength": 10},
                    name={"type": "string"},
                )
            ),
            "responses": {
                "201": _ok(_ref("User")),
                "400": _error("body is not a JSON object"),
                "409": _error("email_taken"),
                "422": _error("weak password or bad email"),
                "429": _error("rate_limited: too many sign-ups from this IP (Retry-After)"),
                **COMMON_ERRORS,
            },
        }
    },
    "/v1/auth/token": {
        "post": {
            "summary": "Log in: an access token (15 min) and a refresh token (30 days)",
            "tags": ["accounts"],
            "requestBody": _body(_obj("email", "password", email={"type": "string"}, password={"type": "string"})),
            "responses": {
                "200": _ok(_ref("TokenPair")),
                "401": _error("invalid_credentials"),
                "422": _error("validation_failed: email or password missing or not text"),
                "429": _error("rate_limited after repeated failures (Retry-After header)"),
                **COMMON_ERRORS,
            },
        }
    },
    "/v1/auth/refresh": {
        "post": {
            "summary": "Spend a refresh token for a new pair; a spent token presented again revokes the log-in",
            "tags": ["accounts"],
            "requestBody": _body(_obj("refresh_token", refresh_token={"type": "string"})),
            "responses": {
                "200": _ok(_ref("TokenPair")),
                "401": _error("invalid, spent or revoked"),
                "422": _error("validation_failed: refresh_token missing or not text"),
                **COMMON_ERRORS,
            },
        }
    },
    "/v1/auth/logout": {
        "post": {
            "summary": "End the log-in this refresh token belongs to",
            "tags": ["accounts"],
            "requestBody": _body(_obj("refresh_token", refresh_token={"type": "string"})),
            "responses": {
                "204": {"description": "logged out"},
                "401": _error("invalid token"),
                "422": _error("validation_failed: refresh_token missing or not text"),
                **COMMON_ERRORS,
            },
        }
    },
    "/v1/me": {
        "get": {
            "summary": "The authenticated user",
            "tags": ["accounts"],
            "security": BEARER,
            "responses": {"200": _ok(_ref("Me")), **AUTH_ERRORS},
        }
    },
    "/v1/me/addresses": {
        "get": {
            "summary": "The user's address book",
            "tags": ["accounts"],
            "security": BEARER,
            "responses": {"200": _ok(_page(_ref("Address"))), **AUTH_ERRORS},
        },
        "post": {
            "summary": "Add an address",
            "tags": ["accounts"],
            "security": BEARER,
            "requestBody": _body(_ref("Address")),
            "responses": {"201": _ok(_ref("Address")), "422": _error("field errors"), **AUTH_ERRORS},
        },
    },
}

CART_HEADERS = [
    {
        "name": "X-Cart-Token",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "a guest cart's token",
    }
]
CART_ID = {"name": "cart_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
ITEM_ID = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}
ORDER_ID = {"name": "order_id", "in": "path", "required": True, "schema": {"type": "integer"}}
IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string"},
    "description": "a repeat with the same key and body returns the first answer, with no second effect",
}
ORDER_TOKEN = {
    "name": "X-Order-Token",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "a guest order's access token",
}
CART_ERRORS = {"404": _error("no such cart, or not yours"), **COMMON_ERRORS}
CART_WRITES_LIMITED = _error("rate_limited: too many cart changes from this IP (Retry-After)")

BUYING_PATHS = {
    "/v1/carts": {
        "post": {
            "summary": "A new cart (a bearer's cart is bound to the user)",
            "tags": ["cart"],
            "responses": {
                "201": _ok(_ref("Cart")),
                "429": _error("rate_limited: too many new carts from this IP (Retry-After)"),
                **COMMON_ERRORS,
            },
        }
    },
    "/v1/carts/{cart_id}": {
        "get": {
            "summary": "A cart, priced now (with shipping and tax for a destination when one is given)",
            "tags": ["cart"],
            "parameters": [
                CART_ID,
                *CART_HEADERS,
                _query(
                    "shipping_method",
                    {"type": "string", "enum": list(SHIPPING_METHODS)},
                    "price this shipping method (no shipping without it)",
                ),
                _query(
                    "country",
                    {"type": "string", "maxLength": 2},
                    "ISO 3166-1 alpha-2 code: price the tax of this country (no tax without it)",
                ),
                _query(
                    "region",
                    {"type": "string", "maxLength": 80},
                    "the region (e.g. CA) where the country's tax depends on it",
                ),
            ],
            "responses": {
                "200": _ok(_ref("Cart")),
                "422": _error("validation_failed: a shipping method, country or region that is not known"),
                **CART_ERRORS,
            },
        }
    },
    "/v1/carts/{cart_id}/items": {
        "post": {
            "summary": "Add units of a SKU",
            "tags": ["cart"],
            "parameters": [CART_ID, *CART_HEADERS],
            "requestBody": _body(
                _obj(
                    "sku",
                    "quantity",
                    sku={"type": "string"},
                    quantity={"type": "integer", "minimum": 1, "maximum": 100},
                )
            ),
            "responses": {
                "201": _ok(_ref("Cart")),
                "409": _error("out_of_stock beyond availability; cart_full: the cart has CART_MAX_LINES lines"),
                "422": _error("quantity < 1 or > 100"),
                "429": CART_WRITES_LIMITED,
                **CART_ERRORS,
            },
        }
    },
    "/v1/carts/{cart_id}/items/{item_id}": {
        "patch": {
            "summary": "Change a line's quantity",
            "tags": ["cart"],
            "parameters": [CART_ID, ITEM_ID, *CART_HEADERS],
            "requestBody": _body(_obj("quantity", quantity={"type": "integer", "minimum": 1, "maximum": 100})),
            "responses": {
                "200": _ok(_ref("Cart")),
                "409": _error("out_of_stock"),
                "422": _error("quantity"),
                "429": CART_WRITES_LIMITED,
                **CART_ERRORS,
            },
        },
        "delete": {
            "summary": "Remove a line",
            "tags": ["cart"],
            "parameters": [CART_ID, ITEM_ID, *CART_HEADERS],
            "responses": {"200": _ok(_ref("Cart")), "429": CART_WRITES_LIMITED, **CART_ERRORS},
        },
    },
    "/v1/carts/{cart_id}/coupon": {
        "post": {
            "summary": "Apply a coupon code (checked against every rule; attempts are rate limited)",
            "tags": ["cart"],
            "parameters": [CART_ID, *CART_HEADERS],
            "requestBody": _body(_obj("code", code={"type": "string", "maxLength": 64})),
            "responses": {
                "200": _ok(_ref("Cart")),
                "409": _error("cart_closed"),
                "422": _error(
                    "`code` names the failed rule: coupon_not_found, coupon_expired, "
                    "coupon_not_started, coupon_min_subtotal, coupon_exhausted, "
                    "coupon_customer_limit, coupon_first_order_only, "
                    "coupon_not_applicable, coupon_not_combinable; or validation_failed"
                ),
                "429": _error(
                    "rate_limited: too many attempts per cart or per IP, or cart changes per IP (Retry-After)"
                ),
                **CART_ERRORS,
            },
        },
        "delete": {
            "summary": "Remove the cart's coupon code",
            "tags": ["cart"],
            "parameters": [CART_ID, *CART_HEADERS],
            "responses": {
                "200": _ok(_ref("Cart")),
                "409": _error("cart_closed"),
                "429": CART_WRITES_LIMITED,
                **CART_ERRORS,
            },
        },
    },
    "/v1/carts/merge": {
        "post": {
            "summary": "Merge a guest cart into the bearer's cart (quantities added, capped by stock)",
            "tags": ["cart"],
            "security": BEARER,
            "requestBody": _body(_obj("guest_cart_token", guest_cart_token={"type": "string"})),
            "responses": {
                "200": _ok(_ref("Cart")),
                **AUTH_ERRORS,
                "404": _error("no such guest cart"),
                "422": _error("validation_failed: guest_cart_token missing"),
            },
        }
    },
    "/v1/checkout": {
        "post": {
            "summary": "Turn a cart into a pending order with reserved stock and a payment",
            "tags": ["checkout"],
            "parameters": [IDEMPOTENCY, *CART_HEADERS],
            "requestBody": _body(
                _obj(
                    "cart_id",
                    "email",
                    "shipping_address",
                    cart_id={"type": "string"},
                    email={"type": "string"},
                    shipping_address=_ref("Address"),
                    billing_address=_ref("Address"),
                    shipping_method={"enum": ["standard", "express"], "default": "standard"},
                )
            ),
            "responses": {
                "201": _ok(
                    _obj(
                        "order",
                        "payment",
                        order=_ref("Order"),
                        payment=_obj(
                            "id",
                            "provider",
                            id={"type": "integer"},
                            provider={"enum": ["stripe", "test"]},
                            client_secret={"type": "string"},
                            redirect_url={"type": "string"},
                        ),
                    )
                ),
                "400": _error("no Idempotency-Key, or a malformed body"),
                "404": _error("no such cart"),
                "409": _error(
                    "out_of_stock (details.skus), cart_closed, request_in_progress, or the cart's coupon "
                    "now failing a rule (coupon_exhausted, coupon_customer_limit, ...), or "
                    "hold_limit_reached (details.limit: orders, units or sku_share): this client's unpaid "
                    "orders already hold its share of stock; or no_longer_sold (details.skus: taken off sale "
                    "since they were added); no order is made"
                ),
                "422": _error("field errors, cart_empty, or idempotency_key_reused"),
                "429": _error("rate_limited: too many checkouts from this IP (Retry-After)"),
                "503": _error("payment_unavailable: the provider cannot be reached; stock released, cart kept"),
                **COMMON_ERRORS,
            },
        }
    },
    "/v1/orders": {
        "get": {
            "summary": "The user's orders, newest first",
            "tags": ["orders"],
            "security": BEARER,
            "responses": {"200": _ok(_page(_ref("Order"))), **AUTH_ERRORS},
        }
    },
    "/v1/orders/{order_id}": {
        "get": {
            "summary": "An order (its owner, or a guest with X-Order-Token)",
            "tags": ["orders"],
            "parameters": [ORDER_ID, ORDER_TOKEN],
            "responses": {"200": _ok(_ref("Order")), "404": _error("no such order, or not yours"), **COMMON_ERRORS},
        }
    },
    "/v1/orders/{order_id}/pay": {
        "post": {
            "summary": "Pay again: a new payment attempt for a pending order while its stock is held (after a decline); "
            "an attempt still open is answered again, not doubled",
            "tags": ["orders"],
            "parameters": [ORDER_ID, ORDER_TOKEN],
            "responses": {
                "201": _ok(
                    _obj(
                        "order",
                        "payment",
                        order=_ref("Order"),
                        payment=_obj(
                            "id",
                            "provider",
                            id={"type": "integer"},
                            provider={"enum": ["stripe", "test"]},
                            client_secret={"type": "string"},
                            redirect_url={"type": "string"},
                        ),
                    )
                ),
                "404": _error("no such order, or not yours"),
                "409": _error(
                    "not_payable (the order is no longer pending), hold_expired (its items are no longer "
                    "held: check out again) or payment_processing (a bank payment is on its way)"
                ),
                "503": _error(
                    "payment_unavailable: the payment provider cannot be reached; the order and its hold stay"
                ),
                **COMMON_ERRORS,
            },
        }
    },
    "/v1/orders/{order_id}/cancel": {
        "post": {
            "summary": "Cancel before shipping",
            "tags": ["orders"],
            "parameters": [ORDER_ID, ORDER_TOKEN],
            "responses": {
                "200": _ok(_ref("Order")),
                "404": _error("no such order, or not yours"),
                "409": _error("invalid_transition: already shipped"),
                **COMMON_ERRORS,
            },
        }
    },
}

ADMIN_PATHS = {
    "/v1/admin/orders": {
        "get": {
            "summary": "Orders (orders.view); e-mail, addresses and payments only where the role allows",
            "tags": ["admin"],
            "security": BEARER,
            "parameters": [
                _query("status", {"type": "string"}, "filter"),
                _query("page", {"type": "integer"}, "page"),
                _query("per_page", {"type": "integer", "maximum": 100}, "page size"),
            ],
            "responses": {
                "200": _ok(_page(_ref("StaffOrder"))),
                "422": _error("validation_failed: a query parameter"),
                **STAFF_ERRORS,
            },
        }
    },
    "/v1/admin/orders/{order_id}/transition": {
        "post": {
            "summary": "Move an order: processing/shipped/delivered (orders.fulfil), cancelled/returned (orders.cancel)",
            "tags": ["admin"],
            "security": BEARER,
            "parameters": [ORDER_ID],
            "requestBody": _body(
                _obj(
                    "status",
                    status={"enum": STAFF_MOVES},
                    note={"type": "string", "maxLength": 1000},
                    tracking={
                        **_obj(
                            "carrier",
                            "number",
                            carrier={"type": "string", "maxLength": 60, "example": "UPS"},
                            number={"type": "string", "maxLength": 100, "pattern": "^[A-Za-z0-9][A-Za-z0-9 ./-]*$"},
                            url={
                                "type": "string",
                                "maxLength": 500,
                                "format": "uri",
                                "description": "https:// or http://; when absent, made "
                                "from the number for UPS, USPS, FedEx, DHL",
                            },
                        ),
                        "description": "only with status shipped: the parcel's tracking, shown "
                        "on the order page and in the shipped mail",
                    },
                )
            ),
            "responses": {
                "200": _ok(_ref("StaffOrder")),
                "404": _error("no such order"),
                "409": _error("invalid_transition"),
                "422": _error('unknown status, or bad tracking (details.fields["tracking.<name>"])'),
                **STAFF_ERRORS,
            },
        }
    },
    "/v1/admin/orders/{order_id}/refunds": {
        "post": {
            "summary": "Refund part or all of the payment, by amount or by line (payments)",
            "tags": ["admin"],
            "security": BEARER,
            "parameters": [ORDER_ID, IDEMPOTENCY],
            "requestBody": _body(
                {
                    **_obj(
                        amount={
                            "oneOf": [{"type": "integer", "minimum": 1}, _ref("Money")],
                            "description": "minor units; required without lines. With lines: at most their share",
                        },
                        lines={
                            "type": "array",
                            "minItems": 1,
                            "items": _obj(
                                "line_id",
                                "quantity",
                                line_id={"type": "integer"},
                                quantity={"type": "integer", "minimum": 1},
                            ),
                            "description": "a refund by line: units of the order's lines (items[].id); the amount is then "
                            "computed by the shop: the units' share of what was paid for goods (discount "
                            "and tax prorated, shipping not included)",
                        },
                        reason={"type": "string", "maxLength": 1000},
                    ),
                    "anyOf": [{"required": ["amount"]}, {"required": ["lines"]}],
                }
            ),
            "responses": {
                "201": _ok(
                    _obj(
                        "id",
                        "amount",
                        "status",
                        "lines",
                        id={"type": "integer"},
                        amount=_ref("Money"),
                        status={
                            "enum": ["pending", "processing", "succeeded", "failed"],
                            "description": "processing: accepted by Stripe, not settled yet",
                        },
                        refunded_total=_ref("Money"),
                        lines={
                            "type": "array",
                            "description": "a refund by line: its units; else []",
                            "items": _obj(
                                "line_id",
                                "quantity",
                                "amount",
                                line_id={"type": "integer"},
                                quantity={"type": "integer"},
                                amount=_ref("Money"),
                            ),
                        },
                    )
                ),
                "409": _error(
                    "nothing_to_refund, refund_pending, payment_disputed (an open dispute: "
                    "Stripe refuses refunds until it closes), refund_refused"
                ),
                "422": _error(
                    "validation_failed: details.fields.amount (above what is left), "
                    "lines[i].<field> (shape), lines.<line_id> (not a line of this order, or more "
                    "units than are left unrefunded)"
                ),
                "404": _error("no such order"),
                "503": _error("payment provider unreachable"),
                **STAFF_ERRORS,
            },
        }
    },
    "/v1/admin/reports/sales": {
        "get": {
            "summary": "Sales by day and totals (reports.view)",
            "tags": ["admin"],
            "security": BEARER,
            "parameters": [
                _query("from", {"type": "string", "format": "date"}, "first day (default: 30 days ago)"),
                _query("to", {"type": "string", "format": "date"}, "last day (default: today)"),
            ],
            "responses": {"200": _ok({"type": "object"}), "422": _error("bad dates"), **STAFF_ERRORS},
        }
    },
    "/v1/admin/products": {
        "post": {
            "summary": "Create a product with its options, variants and images (catalog.edit)",
            "tags": ["admin"],
            "security": BEARER,
            "requestBody": _body(_ref("NewProduct")),
            "responses": {
                "201": _ok(_ref("Product")),
                "409": _error("duplicate: the slug or one of the SKUs is taken"),
                "422": _error("field errors"),
                **STAFF_ERRORS,
            },
        }
    },
    "/v1/admin/variants/{variant_id}/stock": {
        "put": {
            "summary": "Record a stock count: the units on hand (stock.edit)",
            "tags": ["admin"],
            "security": BEARER,
            "parameters": [{"name": "variant_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "requestBody": _body(_obj("on_hand", on_hand={"type": "integer", "minimum": 0})),
            "responses": {
                "200": _ok(
                    _obj(
                        "id",
                        "sku",
                        "on_hand",
                        "available",
                        id={"type": "integer"},
                        sku={"type": "string"},
                        on_hand={"type": "integer"},
                        available={"type": "integer"},
                    )
                ),
                "404": _error("no such variant"),
                "422": _error("bad count"),
                **STAFF_ERRORS,
            },
        }
    },
    "/v1/admin/stock/low": {
        "get": {
            "summary": "Variants whose available stock is at or below their low-stock threshold (stock.view)",
            "tags": ["admin"],
            "security": BEARER,
            "responses": {
                "200": _ok(
                    _page(
                        _obj(
                            "variant_id",
                            "sku",
                            "on_hand",
                            variant_id={"type": "integer"},
                            sku={"type": "string"},
                            product_id={"type": "integer"},
                            product_name={"type": "string"},
                            options={"type": "object"},
                            on_hand={"type": "integer"},
                            threshold={"type": "integer"},
                            available={"type": "integer"},
                        )
                    )
                ),
                **STAFF_ERRORS,
            },
        }
    },
    "/v1/admin/uploads": {
        "post": {
            "summary": "A pre-signed URL to upload one product image straight to storage (catalog.edit)",
            "tags": ["admin"],
            "security": BEARER,
            "requestBody": _body(
                _obj(
                    "filename",
                    "content_type",
                    filename={"type": "string"},
                    content_type={"enum": ["image/jpeg", "image/png", "image/webp", "image/gif"]},
                    size={"type": "integer", "description": "bytes; S3 then enforces it"},
                )
            ),
            "responses": {"201": _ok(_ref("Upload")), "422": _error("bad type or size"), **STAFF_ERRORS},
        }
    },
    "/v1/admin/customers/{customer_id}": {
        "get": {
            "summary": "A customer's personal data (customers.pii)",
            "tags": ["admin"],
            "security": BEARER,
            "parameters": [{"name": "customer_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "responses": {
                "200": _ok(
                    _obj(
                        "id",
                        "email",
                        "name",
                        "addresses",
                        id={"type": "integer"},
                        email={"type": "string"},
                        name={"type": "string"},
                        email_verified={"type": "boolean"},
                        created_at={"type": "string"},
                        addresses={"type": "array", "items": _ref("Address")},
                    )
                ),
                "404": _error("no such customer"),
                **STAFF_ERRORS,
            },
        }
    },
}


SCHEMAS.update(
    {
        "Targets": {
            "type": "object",
            "description": "ids the rule applies to (or excludes); empty: everything",
            "additionalProperties": False,
            "properties": {
                k: {"type": "array", "items": {"type": "integer"}} for k in ("categories", "products", "variants")
            },
        },
        "NewCoupon": {
            "type": "object",
            "required": ["code", "kind"],
            "properties": {
                "code": {
                    "type": "string",
                    "minLength": 3,
                    "maxLength": 64,
                    "pattern": "^[A-Za-z0-9_-]+$",
                    "description": "unique, ignoring case",
                },
                "kind": {"enum": ["percent", "fixed", "free_shipping"]},
                "value": {
                    "type": "integer",
                    "description": "percent: 1-100; fixed: an amount in minor units (> 0); "
                    "free_shipping: 0 or left out",
                },
                "name": {"type": "string", "maxLength": 120, "description": "default: the code"},
                "description": {"type": "string"},
                "starts_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "ISO 8601; UTC without an offset",
                },
                "ends_at": {"type": "string", "format": "date-time", "description": "after starts_at"},
                "min_subtotal": {"oneOf": [{"type": "integer", "minimum": 0}, {"$ref": "#/components/schemas/Money"}]},
                "usage_limit": {"type": "integer", "minimum": 1, "description": "redemptions in all"},
                "per_customer_limit": {"type": "integer", "minimum": 1, "description": "per account and per e-mail"},
                "applies_to": {"$ref": "#/components/schemas/Targets"},
                "excludes": {"$ref": "#/components/schemas/Targets"},
                "first_order_only": {"type": "boolean", "default": False},
                "stackable": {"type": "boolean", "default": False},
                "priority": {"type": "integer", "default": 0, "description": "higher first"},
                "active": {"type": "boolean", "default": True},
            },
        },
        "Promotion": {
            "type": "object",
            "required": ["id", "name", "kind", "value", "codes"],
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "description": {"type": "string"},
                "kind": {"enum": ["percent", "fixed", "free_shipping"]},
                "value": {"type": "integer"},
                "currency": {"type": "string"},
                "automatic": {"type": "boolean", "description": "a sale without a code"},
                "active": {"type": "boolean"},
                "starts_at": {"type": ["string", "null"]},
                "ends_at": {"type": ["string", "null"]},
                "min_subtotal": {"oneOf": [{"$ref": "#/components/schemas/Money"}, {"type": "null"}]},
                "usage_limit": {"type": ["integer", "null"]},
                "per_customer_limit": {"type": ["integer", "null"]},
                "first_order_only": {"type": "boolean"},
                "stackable": {"type": "boolean"},
                "priority": {"type": "integer"},
                "applies_to": {"$ref": "#/components/schemas/Targets"},
                "excludes": {"$ref": "#/components/schemas/Targets"},
                "codes": {"type": "array", "items": {"type": "string"}, "description": "shared codes"},
                "single_use_codes": {"type": "integer", "description": "how many single-use codes were generated"},
                "created_at": {"type": "string"},
            },
        },
        "PromotionUsage": {
            "type": "object",
            "properties": {
                "promotion_id": {"type": "integer"},
                "name": {"type": "string"},
                "kind": {"type": "string"},
                "value": {"type": "integer"},
                "automatic": {"type": "boolean"},
                "redemptions": {"type": "integer", "description": "active redemptions"},
                "released": {"type": "integer", "description": "given back: order cancelled or expired"},
                "orders": {"type": "integer", "description": "orders using it that are not cancelled"},
                "discount": {"$ref": "#/components/schemas/Money"},
                "revenue": {"$ref": "#/components/schemas/Money", "description": "sum of those orders' totals"},
                "by_currency": {"type": "array", "items": {"type": "object"}},
            },
        },
    }
)

PROMOTION_PATHS = {
    "/v1/admin/coupons": {
        "post": {
            "summary": "Create a coupon: a promotion with one shared code (promotions.edit)",
            "tags": ["admin"],
            "security": BEARER,
            "requestBody": _body(_ref("NewCoupon")),
            "responses": {
                "201": _ok(_ref("Promotion")),
                "400": _error("body is not a JSON object"),
                "409": _error("code_taken: the code exists (ignoring case)"),
                "422": _error("field errors: kind, value range, dates, applies_to shape"),
                **STAFF_ERRORS,
            },
        },
        "get": {
            "summary": "Promotions and their shared codes, newest first (promotions.view)",
            "tags": ["admin"],
            "security": BEARER,
            "parameters": [
                _query("code", {"type": "string"}, "only the promotion with this code (any case)"),
                _query("automatic", {"type": "boolean"}, "automatic sales or coupons only"),
                _query("page", {"type": "integer"}, "page"),
                _query("per_page", {"type": "integer", "maximum": 100}, "page size"),
            ],
            "responses": {"200": _ok(_page(_ref("Promotion"))), "422": _error("bad query parameter"), **STAFF_ERRORS},
        },
    },
    "/v1/admin/reports/promotions": {
        "get": {
            "summary": "Usage per promotion: active redemptions, discount given, revenue of the orders using it "
            "(orders not cancelled) (promotions.view or reports.view)",
            "tags": ["admin"],
            "security": BEARER,
            "parameters": [
                _query("from", {"type": "string", "format": "date"}, "redemptions made on or after this day"),
                _query("to", {"type": "string", "format": "date"}, "redemptions made on or before this day"),
                _query("promotion_id", {"type": "integer"}, "one promotion"),
            ],
            "responses": {
                "200": _ok(
                    _obj(
                        "items",
                        "totals",
                        items={"type": "array", "items": _ref("PromotionUsage")},
                        totals={
                            "type": "array",
                            "items": _obj(
                                currency={"type": "string"},
                                redemptions={"type": "integer"},
                                discount=_ref("Money"),
                                revenue=_ref("Money"),
                            ),
                        },
                        **{"from": {"type": ["string", "null"]}, "to": {"type": ["string", "null"]}},
                    )
                ),
                "404": _error("no such promotion"),
                "422": _error("bad dates"),
                **STAFF_ERRORS,
            },
        }
    },
}


_TS = {"type": ["string", "null"], "format": "date-time"}
SCHEMAS.update(
    {
        "Event": {
            "type": "object",
            "required": ["id", "type", "version", "occurred_at", "aggregate", "data"],
            "description": "The envelope of every event, on the stream and in partner webhooks alike",
            "properties": {
                "id": {"type": "string", "description": "unique, stable across redeliveries (the webhook-id)"},
                "type": {
                    "type": "string",
                    "enum": [*TYPES, "webhook.test"],
                    "example": "order.placed",
                    "description": "webhook.test: the test event an admin sends (data.message)",
                },
                "version": {"type": "integer", "description": "of this type's `data`"},
                "occurred_at": {"type": "string", "format": "date-time"},
                "aggregate": _obj(
                    "type", "id", type={"type": "string", "example": "order"}, id={"type": "string", "example": "42"}
                ),
                "data": {"type": "object"},
            },
        },
        "NewWebhookEndpoint": _obj(
            "url",
            "events",
            url={
                "type": "string",
                "format": "uri",
                "maxLength": 2000,
                "description": "http(s); must resolve to public addresses only",
            },
            events={"type": "array", "minItems": 1, "items": {"enum": list(TYPES)}},
            description={"type": "string", "maxLength": 200},
        ),
        "WebhookEndpointChange": _obj(
            url={"type": "string", "format": "uri", "maxLength": 2000},
            events={"type": "array", "minItems": 1, "items": {"enum": list(TYPES)}},
            description={"type": "string", "maxLength": 200},
            enabled={
                "type": "boolean",
                "description": "true again forgets why it was disabled; its waiting deliveries go out again",
            },
        ),
        "WebhookEndpoint": _obj(
            "id",
            "url",
            "events",
            "description",
            "enabled",
            "disabled_reason",
            "disabled_at",
            "failing_since",
            "created_at",
            id={"type": "integer"},
            url={"type": "string"},
            events={"type": "array", "items": {"type": "string"}},
            description={"type": "string"},
            enabled={"type": "boolean"},
            disabled_reason={"type": ["string", "null"]},
            disabled_at=_TS,
            failing_since={
                **_TS,
                "description": "first failure since the last success; 3 days of it disable the endpoint",
            },
            created_at={"type": "string", "format": "date-time"},
        ),
        "WebhookAttempt": _obj(
            "id",
            "started_at",
            "duration_ms",
            "url",
            "status_code",
            "error",
            id={"type": "integer"},
            started_at={"type": "string", "format": "date-time"},
            duration_ms={"type": "integer"},
            url={"type": "string", "description": "last URL reached"},
            request_headers={"type": "object"},
            request_excerpt={"type": "string", "description": "first 2 KB of the body sent"},
            status_code={"type": ["integer", "null"]},
            response_excerpt={"type": "string", "description": "first 2 KB of the answer"},
            error={"type": ["string", "null"], "description": "timeout, refused, URL refused..."},
        ),
        "WebhookDelivery": _obj(
            "id",
            "endpoint_id",
            "event_id",
            "event_type",
            "state",
            "attempts",
            "log",
            id={"type": "integer"},
            endpoint_id={"type": "integer"},
            event_id={"type": "string"},
            event_type={"type": "string"},
            state={"enum": ["pending", "succeeded", "failed"]},
            attempts={"type": "integer"},
            next_attempt_at=_TS,
            last_status={"type": ["integer", "null"]},
            last_error={"type": ["string", "null"]},
            created_at={"type": "string", "format": "date-time"},
            finished_at=_TS,
            log={"type": "array", "items": _ref("WebhookAttempt")},
        ),
    }
)
SCHEMAS["WebhookEndpointCreated"] = {
    "allOf": [
        _ref("WebhookEndpoint"),
        _obj(
            "secret",
            secret={
                "type": "string",
                "pattern": "^whsec_[A-Za-z0-9+/=]+$",
                "description": "the signing secret: shown in this answer only",
            },
        ),
    ]
}
ENDPOINT_ID = {"name": "endpoint_id", "in": "path", "required": True, "schema": {"type": "integer"}}
_ADMIN_ONLY = " (admins only)"
WEBHOOK_PATHS = {
    "/v1/admin/webhooks": {
        "post": {
            "summary": "Register a partner webhook endpoint; the answer holds its secret, once" + _ADMIN_ONLY,
            "tags": ["webhooks"],
            "security": BEARER,
            "requestBody": _body(_ref("NewWebhookEndpoint")),
            "responses": {
                "201": _ok(_ref("WebhookEndpointCreated"), "Registered"),
                "400": _error("body is not a JSON object"),
                "422": _error(
                    "validation_failed (details.fields), or url_not_allowed: the URL is "
                    "not http(s), carries credentials, or resolves to a loopback, "
                    "private, link-local or metadata address"
                ),
                **STAFF_ERRORS,
            },
        },
        "get": {
            "summary": "Partner webhook endpoints, newest first" + _ADMIN_ONLY,
            "tags": ["webhooks"],
            "security": BEARER,
            "parameters": [
                _query("page", {"type": "integer"}, "page"),
                _query("per_page", {"type": "integer", "maximum": 100}, "page size"),
            ],
            "responses": {
                "200": _ok(_page(_ref("WebhookEndpoint"))),
                "422": _error("bad query parameter"),
                **STAFF_ERRORS,
            },
        },
    },
    "/v1/admin/webhooks/{endpoint_id}": {
        "get": {
            "summary": "One endpoint (never its secret)" + _ADMIN_ONLY,
            "tags": ["webhooks"],
            "security": BEARER,
            "parameters": [ENDPOINT_ID],
            "responses": {"200": _ok(_ref("WebhookEndpoint")), "404": _error("no such endpoint"), **STAFF_ERRORS},
        },
        "patch": {
            "summary": "Change url, events, description or enabled" + _ADMIN_ONLY,
            "tags": ["webhooks"],
            "security": BEARER,
            "parameters": [ENDPOINT_ID],
            "requestBody": _body(_ref("WebhookEndpointChange")),
            "responses": {
                "200": _ok(_ref("WebhookEndpoint")),
                "404": _error("no such endpoint"),
                "422": _error("validation_failed or url_not_allowed"),
                **STAFF_ERRORS,
            },
        },
        "delete": {
            "summary": "Delete an endpoint with its delivery log" + _ADMIN_ONLY,
            "tags": ["webhooks"],
            "security": BEARER,
            "parameters": [ENDPOINT_ID],
            "responses": {"204": {"description": "Deleted"}, "404": _error("no such endpoint"), **STAFF_ERRORS},
        },
    },
    "/v1/admin/webhooks/{endpoint_id}/deliveries": {
        "get": {
            "summary": "The endpoint's deliveries, newest first, each with its attempts" + _ADMIN_ONLY,
            "tags": ["webhooks"],
            "security": BEARER,
            "parameters": [
                ENDPOINT_ID,
                _query("state", {"enum": ["pending", "succeeded", "failed"]}, "filter"),
                _query("page", {"type": "integer"}, "page"),
                _query("per_page", {"type": "integer", "maximum": 100}, "page size"),
            ],
            "responses": {
                "200": _ok(_page(_ref("WebhookDelivery"))),
                "404": _error("no such endpoint"),
                "422": _error("bad query parameter"),
                **STAFF_ERRORS,
            },
        }
    },
    "/v1/admin/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry": {
        "post": {
            "summary": "Attempt a delivery again now, whatever its state" + _ADMIN_ONLY,
            "tags": ["webhooks"],
            "security": BEARER,
            "parameters": [
                ENDPOINT_ID,
                {"name": "delivery_id", "in": "path", "required": True, "schema": {"type": "integer"}},
            ],
            "responses": {
                "202": _ok(_ref("WebhookDelivery"), "Queued"),
                "404": _error("no such endpoint or delivery"),
                "409": _error(
                    "endpoint_disabled: enable it first; delivery_in_progress: an attempt is being made right now"
                ),
                **STAFF_ERRORS,
            },
        }
    },
    "/v1/admin/webhooks/{endpoint_id}/test": {
        "post": {
            "summary": "Send a `webhook.test` event to the endpoint (whatever types it subscribes to)" + _ADMIN_ONLY,
            "tags": ["webhooks"],
            "security": BEARER,
            "parameters": [ENDPOINT_ID],
            "responses": {
                "202": _ok(_ref("WebhookDelivery"), "Queued"),
                "404": _error("no such endpoint"),
                "409": _error("endpoint_disabled: enable it first"),
                **STAFF_ERRORS,
            },
        }
    },
}
# What the shop sends to partners (OpenAPI 3.1 `webhooks`): see docs/webhooks.md.
_SIGNED = [
    {"name": n, "in": "header", "required": True, "schema": {"type": "string"}, "description": d}
    for n, d in (
        ("webhook-id", "the event id: the same on every attempt; deduplicate by it"),
        ("webhook-timestamp", "Unix seconds when this attempt was sent"),
        (
            "webhook-signature",
            'v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with '
            "the secret's base64-decoded bytes (after whsec_)>",
        ),
    )
]
WEBHOOKS = {
    "event": {
        "post": {
            "summary": "An event the endpoint subscribes to (Standard Webhooks)",
            "tags": ["webhooks"],
            "description": "Any 2xx within 10 s is success. Anything else is retried with backoff and jitter: after "
            "5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, 10 h (9 attempts over about 37 hours). Redirects "
            "are followed up to 3 times. An endpoint failing for 3 days is disabled.",
            "parameters": _SIGNED,
            "requestBody": _body(_ref("Event")),
            "responses": {"2XX": {"description": "Received"}},
        }
    }
}

SEARCH_PATHS = {
    "/v1/search": {
        "get": {
            "summary": "Search active products (typo-tolerant), with facet counts",
            "tags": ["catalog"],
            "description": "Answered by Typesense; when it cannot be reached, by PostgreSQL full-text search "
            "(`engine` says which). Facet counts are over all the products matching the query and "
            "filters. `highlight.name` is the name HTML-escaped with `<mark>` around the matches.",
            "parameters": [
                _query("q", {"type": "string", "maxLength": 200}, "what to look for; typos are forgiven"),
                _query("category", {"type": "string"}, "category slug; includes its sub-categories"),
                _query("min_price", {"type": "integer", "minimum": 0}, "minor units"),
                _query("max_price", {"type": "integer", "minimum": 0}, "minor units"),
                _query("in_stock", {"type": "boolean"}, "only products with a variant available"),
                _query(
                    "sort",
                    {"enum": list(SEARCH_SORTS), "default": "relevance"},
                    "order of the results (price: the lowest variant price); 422 for another value",
                ),
                {
                    **_query(
                        "option",
                        {"type": "array", "items": {"type": "string"}},
                        "option value as name:value, "
                        "e.g. size:M (repeatable; any of the values of one option, all of the options)",
                    ),
                    "style": "form",
                    "explode": True,
                },
                _query("page", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1}, "page number"),
                _query("per_page", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "page size"),
            ],
            "responses": {
                "200": _ok(
                    _obj(
                        "items",
                        "page",
                        "per_page",
                        "total",
                        "facets",
                        "engine",
                        items={
                            "type": "array",
                            "items": {
                                "allOf": [
                                    _ref("ProductSummary"),
                                    _obj(highlight=_obj(name={"type": ["string", "null"]})),
                                ]
                            },
                        },
                        page={"type": "integer"},
                        per_page={"type": "integer"},
                        total={"type": "integer"},
                        query={"type": "string"},
                        engine={"type": "string", "enum": ["typesense", "database"]},
                        facets=_obj(
                            "category",
                            "price",
                            "options",
                            category={
                                "type": "array",
                                "items": _obj(
                                    "slug",
                                    "name",
                                    "count",
                                    slug={"type": "string"},
                                    name={"type": "string"},
                                    parent_id={"type": ["integer", "null"]},
                                    count={"type": "integer"},
                                ),
                            },
                            price={
                                "type": "array",
                                "items": _obj(
                                    "min",
                                    "max",
                                    "count",
                                    key={"type": "string"},
                                    min={"type": "integer"},
                                    max={"type": ["integer", "null"]},
                                    label={"type": "string"},
                                    count={"type": "integer"},
                                ),
                            },
                            options={
                                "type": "object",
                                "additionalProperties": {
                                    "type": "array",
                                    "items": _obj(
                                        "value", "count", value={"type": "string"}, count={"type": "integer"}
                                    ),
                                },
                            },
                        ),
                    )
                ),
                "422": _error("a query parameter is not valid (details.fields names it)"),
                **COMMON_ERRORS,
            },
        }
    },
}


@lru_cache(maxsize=1)
def spec() -> dict:
    """The document, built once per process."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "The shop API",
            "version": "1.0.0",
            "description": "Public contract of the shop. Money is integer minor units. Every error is "
            "`{error: {code, message, details}}`; every response carries X-Request-ID.",
        },
        "servers": [{"url": "/api"}],
        "paths": {
            "/v1/categories": {
                "get": {
                    "summary": "All categories (a tree through parent_id)",
                    "tags": ["catalog"],
                    "responses": {"200": _ok({"type": "array", "items": _ref("Category")}), **COMMON_ERRORS},
                }
            },
            "/v1/products": {
                "get": {
                    "summary": "A page of active products",
                    "tags": ["catalog"],
                    "parameters": [
                        _query("category", {"type": "string"}, "category slug; includes its sub-categories"),
                        _query("min_price", {"type": "integer", "minimum": 0}, "minor units"),
                        _query("max_price", {"type": "integer", "minimum": 0}, "minor units"),
                        _query("in_stock", {"type": "boolean"}, "only products with a variant available"),
                        _query("sort", {"type": "string", "enum": list(SORTS), "default": "newest"}, "order"),
                        _query("page", {"type": "integer", "minimum": 1, "default": 1}, "page number"),
                        _query(
                            "per_page",
                            {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": 20},
                            "page size",
                        ),
                    ],
                    "responses": {
                        "200": _ok(_ref("ProductPage")),
                        "422": _error("a query parameter is not valid (details.fields names it)"),
                        **COMMON_ERRORS,
                    },
                }
            },
            "/v1/products/{slug}": {
                "get": {
                    "summary": "One active product with its options and variants",
                    "tags": ["catalog"],
                    "parameters": [{"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _ok(_ref("Product")),
                        "404": _error("no such active product"),
                        **COMMON_ERRORS,
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "tags": ["meta"],
                    "responses": {"200": {"description": "OpenAPI 3.1 JSON"}},
                }
            },
            **ACCOUNT_PATHS,
            **BUYING_PATHS,
            **ADMIN_PATHS,
            **PROMOTION_PATHS,
            **WEBHOOK_PATHS,
            **SEARCH_PATHS,
        },
        "webhooks": WEBHOOKS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
