"""The catalogue API as API.md describes it, on real PostgreSQL, bad input included."""

import re

import pytest

from tests.factories import make_category, make_product


@pytest.fixture
def shelf(db_session):
    """Apparel > Tees with three products at distinct prices, one sold out, one draft."""
    apparel = make_category("Apparel", slug="apparel")
    tees = make_category("Tees", parent=apparel, slug="tees")
    other = make_category("Other", slug="other")
    cheap = make_product(tees, "Basic Tee", price=1000, slug="basic-tee")
    dear = make_product(
        tees,
        "Fancy Tee",
        price=5000,
        slug="fancy-tee",
        colours=("Red", "Blue"),
        prices={("L", "Blue"): 6000},
        stock={("M", "Red"): 3},
    )
    gone = make_product(apparel, "Sold Out Hoodie", price=3000, stock=0, slug="sold-out-hoodie")
    draft = make_product(tees, "Secret Tee", price=100, status="draft", slug="secret-tee")
    elsewhere = make_product(other, "Mug", sizes=(), colours=(), price=800, slug="mug")
    return dict(apparel=apparel, tees=tees, cheap=cheap, dear=dear, gone=gone, draft=draft, elsewhere=elsewhere)


def slugs(resp):
    return [i["slug"] for i in resp.get_json()["items"]]


def assert_error(resp, status, code):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


def test_categories_list_the_tree(client, shelf):
    resp = client.get("/api/v1/categories")
    assert resp.status_code == 200
    by_slug = {c["slug"]: c for c in resp.get_json()}
    assert by_slug["tees"]["parent_id"] == by_slug["apparel"]["id"]
    assert by_slug["apparel"]["parent_id"] is None
    assert set(by_slug["tees"]) == {"id", "slug", "name", "parent_id"}


def test_category_filter_includes_subcategories_and_hides_drafts(client, shelf):
    resp = client.get("/api/v1/products?category=apparel&sort=name")
    assert resp.status_code == 200
    assert slugs(resp) == ["basic-tee", "fancy-tee", "sold-out-hoodie"]
    assert resp.get_json()["total"] == 3


def test_product_summary_has_the_contract_fields(client, shelf):
    item = client.get("/api/v1/products?category=tees&sort=price").get_json()["items"][0]
    assert item["price_from"] == {"amount": 1000, "currency": "USD"}
    assert item["in_stock"] is True
    assert item["image_url"].startswith("/media/")
    assert {"id", "slug", "name", "price_from", "image_url", "in_stock"} <= set(item)


@pytest.mark.parametrize(
    "sort,expected",
    [
        ("price", ["basic-tee", "sold-out-hoodie", "fancy-tee"]),
        ("-price", ["fancy-tee", "sold-out-hoodie", "basic-tee"]),
        ("name", ["basic-tee", "fancy-tee", "sold-out-hoodie"]),
    ],
)
def test_sorting(client, shelf, sort, expected):
    assert slugs(client.get(f"/api/v1/products?category=apparel&sort={sort}")) == expected


def test_price_range_and_stock_filters(client, shelf):
    assert slugs(client.get("/api/v1/products?category=apparel&min_price=2000&max_price=4000")) == ["sold-out-hoodie"]
    # Fancy Tee costs 5000-6000: a range touching its top price finds it.
    assert slugs(client.get("/api/v1/products?category=apparel&min_price=5500")) == ["fancy-tee"]
    in_stock = slugs(client.get("/api/v1/products?category=apparel&in_stock=true&sort=name"))
    assert in_stock == ["basic-tee", "fancy-tee"]
    gone = client.get("/api/v1/products?category=apparel&sort=name").get_json()["items"][2]
    assert gone["slug"] == "sold-out-hoodie" and gone["in_stock"] is False


def test_pagination(client, shelf):
    first = client.get("/api/v1/products?category=apparel&sort=name&per_page=2&page=1").get_json()
    second = client.get("/api/v1/products?category=apparel&sort=name&per_page=2&page=2").get_json()
    assert (first["page"], first["per_page"], first["total"]) == (1, 2, 3)
    assert [i["slug"] for i in first["items"] + second["items"]] == ["basic-tee", "fancy-tee", "sold-out-hoodie"]
    beyond = client.get("/api/v1/products?category=apparel&page=9").get_json()
    assert beyond["items"] == [] and beyond["total"] == 3


@pytest.mark.parametrize(
    "query,field",
    [
        ("per_page=101", "per_page"),
        ("per_page=0", "per_page"),
        ("page=0", "page"),
        ("page=abc", "page"),
        ("sort=cheapest", "sort"),
        ("in_stock=maybe", "in_stock"),
        ("min_price=-5", "min_price"),
        ("max_price=1.5", "max_price"),
        ("min_price=500&max_price=100", "min_price"),
        ("category=no-such-thing", "category"),
        ("category=" + "x" * 500, "category"),
        ("page=99999999999999999999999", "page"),
    ],
)
def test_bad_query_parameters_are_422_naming_the_field(client, shelf, query, field):
    error = assert_error(client.get(f"/api/v1/products?{query}"), 422, "validation_failed")
    assert field in error["details"]["fields"]


def test_product_detail(client, shelf):
    resp = client.get("/api/v1/products/fancy-tee")
    assert resp.status_code == 200
    p = resp.get_json()
    assert p["category"]["slug"] == "tees"
    assert p["options"] == [{"name": "size", "values": ["S", "M", "L"]}, {"name": "colour", "values": ["Red", "Blue"]}]
    assert len(p["variants"]) == 6
    by_opts = {(v["options"]["size"], v["options"]["colour"]): v for v in p["variants"]}
    assert by_opts[("L", "Blue")]["price"] == {"amount": 6000, "currency": "USD"}
    assert by_opts[("M", "Red")]["available"] == 3
    assert by_opts[("S", "Red")]["available"] == 0
    assert len({v["sku"] for v in p["variants"]}) == 6
    assert p["images"] and p["description"] is not None


def test_missing_and_draft_products_are_404(client, shelf):
    assert_error(client.get("/api/v1/products/nope"), 404, "product_not_found")
    assert_error(client.get("/api/v1/products/secret-tee"), 404, "product_not_found")


def test_unknown_path_and_wrong_method_use_the_error_shape(client, shelf):
    assert_error(client.get("/api/v1/does-not-exist"), 404, "not_found")
    resp = client.delete("/api/v1/products")
    assert_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["Allow"]


def test_request_id_is_echoed_or_made(client, shelf):
    assert client.get("/api/v1/categories", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    assert len(client.get("/api/v1/categories").headers["X-Request-ID"]) == 32
    assert len(client.get("/api/v1/nope").headers["X-Request-ID"]) == 32


def test_catalogue_answers_are_cacheable_and_conditional(client, shelf):
    resp = client.get("/api/v1/products/fancy-tee")
    assert "max-age=" in resp.headers["Cache-Control"] and "public" in resp.headers["Cache-Control"]
    etag = resp.headers["ETag"]
    again = client.get("/api/v1/products/fancy-tee", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""


def test_listing_costs_the_same_queries_whatever_the_page_size(client, db_session, count_queries):
    cat = make_category(slug="bulk")
    for i in range(40):
        make_product(cat, f"Bulk {i}", images=2, colours=("Red", "Blue"))
    db_session.flush()
    with count_queries() as small:
        assert len(client.get("/api/v1/products?category=bulk&per_page=5").get_json()["items"]) == 5
    with count_queries() as large:
        assert len(client.get("/api/v1/products?category=bulk&per_page=40").get_json()["items"]) == 40
    assert small.count == large.count
    assert 2 <= large.count <= 4, large.statements


def test_a_category_page_costs_the_same_queries_for_a_few_products_as_for_a_full_page(
    client, db_session, count_queries
):
    """The storefront listing, uncached (each category is read for the first time): its SQL does not grow with the
    number of cards (images, variants and prices of every card come in the same few queries)."""
    from shop.storefront.routes import PER_PAGE

    few, full = make_category(slug="few"), make_category(slug="full")
    for i in range(3):
        make_product(few, f"Few {i}", images=2, colours=("Red", "Blue"))
    for i in range(PER_PAGE + 5):
        make_product(full, f"Full {i}", images=2, colours=("Red", "Blue", "Green"))
    db_session.flush()
    with count_queries() as small:
        page = client.get("/c/few")
    assert page.status_code == 200 and page.data.count(b'<li class="card">') == 3
    with count_queries() as large:
        page = client.get("/c/full")
    assert page.status_code == 200 and page.data.count(b'<li class="card">') == PER_PAGE
    assert small.count == large.count, (small.statements, large.statements)


def test_product_detail_queries_do_not_grow_with_variants(client, db_session, count_queries):
    cat = make_category(slug="matrix")
    make_product(cat, "Small", slug="small-matrix", sizes=("S",), colours=("Red",))
    make_product(
        cat,
        "Large",
        slug="large-matrix",
        sizes=("XS", "S", "M", "L", "XL"),
        colours=("Red", "Blue", "Green", "Black"),
        images=4,
    )
    with count_queries() as small:
        client.get("/api/v1/products/small-matrix")
    with count_queries() as large:
        assert len(client.get("/api/v1/products/large-matrix").get_json()["variants"]) == 20
    assert small.count == large.count


def test_openapi_describes_every_api_route(app, client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = set(spec["paths"])
    served = {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(r.rule).removeprefix("/api"))
        for r in app.url_map.iter_rules()
        if str(r.rule).startswith("/api/v1/")
    }
    assert served == documented
    docs = client.get("/api/docs")
    assert docs.status_code == 200 and b"swagger-ui" in docs.data
    assert client.get("/api/docs/static/swagger-ui-bundle.js").status_code == 200
