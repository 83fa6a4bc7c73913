"""Domain errors carry no HTTP: each domain raises its own kinds of refusal, with a StrEnum code, and one table at the
edge (shop.errors.HTTP_STATUS) gives their statuses and headers."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from enum import StrEnum
from pathlib import Path

import pytest

import shop
from shop import errors

SHOP = Path(shop.__file__).parent
# The HTTP edge: blueprints, the app factory and request guards may raise ApiError with a status of their own.
EDGE = {"api", "storefront", "webhooks", "__init__.py", "security.py", "errors.py", "health.py"}


def domain_modules() -> list[Path]:
    return sorted(p for p in SHOP.rglob("*.py") if p.relative_to(SHOP).parts[0] not in EDGE)


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: str(p.relative_to(SHOP)))
def test_domain_code_raises_no_http_errors(path):
    tree = ast.parse(path.read_text())
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert "ApiError" not in used, f"{path.relative_to(SHOP)} uses ApiError: raise a kind from shop.errors instead"


def all_refusals() -> list[type]:
    for info in pkgutil.walk_packages(shop.__path__, "shop."):
        if info.name.split(".")[1] not in ("devstack",):
            importlib.import_module(info.name)
    seen, todo = [], [errors.DomainError]
    while todo:
        for sub in todo.pop().__subclasses__():
            seen.append(sub)
            todo.append(sub)
    return seen


def test_every_refusal_has_a_status_in_the_one_table():
    kinds = [k for k in all_refusals() if k is not errors.ApiError and not issubclass(k, errors.ApiError)]
    assert len(kinds) > 25  # the domains' own refusals are found, not just the table's kinds
    for kind in kinds:
        assert any(base in errors.HTTP_STATUS for base in kind.__mro__), f"{kind.__qualname__} has no status"


def test_the_table_gives_statuses_and_headers_from_the_refusals_data():
    from shop.accounts.tokens import TokenError
    from shop.inventory.services import OutOfStock
    from shop.payments.services import PaymentUnavailable
    from shop.ratelimit import RateLimited

    assert errors.http_status(OutOfStock({"TEE-M": 1})) == 409
    assert errors.http_status(errors.ValidationError({"quantity": "must be at least 1"})) == 422
    unavailable = PaymentUnavailable()
    assert (errors.http_status(unavailable), errors.http_headers(unavailable)) == (503, {"Retry-After": "30"})
    assert errors.http_headers(RateLimited(20, 7, "Slow down.")) == {
        "Retry-After": "7",
        "RateLimit-Limit": "20",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "7",
    }
    token = TokenError()
    assert errors.http_status(token) == 401
    assert errors.http_headers(token) == {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def test_codes_are_string_enums_that_read_as_the_contracts_codes():
    from shop.cart.services import CartErrorCode
    from shop.promotions.rules import CouponErrorCode

    assert issubclass(CartErrorCode, StrEnum) and CartErrorCode.CLOSED == "cart_closed"
    assert f"{CouponErrorCode.EXPIRED}" == "coupon_expired"


def test_statuses_and_roles_are_defined_once():
    from shop.accounts.models import ROLES, Role
    from shop.accounts.permissions import ROLE_PERMISSIONS
    from shop.cart.models import Cart, CartStatus
    from shop.orders.models import Order
    from shop.orders.states import OrderStatus
    from shop.payments.models import Payment, PaymentStatus

    assert set(ROLE_PERMISSIONS) == set(ROLES) == set(Role)
    for enum, table in ((OrderStatus, Order), (PaymentStatus, Payment), (CartStatus, Cart)):
        [check] = [
            str(c.sqltext)
            for c in table.__table__.constraints
            if str(getattr(c, "sqltext", "")).startswith("status IN")
        ]
        assert check == f"status IN ({', '.join(repr(str(m)) for m in enum)})"
