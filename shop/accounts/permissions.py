"""The one registry of staff permissions and roles (API.md, Back-office), and the one check.

The back-office views and the admin API both ask `has_permission(user, perm)`; nothing else
decides what a role may do.
"""

from __future__ import annotations

from enum import StrEnum

from shop.accounts.models import Role


class Permission(StrEnum):
    ORDERS_VIEW = "orders.view"  # view orders (no payment details)
    ORDERS_FULFIL = "orders.fulfil"  # confirmed -> processing -> shipped -> delivered
    ORDERS_CANCEL = "orders.cancel"  # cancel orders, record returns
    PAYMENTS = "payments"  # refunds, payment details
    CUSTOMERS_PII = "customers.pii"  # customer personal data (email, phone, addresses)
    ORDER_SHIPPING_ADDRESS = "orders.shipping_address"  # the shipping address on an order
    STOCK_VIEW = "stock.view"  # stock levels, low-stock list
    STOCK_EDIT = "stock.edit"
    CATALOG_EDIT = "catalog.edit"  # products, categories, images, prices
    PROMOTIONS_VIEW = "promotions.view"
    PROMOTIONS_EDIT = "promotions.edit"
    REPORTS_VIEW = "reports.view"  # sales reports
    STAFF_MANAGE = "staff.manage"  # staff accounts and roles
    OPERATIONS_VIEW = "operations.view"  # the operations page: queues, errors, webhooks, search, slow routes


P = Permission
_ALL_STAFF = {P.ORDERS_VIEW, P.STOCK_VIEW, P.ORDER_SHIPPING_ADDRESS}

ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    Role.WAREHOUSE: frozenset(_ALL_STAFF | {P.ORDERS_FULFIL, P.STOCK_EDIT}),
    Role.SUPPORT: frozenset(_ALL_STAFF | {P.ORDERS_CANCEL, P.PAYMENTS, P.CUSTOMERS_PII}),
    Role.ANALYST: frozenset(_ALL_STAFF - {P.ORDER_SHIPPING_ADDRESS} | {P.PROMOTIONS_VIEW, P.REPORTS_VIEW}),
    Role.MANAGER: frozenset(
        _ALL_STAFF
        | {
            P.ORDERS_FULFIL,
            P.ORDERS_CANCEL,
            P.PAYMENTS,
            P.CUSTOMERS_PII,
            P.STOCK_EDIT,
            P.CATALOG_EDIT,
            P.PROMOTIONS_VIEW,
            P.PROMOTIONS_EDIT,
            P.REPORTS_VIEW,
            P.OPERATIONS_VIEW,
        }
    ),
    Role.ADMIN: frozenset(Permission),
}


def permissions_of(role: str | None) -> frozenset[Permission]:
    return ROLE_PERMISSIONS.get(role or "", frozenset())


def has_permission(user, permission: Permission) -> bool:
    """True when `user` is active staff whose role grants `permission`."""
    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return False
    return permission in permissions_of(getattr(user, "role", None))
