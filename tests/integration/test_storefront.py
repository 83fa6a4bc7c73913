"""Storefront pages rendered from the real database: what a shopper sees."""

import re

import pytest

from tests.factories import make_category, make_product


@pytest.fixture
def shelf(db_session):
    shoes = make_category("Shoes", slug="shoes")
    runners = make_category("Runners", parent=shoes, slug="runners")
    make_product(
        runners,
        "Swift Runner",
        slug="swift-runner",
        sizes=("40", "41"),
        colours=("Black", "White"),
        prices={("41", "White"): 9900},
        price=8900,
        stock={("40", "Black"): 2, ("41", "White"): 30},
        featured=True,
    )
    make_product(runners, "Plain Runner", slug="plain-runner", sizes=("40",), colours=("Grey",), price=4900, stock=0)
    for i in range(30):
        make_product(shoes, f"Filler {i:02d}", slug=f"filler-{i:02d}", sizes=("42",), colours=("Navy",), price=1000 + i)
    return shoes


def text(resp):
    return resp.get_data(as_text=True)


def test_home_shows_categories_and_products(client, shelf):
    resp = client.get("/")
    assert resp.status_code == 200
    page = text(resp)
    assert 'href="/c/runners"' in page  # the category tiles
    assert "Filler 29" in page  # the newest product leads "New in"
    assert '<html lang="en">' in page and 'name="viewport"' in page


def test_category_page_lists_subcategory_products_with_pagination(client, shelf):
    page1 = text(client.get("/c/shoes?sort=price"))
    assert "32 products" in page1
    assert "Page 1 of 2" in page1
    assert "Filler 00" in page1 and "Swift Runner" not in page1  # the dearest are on page 2
    page2 = text(client.get("/c/shoes?sort=price&page=2"))
    assert "Swift Runner" in page2
    assert client.get("/c/shoes?page=50").status_code == 404


def test_filters_narrow_the_listing(client, shelf):
    only_white = text(client.get("/c/shoes?colour=White"))
    assert "1 product<" in only_white and "Swift Runner" in only_white
    in_stock = text(client.get("/c/runners?in_stock=1"))
    assert "Swift Runner" in in_stock and "Plain Runner" not in in_stock
    priced = text(client.get("/c/runners?min_price=50&max_price=95"))
    assert "Swift Runner" in priced and "Plain Runner" not in priced


def test_bad_filter_values_are_explained_not_fatal(client, shelf):
    resp = client.get("/c/runners?min_price=cheap&page=x&sort=weird&colour=Plaid")
    assert resp.status_code == 200
    assert "was ignored" in text(resp)
    assert "2 products" in text(resp)


def test_product_page_without_javascript_shows_the_chosen_variant(client, shelf):
    default = text(client.get("/p/swift-runner"))
    # The first in-stock variant is preselected: size 40, black, two left.
    assert re.search(r'data-testid="price">\$89\.00<', default)
    assert "Only 2 left" in default
    chosen = text(client.get("/p/swift-runner?size=41&colour=White"))
    assert re.search(r'data-testid="price">\$99\.00<', chosen)
    assert "In stock (30 available)" in chosen
    sold_out = text(client.get("/p/swift-runner?size=41&colour=Black"))
    assert "Sold out" in sold_out
    assert 'id="variants-data"' in chosen  # the JSON the picker script reads


def test_unknown_pages_are_friendly_404s(client, shelf):
    for path in ("/p/no-such-shoe", "/c/no-such-category", "/nowhere"):
        resp = client.get(path)
        assert resp.status_code == 404
        assert "couldn’t find that page" in text(resp)


def test_catalogue_pages_carry_cache_headers(client, shelf):
    resp = client.get("/c/shoes")
    assert resp.headers["Cache-Control"].startswith("public, max-age=")
    assert client.get("/c/shoes", headers={"If-None-Match": resp.headers["ETag"]}).status_code == 304


def test_placeholder_images_are_served_and_cached_long(client, shelf):
    resp = client.get("/media/placeholder/200/runner.svg")
    assert resp.status_code == 200 and resp.mimetype == "image/svg+xml"
    assert "immutable" in resp.headers["Cache-Control"]
    assert client.get("/media/../../etc/passwd").status_code == 404
