"""Promotions in the back-office and the admin API under API.md's role table (promotions and coupons:
analysts view, managers and admins edit): rules and their validation, shared codes, batches of
single-use codes with their CSV, the usage report, and the audit of every write."""

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from shop.accounts.permissions import Permission as P
from shop.audit.models import AuditEntry
from shop.promotions import backoffice as bo
from shop.promotions.models import Promotion, PromotionCode, Redemption
from tests.integration.test_backoffice_orders import make_order
from tests.integration.test_permissions import ROLES, TABLE, as_user, csrf_token, token_for, world  # noqa: F401

CODE = re.compile(r"^[23456789ABCDEFGHJKLMNPQRSTUVWXYZ]{10}$")


def make_promotion(db_session, name="Ten off", kind="percent", value=10, codes=("TENOFF",), **kw):
    promotion = Promotion(
        name=name, description="", kind=kind, value=value, currency="USD", applies_to={}, excludes={}, **kw
    )
    promotion.codes = [PromotionCode(code=c, usage_limit=None) for c in codes]
    db_session.add(promotion)
    db_session.flush()
    return promotion


def redeem(db_session, promotion, order, discount, status="active", at=None):
    r = Redemption(
        promotion_id=promotion.id,
        order_id=order.id,
        user_id=order.user_id,
        email=order.email.lower(),
        discount=discount,
        status=status,
    )
    if at is not None:
        r.created_at = at
    db_session.add(r)
    db_session.flush()
    return r


def api(client, method, path, user=None, body=None):
    headers = {"Authorization": f"Bearer {token_for(user)}"} if user is not None else {}
    return getattr(client, method)(
        path, data=json.dumps(body) if body is not None else None, content_type="application/json", headers=headers
    )


def form(client, **fields) -> dict:
    base = {
        "csrf_token": csrf_token(client),
        "name": "Winter",
        "description": "",
        "kind": "percent",
        "value_text": "15",
        "active": "y",
        "priority": "0",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def promotions_named(db_session, name):
    return db_session.scalars(select(Promotion).where(Promotion.name == name)).all()


# -- the back-office: who sees and who changes ------------------------------------------------------
PAGES = [
    ("/admin/promotions/", P.PROMOTIONS_VIEW),
    ("/admin/promotions/details/?id={p}", P.PROMOTIONS_VIEW),
    ("/admin/promotions/{p}/codes/", P.PROMOTIONS_VIEW),
    ("/admin/promotions/{p}/codes.csv", P.PROMOTIONS_VIEW),
    ("/admin/promotions/{p}/report/", P.PROMOTIONS_VIEW),
    ("/admin/promotion-report/", P.REPORTS_VIEW),  # promotions.view or reports.view: the same roles today
    ("/admin/promotions/new/", P.PROMOTIONS_EDIT),
    ("/admin/promotions/edit/?id={p}", P.PROMOTIONS_EDIT),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("path,permission", PAGES)
def test_back_office_pages_follow_the_table(app, db_session, world, role, path, permission):
    promotion = make_promotion(db_session)
    status = as_user(app, world["staff"][role]).get(path.format(p=promotion.id)).status_code
    assert status == (200 if role in TABLE[permission] else 403), f"{role} {path}"


def test_promotions_are_for_staff_only(app, db_session, world):
    assert app.test_client().get("/admin/promotions/").status_code == 302
    assert as_user(app, world["customer"]).get("/admin/promotions/").status_code == 403


@pytest.mark.parametrize("role", ROLES)
def test_create_in_the_back_office_follows_the_table(app, db_session, world, role):
    client = as_user(app, world["staff"][role])
    variant = world["variant"]
    category_id = world["product"].category_id
    resp = client.post(
        "/admin/promotions/new/",
        data=form(
            client,
            starts_at="2026-12-01 09:00:00",
            ends_at="2026-12-24 18:00:00",
            min_subtotal="50.00",
            usage_limit="100",
            per_customer_limit="1",
            priority="5",
            first_order_only="y",
            applies_categories=str(category_id),
            excludes_variants=variant.sku,
            code_list="WINTER15\nsnow-15",
        ),
    )
    made = promotions_named(db_session, "Winter")
    if role not in TABLE[P.PROMOTIONS_EDIT]:
        assert resp.status_code == 403 and made == []
        return
    assert resp.status_code == 302, resp.get_data(as_text=True)
    [p] = made
    assert (p.kind, p.value, p.currency, p.min_subtotal, p.usage_limit, p.per_customer_limit, p.priority) == (
        "percent",
        15,
        "USD",
        5000,
        100,
        1,
        5,
    )
    assert p.first_order_only and not p.stackable and not p.automatic and p.active
    assert p.starts_at == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert p.ends_at == datetime(2026, 12, 24, 18, tzinfo=UTC)
    assert p.applies_to == {"categories": [category_id]} and p.excludes == {"variants": [variant.id]}
    assert sorted((c.code, c.usage_limit) for c in p.codes) == [("WINTER15", None), ("snow-15", None)]
    entries = db_session.scalars(select(AuditEntry).where(AuditEntry.channel == "back-office")).all()
    assert {(e.entity_type, e.action) for e in entries} >= {("Promotion", "create"), ("PromotionCode", "create")}
    assert {e.actor_email for e in entries} == {f"{role}@example.com"}


@pytest.mark.parametrize("role", ROLES)
def test_edit_in_the_back_office_follows_the_table(app, db_session, world, role):
    promotion = make_promotion(db_session, codes=("OLDCODE", "KEEPME"))
    client = as_user(app, world["staff"][role])
    resp = client.post(
        f"/admin/promotions/edit/?id={promotion.id}",
        data=form(client, name="Ten off", kind="fixed", value_text="7.50", code_list="keepme\nNEWCODE", stackable="y"),
    )
    db_session.expire_all()
    promotion = db_session.get(Promotion, promotion.id)
    codes = sorted(c.code for c in promotion.codes)
    if role not in TABLE[P.PROMOTIONS_EDIT]:
        assert resp.status_code == 403
        assert (promotion.kind, promotion.value, codes) == ("percent", 10, ["KEEPME", "OLDCODE"])
        return
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert (promotion.kind, promotion.value, promotion.stackable) == ("fixed", 750, True)
    assert codes == ["KEEPME", "NEWCODE"]  # kept as first typed; removed; added
    changes = {(e.entity_type, e.action) for e in db_session.scalars(select(AuditEntry))}
    assert {("Promotion", "update"), ("PromotionCode", "delete"), ("PromotionCode", "create")} <= changes


def test_the_edit_form_shows_the_rule_as_typed(app, db_session, world):
    promotion = make_promotion(db_session, kind="fixed", value=1250, codes=("SHOWME",))
    promotion.excludes = {"variants": [world["variant"].id]}
    db_session.flush()
    html = (
        as_user(app, world["staff"]["manager"]).get(f"/admin/promotions/edit/?id={promotion.id}").get_data(as_text=True)
    )
    assert 'value="12.50"' in html and "SHOWME" in html and world["variant"].sku in html


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"kind": "percent", "value_text": "0"}, "from 1 to 100"),
        ({"kind": "percent", "value_text": "101"}, "from 1 to 100"),
        ({"kind": "percent", "value_text": "12.5"}, "from 1 to 100"),
        ({"kind": "fixed", "value_text": "0"}, "more than 0"),
        ({"kind": "fixed", "value_text": "abc"}, "like 5.00"),
        ({"kind": "fixed", "value_text": "1.234"}, "like 5.00"),
        ({"kind": "free_shipping", "value_text": "5"}, "no value"),
        ({"starts_at": "2026-12-02 00:00:00", "ends_at": "2026-12-01 00:00:00"}, "end must be after"),
        ({"usage_limit": "0"}, "Number must be"),
        ({"applies_variants": "NO-SUCH-SKU"}, "No variants with the SKUs NO-SUCH-SKU"),
        ({"code_list": "TENOFF"}, "exists already"),
        ({"code_list": "tenoff"}, "exists already"),
        ({"code_list": "ABC DEF abc"}, "listed twice"),
        ({"code_list": "bad!code"}, "letters, digits"),
        ({"automatic": "y", "code_list": "FLASHCODE"}, "without a code"),
    ],
)
def test_back_office_validation_refuses_bad_rules(app, db_session, world, fields, message):
    make_promotion(db_session)  # owns TENOFF
    client = as_user(app, world["staff"]["manager"])
    resp = client.post("/admin/promotions/new/", data=form(client, name="Bad one", **fields))
    assert resp.status_code == 200  # the form again, with the message
    assert message in resp.get_data(as_text=True)
    assert promotions_named(db_session, "Bad one") == []


def test_a_flash_sale_is_an_automatic_promotion_without_codes(app, db_session, world):
    client = as_user(app, world["staff"]["manager"])
    resp = client.post(
        "/admin/promotions/new/",
        data=form(
            client,
            name="Flash",
            automatic="y",
            value_text="30",
            starts_at="2026-12-05 10:00:00",
            ends_at="2026-12-05 14:00:00",
            applies_products=str(world["product"].id),
        ),
    )
    assert resp.status_code == 302
    [p] = promotions_named(db_session, "Flash")
    assert p.automatic and p.codes == [] and p.applies_to == {"products": [world["product"].id]}


def test_a_promotion_in_use_is_not_deleted_but_an_unused_one_goes_with_its_codes(app, db_session, world):
    used, unused = make_promotion(db_session, name="Used"), make_promotion(db_session, name="Unused", codes=("GONE",))
    bo.generate_codes(unused.id, 50)
    redeem(db_session, used, make_order(db_session, world), 500)
    client = as_user(app, world["staff"]["manager"])
    token = csrf_token(client)
    used_id, unused_id = used.id, unused.id
    refused = client.post("/admin/promotions/delete/", data={"csrf_token": token, "id": used_id}, follow_redirects=True)
    assert "switch it off" in refused.get_data(as_text=True)
    assert client.post("/admin/promotions/delete/", data={"csrf_token": token, "id": unused_id}).status_code == 302
    db_session.expunge_all()
    assert db_session.scalars(select(Promotion.id).where(Promotion.id.in_([used_id, unused_id]))).all() == [used_id]
    assert (
        db_session.scalar(
            select(func.count()).select_from(PromotionCode).where(PromotionCode.promotion_id == unused_id)
        )
        == 0
    )
    assert (
        db_session.scalar(
            select(AuditEntry).where(AuditEntry.entity_type == "PromotionCodeBatch", AuditEntry.action == "delete")
        ).after["deleted"]
        == 51
    )


# -- single-use codes ---------------------------------------------------------------------------
def _csv_rows(resp):
    return list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))


@pytest.mark.parametrize("role", ROLES)
def test_generating_codes_follows_the_table(app, db_session, world, role):
    promotion = make_promotion(db_session)
    client = as_user(app, world["staff"][role])
    resp = client.post(
        f"/admin/promotions/{promotion.id}/codes/generate", data={"csrf_token": csrf_token(client), "count": "5"}
    )
    n = db_session.scalar(select(func.count()).select_from(PromotionCode).where(PromotionCode.usage_limit == 1))
    if role in TABLE[P.PROMOTIONS_EDIT]:
        assert resp.status_code == 302 and n == 5
    else:
        assert resp.status_code == 403 and n == 0


def test_a_batch_is_n_unique_single_use_codes_and_its_csv_lists_them(app, db_session, world):
    promotion = make_promotion(db_session)
    client = as_user(app, world["staff"]["manager"])
    resp = client.post(
        f"/admin/promotions/{promotion.id}/codes/generate",
        data={"csrf_token": csrf_token(client), "count": "10000"},
        follow_redirects=True,
    )
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert "Generated 10000 single-use codes" in page
    csv_url = re.search(r'href="([^"]*codes\.csv\?batch=[^"]+)"', page).group(1).replace("&amp;", "&")
    codes = db_session.scalars(
        select(PromotionCode).where(PromotionCode.promotion_id == promotion.id, PromotionCode.usage_limit == 1)
    ).all()
    assert len(codes) == 10000 and len({c.code.upper() for c in codes}) == 10000
    assert all(CODE.match(c.code) for c in codes)
    download = client.get(csv_url)
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert "attachment" in download.headers["Content-Disposition"]
    rows = _csv_rows(download)
    assert sorted(r["code"] for r in rows) == sorted(c.code for c in codes)
    assert {r["used"] for r in rows} == {"no"}
    [entry] = db_session.scalars(select(AuditEntry).where(AuditEntry.entity_type == "PromotionCodeBatch")).all()
    assert (entry.action, entry.actor_email, entry.channel, entry.after["count"]) == (
        "create",
        "manager@example.com",
        "back-office",
        10000,
    )


def test_batches_are_downloaded_apart_and_used_codes_are_marked(app, db_session, world):
    promotion = make_promotion(db_session)
    first_at, first = bo.generate_codes(promotion.id, 3)
    _, second = bo.generate_codes(promotion.id, 4, prefix="XMAS-")
    assert all(c.startswith("XMAS-") and CODE.match(c[5:]) for c in second)
    used = db_session.scalar(select(PromotionCode).where(PromotionCode.code == first[0]))
    r = redeem(db_session, promotion, make_order(db_session, world), 100)
    r.code_id = used.id
    db_session.flush()
    client = as_user(app, world["staff"]["analyst"])  # analysts view codes too
    rows = _csv_rows(
        client.get(f"/admin/promotions/{promotion.id}/codes.csv", query_string={"batch": first_at.isoformat()})
    )
    assert sorted(r["code"] for r in rows) == sorted(first)
    assert {r["code"]: r["used"] for r in rows}[first[0]] == "yes"
    assert len(_csv_rows(client.get(f"/admin/promotions/{promotion.id}/codes.csv"))) == 7
    page = client.get(f"/admin/promotions/{promotion.id}/codes/").get_data(as_text=True)
    assert "Generate single-use codes" not in page  # no form for a role that may not edit


def test_code_collisions_are_drawn_again(db_session, monkeypatch):
    promotion = make_promotion(db_session, codes=("TAKEN23456",))
    draws = iter(["taken23456", "NEWCODE234", "taken23456", "NEWCODE235"])
    monkeypatch.setattr(bo, "_random_code", lambda length: next(draws))
    _, codes = bo.generate_codes(promotion.id, 2)
    assert sorted(codes) == ["NEWCODE234", "NEWCODE235"]


@pytest.mark.parametrize("count", ["0", "10001", "", "many"])
def test_batch_sizes_outside_1_to_10000_are_refused(app, db_session, world, count):
    promotion = make_promotion(db_session)
    client = as_user(app, world["staff"]["manager"])
    resp = client.post(
        f"/admin/promotions/{promotion.id}/codes/generate",
        data={"csrf_token": csrf_token(client), "count": count},
        follow_redirects=True,
    )
    assert resp.status_code == 200
    assert db_session.scalar(select(func.count()).select_from(PromotionCode).where(PromotionCode.usage_limit == 1)) == 0


def test_generating_without_a_csrf_token_is_refused(app, db_session, world):
    promotion = make_promotion(db_session)
    resp = as_user(app, world["staff"]["manager"]).post(
        f"/admin/promotions/{promotion.id}/codes/generate", data={"count": "5"}
    )
    assert resp.status_code == 400


# -- the usage report ---------------------------------------------------------------------------
@pytest.fixture
def usage(db_session, world):
    """Two promotions and the orders using them: confirmed, pending, cancelled (released), delivered."""
    a = make_promotion(db_session, name="Alpha", codes=("ALPHA",))
    b = make_promotion(db_session, name="Beta", kind="fixed", value=1000, codes=("BETA",))
    idle = make_promotion(db_session, name="Idle", codes=("IDLE",))
    redeem(db_session, a, make_order(db_session, world, total=5000), 500)
    redeem(db_session, a, make_order(db_session, world, status="pending", paid=False, total=3000), 300)
    redeem(db_session, a, make_order(db_session, world, status="cancelled", total=4000), 400, status="released")
    redeem(
        db_session,
        b,
        make_order(db_session, world, status="delivered", total=10000),
        1000,
        at=datetime.now(UTC) - timedelta(days=40),
    )
    return {"a": a, "b": b, "idle": idle}


def test_the_usage_report_sums_redemptions_discounts_and_revenue(client, db_session, world, usage):
    resp = api(client, "get", "/api/v1/admin/reports/promotions", world["staff"]["analyst"])
    assert resp.status_code == 200
    body = resp.get_json()
    items = {i["name"]: i for i in body["items"]}
    usd = lambda n: {"amount": n, "currency": "USD"}  # noqa: E731
    assert (items["Alpha"]["redemptions"], items["Alpha"]["released"], items["Alpha"]["orders"]) == (2, 1, 1)
    assert items["Alpha"]["discount"] == usd(800) and items["Alpha"]["revenue"] == usd(5000)
    assert (items["Beta"]["redemptions"], items["Beta"]["discount"], items["Beta"]["revenue"]) == (
        1,
        usd(1000),
        usd(10000),
    )
    assert (items["Idle"]["redemptions"], items["Idle"]["discount"], items["Idle"]["revenue"]) == (0, usd(0), usd(0))
    assert body["totals"] == [{"currency": "USD", "redemptions": 3, "discount": usd(1800), "revenue": usd(15000)}]
    one = api(
        client, "get", f"/api/v1/admin/reports/promotions?promotion_id={usage['b'].id}", world["staff"]["manager"]
    ).get_json()
    assert [i["name"] for i in one["items"]] == ["Beta"]
    today = datetime.now(UTC).date()
    recent = api(
        client,
        "get",
        f"/api/v1/admin/reports/promotions?from={today - timedelta(days=7)}&to={today}",
        world["staff"]["manager"],
    ).get_json()
    assert recent["totals"][0]["redemptions"] == 2 and recent["totals"][0]["revenue"] == usd(5000)


def test_the_usage_report_pages_show_the_same_figures(app, db_session, world, usage):
    client = as_user(app, world["staff"]["analyst"])
    page = client.get("/admin/promotion-report/").get_data(as_text=True)
    row = re.search(rf'<tr data-promotion="{usage["a"].id}">(.*?)</tr>', page, re.S).group(1)
    cells = dict(re.findall(r'data-col="(\w+)">([^<]*)<', row))
    assert cells == {"redemptions": "2", "released": "1", "discount": "$8.00", "revenue": "$50.00", "refunded": "$0.00"}
    assert re.search(r'data-total="USD">.*?\$18\.00.*?\$150\.00', page, re.S)
    one = client.get(f"/admin/promotions/{usage['b'].id}/report/").get_data(as_text=True)
    assert "$100.00" in one and f'data-promotion="{usage["a"].id}"' not in one


@pytest.mark.parametrize(
    "query", ["from=2026-13-01", "to=yesterday", "from=2026-02-01&to=2026-01-01", "promotion_id=abc"]
)
def test_report_query_errors_are_422(client, world, query):
    assert api(client, "get", f"/api/v1/admin/reports/promotions?{query}", world["staff"]["manager"]).status_code == 422


def test_report_of_a_missing_promotion_is_404(client, world):
    assert (
        api(
            client, "get", "/api/v1/admin/reports/promotions?promotion_id=999999", world["staff"]["manager"]
        ).status_code
        == 404
    )


# -- the admin API --------------------------------------------------------------------------------
COUPON = {
    "code": "SAVE10",
    "kind": "percent",
    "value": 10,
    "starts_at": "2026-12-01T00:00:00Z",
    "ends_at": "2026-12-31T23:59:59+01:00",
    "min_subtotal": 2000,
    "usage_limit": 100,
    "per_customer_limit": 1,
}


def api_calls():
    return [
        ("post", "/api/v1/admin/coupons", COUPON, (P.PROMOTIONS_EDIT,), 201),
        ("get", "/api/v1/admin/coupons", None, (P.PROMOTIONS_VIEW,), 200),
        ("get", "/api/v1/admin/reports/promotions", None, (P.PROMOTIONS_VIEW, P.REPORTS_VIEW), 200),
    ]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("call", range(3))
def test_admin_api_follows_the_table(client, db_session, world, role, call):
    method, path, body, permissions, ok = api_calls()[call]
    resp = api(client, method, path, world["staff"][role], body)
    if any(role in TABLE[p] for p in permissions):
        assert resp.status_code == ok, resp.get_json()
    else:
        assert resp.status_code == 403
        assert resp.get_json()["error"]["code"] == "forbidden"
        assert resp.get_json()["error"]["details"]["permission"] == permissions[0].value
    assert api(client, method, path, None, body).status_code == 401
    assert api(client, method, path, world["customer"], body).status_code == 403


def test_creating_a_coupon_answers_the_promotion_and_audits_it(client, db_session, world):
    cat, product, variant = world["product"].category_id, world["product"].id, world["variant"].id
    body = {
        **COUPON,
        "applies_to": {"categories": [cat], "products": [product, product]},
        "excludes": {"variants": [variant]},
        "stackable": True,
        "priority": 3,
    }
    resp = api(client, "post", "/api/v1/admin/coupons", world["staff"]["manager"], body)
    assert resp.status_code == 201, resp.get_json()
    got = resp.get_json()
    assert (got["kind"], got["value"], got["codes"], got["usage_limit"], got["per_customer_limit"]) == (
        "percent",
        10,
        ["SAVE10"],
        100,
        1,
    )
    assert got["name"] == "SAVE10" and got["automatic"] is False and got["stackable"] is True
    assert got["min_subtotal"] == {"amount": 2000, "currency": "USD"}
    assert got["starts_at"] == "2026-12-01T00:00:00+00:00"
    assert datetime.fromisoformat(got["ends_at"]) == datetime(2026, 12, 31, 22, 59, 59, tzinfo=UTC)
    assert got["applies_to"] == {"categories": [cat], "products": [product]}
    assert got["excludes"] == {"variants": [variant]}
    promotion = db_session.get(Promotion, got["id"])
    assert [(c.code, c.usage_limit) for c in promotion.codes] == [("SAVE10", None)]
    entries = db_session.scalars(select(AuditEntry).where(AuditEntry.channel == "api")).all()
    assert {(e.entity_type, e.action, e.actor_email) for e in entries} == {
        ("Promotion", "create", "manager@example.com"),
        ("PromotionCode", "create", "manager@example.com"),
    }
    listed = api(client, "get", "/api/v1/admin/coupons?code=save10", world["staff"]["analyst"]).get_json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == got["id"]


@pytest.mark.parametrize(
    "body",
    [
        {"code": "FIXED5", "kind": "fixed", "value": 500},
        {"code": "FIXEDM", "kind": "fixed", "value": {"amount": 750, "currency": "USD"}},
        {"code": "SHIPFREE", "kind": "free_shipping"},
        {"code": "PCT100", "kind": "percent", "value": 100, "min_subtotal": {"amount": 0, "currency": "USD"}},
    ],
)
def test_every_kind_can_be_created(client, db_session, world, body):
    resp = api(client, "post", "/api/v1/admin/coupons", world["staff"]["admin"], body)
    assert resp.status_code == 201, resp.get_json()


@pytest.mark.parametrize(
    "change,field",
    [
        ({"kind": "bogus"}, "kind"),
        ({"kind": None}, "kind"),
        ({"value": 0}, "value"),
        ({"value": 101}, "value"),
        ({"value": "10"}, "value"),
        ({"value": 10.5}, "value"),
        ({"value": None}, "value"),
        ({"kind": "fixed", "value": 0}, "value"),
        ({"kind": "fixed", "value": -100}, "value"),
        ({"kind": "fixed", "value": {"amount": 500, "currency": "EUR"}}, "value"),
        ({"kind": "free_shipping", "value": 5}, "value"),
        ({"code": "x"}, "code"),
        ({"code": "NO SPACES"}, "code"),
        ({"code": 12345}, "code"),
        ({"starts_at": "tomorrow"}, "starts_at"),
        ({"ends_at": "2026-02-30T00:00:00"}, "ends_at"),
        ({"starts_at": 1700000000}, "starts_at"),
        ({"starts_at": "2026-12-31T00:00:00Z", "ends_at": "2026-12-01T00:00:00Z"}, "ends_at"),
        ({"min_subtotal": -1}, "min_subtotal"),
        ({"usage_limit": 0}, "usage_limit"),
        ({"per_customer_limit": True}, "per_customer_limit"),
        ({"applies_to": [1, 2]}, "applies_to"),
        ({"applies_to": {"brands": [1]}}, "applies_to"),
        ({"applies_to": {"products": "1"}}, "applies_to"),
        ({"applies_to": {"products": [True]}}, "applies_to"),
        ({"applies_to": {"variants": [999999]}}, "applies_to"),
        ({"excludes": {"categories": [999999]}}, "excludes"),
        ({"stackable": "yes"}, "stackable"),
        ({"name": ""}, "name"),
    ],
)
def test_coupon_field_errors_are_422(client, db_session, world, change, field):
    resp = api(client, "post", "/api/v1/admin/coupons", world["staff"]["manager"], {**COUPON, **change})
    assert resp.status_code == 422, resp.get_json()
    assert field in resp.get_json()["error"]["details"]["fields"]
    assert db_session.scalar(select(func.count()).select_from(Promotion)) == 0


def test_a_body_that_is_not_an_object_is_400(client, world):
    resp = client.post(
        "/api/v1/admin/coupons",
        data="[1]",
        content_type="application/json",
        headers={"Authorization": f"Bearer {token_for(world['staff']['manager'])}"},
    )
    assert resp.status_code == 400


@pytest.mark.parametrize("existing", ["SAVE10", "save10", "Save10"])
def test_a_code_that_exists_in_any_case_is_409(client, db_session, world, existing):
    make_promotion(db_session, codes=(existing,))
    resp = api(client, "post", "/api/v1/admin/coupons", world["staff"]["manager"], COUPON)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "code_taken"
    assert db_session.scalar(select(func.count()).select_from(Promotion)) == 1


def test_a_generated_single_use_code_is_taken_too(client, db_session, world):
    promotion = make_promotion(db_session)
    _, [code] = bo.generate_codes(promotion.id, 1)
    resp = api(client, "post", "/api/v1/admin/coupons", world["staff"]["manager"], {**COUPON, "code": code.lower()})
    assert resp.status_code == 409


def test_the_coupon_list_pages_and_counts_single_use_codes(client, db_session, world):
    for i in range(3):
        make_promotion(db_session, name=f"P{i}", codes=(f"PCODE{i}",))
    last = db_session.scalars(select(Promotion).order_by(Promotion.id.desc())).first()
    bo.generate_codes(last.id, 12)
    first = api(client, "get", "/api/v1/admin/coupons?per_page=2", world["staff"]["analyst"]).get_json()
    assert first["total"] == 3 and [i["name"] for i in first["items"]] == ["P2", "P1"]
    assert first["items"][0]["single_use_codes"] == 12 and first["items"][0]["codes"] == ["PCODE2"]
    assert api(client, "get", "/api/v1/admin/coupons?per_page=500", world["staff"]["analyst"]).status_code == 422
