"""The Redis cache of catalogue reads (shop/cache.py): a second read costs no SQL, a change is visible at once,
Redis down means PostgreSQL answers, and the cache can be switched off."""

from __future__ import annotations

import json
import logging
import uuid
from types import SimpleNamespace

import pytest
from redis import Redis
from sqlalchemy import update

from shop import create_app
from shop.catalog.models import Category, Variant
from shop.catalog.services import refresh_product_summary
from shop.extensions import db
from shop.inventory.services import set_on_hand
from tests.conftest import config_for
from tests.factories import make_category, make_product

CLOSED_PORT = "redis://127.0.0.1:1/0"


@pytest.fixture
def cache_on(app, redis_client, monkeypatch):
    """The cache switched on (the test settings leave it off), over an empty Redis database."""
    monkeypatch.setitem(app.config, "CACHE_ENABLED", True)
    return redis_client


@pytest.fixture
def shop(db_session, cache_on):
    """A committed little catalogue: Clothing > Shirts with one shirt, and a second product beside it."""
    clothing = make_category("Clothing", slug="clothing-c")
    shirts = make_category("Shirts", parent=clothing, slug="shirts-c")
    shirt = make_product(
        shirts, "Linen shirt", slug="linen-shirt-c", sizes=("M",), colours=("White",), price=2500, stock=10
    )
    other = make_product(
        shirts, "Wool shirt", slug="wool-shirt-c", sizes=("M",), colours=("Grey",), price=4000, stock=3
    )
    ids = SimpleNamespace(
        shirt=shirt.id,
        other=other.id,
        variant=shirt.variants[0].id,
        sku=shirt.variants[0].sku,
        other_variant=other.variants[0].id,
        clothing=clothing.id,
    )
    db_session.commit()
    return ids


PAGES = [
    "/p/linen-shirt-c",
    "/api/v1/products/linen-shirt-c",
    "/c/shirts-c",
    "/c/clothing-c?size=M&in_stock=1",
    "/api/v1/products?category=clothing-c",
    "/api/v1/categories",
    "/",
    "/products",
]


@pytest.mark.parametrize("path", PAGES)
def test_a_second_read_costs_no_sql(client, shop, count_queries, path):
    first = client.get(path)
    assert first.status_code == 200
    with count_queries() as queries:
        second = client.get(path)
    assert second.status_code == 200
    assert queries.count == 0, queries.statements
    assert second.data == first.data and second.headers["ETag"] == first.headers["ETag"]
    assert second.headers["Cache-Control"].startswith("public")


def test_entries_are_plain_json_under_generation_keys(client, shop, cache_on):
    client.get("/p/linen-shirt-c")
    client.get("/c/shirts-c")
    keys = {k.decode() for k in cache_on.keys("catalog:*")}
    assert any(k.startswith("catalog:v1:product:") for k in keys)
    assert any(k.startswith("catalog:v1:listing:") for k in keys) and any(
        k.startswith("catalog:v1:facets:") for k in keys
    )
    assert all(0 < cache_on.ttl(k) <= 60 for k in keys if k.startswith("catalog:v1:"))  # the safety net
    gen = int(cache_on.get("catalog:gen"))
    assert gen >= 1  # the fixture's commit bumped it
    assert any(k.startswith(f"catalog:v1:listing:{gen}:") for k in keys)


def _price_change(db_session, variant_id, product_id, amount):
    variant = db_session.get(Variant, variant_id)
    variant.price_amount = amount
    refresh_product_summary([product_id])
    db_session.commit()


def test_a_price_change_is_visible_at_once_on_pages_and_in_the_api(client, db_session, shop):
    page = client.get("/p/linen-shirt-c")
    listing = client.get("/c/shirts-c")
    assert "$25.00" in page.text and "$25.00" in listing.text
    assert client.get("/api/v1/products/linen-shirt-c").get_json()["variants"][0]["price"]["amount"] == 2500
    items = client.get("/api/v1/products?category=shirts-c").get_json()["items"]
    assert {i["slug"]: i["price_from"]["amount"] for i in items}["linen-shirt-c"] == 2500
    client.get("/p/linen-shirt-c")  # surely cached now

    _price_change(db_session, shop.variant, shop.shirt, 1999)

    page2 = client.get("/p/linen-shirt-c")
    assert "$19.99" in page2.text and "$25.00" not in page2.text
    assert page2.headers["ETag"] != page.headers["ETag"]
    # A client holding the old ETag gets the new page, not a 304.
    assert client.get("/p/linen-shirt-c", headers={"If-None-Match": page.headers["ETag"]}).status_code == 200
    listing2 = client.get("/c/shirts-c")
    assert "$19.99" in listing2.text and listing2.headers["ETag"] != listing.headers["ETag"]
    assert client.get("/api/v1/products/linen-shirt-c").get_json()["variants"][0]["price"]["amount"] == 1999
    items = client.get("/api/v1/products?category=shirts-c").get_json()["items"]
    assert {i["slug"]: i["price_from"]["amount"] for i in items}["linen-shirt-c"] == 1999
    assert "$19.99" in client.get("/").text


def test_a_stock_change_updates_availability_at_once(client, db_session, shop):
    assert client.get("/api/v1/products/linen-shirt-c").get_json()["variants"][0]["available"] == 10
    assert "In stock (10 available)" in client.get("/p/linen-shirt-c").text
    in_stock = client.get("/api/v1/products?category=shirts-c&in_stock=true").get_json()
    assert "linen-shirt-c" in {i["slug"] for i in in_stock["items"]}

    set_on_hand(shop.variant, 0)  # the inventory service commits

    assert client.get("/api/v1/products/linen-shirt-c").get_json()["variants"][0]["available"] == 0
    assert "Sold out" in client.get("/p/linen-shirt-c").text
    in_stock = client.get("/api/v1/products?category=shirts-c&in_stock=true").get_json()
    assert "linen-shirt-c" not in {i["slug"] for i in in_stock["items"]}
    all_items = client.get("/api/v1/products?category=shirts-c").get_json()["items"]
    assert {i["slug"]: i["in_stock"] for i in all_items}["linen-shirt-c"] is False

    # A reservation (what checkout does) moves availability too.
    variant = db_session.get(Variant, shop.variant)
    variant.on_hand, variant.reserved = 5, 2
    db_session.commit()
    assert client.get("/api/v1/products/linen-shirt-c").get_json()["variants"][0]["available"] == 3
    assert "Only 3 left" in client.get("/p/linen-shirt-c").text


def test_a_change_to_one_product_keeps_the_other_product_pages_cached(client, db_session, shop, count_queries):
    client.get("/p/linen-shirt-c")
    _price_change(db_session, shop.other_variant, shop.other, 3900)
    with count_queries() as queries:
        page = client.get("/p/linen-shirt-c")
    assert queries.count == 0, queries.statements  # its entry and the category tree are still current
    assert "$25.00" in page.text
    assert "$39.00" in client.get("/p/wool-shirt-c").text


def test_a_category_rename_shows_in_the_menu_and_breadcrumbs_at_once(client, db_session, shop):
    assert "Clothing" in client.get("/p/linen-shirt-c").text
    client.get("/api/v1/categories")
    db_session.get(Category, shop.clothing).name = "Apparel"
    db_session.commit()
    assert "Apparel" in client.get("/p/linen-shirt-c").text
    assert "Apparel" in {c["name"] for c in client.get("/api/v1/categories").get_json()}


def test_a_product_taken_offline_is_gone_at_once(client, db_session, shop):
    assert client.get("/p/linen-shirt-c").status_code == 200
    assert client.get("/api/v1/products/linen-shirt-c").status_code == 200
    from shop.catalog.models import Product

    db_session.get(Product, shop.shirt).status = "draft"
    db_session.commit()
    assert client.get("/p/linen-shirt-c").status_code == 404
    assert client.get("/api/v1/products/linen-shirt-c").status_code == 404
    assert "linen-shirt-c" not in client.get("/c/shirts-c").text


def test_the_cache_can_be_switched_off(app, client, shop, cache_on, count_queries, monkeypatch):
    monkeypatch.setitem(app.config, "CACHE_ENABLED", False)
    for path in ("/p/linen-shirt-c", "/api/v1/products/linen-shirt-c", "/c/shirts-c"):
        assert client.get(path).status_code == 200
        with count_queries() as queries:
            assert client.get(path).status_code == 200
        assert queries.count > 0
    assert not cache_on.keys("catalog:v1:*")
    # Changes still bump the generations, for the processes that do cache.
    assert int(cache_on.get("catalog:gen")) >= 1


def test_an_invalidation_lost_while_redis_was_away_is_made_when_it_returns(app, client, db_session, shop):
    assert "$25.00" in client.get("/p/linen-shirt-c").text
    cache = app.extensions["catalog_cache"]
    good = cache.client
    cache.client = Redis.from_url(CLOSED_PORT, socket_connect_timeout=0.25)
    try:
        _price_change(db_session, shop.variant, shop.shirt, 1799)  # the bump fails: logged, not raised
        assert "$17.99" in client.get("/p/linen-shirt-c").text  # Redis stepping aside: PostgreSQL answers
    finally:
        cache.client = good
    cache._down_until = 0.0  # the retry interval has passed
    assert "$17.99" in client.get("/p/linen-shirt-c").text  # not the entry cached before the change


def test_an_invalidation_lost_with_its_process_is_made_by_the_cache_group(app, client, db_session, shop, monkeypatch):
    """The process that changed the price could not bump (Redis away) and died before Redis came back: the pages
    stay stale until the "cache" consumer group applies the change's product.updated event."""
    from shop import consumers
    from shop.cache import CatalogCache

    assert "$25.00" in client.get("/p/linen-shirt-c").text
    cache = app.extensions["catalog_cache"]
    good = cache.client
    cache.client = Redis.from_url(CLOSED_PORT, socket_connect_timeout=0.25)
    try:
        _price_change(db_session, shop.variant, shop.shirt, 1799)  # the bump waits in this process's memory ...
    finally:
        cache.client = good
    monkeypatch.setitem(app.extensions, "catalog_cache", CatalogCache(app))  # ... which died: a new process
    assert "$25.00" in client.get("/p/linen-shirt-c").text  # the entry cached before the change
    assert consumers.drain(["cache"]) >= 1  # the change's events, through the outbox and the stream
    assert "$17.99" in client.get("/p/linen-shirt-c").text
    assert client.get("/api/v1/products/linen-shirt-c").get_json()["variants"][0]["price"]["amount"] == 1799
    assert consumers.drain(["cache"]) == 0  # applied once
    cache._down_until = 0.0  # the dead process's cache object goes back to the suite's app: let it work at once


def send(client, method, path, body=None, **headers):
    return getattr(client, method)(
        path, data=json.dumps(body) if body is not None else None, content_type="application/json", headers=headers
    )


def test_the_cart_and_checkout_never_read_cached_prices_or_availability(client, db_session, shop):
    assert client.get("/api/v1/products/linen-shirt-c").get_json()["variants"][0]["price"]["amount"] == 2500
    # A write the change hook cannot see (bulk SQL without changes.touch()): only the cache is stale now.
    db_session.execute(update(Variant).where(Variant.id == shop.variant).values(price_amount=3100, on_hand=1))
    db_session.commit()
    cached = client.get("/api/v1/products/linen-shirt-c").get_json()["variants"][0]
    assert cached["price"]["amount"] == 2500 and cached["available"] == 10  # stale, until the TTL

    cart = send(client, "post", "/api/v1/carts").get_json()
    token = {"X-Cart-Token": cart["token"]}
    too_many = send(client, "post", f"/api/v1/carts/{cart['id']}/items", {"sku": shop.sku, "quantity": 2}, **token)
    assert too_many.status_code == 409 and too_many.get_json()["error"]["code"] == "out_of_stock"
    added = send(client, "post", f"/api/v1/carts/{cart['id']}/items", {"sku": shop.sku, "quantity": 1}, **token)
    assert added.get_json()["items"][0]["unit_price"]["amount"] == 3100
    address = {
        "name": "Ann Buyer",
        "line1": "1 Main St",
        "city": "Springfield",
        "region": "CA",
        "postal_code": "12345",
        "country": "US",
    }
    placed = send(
        client,
        "post",
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": "ann@example.com", "shipping_address": address},
        **token,
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert placed.status_code == 201, placed.get_json()
    assert placed.get_json()["order"]["items"][0]["unit_price"]["amount"] == 3100


def test_with_redis_down_pages_render_from_postgresql(committed_db, caplog):
    app = create_app(config_for(committed_db, REDIS_URL=CLOSED_PORT, CACHE_ENABLED=True))
    with app.app_context():
        boots = make_category("Boots", slug="boots")
        make_product(boots, "Trail boot", slug="trail-boot", price=9900)
        db.session.commit()  # the change listener cannot reach Redis: logged, the commit stands
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="shop.cache"):
        for path in (
            "/",
            "/products",
            "/c/boots",
            "/p/trail-boot",
            "/api/v1/categories",
            "/api/v1/products",
            "/api/v1/products?category=boots",
            "/api/v1/products/trail-boot",
        ):
            resp = client.get(path)
            assert resp.status_code == 200, path
            assert resp.headers.get("ETag")
        assert "$99.00" in client.get("/p/trail-boot").text
        assert client.get("/api/v1/products/trail-boot").get_json()["name"] == "Trail boot"
    warnings = [r for r in caplog.records if r.name == "shop.cache" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per interval, not once per read
    ready = client.get("/readyz")
    assert ready.status_code == 503
    checks = ready.get_json()["checks"]
    assert checks["redis"]["ok"] is False and checks["database"]["ok"] is True
