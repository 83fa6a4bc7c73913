"""The admin API's order endpoints under the role table: listing, moves, refunds, sales reports."""

import json
import uuid

import pytest

from shop.accounts.permissions import Permission as P
from tests.integration.test_backoffice_orders import make_order
from tests.integration.test_permissions import ROLES, TABLE, token_for, world  # noqa: F401 - fixture
from tests.integration.test_sales_read_model import project


def call(client, method, path, user, body=None, **headers):
    return getattr(client, method)(
        path,
        data=json.dumps(body) if body is not None else None,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token_for(user)}", **headers},
    )


@pytest.mark.parametrize("role", ROLES)
def test_order_list_hides_what_the_role_may_not_see(client, db_session, world, role):
    order = make_order(db_session, world)
    resp = call(client, "get", "/api/v1/admin/orders", world["staff"][role])
    assert resp.status_code == 200
    [item] = [o for o in resp.get_json()["items"] if o["id"] == order.id]
    assert (item["email"] is not None) == (role in TABLE[P.CUSTOMERS_PII])
    assert (item["shipping_address"] is not None) == (role in TABLE[P.ORDER_SHIPPING_ADDRESS])
    assert ("payments" in item) == (role in TABLE[P.PAYMENTS])
    if item["shipping_address"] and role not in TABLE[P.CUSTOMERS_PII]:
        assert "phone" not in item["shipping_address"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("target,permission", [("processing", P.ORDERS_FULFIL), ("cancelled", P.ORDERS_CANCEL)])
def test_moves_follow_the_table(client, db_session, world, role, target, permission):
    order = make_order(db_session, world)
    resp = call(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/transition",
        world["staff"][role],
        {"status": target, "note": "by the book"},
    )
    db_session.refresh(order)
    if role in TABLE[permission]:
        assert resp.status_code == 200 and order.status == target
        assert resp.get_json()["events"][-1]["actor"] == f"{role}@example.com"
    else:
        assert resp.status_code == 403 and order.status == "confirmed"


def test_moves_the_machine_refuses_are_409_and_system_moves_are_422(client, db_session, world):
    order = make_order(db_session, world)
    manager = world["staff"]["manager"]
    bad = call(client, "post", f"/api/v1/admin/orders/{order.id}/transition", manager, {"status": "delivered"})
    assert bad.status_code == 409 and bad.get_json()["error"]["code"] == "invalid_transition"
    assert (
        call(
            client, "post", f"/api/v1/admin/orders/{order.id}/transition", manager, {"status": "confirmed"}
        ).status_code
        == 422
    )
    assert (
        call(client, "post", "/api/v1/admin/orders/999999/transition", manager, {"status": "processing"}).status_code
        == 404
    )


@pytest.mark.parametrize("role", ROLES)
def test_refunds_follow_the_table_and_replay_by_key(client, db_session, world, role):
    order = make_order(db_session, world)
    key = str(uuid.uuid4())
    resp = call(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/refunds",
        world["staff"][role],
        {"amount": 500, "reason": "scuffed"},
        **{"Idempotency-Key": key},
    )
    if role not in TABLE[P.PAYMENTS]:
        assert resp.status_code == 403
        return
    assert resp.status_code == 201 and resp.get_json()["refunded_total"]["amount"] == 500
    again = call(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/refunds",
        world["staff"][role],
        {"amount": 500, "reason": "scuffed"},
        **{"Idempotency-Key": key},
    )
    assert again.status_code == 201 and again.get_json() == resp.get_json()
    too_much = call(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/refunds",
        world["staff"][role],
        {"amount": 10**7},
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert too_much.status_code == 422


@pytest.mark.parametrize("role", ROLES)
def test_sales_report_follows_the_table(client, db_session, world, role):
    paid = make_order(db_session, world, total=5500)
    unpaid = make_order(db_session, world, status="pending", paid=False, total=999)
    project(paid, unpaid)  # the report reads the sales read model, fed by the orders' events
    resp = call(client, "get", "/api/v1/admin/reports/sales", world["staff"][role])
    if role not in TABLE[P.REPORTS_VIEW]:
        assert resp.status_code == 403
        return
    [usd] = resp.get_json()["totals"]
    assert usd["orders"] == 1 and usd["revenue"] == {"amount": 5500, "currency": "USD"}
    assert call(client, "get", "/api/v1/admin/reports/sales?from=2026-13-01", world["staff"][role]).status_code == 422
