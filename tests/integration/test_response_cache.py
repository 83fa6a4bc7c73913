"""Whole anonymous catalogue answers served from Redis before Flask runs (shop/response_cache.py): the same bytes
and ETag with no SQL and no view, a 304 for a matching ETag, never for a request that carries something personal,
never an answer that is private or sets a cookie, and never after the catalogue changed."""

from __future__ import annotations

import pytest

from shop import create_app
from shop.catalog.models import Variant
from shop.extensions import db
from shop.inventory.services import set_on_hand
from tests.conftest import config_for
from tests.factories import make_category, make_product
from tests.integration.test_cache import CLOSED_PORT, PAGES, cache_on, shop  # noqa: F401 - fixtures


@pytest.mark.parametrize("path", PAGES)
def test_the_second_anonymous_read_is_the_same_answer_from_redis_without_the_app(client, shop, count_queries, path):
    first = client.get(path)
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
    with count_queries() as queries:
        second = client.get(path, headers={"X-Request-ID": "req-42"})
    assert second.status_code == 200 and second.headers["X-Cache"] == "HIT"
    assert queries.count == 0
    assert second.data == first.data
    for name in ("ETag", "Cache-Control", "Content-Type", "Content-Security-Policy", "X-Content-Type-Options"):
        assert second.headers[name] == first.headers[name], name
    assert second.headers["X-Request-ID"] == "req-42" and first.headers["X-Request-ID"] != "req-42"
    again = client.get(path, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b"" and again.headers["X-Cache"] == "HIT"
    head = client.head(path)
    assert head.status_code == 200 and head.data == b"" and head.headers["Content-Length"] == str(len(first.data))


def test_a_catalogue_change_is_seen_at_once(client, shop):
    assert "$25.00" in client.get("/p/linen-shirt-c").text
    assert client.get("/p/linen-shirt-c").headers["X-Cache"] == "HIT"
    db.session.get(Variant, shop.variant).price_amount = 2700
    db.session.commit()  # the change listener bumps the catalogue's generation
    changed = client.get("/p/linen-shirt-c")
    assert changed.headers["X-Cache"] == "MISS" and "$27.00" in changed.text
    set_on_hand(shop.other_variant, 0)  # a stock move elsewhere: listings show availability, so they go too
    listing = client.get("/api/v1/products?category=clothing-c")
    assert listing.headers["X-Cache"] == "MISS"
    assert client.get("/api/v1/products?category=clothing-c").headers["X-Cache"] == "HIT"


def test_personal_requests_and_answers_are_never_shared(app, client, shop, cache_on):
    client.get("/c/shirts-c")
    bearer = client.get("/c/shirts-c", headers={"Authorization": "Bearer x"})
    assert bearer.headers.get("X-Cache") is None  # not looked up: the app answered
    # A visitor with a message waiting sees it: their page is theirs (and it is not kept either).
    with client.session_transaction() as session:
        session["_flashes"] = [("success", "Added to your cart.")]
    mine = client.get("/c/shirts-c")
    assert "Added to your cart." in mine.text and mine.headers.get("X-Cache") is None
    assert mine.headers["Cache-Control"].startswith("private")
    assert "Added to your cart." not in client.get("/c/shirts-c").text  # shown once
    # A session without news (a CSRF token, a cart) still gets the shared page.
    assert client.get("/c/shirts-c").headers["X-Cache"] == "HIT"
    # Private answers and answers that set a cookie are never kept.
    cart = client.get("/cart")
    assert cart.headers.get("X-Cache") is None
    keys = [k.decode() for k in cache_on.scan_iter("catalog:v1:response:*")]
    assert len(keys) == 1, keys  # only /c/shirts-c
    missing = client.get("/p/no-such-thing")
    assert missing.status_code == 404 and client.get("/p/no-such-thing").headers["X-Cache"] == "MISS"


def test_the_cache_switched_off_or_redis_down_means_the_app_answers(committed_db, app, client, shop, monkeypatch):
    monkeypatch.setitem(app.config, "CACHE_ENABLED", False)
    assert client.get("/c/shirts-c").headers.get("X-Cache") is None
    down = create_app(config_for(committed_db, REDIS_URL=CLOSED_PORT, CACHE_ENABLED=True))
    with down.app_context():
        make_product(make_category("Hats", slug="hats-r"), "Felt hat", slug="felt-hat-r", price=3900)
        db.session.commit()
    visitor = down.test_client()
    for _ in range(2):
        page = visitor.get("/p/felt-hat-r")
        assert page.status_code == 200 and "$39.00" in page.text and page.headers.get("X-Cache") is None


def test_a_development_shop_still_refuses_other_machines_a_cached_page(app, committed_db, redis_client):
    settings = {"REDIS_URL": app.config["REDIS_URL"], "CACHE_ENABLED": True, "SECRET_KEY_LOCAL_ONLY": True}
    local_only = create_app(config_for(committed_db, **settings))
    with local_only.app_context():
        make_product(make_category("Caps", slug="caps-r"), "Cap", slug="cap-r", price=1500)
        db.session.commit()
    client = local_only.test_client()
    assert client.get("/p/cap-r").status_code == 200
    assert client.get("/p/cap-r").headers["X-Cache"] == "HIT"
    remote = client.get("/p/cap-r", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 403 and remote.headers.get("X-Cache") is None
