"""Order rules: creation from priced lines, every status move (with its event), access checks."""
from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from shop.errors import ApiError
from shop.extensions import db
from shop.inventory import services as inventory
from shop.notifications import notify
from shop.orders import states
from shop.orders.models import Order, OrderEvent, OrderLine

STATUS_MAIL = {states.CONFIRMED: "order.confirmed", states.SHIPPED: "order.shipped",
               states.DELIVERED: "order.delivered", states.REFUNDED: "order.refunded"}


class OrderNotFound(ApiError):
    def __init__(self):
        super().__init__(404, "order_not_found", "No such order.")


class InvalidTransition(ApiError):
    def __init__(self, exc: states.InvalidTransition):
        super().__init__(409, "invalid_transition", str(exc), {"from": exc.current, "to": exc.target})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_order(*, user_id, email, currency, totals, shipping_method, shipping_address, billing_address,
              cart_id=None) -> tuple[Order, str | None]:
    """A pending order with line snapshots; returns it and, for a guest, its one-time access token."""
    token = None if user_id else secrets.token_urlsafe(24)
    order = Order(number=f"S-{secrets.token_hex(6).upper()}", user_id=user_id, email=email, status=states.PENDING,
                  currency=currency, subtotal=totals.subtotal, discount=totals.discount, shipping=totals.shipping,
                  tax=totals.tax, total=totals.total, shipping_method=shipping_method,
                  shipping_address=shipping_address, billing_address=billing_address,
                  access_token_hash=hash_token(token) if token else None, cart_id=str(cart_id) if cart_id else None)
    order.lines = [OrderLine(variant_id=line.variant_id, sku=line.sku, name=line.name, options=line.options,
                             quantity=line.quantity, unit_price=line.unit_price, line_total=line.line_total)
                   for line in totals.lines]
    order.events = [OrderEvent(from_status=None, to_status=states.PENDING, actor="customer", note="Order placed")]
    db.session.add(order)
    db.session.flush()
    return order, token


def lock(order_id: int) -> Order:
    """The order row, locked for this transaction and re-read under the lock: every status move goes through here.

    populate_existing: a caller may already hold this order in the session (for_reader ran first); without
    it the lock would be granted but the stale copy kept, and a waiter would act on the status it saw before."""
    order = db.session.scalar(select(Order).where(Order.id == order_id).with_for_update()
                              .execution_options(populate_existing=True))
    if order is None:
        raise OrderNotFound()
    return order


def move(order: Order, target: str, actor: str, note: str = "") -> None:
    """Apply one state-machine move to a locked order, with its event and side effects. Flushes."""
    try:
        states.check(order.status, target)
    except states.InvalidTransition as exc:
        raise InvalidTransition(exc) from None
    previous = order.status
    if target == states.CANCELLED:  # its coupon uses count no more (also when its reservation expired)
        from shop.promotions import services as promotions

        promotions.release(order.id)
    if target == states.CANCELLED and previous == states.PENDING:
        inventory.release(order.id)
    elif target == states.CANCELLED:  # paid and not shipped: the units go back on the shelf
        inventory.restock({line.variant_id: line.quantity for line in order.lines if line.variant_id})
    order.status = target
    db.session.add(OrderEvent(order_id=order.id, from_status=previous, to_status=target, actor=actor, note=note))
    if target in STATUS_MAIL:
        notify(STATUS_MAIL[target], order.email, mail_payload(order))
    if target == states.CANCELLED and previous != states.PENDING:
        from shop.payments import services as payments

        payments.refund_after_commit(order.id, reason=f"Order cancelled: {note}".strip(": "), actor=actor)
    db.session.flush()


def transition(order_id: int, target: str, actor: str, note: str = "") -> Order:
    """Move an order (staff or system); one transaction."""
    order = lock(order_id)
    move(order, target, actor, note)
    db.session.commit()
    return order


def cancel_by_customer(order: Order, actor: str = "customer") -> Order:
    """The shopper cancels before shipping; 409 once shipped."""
    locked = lock(order.id)
    if not states.can_cancel(locked.status):
        raise ApiError(409, "invalid_transition", f"An order that is {locked.status} can no longer be cancelled.",
                       {"from": locked.status, "to": states.CANCELLED})
    move(locked, states.CANCELLED, actor, "Cancelled by the customer")
    db.session.commit()
    return locked


def for_reader(order_id: int, *, user=None, token: str | None = None) -> Order:
    """The order if this user owns it or the guest token matches; 404 otherwise (never 403)."""
    order = db.session.scalar(select(Order).where(Order.id == order_id)
                              .options(selectinload(Order.lines), selectinload(Order.events)))
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
    rows = db.session.scalars(select(Order).where(where).order_by(Order.created_at.desc(), Order.id.desc())
                              .options(selectinload(Order.lines), selectinload(Order.events))
                              .limit(per_page).offset((page - 1) * per_page)).all()
    return list(rows), total


def mail_payload(order: Order) -> dict:
    from shop.accounts.services import external_url
    from shop.money import format_money

    return {"number": order.number, "status": order.status, "total": format_money(order.total, order.currency),
            "lines": [{"name": line.name, "quantity": line.quantity,
                       "options": ", ".join(f"{k} {v}" for k, v in (line.options or {}).items()),
                       "line_total": format_money(line.line_total, order.currency)} for line in order.lines],
            "link": external_url("storefront.order_detail", order_id=order.id)}



def for_staff(order_id: int) -> Order:
    order = db.session.scalar(select(Order).where(Order.id == order_id)
                              .options(selectinload(Order.lines), selectinload(Order.events)))
    if order is None:
        raise OrderNotFound()
    return order
