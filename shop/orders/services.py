"""Order rules: creation from priced lines, every status move (with its event), access checks.

Every order.* domain event is published here (new_order, move, publish_event), with snapshot() as its data."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from shop import events
from shop.errors import Conflict, NotFound, ValidationError
from shop.extensions import db
from shop.orders import states
from shop.orders.models import Order, OrderEvent, OrderLine

if TYPE_CHECKING:
    from itsdangerous import URLSafeTimedSerializer

# The moves that leave the process as domain events (processing and returned stay inside the shop).
STATUS_EVENT = {
    states.CONFIRMED: "order.confirmed",
    states.CANCELLED: "order.cancelled",
    states.SHIPPED: "order.shipped",
    states.DELIVERED: "order.delivered",
    states.REFUNDED: "order.refunded",
}


class OrderErrorCode(StrEnum):
    NOT_FOUND = "order_not_found"
    INVALID_TRANSITION = "invalid_transition"


class OrderNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__(OrderErrorCode.NOT_FOUND, "No such order.")


class InvalidTransition(Conflict):
    def __init__(self, exc: states.InvalidTransition) -> None:
        super().__init__(OrderErrorCode.INVALID_TRANSITION, str(exc), {"from": exc.current, "to": exc.target})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_order(
    *,
    user_id: int | None,
    email: str,
    currency: str,
    totals: Any,
    shipping_method: str,
    shipping_address: dict[str, Any],
    billing_address: dict[str, Any] | None,
    cart_id: Any = None,
    client_ip: str | None = None,
) -> tuple[Order, str | None]:
    """A pending order with line snapshots; returns it and, for a guest, its one-time access token."""
    token = None if user_id else secrets.token_urlsafe(24)
    order = Order(
        number=f"S-{secrets.token_hex(6).upper()}",
        user_id=user_id,
        email=email,
        status=states.PENDING,
        currency=currency,
        subtotal=totals.subtotal,
        discount=totals.discount,
        shipping=totals.shipping,
        tax=totals.tax,
        total=totals.total,
        shipping_method=shipping_method,
        shipping_address=shipping_address,
        billing_address=billing_address,
        access_token_hash=hash_token(token) if token else None,
        cart_id=str(cart_id) if cart_id else None,
        client_ip=client_ip,
    )
    order.lines = [
        OrderLine(
            variant_id=line.variant_id,
            sku=line.sku,
            name=line.name,
            options=line.options,
            quantity=line.quantity,
            unit_price=line.unit_price,
            line_total=line.line_total,
            list_price=getattr(line, "list_price", None),
        )  # the price before a sale, if any
        for line in totals.lines
    ]
    order.events = [OrderEvent(from_status=None, to_status=states.PENDING, actor="customer", note="Order placed")]
    db.session.add(order)
    db.session.flush()
    publish_event(order, "order.placed", refunded=0)  # nothing can be refunded on an order not paid yet
    return order, token


def _utc_iso(at: datetime | None) -> str | None:
    """ISO 8601 in UTC; the columns hold naive UTC times."""

    if at is None:
        return None
    return (at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)).isoformat()


def refunded_total(order_id: int) -> int:
    """Money given back (or on its way back) on this order, in minor units: payments answers (shop.events)."""
    return sum(answer or 0 for _, answer in events.order_refunded_total.send(order_id))


def snapshot(order: Order, refunded: int | None = None) -> dict[str, Any]:
    """The `data` of every order.* event: the order as it stands after the change, without personal data (no
    e-mail, name or address). `refunded` is looked up unless the caller knows it."""
    return {
        "order_id": order.id,
        "number": order.number,
        "status": order.status,
        "currency": order.currency,
        "subtotal": order.subtotal,
        "discount": order.discount or 0,
        "shipping": order.shipping,
        "tax": order.tax,
        "total": order.total,
        "refunded": refunded_total(order.id) if refunded is None else refunded,
        "created_at": _utc_iso(order.created_at),
        "customer_id": order.user_id,
        "lines": [{"sku": line.sku, "quantity": line.quantity, "unit_price": line.unit_price} for line in order.lines],
    }


def publish_event(order: Order, type_: str, refunded: int | None = None, **extra: Any) -> dict[str, Any]:
    """Publish order event `type_` with the order's snapshot (and `extra` fields) in the open transaction."""
    return events.publish(type_, "order", order.id, {**snapshot(order, refunded), **extra})


def lock(order_id: int) -> Order:
    """The order row, locked for this transaction and re-read under the lock: every status move goes through here.

    populate_existing: a caller may already hold this order in the session (for_reader ran first); without
    it the lock would be granted but the stale copy kept, and a waiter would act on the status it saw before."""
    order = db.session.scalar(
        select(Order).where(Order.id == order_id).with_for_update().execution_options(populate_existing=True)
    )
    if order is None:
        raise OrderNotFound()
    return order


def move(order: Order, target: str, actor: str, note: str = "", tracking: dict[str, Any] | None = None) -> None:
    """Apply one state-machine move to a locked order, with its event and side effects. Flushes.

    `tracking` ({carrier, number, url} as clean_tracking gives it) goes only with a move to shipped."""
    if tracking and target != states.SHIPPED:
        raise ValidationError({"tracking": "is given only when the order becomes shipped"})
    try:
        states.check(order.status, target)
    except states.InvalidTransition as exc:
        raise InvalidTransition(exc) from None
    previous = order.status
    if target == states.CANCELLED:
        # Promotions give its coupon uses back, inventory its stock (held, or back on the shelf once paid), payments
        # the money once paid: each domain's own receiver, in lock order (shop.events).
        events.emit(
            events.order_cancelled,
            order,
            was_paid=previous != states.PENDING,
            actor=actor,
            note=f"Order cancelled: {note}".strip(": "),
        )
    order.status = target
    if tracking:  # the shipped mail shows them
        order.tracking_carrier, order.tracking_number = tracking["carrier"], tracking["number"]
        order.tracking_url = tracking["url"]
    db.session.add(OrderEvent(order_id=order.id, from_status=previous, to_status=target, actor=actor, note=note))
    if target in STATUS_EVENT:  # the shopper's mail for it is sent from the event (shop.orders.mails)
        # A pending order has no payment that could have been refunded: no need to ask payments.
        extra = {"was_paid": previous != states.PENDING} if target == states.CANCELLED else {}
        publish_event(
            order, STATUS_EVENT[states.OrderStatus(target)], refunded=0 if previous == states.PENDING else None, **extra
        )
    db.session.flush()


def transition(order_id: int, target: str, actor: str, note: str = "", tracking: dict[str, Any] | None = None) -> Order:
    """Move an order (staff or system); one transaction. `tracking` ({carrier, number, url}), only for shipped,
    is checked first (422 validation_failed, nothing written) and kept on the order for its page and mail."""
    tracking = clean_tracking(tracking)
    if target == states.CANCELLED:
        _close_payment_pages(order_id)
    order = lock(order_id)
    move(order, target, actor, note, tracking)
    db.session.commit()
    return order


# -- tracking of a shipped parcel ---------------------------------------------------------------------------
TRACKING_LIMITS = {"carrier": 60, "number": 100, "url": 500}  # the columns' lengths
_TRACKING_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ./-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Carriers whose tracking page is known: a link is made from the number when staff give none.
CARRIER_LINKS = {
    "ups": "https://www.ups.com/track?tracknum={}",
    "usps": "https://tools.usps.com/go/TrackConfirmAction?tLabels={}",
    "fedex": "https://www.fedex.com/fedextrack/?trknbr={}",
    "dhl": "https://www.dhl.com/global-en/home/tracking/tracking-express.html?submit=1&tracking-id={}",
}


def carrier_link(carrier: str | None, number: str | None) -> str | None:
    """The carrier's own tracking page for this number ("UPS", "ups ground", "FedEx", "Fed-Ex Express" ...),
    or None for a carrier the shop does not know."""
    if not carrier or not number:
        return None
    words = re.sub(r"[^a-z0-9 ]", "", carrier.lower()).split()
    if not words:
        return None
    key = words[0] if words[0] in CARRIER_LINKS else "".join(words[:2])  # "fed ex" -> "fedex"
    pattern = CARRIER_LINKS.get(key)
    return pattern.format(quote(number.replace(" ", ""), safe="")) if pattern else None


def clean_tracking(raw: Any) -> dict[str, Any] | None:
    """{carrier, number, url} from what staff sent (the API's `tracking` object, the back-office's fields):
    trimmed, checked, the link made for a well-known carrier when none is given. None when nothing is given.
    ValidationError (422, details.fields["tracking.<name>"]) for anything else."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValidationError({"tracking": "must be an object with carrier, number and (optionally) url"})
    errors: dict[str, str] = {}
    for key in raw:
        if key not in TRACKING_LIMITS:
            errors[f"tracking.{str(key)[:40]}"] = "is not a tracking field (carrier, number, url)"
    values: dict[str, str] = {}
    for key, limit in TRACKING_LIMITS.items():
        value = raw.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            errors[f"tracking.{key}"] = "must be text"
            continue
        value = value.strip()
        if len(value) > limit:
            errors[f"tracking.{key}"] = f"must be at most {limit} characters"
        elif _CONTROL.search(value):
            errors[f"tracking.{key}"] = "must be one line of text"
        values[key] = value
    if errors:
        raise ValidationError(errors)
    carrier, number, url = values["carrier"], values["number"], values["url"]
    if not (carrier or number or url):
        return None
    if not carrier:
        errors["tracking.carrier"] = "is needed with tracking, e.g. UPS"
    if not number:
        errors["tracking.number"] = "is needed with tracking: the carrier's parcel number"
    elif not _TRACKING_NUMBER.match(number):
        errors["tracking.number"] = "must be letters and digits (spaces, - . / allowed)"
    if url:
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:  # e.g. "http://[::1" or a bad port
            parts, host = None, None
        if parts is None or parts.scheme.lower() not in ("https", "http") or not host or re.search(r"[\s\"'<>\\]", url):
            errors["tracking.url"] = "must be a web link starting with https:// or http://"
    if errors:
        raise ValidationError(errors)
    return {"carrier": carrier, "number": number, "url": url or carrier_link(carrier, number)}


def cancel_by_customer(order: Order, actor: str = "customer") -> Order:
    """The shopper cancels before shipping; 409 once shipped."""
    _close_payment_pages(order.id)
    locked = lock(order.id)
    if not states.can_cancel(locked.status):
        raise Conflict(
            OrderErrorCode.INVALID_TRANSITION,
            f"An order that is {locked.status} can no longer be cancelled.",
            {"from": locked.status, "to": states.CANCELLED},
        )
    move(locked, states.CANCELLED, actor, "Cancelled by the customer")
    db.session.commit()
    return locked


def _close_payment_pages(order_id: int) -> None:
    """Before an unpaid order is cancelled: close its Stripe payment pages (outside any transaction), so nobody pays
    for it afterwards. Best effort: a page found paid confirms the order first (the cancel then refunds it); a payment
    that still arrives after the cancellation is refunded in full."""
    if db.session.scalar(select(Order.status).where(Order.id == order_id)) != states.PENDING:
        return
    events.emit(events.order_cancelling, order_id)  # a veto is not heeded: the person's cancel stands


def for_reader(order_id: int, *, user: Any = None, token: str | None = None) -> Order:
    """The order if this user owns it or the guest token matches; 404 otherwise (never 403)."""
    order = db.session.scalar(
        select(Order).where(Order.id == order_id).options(selectinload(Order.lines), selectinload(Order.events))
    )
    if order is None:
        raise OrderNotFound()
    if user is not None and order.user_id == user.id:
        return order
    if token and order.access_token_hash and hmac.compare_digest(order.access_token_hash, hash_token(token)):
        return order
    raise OrderNotFound()


def of_user(user_id: int, page: int = 1, per_page: int = 20) -> tuple[list[Order], int]:
    from sqlalchemy import func

    where = Order.user_id == user_id
    total = db.session.scalar(select(func.count()).select_from(Order).where(where))
    rows = db.session.scalars(
        select(Order)
        .where(where)
        .order_by(Order.created_at.desc(), Order.id.desc())
        .options(selectinload(Order.lines), selectinload(Order.events))
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return list(rows), total or 0


# -- links that open one order (mails, the test gateway's way back) ----------------------------------------------
ORDER_LINK_SALT = "shop.order-link"


class OrderLinkProblem(Exception):
    """A signed order link that cannot be used: `expired` (too old) or `invalid` (altered, or for another order)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _link_signer() -> URLSafeTimedSerializer:
    from flask import current_app
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=ORDER_LINK_SALT)


def order_link_token(order: Order) -> str:
    """A signed, expiring key that opens this one order (ORDER_LINK_MAX_AGE_DAYS), for its owner or a guest."""
    return _link_signer().dumps({"o": order.id, "n": order.number})


def order_from_link(order_id: int, token: str) -> Order:
    """The order a signed link opens; OrderLinkProblem("expired" | "invalid") otherwise."""
    from flask import current_app
    from itsdangerous import BadSignature, SignatureExpired

    max_age = int(current_app.config.get("ORDER_LINK_MAX_AGE_DAYS", 30)) * 24 * 3600
    try:
        data = _link_signer().loads(token or "", max_age=max_age)
    except SignatureExpired:
        raise OrderLinkProblem("expired") from None
    except BadSignature:
        raise OrderLinkProblem("invalid") from None
    if not isinstance(data, dict) or data.get("o") != order_id:
        raise OrderLinkProblem("invalid")
    order = db.session.scalar(
        select(Order).where(Order.id == order_id).options(selectinload(Order.lines), selectinload(Order.events))
    )
    if order is None or order.number != data.get("n"):
        raise OrderLinkProblem("invalid")
    return order


def order_link(order: Order, **params: Any) -> str:
    """The absolute link (at PUBLIC_BASE_URL) that opens this order in any browser, logged out too."""
    from shop.security import external_url

    return external_url("storefront.order_detail", order_id=order.id, k=order_link_token(order), **params)


def hold_expires_at(order_id: int) -> datetime | None:
    """When the stock held for a pending order is released (its earliest live reservation), or None."""
    from sqlalchemy import func

    from shop.inventory.models import Reservation

    return db.session.scalar(
        select(func.min(Reservation.expires_at)).where(Reservation.order_id == order_id, Reservation.status == "active")
    )


# -- addresses and mails -------------------------------------------------------------------------------------


def _thumbnails(order: Order) -> dict[int, str]:
    """{variant id: absolute URL of its product's first image} for the order's lines."""
    from shop.catalog.models import Product, ProductImage, Variant
    from shop.security import external_url

    ids = {line.variant_id for line in order.lines if line.variant_id}
    if not ids:
        return {}
    rows = db.session.execute(
        select(Variant.id, ProductImage.path, ProductImage.position, ProductImage.id)
        .join(Product, Product.id == Variant.product_id)
        .join(ProductImage, ProductImage.product_id == Product.id)
        .where(Variant.id.in_(ids))
        .order_by(Variant.id, ProductImage.position, ProductImage.id)
    ).all()
    found: dict[int, str] = {}
    for vid, path, _, _ in rows:
        if vid in found or not path:
            continue
        if path.startswith(("http://", "https://")):
            found[vid] = path
        elif path.startswith("//"):
            found[vid] = "https:" + path
        else:
            from flask import current_app

            cdn = current_app.config.get("CDN_BASE_URL")
            found[vid] = f"{cdn}/media/{path}" if cdn else external_url("media.file", path=path)
    return found


def mail_payload(order: Order, status: str | None = None) -> dict[str, Any]:
    """What every order mail shows: the lines with unit prices (and the price before a sale), the money
    breakdown, the shipping address, whether it went to an account, and a signed link to the order. `status`: the
    one the mail announces, when the order may have moved on since (the order-mails group applies events later)."""
    from flask import current_app

    from shop.money import format_money

    cur = order.currency
    thumbs = _thumbnails(order)
    lines = []
    for line in order.lines:
        list_price = getattr(line, "list_price", None)
        lines.append(
            {
                "name": line.name,
                "quantity": line.quantity,
                "sku": line.sku,
                "options": ", ".join(f"{k} {v}" for k, v in (line.options or {}).items()),
                "unit_price": format_money(line.unit_price, cur),
                "was": format_money(list_price, cur) if list_price and list_price > line.unit_price else None,
                "line_total": format_money(line.line_total, cur),
                "image": thumbs.get(line.variant_id) if line.variant_id else None,
            }
        )
    status = status or order.status
    shipped = (
        next((e for e in reversed(order.events) if e.to_status == states.SHIPPED), None)
        if status in (states.SHIPPED, states.DELIVERED)
        else None
    )
    tracking = {k: getattr(order, f"tracking_{k}", None) for k in ("number", "carrier", "url")}
    return {
        "number": order.number,
        "status": status,
        "currency": cur,
        "subtotal": format_money(order.subtotal, cur),
        "discount": format_money(order.discount, cur) if order.discount else None,
        "shipping": format_money(order.shipping, cur),
        "tax": format_money(order.tax, cur),
        "total": format_money(order.total, cur),
        "shipping_method": order.shipping_method,
        "lines": lines,
        "shipping_address": dict(order.shipping_address or {}),
        "guest": order.user_id is None,
        "tracking": {k: v for k, v in tracking.items() if v},
        "shipping_note": shipped.note if shipped is not None and shipped.note else None,
        "link": order_link(order),
        "link_days": current_app.config.get("ORDER_LINK_MAX_AGE_DAYS", 30),
    }


def for_staff(order_id: int) -> Order:
    order = db.session.scalar(
        select(Order).where(Order.id == order_id).options(selectinload(Order.lines), selectinload(Order.events))
    )
    if order is None:
        raise OrderNotFound()
    return order
