"""The search page's facets and sort orders, on Typesense and on its PostgreSQL fallback:
the category facet as a tree (each sub-category under its own parent), sizes in size order, and
results sorted by relevance, price (both ways) or newest, keeping the query and the filters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest

from tests.factories import make_category, make_product
from tests.integration.test_search import search_alias, typesense_down  # noqa: F401 - fixtures

ENGINES = ["typesense", "database"]


@pytest.fixture
def shelves(db_session, search_alias):  # noqa: F811
    """Three departments with sub-categories, made parents first (as the demo seed does), indexed."""
    from shop.search import jobs

    women = make_category("Women", slug="f-women", position=0)
    men = make_category("Men", slug="f-men", position=1)
    shoes = make_category("Footwear", slug="f-footwear", position=2)
    dresses = make_category("Dresses", parent=women, slug="f-dresses", position=0)
    tops = make_category("Tops", parent=women, slug="f-tops", position=1)
    shirts = make_category("Shirts", parent=men, slug="f-shirts", position=0)
    boots = make_category("Boots", parent=shoes, slug="f-boots", position=0)
    epoch = datetime(2026, 6, 1, tzinfo=UTC)
    made = [  # name, category, sizes, price, days after epoch (newer is later)
        ("Linen Wrap Dress", dresses, ("XL", "S", "M"), 8900, 3),
        ("Cotton Wrap Top", tops, ("XS", "L", "M", "XXL"), 2900, 1),
        ("Oxford Wrap Shirt", shirts, ("M", "L", "XL"), 4900, 5),
        ("Chelsea Wrap Boot", boots, ("42", "38", "44", "9"), 12900, 2),
        ("Suede Wrap Boot", boots, ("40", "42"), 15900, 4),
    ]
    products = {}
    for name, cat, sizes, price, days in made:
        p = make_product(cat, name, sizes=sizes, colours=("Black",), price=price)
        p.created_at = epoch + timedelta(days=days)
        products[name] = p
    db_session.commit()
    jobs.reindex()
    return products


@pytest.fixture(params=ENGINES)
def engine_name(request, app):
    """Run the test on Typesense, then with Typesense unreachable (PostgreSQL answers)."""
    if request.param == "database":
        request.getfixturevalue("typesense_down")
    return request.param


class _Tree(HTMLParser):
    """Each <li data-category> of the page and the data-category of the <li> it sits in."""

    def __init__(self):
        super().__init__()
        self.stack: list[str | None] = []
        self.parent_of: dict[str, str | None] = {}
        self.order: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "li":
            slug = dict(attrs).get("data-category")
            if slug:
                enclosing = [s for s in self.stack if s]
                self.parent_of[slug] = enclosing[-1] if enclosing else None
                self.order.append(slug)
            self.stack.append(slug)

    def handle_endtag(self, tag):
        if tag == "li" and self.stack:
            self.stack.pop()


def _page(client, query: str) -> str:
    resp = client.get("/search?" + query)
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def _names(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", n) for n in re.findall(r'<span class="card-name">(.*?)</span>', html)]


def _engine(html: str) -> str:
    return "database" if 'data-testid="search-engine"' in html else "typesense"


def test_each_sub_category_sits_under_its_own_parent(client, shelves, engine_name):
    html = _page(client, "q=wrap")
    assert _engine(html) == engine_name
    tree = _Tree()
    tree.feed(html)
    # Before: every sub-category was listed after the last department, so looked like Footwear's.
    assert tree.parent_of == {
        "f-women": None,
        "f-dresses": "f-women",
        "f-tops": "f-women",
        "f-men": None,
        "f-shirts": "f-men",
        "f-footwear": None,
        "f-boots": "f-footwear",
    }
    assert tree.order == ["f-women", "f-dresses", "f-tops", "f-men", "f-shirts", "f-footwear", "f-boots"]
    body = client.get("/api/v1/search?q=wrap").get_json()
    assert [(c["slug"], c["depth"], c["count"]) for c in body["facets"]["category"]] == [
        ("f-women", 0, 2),
        ("f-dresses", 1, 1),
        ("f-tops", 1, 1),
        ("f-men", 0, 1),
        ("f-shirts", 1, 1),
        ("f-footwear", 0, 2),
        ("f-boots", 1, 2),
    ]


def test_sizes_are_listed_in_size_order(client, shelves, engine_name):
    body = client.get("/api/v1/search?q=wrap").get_json()
    assert body["engine"] == engine_name
    sizes = [v["value"] for v in body["facets"]["options"]["size"]]
    # Letter sizes smallest first, then shoe sizes by number (9 before 38, not after 44).
    assert sizes == ["XS", "S", "M", "L", "XL", "XXL", "9", "38", "40", "42", "44"]
    html = _page(client, "q=wrap")
    shown = re.findall(r'name="option" value="size:([^"]+)"', html)
    assert shown == sizes


@pytest.mark.parametrize(
    "sort,expected",
    [
        ("price", ["Cotton Wrap Top", "Oxford Wrap Shirt", "Linen Wrap Dress", "Chelsea Wrap Boot", "Suede Wrap Boot"]),
        (
            "-price",
            ["Suede Wrap Boot", "Chelsea Wrap Boot", "Linen Wrap Dress", "Oxford Wrap Shirt", "Cotton Wrap Top"],
        ),
        (
            "newest",
            ["Oxford Wrap Shirt", "Suede Wrap Boot", "Linen Wrap Dress", "Chelsea Wrap Boot", "Cotton Wrap Top"],
        ),
    ],
)
def test_results_sort_by_price_and_newest(client, shelves, engine_name, sort, expected):
    html = _page(client, f"q=wrap&sort={sort}")
    assert _engine(html) == engine_name
    assert _names(html) == expected
    assert re.search(rf'<option value="{re.escape(sort)}" selected>', html)


def test_the_api_sorts_too_and_refuses_an_unknown_order(client, shelves, engine_name):
    body = client.get("/api/v1/search?q=wrap&sort=-price").get_json()
    assert body["engine"] == engine_name
    assert [p["name"] for p in body["items"]][:2] == ["Suede Wrap Boot", "Chelsea Wrap Boot"]
    resp = client.get("/api/v1/search?q=wrap&sort=cheapest-first")
    assert resp.status_code == 422 and "sort" in resp.get_json()["error"]["details"]["fields"]


def test_sorting_keeps_the_query_and_the_filters(client, shelves, engine_name):
    html = _page(client, "q=wrap&category=f-footwear&option=size:42&sort=-price")
    assert _engine(html) == engine_name
    assert _names(html) == ["Suede Wrap Boot", "Chelsea Wrap Boot"]
    sort_form = re.search(r'<form method="get" action="/search" class="sort-form">(.*?)</form>', html, re.S).group(1)
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', sort_form))
    assert hidden == {"q": "wrap", "category": "f-footwear", "option": "size:42"}
    assert '<label for="sort">Sort by</label>' in sort_form
    # The filter form and the facet links keep the chosen order.
    assert '<input type="hidden" name="sort" value="-price">' in html
    assert re.search(r'href="/search\?[^"]*sort=-price[^"]*"', html)


def test_an_unknown_sort_falls_back_to_relevance_with_a_note(client, shelves):
    html = _page(client, "q=wrap&sort=cheapest-first")
    assert "sorted by relevance" in html
    assert '<option value="relevance" selected>' in html
    assert len(_names(html)) == 5


@pytest.fixture
def price_ranges(db_session, search_alias):  # noqa: F811
    """Coats whose variants cost different amounts, some spanning two price buckets, indexed."""
    from shop.search import jobs

    coats = make_category("Coats", slug="r-coats")
    black = "Black"
    made = {  # name: (price of S, price of M)
        "Split Coat": (2000, 3000),  # from the first bucket into the second
        "Edge Coat": (2499, 2500),  # one minor unit each side of the boundary
        "Plain Coat": (4000, 4000),
        "Long Coat": (15000, 25000),  # into the open top bucket
        "Cheap Coat": (900, 900),
    }
    for name, (s, m) in made.items():
        make_product(coats, name, sizes=("S", "M"), colours=(black,), prices={("S", black): s, ("M", black): m})
    db_session.commit()
    jobs.reindex()
    return made


def test_price_counts_are_what_the_price_filter_finds(client, price_ranges, engine_name):
    """A product counts in every bucket its price range overlaps, as the price filter (which keeps a product
    when its range overlaps the one asked for) then finds it: each count is the total its link shows."""
    body = client.get("/api/v1/search?q=coat").get_json()
    assert body["engine"] == engine_name and body["total"] == 5
    counts = {b["key"]: b["count"] for b in body["facets"]["price"]}
    # Before: each product counted once, in its lowest price's bucket (0-2500: 3, 2500-5000: 1, 10000-20000: 1).
    assert counts == {"0-2500": 3, "2500-5000": 3, "10000-20000": 1, "20000-": 1}
    for b in body["facets"]["price"]:
        query = f"q=coat&min_price={b['min']}" + ("" if b["max"] is None else f"&max_price={b['max']}")
        filtered = client.get(f"/api/v1/search?{query}").get_json()
        assert filtered["engine"] == engine_name
        assert filtered["total"] == b["count"], (b, sorted(i["name"] for i in filtered["items"]))
    # The storefront's price links (major units) say the same.
    html = _page(client, "q=coat")
    links = re.findall(
        r'<li><a href="(/search\?[^"]*min_price=[^"]*)">[^<]+</a>\s*<span class="facet-count">(\d+)</span>', html
    )
    assert len(links) == 4
    for href, count in links:
        page = _page(client, href.replace("&amp;", "&").removeprefix("/search?"))
        assert _engine(page) == engine_name
        assert re.search(rf">{count} products?<", page), (href, count)


def test_a_collection_built_before_price_buckets_is_answered_by_the_database_until_a_reindex(
    client,
    price_ranges,
    search_alias,  # noqa: F811
):
    """An index from before the release cannot facet on price_buckets: searches are answered by PostgreSQL
    (with the right counts), syncs into it still succeed, and `flask search reindex` brings Typesense back."""
    from shop.catalog.models import Product
    from shop.extensions import db
    from shop.search import engine, jobs

    ts = engine.client()
    old = engine.schema(f"{search_alias}_before")
    old["fields"] = [f for f in old["fields"] if f["name"] != "price_buckets"]
    old["fields"].append({"name": "price_bucket", "type": "string", "facet": True, "optional": True})
    ts.collections.create(old)
    ts.aliases.upsert(search_alias, {"collection_name": old["name"]})
    ids = list(db.session.scalars(db.select(Product.id).where(Product.name.like("% Coat"))))
    assert jobs.sync_products(ids, pending=False) == {"upserted": 5, "deleted": 0}
    expected = {"0-2500": 3, "2500-5000": 3, "10000-20000": 1, "20000-": 1}
    body = client.get("/api/v1/search?q=coat").get_json()
    assert body["engine"] == "database" and body["total"] == 5
    assert {b["key"]: b["count"] for b in body["facets"]["price"]} == expected
    jobs.reindex()  # drops the old collection: the alias pointed at it
    assert old["name"] not in {c["name"] for c in ts.collections.retrieve()}
    body = client.get("/api/v1/search?q=coat").get_json()
    assert body["engine"] == "typesense"
    assert {b["key"]: b["count"] for b in body["facets"]["price"]} == expected


def test_the_database_estimates_option_counts_beyond_its_sample_and_says_so(app, client, price_ranges, engine_name):
    """Past SEARCH_FACET_SAMPLE matches, PostgreSQL counts option values over the most relevant ones, scales them
    to the total and flags them (the page shows "about N"); the total, category and price counts stay exact.
    Typesense counts everything."""
    exact = client.get("/api/v1/search?q=coat").get_json()
    assert exact["engine"] == engine_name and exact["facets"]["options_estimated"] is False
    assert {v["value"]: v["count"] for v in exact["facets"]["options"]["size"]} == {"S": 5, "M": 5}
    saved, app.config["SEARCH_FACET_SAMPLE"] = app.config["SEARCH_FACET_SAMPLE"], 2
    try:
        body = client.get("/api/v1/search?q=coat").get_json()
        html = _page(client, "q=coat")
    finally:
        app.config["SEARCH_FACET_SAMPLE"] = saved
    assert body["facets"]["options_estimated"] is (engine_name == "database")
    # Every coat comes in S and M: 2 of the 2 sampled, scaled to the 5 found.
    assert {v["value"]: v["count"] for v in body["facets"]["options"]["size"]} == {"S": 5, "M": 5}
    assert body["total"] == 5
    assert body["facets"]["category"] == exact["facets"]["category"]
    assert body["facets"]["price"] == exact["facets"]["price"]
    counts = re.findall(r'value="size:S"[^>]*> S <span class="facet-count"[^>]*>([^<]+)</span>', html)
    assert counts == (["about 5"] if engine_name == "database" else ["5"])


@pytest.fixture
def doubled(db_session, search_alias):  # noqa: F811
    """A scarf whose size option lists M twice (the catalogue allows it), indexed."""
    from shop.catalog.services import build_product
    from shop.search import jobs

    cat = make_category("Scarves", slug="d-scarves")
    build_product(
        category_id=cat.id,
        name="Doubled Scarf",
        slug="d-doubled-scarf",
        status="active",
        options=[("size", ["M", "M", "L"])],
        variants=[
            {"sku": "D-SCARF-M", "options": {"size": "M"}, "price_amount": 1500, "on_hand": 3},
            {"sku": "D-SCARF-L", "options": {"size": "L"}, "price_amount": 1500, "on_hand": 3},
        ],
    )
    db_session.commit()
    jobs.reindex()


def test_a_value_listed_twice_counts_its_product_once(client, doubled, engine_name):
    body = client.get("/api/v1/search?q=scarf").get_json()
    assert body["engine"] == engine_name and body["total"] == 1
    # Before, Typesense counted the scarf twice under M (its document listed size=M twice).
    assert {v["value"]: v["count"] for v in body["facets"]["options"]["size"]} == {"M": 1, "L": 1}
