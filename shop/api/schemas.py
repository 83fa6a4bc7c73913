"""The bodies of /api/v1 as pydantic models: one per request body (`In`: views read bodies through them) and one
per response body (`Out`). The OpenAPI document's schemas are these models' JSON Schemas (shop.api.openapi), and
under test every JSON answer of the API is checked against the model its operation declares for that status
(shop.api.openapi.check_response), so the document, the parsing and the answers cannot drift apart.

Request models name shapes and bounds (types, lengths, enums); the services keep the rules that need the database
or the shop's settings (a SKU that exists, a country the tax table knows, a coupon's dates in order).
Money comes in as `Amount`: minor units, or the contract's Money object in the shop's currency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from flask import current_app, has_app_context
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    RootModel,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
)

from shop.accounts.models import Role
from shop.cart.services import MAX_QUANTITY
from shop.events import TYPES
from shop.inventory.services import MAX_ON_HAND
from shop.orders.states import OrderStatus
from shop.partners.models import DeliveryState
from shop.payments.models import RefundStatus
from shop.pricing import SHIPPING_METHODS
from shop.promotions.backoffice import MAX_AMOUNT as MAX_PROMOTION_AMOUNT

INT_MAX = 2**31 - 1  # PostgreSQL's integer


class In(BaseModel):
    """A request body: unknown keys are ignored, types are not coerced ("2" is not a quantity)."""

    model_config = ConfigDict(extra="ignore")


class Out(BaseModel):
    """A response body: exactly these keys (a key the model does not name fails the contract test)."""

    model_config = ConfigDict(extra="forbid")


Int = StrictInt
Text = StrictStr
Flag = StrictBool
Json = dict[str, Any]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


def checked_by_service(lo: int, hi: int) -> dict[str, Any]:
    """Bounds the document shows but the service checks (its sentence is the same for the back-office's form)."""
    return {"minimum": lo, "maximum": hi}


# ---- Money ----


class Money(Out):
    """An amount of money: integer minor units (cents) and an ISO 4217 currency."""

    amount: int = Field(description="minor units (cents)")
    currency: str = Field(examples=["USD"])


def _shop_currency() -> str:
    return str(current_app.config["SHOP_CURRENCY"]) if has_app_context() else "USD"


def _money_parser(lo: int, hi: int) -> Callable[[Any, ValidationInfo], int]:
    """The Money input type's parser: a bare amount in minor units, or {amount, currency} in the shop's currency (a
    Money object without a currency means the shop's), or in the currency the parse's context names (a refund: the
    order's). The amount in minor units, from `lo` to `hi`."""
    bounds = f"must be an amount in minor units from {lo} to {hi}"

    def parse_money(value: Any, info: ValidationInfo) -> int:
        expected = (info.context or {}).get("currency") or _shop_currency()
        if isinstance(value, dict):
            if value.get("currency", expected) != expected:
                raise ValueError(f"must be in {expected}" + (", the shop's currency" if not info.context else ""))
            value = value.get("amount")
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ValueError(bounds)
        return value

    return parse_money


def _money_schema(lo: int, hi: int, description: str = "") -> dict[str, Any]:
    return {
        "oneOf": [
            {"type": "integer", "minimum": lo, "maximum": hi},
            {
                "type": "object",
                "required": ["amount"],
                "properties": {
                    "amount": {"type": "integer", "minimum": lo, "maximum": hi},
                    "currency": {"type": "string", "description": "the shop's currency"},
                },
            },
        ],
        "description": description or "minor units, or a Money object in the shop's currency",
    }


# The Money input type, with its bounds: a price, a refund's amount, a promotion's amount.
MoneyIn = Annotated[int, PlainValidator(_money_parser(0, INT_MAX)), WithJsonSchema(_money_schema(0, INT_MAX))]
RefundAmount = Annotated[
    int,
    PlainValidator(_money_parser(1, INT_MAX)),
    WithJsonSchema(_money_schema(1, INT_MAX, "minor units; required without lines. With lines: at most their share")),
]
PromotionAmount = Annotated[
    int,
    PlainValidator(_money_parser(0, MAX_PROMOTION_AMOUNT)),
    WithJsonSchema(_money_schema(0, MAX_PROMOTION_AMOUNT)),
]


# ---- errors and pages ----


class ErrorBody(Out):
    code: str = Field(examples=["validation_failed"])
    message: str
    details: Json = Field(description="for 422 validation_failed: {fields: {name: problem}}")


class Error(Out):
    """Every error: {error: {code, message, details}}."""

    error: ErrorBody


def page_of(item: type[BaseModel], name: str) -> type[Out]:
    """A page of `item`s: {items, page, per_page, total}."""
    from pydantic import create_model

    model: type[Out] = create_model(
        name,
        __base__=Out,
        items=(list[item], ...),  # type: ignore[valid-type]
        page=(int, ...),
        per_page=(int, ...),
        total=(int, ...),
    )
    return model


# ---- catalogue ----


class Category(Out):
    id: int
    slug: str
    name: str
    parent_id: int | None


class ProductSummary(Out):
    id: int
    slug: str
    name: str
    brand: str = ""
    price_from: Money | None
    image_url: str | None
    in_stock: bool


ProductPage = page_of(ProductSummary, "ProductPage")


class Variant(Out):
    id: int
    sku: str
    options: dict[str, str] = Field(examples=[{"size": "M"}])
    price: Money
    compare_at_price: Money | None = None
    available: int = Field(ge=0, description="on hand minus live reservations")
    weight_grams: int = 0


class CategoryRef(Out):
    id: int
    slug: str
    name: str


class ProductOption(Out):
    name: str
    values: list[str]


class Product(Out):
    id: int
    slug: str
    name: str
    brand: str = ""
    description: str
    category: CategoryRef
    attributes: Json = {}
    images: list[str]
    image_alts: list[str] = []
    options: list[ProductOption]
    variants: list[Variant]


class OptionIn(In):
    name: Text = Field(min_length=1, max_length=60)
    values: list[Annotated[Text, Field(min_length=1, max_length=60)]] = Field(min_length=1)


class VariantIn(In):
    sku: Text = Field(min_length=1, max_length=64)
    options: dict[str, Text] = {}
    price: MoneyIn
    compare_at_price: MoneyIn | None = None
    on_hand: Int = Field(0, ge=0, le=INT_MAX)
    weight_grams: Int = Field(0, ge=0, le=INT_MAX)


class ImageIn(In):
    url: Text | None = Field(None, max_length=2000, description="an upload's key or public_url, or any URL")
    path: Text | None = Field(None, max_length=2000, description="the same as url")
    alt: Text = Field("", max_length=300)


class NewProduct(In):
    category: Int | Text | None = Field(None, description="id or slug (or send category_id)")
    category_id: Int | None = None
    name: Text = Field(min_length=1, max_length=200)
    slug: Text | None = Field(None, max_length=200)
    brand: Text = Field("", max_length=120)
    description: Text = Field("", max_length=20_000)
    status: Literal["draft", "active"] = "draft"
    attributes: Json = {}
    currency: Text | None = Field(None, description="when sent: the shop's currency")
    options: list[OptionIn] = []
    variants: list[VariantIn] = Field(min_length=1)
    images: list[ImageIn] = []


class Upload(Out):
    upload_url: str
    method: Literal["PUT"]
    headers: dict[str, str]
    public_url: str
    key: str = Field(description="pass as an image url/path")
    expires_in: int


class NewUpload(In):
    filename: Text = Field(min_length=1, max_length=255)
    content_type: Literal["image/jpeg", "image/png", "image/webp", "image/gif"]
    size: Int | None = Field(None, ge=1, le=INT_MAX, description="bytes; S3 then enforces it")


class StockCount(In):
    on_hand: Int = Field(description="the units counted", json_schema_extra=checked_by_service(0, MAX_ON_HAND))


class StockLevel(Out):
    id: int
    sku: str
    on_hand: int
    available: int


class LowStockLine(Out):
    variant_id: int
    sku: str
    product_id: int
    product_name: str
    options: Json
    on_hand: int
    threshold: int
    available: int


LowStockPage = page_of(LowStockLine, "LowStockPage")


# ---- accounts ----


class User(Out):
    id: int
    email: str = Field(json_schema_extra={"format": "email"})
    name: str


class Me(User):
    roles: list[Role]
    email_verified: bool


class Registration(In):
    email: Text = Field(max_length=254)
    password: Text = Field(max_length=1000, description="at least 10 characters")
    name: Text | None = Field(None, max_length=120)


class Credentials(In):
    email: Text = Field(min_length=1, max_length=1000)
    password: Text = Field(min_length=1, max_length=1000)


class RefreshToken(In):
    refresh_token: Text = Field(min_length=1, max_length=2000)


class TokenPair(Out):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="seconds (900)")


_REGION = (
    "at checkout, for a country whose tax depends on the region (the US by default): its ISO 3166-2 code within "
    'the country ("CA"; a name or "US-CA" is taken too and stored as the code); an unknown one is 422 naming the field'
)
_COUNTRY = (
    "ISO 3166-1 alpha-2; at checkout an unknown code is 422 validation_failed with details.fields naming it "
    '("shipping_address.country")'
)


def _text(max_length: int, description: str = "") -> Any:
    """A text field whose rules the service checks (all of an address's problems are named at once)."""
    return Field(None, description=description or None, json_schema_extra={"maxLength": max_length})


class AddressIn(In):
    """An address as sent: the model checks the types, the service the rest (every problem named in
    details.fields, e.g. shipping_address.country)."""

    model_config = ConfigDict(json_schema_extra={"required": ["name", "line1", "city", "postal_code", "country"]})
    name: Text | None = _text(200)
    line1: Text | None = _text(200)
    line2: Text | None = _text(200)
    city: Text | None = _text(120)
    region: Text | None = _text(80, _REGION)
    postal_code: Text | None = _text(20)
    country: Text | None = _text(2, _COUNTRY)
    phone: Text | None = _text(40)


class Address(Out):
    id: int | None = None
    name: str
    line1: str
    line2: str | None = None
    city: str
    region: str | None = None
    postal_code: str
    country: str
    phone: str | None = None


AddressPage = page_of(Address, "AddressPage")


class Customer(Out):
    id: int
    email: str
    name: str
    email_verified: bool
    created_at: Timestamp
    addresses: list[Address]


# ---- carts, checkout, orders ----


class CartItem(Out):
    id: int
    variant_id: int
    sku: str
    name: str
    options: Json
    quantity: int
    unit_price: Money = Field(
        description="the price paid per unit: the sale price while an automatic sale covers the item"
    )
    line_total: Money
    list_price: Money | None = Field(description="on sale: the catalogue price per unit before the sale; else null")


class Discount(Out):
    promotion_id: int
    code: str | None
    amount: Money
    reason: str
    free_shipping: bool


class Cart(Out):
    id: str = Field(json_schema_extra={"format": "uuid"})
    token: str | None = Field(description="guests: send it back as X-Cart-Token")
    currency: str
    items: list[CartItem]
    subtotal: Money
    discount: Money
    shipping: Money
    tax: Money
    total: Money
    coupon_code: str | None
    coupon_error: str | None = Field(description="why the cart's code gives nothing now (a coupon_* code), else null")
    discounts: list[Discount]


class AddItem(In):
    sku: Text = Field(min_length=1, max_length=64)
    quantity: Int = Field(1, json_schema_extra=checked_by_service(1, MAX_QUANTITY))


class Quantity(In):
    quantity: Int = Field(json_schema_extra=checked_by_service(1, MAX_QUANTITY))


class CouponCode(In):
    code: Text = Field(max_length=64)


class GuestCart(In):
    guest_cart_token: Text = Field(min_length=1, max_length=200)


class CheckoutIn(In):
    cart_id: Text = Field(min_length=1, max_length=64)
    email: Text | None = Field(None, max_length=254, description="required for guests; a user's own otherwise")
    shipping_address: AddressIn
    billing_address: AddressIn | None = None
    shipping_method: Literal[tuple(SHIPPING_METHODS)] = "standard"  # type: ignore[valid-type]


class OrderLine(Out):
    sku: str
    name: str
    options: Json
    quantity: int
    unit_price: Money
    line_total: Money
    list_price: Money | None = Field(description="bought on sale: the price per unit before the sale; else null")


class OrderEvent(Out):
    status: OrderStatus
    from_: OrderStatus | None = Field(alias="from")
    at: Timestamp
    actor: str
    note: str | None


class Tracking(Out):
    carrier: str
    number: str
    url: str | None


class Order(Out):
    id: int
    number: str
    status: OrderStatus
    email: str | None
    currency: str
    items: list[OrderLine]
    subtotal: Money
    discount: Money
    shipping: Money
    tax: Money
    total: Money
    shipping_method: str
    shipping_address: Json | None
    billing_address: Json | None
    access_token: str | None = Field(None, description="guests only, in the checkout answer, once")
    events: list[OrderEvent]
    tracking: Tracking | None = Field(
        None, description="once shipped with tracking (carrier, number, link to the carrier's page)"
    )
    created_at: Timestamp


OrderPage = page_of(Order, "OrderPage")


class Payment(Out):
    id: int
    provider: Literal["stripe", "test"]
    client_secret: str | None = None
    redirect_url: str | None = None


class Placed(Out):
    order: Order
    payment: Payment


# ---- staff ----


class Dispute(Out):
    id: int
    amount: Money
    reason: str = Field(description="Stripe's reason code, e.g. fraudulent, product_not_received")
    status: str = Field(description="Stripe's dispute status, e.g. needs_response, under_review, won, lost")
    outcome: Literal["won", "lost", "warning_closed"] | None = Field(None, description="once closed")
    evidence_due_by: str | None = Field(None, description="respond in the Stripe dashboard before")
    opened_at: Timestamp
    closed_at: Timestamp | None = None


class StaffOrderLine(OrderLine):
    id: int = Field(description="the line's id (lines[].line_id of a refund by line)")
    refunded_quantity: int | None = Field(None, description="payments roles: units already refunded by line")


class StaffOrder(Order):
    """An order as the admin API shows it: the Order, plus what the role may see."""

    items: list[StaffOrderLine]  # type: ignore[assignment]
    disputed: bool | None = Field(
        None, description="payments roles only: an open dispute (a chargeback); refunds are refused until it closes"
    )
    payments: list[Json] | None = Field(None, description="payments roles only")
    disputes: list[Dispute] | None = Field(None, description="payments roles only: oldest first")


StaffOrderPage = page_of(StaffOrder, "StaffOrderPage")


class TrackingIn(In):
    carrier: Text = Field(max_length=60, examples=["UPS"])
    number: Text = Field(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ./-]*$")
    url: Text | None = Field(
        None,
        max_length=500,
        description="https:// or http://; when absent, made from the number for UPS, USPS, FedEx, DHL",
    )


class Transition(In):
    status: Text = Field(
        max_length=40,
        description="processing, shipped, delivered (orders.fulfil); cancelled, returned (orders.cancel)",
    )
    note: Text | None = Field(None, max_length=1000)
    tracking: Json | None = Field(
        None,
        description="only with status shipped: {carrier, number, url?}, shown on the order page and in the "
        'shipped mail; a bad one is 422 naming details.fields["tracking.<name>"]',
    )


class RefundLineIn(In):
    line_id: Int = Field(ge=1, le=INT_MAX)
    quantity: Int = Field(ge=1, le=INT_MAX)


class RefundIn(In):
    amount: RefundAmount | None = None
    lines: list[RefundLineIn] | None = Field(
        None,
        min_length=1,
        description="a refund by line: units of the order's lines (items[].id); the amount is then computed by the "
        "shop: the units' share of what was paid for goods (discount and tax prorated, shipping not included)",
    )
    reason: Text = Field("", max_length=1000)
    currency: Text | None = Field(None, description="when sent: the order's currency")


class RefundLine(Out):
    line_id: int
    quantity: int
    amount: Money


class Refund(Out):
    id: int
    order_id: int
    amount: Money
    reason: str
    provider_refund_id: str | None = Field(description="Stripe's re_... id once Stripe accepted it")
    status: RefundStatus = Field(description="processing: accepted by Stripe, not settled yet")
    refunded_total: Money | None = None
    lines: list[RefundLine] = Field(description="a refund by line: its units; else []")


class SalesDay(Out):
    date: str = Field(json_schema_extra={"format": "date"})
    orders: int = Field(description="sold orders created that day (UTC) in this currency")
    revenue: Money
    discounts: Money


class SalesTotal(Out):
    currency: str
    orders: int
    revenue: Money
    refunded: Money = Field(description="refunds of those orders, any status")
    net: Money = Field(description="revenue minus refunded")


class SalesReport(Out):
    from_: str = Field(alias="from", json_schema_extra={"format": "date"})
    to: str = Field(json_schema_extra={"format": "date"})
    days: list[SalesDay] = Field(description="per day and currency, oldest first")
    totals: list[SalesTotal]


# ---- promotions ----


class Targets(BaseModel):
    """Ids the rule applies to (or excludes); empty: everything."""

    model_config = ConfigDict(extra="forbid")
    categories: list[Int] = []
    products: list[Int] = []
    variants: list[Int] = []


# The service checks targets (ids that exist); a bad one is named as the whole field ("applies_to").
TargetsIn = Annotated[
    Json | None,
    WithJsonSchema({"oneOf": [{"$ref": "#/components/schemas/Targets"}, {"type": "null"}]}),
]


Kind = Literal["percent", "fixed", "free_shipping"]


CouponValue = Annotated[
    Any,
    WithJsonSchema(
        {
            "oneOf": [{"type": "integer"}, {"$ref": "#/components/schemas/Money"}],
            "description": "percent: 1-100; fixed: an amount in minor units (> 0) or Money; free_shipping: 0 or left out",
        }
    ),
]


class NewCoupon(In):
    code: Text = Field(max_length=64, description="3 to 64 of A-Z a-z 0-9 _ -; unique, ignoring case")
    kind: Kind
    value: CouponValue = None
    name: Text | None = Field(None, min_length=1, max_length=120, description="default: the code")
    description: Text = Field("", max_length=5000)
    starts_at: Text | None = Field(None, max_length=64, description="ISO 8601; UTC without an offset")
    ends_at: Text | None = Field(None, max_length=64, description="ISO 8601, after starts_at")
    min_subtotal: PromotionAmount | None = None
    usage_limit: Int | None = Field(None, ge=1, le=INT_MAX, description="redemptions in all")
    per_customer_limit: Int | None = Field(None, ge=1, le=INT_MAX, description="per account and per e-mail")
    applies_to: TargetsIn = None
    excludes: TargetsIn = None
    first_order_only: Flag = False
    stackable: Flag = False
    priority: Int = Field(0, ge=-1000, le=1000, description="higher first")
    active: Flag = True
    currency: Text | None = Field(None, description="when sent: the shop's currency")


class Promotion(Out):
    id: int
    name: str
    description: str
    kind: Kind
    value: int
    currency: str
    automatic: bool = Field(description="a sale without a code")
    active: bool
    starts_at: Timestamp | None
    ends_at: Timestamp | None
    min_subtotal: Money | None
    usage_limit: int | None
    per_customer_limit: int | None
    first_order_only: bool
    stackable: bool
    priority: int
    applies_to: Targets
    excludes: Targets
    codes: list[str] = Field(description="shared codes")
    single_use_codes: int = Field(description="how many single-use codes were generated")
    created_at: Timestamp | None


PromotionPage = page_of(Promotion, "PromotionPage")


class CurrencyUsage(Out):
    currency: str
    redemptions: int
    discount: Money
    revenue: Money


class PromotionUsage(Out):
    promotion_id: int
    name: str
    kind: str
    value: int
    automatic: bool
    redemptions: int = Field(description="active redemptions")
    released: int = Field(description="given back: order cancelled or expired")
    orders: int = Field(description="orders using it that are not cancelled")
    discount: Money | None = None
    revenue: Money | None = Field(None, description="sum of those orders' totals")
    refunded_orders: int = Field(0, description="orders using it that were refunded (apart from revenue)")
    refunded: Money | None = Field(None, description="sum of the refunded orders' totals")
    by_currency: list[CurrencyUsage]


class PromotionsReport(Out):
    from_: str | None = Field(alias="from")
    to: str | None
    items: list[PromotionUsage]
    totals: list[CurrencyUsage]


# ---- partner webhooks ----


# The service checks the names (one sentence for the whole list).
EventNames = Annotated[
    Any, WithJsonSchema({"type": "array", "minItems": 1, "items": {"type": "string", "enum": list(TYPES)}})
]


# Fields the model passes through as sent and the service checks, naming every bad field of the body at once
# (the back-office form calls the same service); the document still shows their schema.
Url = Annotated[Any, WithJsonSchema({"type": "string", "format": "uri", "maxLength": 2000})]
Description = Annotated[Any, WithJsonSchema({"type": "string", "maxLength": 200})]
Enabled = Annotated[Any, WithJsonSchema({"type": "boolean"})]


class NewWebhookEndpoint(BaseModel):
    model_config = ConfigDict(
        extra="forbid",  # a misspelt field is refused, not ignored
        json_schema_extra={"required": ["url", "events"]},
    )
    url: Url = Field(None, description="http(s); must resolve to public addresses only")
    events: EventNames = None
    description: Description = None


class WebhookEndpointChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url = None
    events: EventNames = None
    description: Description = None
    enabled: Enabled = Field(
        None, description="true again forgets why it was disabled; its waiting deliveries go out again"
    )


class WebhookEndpoint(Out):
    id: int
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    disabled_at: Timestamp | None
    failing_since: Timestamp | None = Field(
        description="first failure since the last success; 3 days of it disable the endpoint"
    )
    created_at: Timestamp


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(pattern=r"^whsec_[A-Za-z0-9+/=]+$", description="the signing secret: shown in this answer only")


WebhookEndpointPage = page_of(WebhookEndpoint, "WebhookEndpointPage")


class WebhookAttempt(Out):
    id: int
    started_at: Timestamp
    duration_ms: int | None
    url: str = Field(description="last URL reached")
    request_headers: Json | None = None
    request_excerpt: str | None = Field(None, description="first 2 KB of the body sent")
    status_code: int | None
    response_excerpt: str | None = Field(None, description="first 2 KB of the answer")
    error: str | None = Field(description="timeout, refused, URL refused...")


class WebhookDelivery(Out):
    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    state: DeliveryState
    attempts: int
    next_attempt_at: Timestamp | None = None
    last_status: int | None = None
    last_error: str | None = None
    created_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    log: list[WebhookAttempt] = Field(default_factory=list, description="its attempts, newest first")


WebhookDeliveryPage = page_of(WebhookDelivery, "WebhookDeliveryPage")


class Aggregate(Out):
    type: str = Field(examples=["order"])
    id: str = Field(examples=["42"])


class Event(Out):
    """The envelope of every event, on the stream and in partner webhooks alike."""

    id: str = Field(description="unique, stable across redeliveries (the webhook-id)")
    type: Literal[(*TYPES, "webhook.test")] = Field(  # type: ignore[valid-type]
        examples=["order.placed"], description="webhook.test: the test event an admin sends (data.message)"
    )
    version: int = Field(description="of this type's `data`")
    occurred_at: Timestamp
    aggregate: Aggregate
    data: Json


# ---- search ----


class Highlight(Out):
    name: str | None


class SearchHit(ProductSummary):
    highlight: Highlight | None = None


class CategoryFacet(Out):
    slug: str
    name: str
    parent_id: int | None = None
    parent: str | None = Field(None, description="the parent category's slug")
    depth: int = Field(0, description="0 for a top category")
    count: int


class PriceFacet(Out):
    key: str | None = None
    min: int
    max: int | None
    label: str | None = None
    count: int


class OptionFacet(Out):
    value: str
    count: int


class Facets(Out):
    category: list[CategoryFacet]
    price: list[PriceFacet]
    options: dict[str, list[OptionFacet]]
    options_estimated: bool = Field(
        False,
        description="true when the option counts are estimates: PostgreSQL answered (engine database), more "
        "products matched than it counts option values over, and it scaled the counts of the most relevant "
        "ones to the total; category and price counts are always exact",
    )


class SearchResults(Out):
    items: list[SearchHit]
    page: int
    per_page: int
    total: int
    query: str | None = None
    engine: Literal["typesense", "database"]
    facets: Facets


class CategoryList(RootModel[list[Category]]):
    """Every category; the tree is in parent_id."""
