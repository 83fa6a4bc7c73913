"""Every cell of API.md's role table, in the registry, the back-office and the admin API alike."""

import json
import re

import pytest

from shop.accounts.permissions import Permission as P
from shop.accounts.permissions import has_permission, permissions_of
from tests.factories import make_category, make_product, make_user

ROLES = ("warehouse", "support", "analyst", "manager", "admin")
ALL = set(ROLES)

# API.md, Back-office: who may do what. A role outside a row gets 403.
TABLE = {
    P.ORDERS_VIEW: ALL,
    P.ORDERS_FULFIL: {"warehouse", "manager", "admin"},
    P.ORDERS_CANCEL: {"support", "manager", "admin"},
    P.PAYMENTS: {"support", "manager", "admin"},
    P.CUSTOMERS_PII: {"support", "manager", "admin"},
    P.ORDER_SHIPPING_ADDRESS: {"warehouse", "support", "manager", "admin"},
    P.STOCK_VIEW: ALL,
    P.STOCK_EDIT: {"warehouse", "manager", "admin"},
    P.CATALOG_EDIT: {"manager", "admin"},
    P.PROMOTIONS_VIEW: {"analyst", "manager", "admin"},
    P.PROMOTIONS_EDIT: {"manager", "admin"},
    P.REPORTS_VIEW: {"analyst", "manager", "admin"},
    P.STAFF_MANAGE: {"admin"},
    P.OPERATIONS_VIEW: {"manager", "admin"},
}


def test_the_table_names_every_permission():
    assert set(TABLE) == set(P)


@pytest.mark.parametrize("permission,role", [(p, r) for p in P for r in ROLES])
def test_registry_matches_every_cell(permission, role):
    assert (permission in permissions_of(role)) == (role in TABLE[permission])


def test_shoppers_anonymous_and_deactivated_staff_have_no_permission(db_session):
    from flask_login import AnonymousUserMixin

    shopper = make_user()
    gone = make_user(role="admin")
    gone.is_active_account = False
    for perm in P:
        assert not has_permission(shopper, perm)
        assert not has_permission(AnonymousUserMixin(), perm)
        assert not has_permission(gone, perm)


# -- the back-office ------------------------------------------------------------------------------
@pytest.fixture
def world(db_session, redis_client):
    cat = make_category("Tops", slug="tops")
    product = make_product(cat, "Tee", slug="tee", stock=10)
    customer = make_user("shopper@example.com")
    staff = {role: make_user(f"{role}@example.com", role=role) for role in ROLES}
    return {"product": product, "variant": product.variants[0], "customer": customer, "staff": staff}


def as_user(app, user):
    """A client logged in as `user`, as the log-in form leaves it (session clocks included)."""
    from shop.accounts.sessions import stamp

    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = user.get_id()
        session["_fresh"] = True
        stamp(session)
    return client


def csrf_token(client) -> str:
    html = client.get("/admin/").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


UI_PAGES = [  # (path, permission needed) -- {variant}/{customer} filled in per test
    ("/admin/", None),
    ("/admin/products/", P.CATALOG_EDIT),
    ("/admin/products/new/", P.CATALOG_EDIT),
    ("/admin/categories/", P.CATALOG_EDIT),
    ("/admin/images/", P.CATALOG_EDIT),
    ("/admin/images/new/", P.CATALOG_EDIT),
    ("/admin/stock/", P.STOCK_VIEW),
    ("/admin/stock/edit/?id={variant}", P.STOCK_EDIT),
    ("/admin/low-stock/", P.STOCK_VIEW),
    ("/admin/customers/", P.CUSTOMERS_PII),
    ("/admin/customers/details/?id={customer}", P.CUSTOMERS_PII),
    ("/admin/staff/", P.STAFF_MANAGE),
    ("/admin/staff/new/", P.STAFF_MANAGE),
    ("/admin/audit/", P.STAFF_MANAGE),
    ("/admin/operations/", P.OPERATIONS_VIEW),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("path,permission", UI_PAGES)
def test_back_office_pages_follow_the_table(app, world, role, path, permission):
    client = as_user(app, world["staff"][role])
    url = path.format(variant=world["variant"].id, customer=world["customer"].id)
    status = client.get(url).status_code
    allowed = permission is None or role in TABLE[permission]
    assert status == (200 if allowed else 403), f"{role} {url}"


@pytest.mark.parametrize("path", ["/admin/", "/admin/products/", "/admin/stock/", "/admin/staff/"])
def test_back_office_is_for_staff_only(app, world, path):
    anonymous = app.test_client().get(path)
    assert anonymous.status_code == 302 and "/admin/login" in anonymous.headers["Location"]
    assert as_user(app, world["customer"]).get(path).status_code == 403


@pytest.mark.parametrize("role", ROLES)
def test_stock_edit_in_the_back_office_follows_the_table(app, world, db_session, role):
    client = as_user(app, world["staff"][role])
    variant = world["variant"]
    resp = client.post(f"/admin/stock/edit/?id={variant.id}", data={"csrf_token": csrf_token(client), "on_hand": "4"})
    db_session.refresh(variant)
    if role in TABLE[P.STOCK_EDIT]:
        assert resp.status_code == 302 and variant.on_hand == 4
    else:
        assert resp.status_code == 403 and variant.on_hand == 10


@pytest.mark.parametrize("role", ROLES)
def test_upload_signing_in_the_back_office_follows_the_table(app, world, role):
    client = as_user(app, world["staff"][role])
    resp = client.post(
        "/admin/uploads/sign",
        json={"filename": "a.png", "content_type": "image/png"},
        headers={"X-CSRFToken": csrf_token(client)},
    )
    assert resp.status_code == (201 if role in TABLE[P.CATALOG_EDIT] else 403)


def test_back_office_forms_without_a_csrf_token_are_refused(app, world, db_session):
    client = as_user(app, world["staff"]["manager"])
    resp = client.post(f"/admin/stock/edit/?id={world['variant'].id}", data={"on_hand": "1"})
    assert resp.status_code == 400
    db_session.refresh(world["variant"])
    assert world["variant"].on_hand == 10


# -- the admin API --------------------------------------------------------------------------------
def api_calls(world):
    product_body = {
        "category": "tops",
        "name": "New Thing",
        "status": "active",
        "options": [{"name": "size", "values": ["S", "M"]}],
        "variants": [
            {"sku": "NEW-S", "options": {"size": "S"}, "price": {"amount": 1000, "currency": "USD"}},
            {"sku": "NEW-M", "options": {"size": "M"}, "price": 1200, "on_hand": 2},
        ],
    }
    return [
        ("post", "/api/v1/admin/products", product_body, P.CATALOG_EDIT, 201),
        ("put", f"/api/v1/admin/variants/{world['variant'].id}/stock", {"on_hand": 7}, P.STOCK_EDIT, 200),
        ("get", "/api/v1/admin/stock/low", None, P.STOCK_VIEW, 200),
        ("post", "/api/v1/admin/uploads", {"filename": "a.jpg", "content_type": "image/jpeg"}, P.CATALOG_EDIT, 201),
        ("get", f"/api/v1/admin/customers/{world['customer'].id}", None, P.CUSTOMERS_PII, 200),
    ]


def token_for(user) -> str:
    from shop.accounts.tokens import issue_pair

    return issue_pair(user)["access_token"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("call", range(5))
def test_admin_api_follows_the_table(app, client, world, role, call):
    method, path, body, permission, ok_status = api_calls(world)[call]
    headers = {"Authorization": f"Bearer {token_for(world['staff'][role])}"}
    resp = getattr(client, method)(
        path, data=json.dumps(body) if body else None, content_type="application/json", headers=headers
    )
    if role in TABLE[permission]:
        assert resp.status_code == ok_status, resp.get_json()
    else:
        assert resp.status_code == 403
        assert resp.get_json()["error"] == {
            "code": "forbidden",
            "message": "Your role does not allow this.",
            "details": {"permission": permission.value},
        }


@pytest.mark.parametrize("call", range(5))
def test_admin_api_refuses_shoppers_and_anonymous(client, world, call):
    method, path, body, _, _ = api_calls(world)[call]
    anonymous = getattr(client, method)(path, data=json.dumps(body) if body else None, content_type="application/json")
    assert anonymous.status_code == 401
    shopper = getattr(client, method)(
        path,
        data=json.dumps(body) if body else None,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token_for(world['customer'])}"},
    )
    assert shopper.status_code == 403
