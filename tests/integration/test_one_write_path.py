"""One write path per rule: the back-office writes through the services the API uses, so a form can never skip a
lock or a bound the API enforces (stock through inventory.set_on_hand)."""

from __future__ import annotations

import re
import threading
import time

import psycopg
import pytest

from tests.conftest import config_for
from tests.factories import make_category, make_product, make_user
from tests.integration.test_buying_api import bearer, send
from tests.integration.test_permissions import as_user, csrf_token, world  # noqa: F401 - fixture


def stock_form(client, variant_id, **fields):
    return client.post(
        f"/admin/stock/edit/?id={variant_id}",
        data={"csrf_token": csrf_token(client), "low_stock_threshold": "", **fields},
    )


@pytest.mark.parametrize(
    "fields,problem",
    [
        ({"on_hand": "10000001"}, "Stock on hand must be a whole number from 0 to 10,000,000."),
        ({"on_hand": "-1"}, "Stock on hand must be a whole number from 0 to 10,000,000."),
        (
            {"on_hand": "5", "low_stock_threshold": "1000001"},
            "The low-stock threshold must be a whole number from 0 to 1,000,000, or empty.",
        ),
    ],
)
def test_the_back_office_stock_form_keeps_the_apis_bounds(app, db_session, world, fields, problem):
    variant = world["variant"]
    before = (variant.on_hand, variant.low_stock_threshold)
    resp = stock_form(as_user(app, world["staff"]["warehouse"]), variant.id, **fields)
    assert resp.status_code == 200  # the form again, saying why
    assert problem in resp.get_data(as_text=True)
    db_session.expire_all()
    assert (variant.on_hand, variant.low_stock_threshold) == before
    # the API says the same of the same number
    if "on_hand" in fields and fields.get("low_stock_threshold", "") == "":
        api = send(
            app.test_client(),
            "put",
            f"/api/v1/admin/variants/{variant.id}/stock",
            {"on_hand": int(fields["on_hand"])},
            **bearer(world["staff"]["warehouse"]),
        )
        assert api.status_code == 422
        assert "Stock on hand " + api.get_json()["error"]["details"]["fields"]["on_hand"] + "." == problem


def test_a_stock_count_in_the_back_office_saves_the_count_and_the_threshold(app, db_session, world):
    variant = world["variant"]
    form = as_user(app, world["staff"]["warehouse"]).get(f"/admin/stock/edit/?id={variant.id}").get_data(as_text=True)
    # the browser is told the service's bounds, not the column's
    [tag] = re.findall(r'<input[^>]*\bid="on_hand"[^>]*>', form)
    assert 'min="0"' in tag and 'max="10000000"' in tag
    resp = stock_form(as_user(app, world["staff"]["warehouse"]), variant.id, on_hand="42", low_stock_threshold="7")
    assert resp.status_code == 302
    db_session.expire_all()
    assert (variant.on_hand, variant.low_stock_threshold) == (42, 7)
    stock_form(as_user(app, world["staff"]["warehouse"]), variant.id, on_hand="40")
    db_session.expire_all()
    assert (variant.on_hand, variant.low_stock_threshold) == (40, None)  # empty: the shop's default again


def waiting_query(database_url: str, timeout: float = 20.0) -> str:
    """The SQL of the session waiting for a row lock in this database (polled until one waits)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError("no session waited for the variant's lock")


def test_the_back_office_stock_count_waits_for_the_variant_lock_and_keeps_what_the_holder_changed(committed_db):
    """A checkout holds the variant row (as inventory.lock_variants does); a count saved meanwhile in the back-office
    waits in the same locking read as the API's, then writes its count over the checkout's committed reservation,
    never over a stale copy of the row."""
    from shop import create_app
    from shop.extensions import db

    app = create_app(config_for(committed_db))
    with app.app_context():
        product = make_product(
            make_category("Tees", slug="tees"), "Plain Tee", slug="plain-tee", sizes=("M",), colours=("Blue",), stock=10
        )
        warehouse = make_user("wh@example.com", role="warehouse")
        db.session.commit()
        variant_id = product.variants[0].id
        client = as_user(app, warehouse)
    token = csrf_token(client)
    answer = {}

    def count():
        answer["resp"] = client.post(
            f"/admin/stock/edit/?id={variant_id}", data={"csrf_token": token, "on_hand": "4", "low_stock_threshold": ""}
        )

    with psycopg.connect(committed_db) as checkout:
        checkout.execute("SELECT id FROM variant WHERE id = %s FOR NO KEY UPDATE", (variant_id,))
        form = threading.Thread(target=count)
        form.start()
        query = waiting_query(committed_db)
        assert "FOR NO KEY UPDATE" in query  # inventory.lock_variants, not a bare UPDATE of the form's copy
        checkout.execute("UPDATE variant SET reserved = reserved + 3 WHERE id = %s", (variant_id,))
        checkout.commit()
    form.join(30)
    assert answer["resp"].status_code == 302
    with psycopg.connect(committed_db) as conn:
        assert conn.execute("SELECT on_hand, reserved FROM variant WHERE id = %s", (variant_id,)).fetchone() == (4, 3)
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"variants-0-on_hand": "-5"}, "Prices and stock cannot be negative."),
        ({"options_text": "size: S, M\nSize: L", "variants-0-options_text": "size=S"}, "Option names must be unique."),
        (
            {"options_text": "size: S, M", "variants-0-options_text": "size=XL"},
            "Variant GIANT-1 must pick one value of each option (size: S, M).",
        ),
        ({"status": "active", "variants-0-sku": "", "variants-0-price_amount": ""}, None),
    ],
)
def test_the_back_office_product_form_follows_the_catalogues_rules(app, db_session, world, change, message):
    """The form checks a product with catalog.services (revise_product), the rules the API's products follow:
    a negative stock or price, or two options of one name, are refused with the catalogue's sentence."""
    from sqlalchemy import select

    from shop.catalog.models import Product
    from tests.integration.test_bounds_and_leaks import product_form

    client = as_user(app, world["staff"]["manager"])
    data = product_form(csrf_token(client), world["product"].category_id)
    data.update(change)
    if message is None:  # an active product without variants (the inline row left empty)
        data = {k: v for k, v in data.items() if not k.startswith("variants-")}
        message = "An active product needs at least one variant."
    resp = client.post("/admin/products/new/", data=data)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and message in page
    assert db_session.scalar(select(Product).where(Product.name == "Form Giant")) is None
