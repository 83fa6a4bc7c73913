"""The order state machine (API.md), written once. Pure: no database."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    PROCESSING = "processing"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    RETURNED = "returned"
    REFUNDED = "refunded"


# The machine below names them briefly.
PENDING, CONFIRMED, PROCESSING, SHIPPED, DELIVERED, CANCELLED, RETURNED, REFUNDED = OrderStatus
STATUSES = tuple(OrderStatus)

TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({CONFIRMED, CANCELLED}),
    CONFIRMED: frozenset({PROCESSING, CANCELLED}),
    PROCESSING: frozenset({SHIPPED, CANCELLED}),
    SHIPPED: frozenset({DELIVERED}),
    DELIVERED: frozenset({RETURNED}),
    RETURNED: frozenset({REFUNDED}),
    CANCELLED: frozenset(),
    REFUNDED: frozenset(),
}

# Which staff permission moves an order into each status; confirmed and refunded are set by the
# system (payments), never by hand.
FULFILMENT = frozenset({PROCESSING, SHIPPED, DELIVERED})
CUSTOMER_SERVICE = frozenset({CANCELLED, RETURNED})


def staff_permission(target: str):
    """The permission a staff member needs to move an order into `target`, or None if staff never may."""
    from shop.accounts.permissions import Permission

    if target in FULFILMENT:
        return Permission.ORDERS_FULFIL
    if target in CUSTOMER_SERVICE:
        return Permission.ORDERS_CANCEL
    return None


class InvalidTransition(Exception):
    def __init__(self, current: str, target: str):
        super().__init__(f"An order that is {current} cannot become {target}.")
        self.current, self.target = current, target


def check(current: str, target: str) -> None:
    """Raise InvalidTransition unless `current -> target` is a move the machine allows."""
    if target not in TRANSITIONS.get(current, frozenset()):
        raise InvalidTransition(current, target)


def can_cancel(current: str) -> bool:
    return CANCELLED in TRANSITIONS.get(current, frozenset())
