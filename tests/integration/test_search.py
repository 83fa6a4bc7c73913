"""Search on the real Typesense of the test stack, and its PostgreSQL fallback, through the API,
the storefront and the jobs. Each test indexes under an alias of its own, dropped afterwards."""

from __future__ import annotations

import socket
import uuid
from contextlib import closing

import pytest

from tests.factories import make_category, make_product

TEES = {"Organic Cotton T-Shirt", "Pocket T-Shirt", "Graphic T-Shirt"}


@pytest.fixture
def search_alias(app):
    """A per-test alias (and so per-test collections) in the shared Typesense, dropped afterwards."""
    from shop.search import jobs, services

    saved = app.config.get("TYPESENSE_COLLECTION")
    alias = app.config["TYPESENSE_COLLECTION"] = f"test_{uuid.uuid4().hex[:10]}"
    services.reset_breaker()
    try:
        yield alias
    finally:
        with app.app_context():
            jobs.drop_all()
        app.config["TYPESENSE_COLLECTION"] = saved
        services.reset_breaker()


@pytest.fixture
def catalogue(db_session, search_alias):
    """Clothing > T-shirts (three active tees and a draft) and Clothing > Shoes (two), indexed."""
    from shop.search import jobs

    clothing = make_category("Clothing", slug="s-clothing")
    tees = make_category("T-shirts", parent=clothing, slug="s-tees")
    shoes = make_category("Shoes", parent=clothing, slug="s-shoes")
    p = {
        "organic": make_product(
            tees,
            "Organic Cotton T-Shirt",
            price=1900,
            colours=("Black", "White"),
            brand="Kestrel",
            slug="s-organic-tee",
        ),
        "pocket": make_product(
            tees, "Pocket T-Shirt", price=2900, colours=("Navy",), sizes=("M", "L"), slug="s-pocket-tee"
        ),
        "graphic": make_product(
            tees, "Graphic T-Shirt", price=5500, colours=("Black",), sizes=("S",), stock=0, slug="s-graphic-tee"
        ),
        "draft": make_product(tees, "Draft T-Shirt", price=1000, status="draft", slug="s-draft-tee"),
        "boot": make_product(
            shoes,
            "Leather Chelsea Boot",
            price=12900,
            sizes=("42", "43"),
            colours=("Brown",),
            description="Hand-stitched leather boot with elastic sides.",
            slug="s-chelsea",
        ),
        "sneaker": make_product(
            shoes, "Canvas Sneaker", price=6900, sizes=("42",), colours=("White",), slug="s-sneaker"
        ),
    }
    db_session.commit()
    jobs.reindex()
    return dict(clothing=clothing, tees=tees, shoes=shoes, **p)


def _closed_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


@pytest.fixture
def typesense_down(app):
    from shop.search import services

    saved = app.config["TYPESENSE_URL"]
    app.config["TYPESENSE_URL"] = f"http://127.0.0.1:{_closed_port()}"
    services.reset_breaker()
    yield
    app.config["TYPESENSE_URL"] = saved
    services.reset_breaker()


def names(resp) -> set[str]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return {i["name"] for i in resp.get_json()["items"]}


@pytest.mark.parametrize("q", ["tshrt", "t-shrt", "T-Shirt", "tshirts", "t shirt"])
def test_typos_find_the_t_shirts_on_typesense(client, catalogue, q):
    resp = client.get(f"/api/v1/search?q={q}")
    body = resp.get_json()
    assert body["engine"] == "typesense"
    assert names(resp) == TEES  # the draft is not there
    assert body["total"] == 3


def test_a_typo_in_another_word_and_a_brand(client, catalogue):
    assert names(client.get("/api/v1/search?q=chelsae")) == {"Leather Chelsea Boot"}
    assert names(client.get("/api/v1/search?q=kestrl")) == {"Organic Cotton T-Shirt"}


def test_results_carry_summaries_and_escaped_highlights(client, catalogue):
    body = client.get("/api/v1/search?q=chelsea").get_json()
    item = body["items"][0]
    assert item["slug"] == "s-chelsea"
    assert item["price_from"] == {"amount": 12900, "currency": "USD"}
    assert item["in_stock"] is True and item["image_url"].startswith("/media/")
    assert item["highlight"]["name"] == "Leather <mark>Chelsea</mark> Boot"


def _facet_map(facets) -> dict:
    return {
        "category": {c["slug"]: c["count"] for c in facets["category"]},
        "price": {p["key"]: p["count"] for p in facets["price"]},
        "options": {k: {v["value"]: v["count"] for v in vals} for k, vals in facets["options"].items()},
    }


EXPECTED_ALL = {
    "category": {"s-clothing": 5, "s-tees": 3, "s-shoes": 2},
    # from-prices: 1900 | 2900 | 5500, 6900 | 12900
    "price": {"0-2500": 1, "2500-5000": 1, "5000-10000": 2, "10000-20000": 1},
    "options": {
        "size": {"S": 2, "M": 2, "L": 2, "42": 2, "43": 1},
        "colour": {"Black": 2, "White": 2, "Navy": 1, "Brown": 1},
    },
}


def test_facet_counts_are_the_numbers_of_matching_products(client, catalogue):
    body = client.get("/api/v1/search?category=s-clothing&per_page=100").get_json()
    assert body["engine"] == "typesense" and body["total"] == 5
    assert _facet_map(body["facets"]) == EXPECTED_ALL
    tees = client.get("/api/v1/search?q=tshrt&option=colour:Black").get_json()
    assert {i["name"] for i in tees["items"]} == {"Organic Cotton T-Shirt", "Graphic T-Shirt"}
    got = _facet_map(tees["facets"])
    assert got["category"] == {"s-clothing": 2, "s-tees": 2}
    assert got["options"]["colour"] == {"Black": 2, "White": 1}
    assert got["price"] == {"0-2500": 1, "5000-10000": 1}


def test_filters_narrow_on_both_engines_alike(app, client, catalogue):
    queries = [
        "category=s-shoes",
        "min_price=5000&max_price=7000",
        "in_stock=true&q=shirt",
        "option=size:42&option=size:S",
        "option=size:M&option=colour:Navy",
        "q=boot&category=s-tees",
    ]
    on_typesense = {q: client.get(f"/api/v1/search?{q}").get_json() for q in queries}
    saved = app.config["TYPESENSE_URL"]
    app.config["TYPESENSE_URL"] = f"http://127.0.0.1:{_closed_port()}"
    try:
        on_database = {q: client.get(f"/api/v1/search?{q}").get_json() for q in queries}
    finally:
        app.config["TYPESENSE_URL"] = saved
    expected = {
        "category=s-shoes": {"Leather Chelsea Boot", "Canvas Sneaker"},
        "min_price=5000&max_price=7000": {"Graphic T-Shirt", "Canvas Sneaker"},
        "in_stock=true&q=shirt": {"Organic Cotton T-Shirt", "Pocket T-Shirt"},
        "option=size:42&option=size:S": {
            "Leather Chelsea Boot",
            "Canvas Sneaker",
            "Organic Cotton T-Shirt",
            "Graphic T-Shirt",
        },
        "option=size:M&option=colour:Navy": {"Pocket T-Shirt"},
        "q=boot&category=s-tees": set(),
    }
    for q, want in expected.items():
        for engine, body in (("typesense", on_typesense[q]), ("database", on_database[q])):
            assert body["engine"] == engine
            assert {i["name"] for i in body["items"]} == want, (q, engine)
            assert body["total"] == len(want)
            assert _facet_map(body["facets"]) == _facet_map(on_typesense[q]["facets"]), (q, engine)


def test_an_update_is_searchable_after_its_sync_job(client, db_session, catalogue):
    from shop.catalog.services import refresh_product_summary
    from shop.search import jobs

    sneaker = catalogue["sneaker"]
    sneaker.name = "Canvas Skate Shoe"
    for v in sneaker.variants:
        v.price_amount = 4500
    db_session.flush()
    refresh_product_summary([sneaker.id])
    db_session.commit()
    assert names(client.get("/api/v1/search?q=skate")) == set()  # not before its job ran
    jobs.sync_products([sneaker.id])
    body = client.get("/api/v1/search?q=skat").get_json()
    assert [i["name"] for i in body["items"]] == ["Canvas Skate Shoe"]
    assert body["items"][0]["price_from"]["amount"] == 4500
    assert names(client.get("/api/v1/search?q=sneaker")) == set()
    # A product taken off sale (draft) leaves the index with its next sync.
    catalogue["boot"].status = "draft"
    db_session.commit()
    jobs.sync_products([catalogue["boot"].id])
    assert names(client.get("/api/v1/search?q=chelsea")) == set()


def test_a_catalogue_commits_event_queues_a_sync_job(db_session, redis_client, catalogue):
    from shop import consumers
    from shop.extensions import redis_ext

    queue = redis_ext.queue("search")
    consumers.drain(["search"])  # the catalogue's own product.created events
    queue.empty()
    catalogue["pocket"].name = "Pocket Tee"
    db_session.commit()
    assert queue.get_jobs() == []  # the commit published product.updated; the "search" group syncs from it
    assert consumers.drain(["search"]) == 1
    jobs = queue.get_jobs()
    assert [j.func_name for j in jobs] == ["shop.search.jobs.sync_products"]
    assert jobs[0].args == ([catalogue["pocket"].id],)
    queue.empty()


def test_reindex_swaps_the_alias_and_drops_the_old_collection(app, catalogue, search_alias):
    from shop.search import engine, jobs

    first = jobs.live_collection_name()
    result = jobs.reindex()
    assert result["documents"] == 5
    assert jobs.live_collection_name() == result["collection"] != first
    names_now = {c["name"] for c in engine.client().collections.retrieve()}
    assert first not in names_now and result["collection"] in names_now


def test_typesense_down_the_database_answers(client, catalogue, typesense_down):
    resp = client.get("/api/v1/search?q=chelsea boot")
    body = resp.get_json()
    assert resp.status_code == 200 and body["engine"] == "database"
    assert names(resp) == {"Leather Chelsea Boot"}
    assert body["items"][0]["highlight"]["name"] == "Leather <mark>Chelsea</mark> <mark>Boot</mark>"
    # words, word prefixes as typed, and the description all find things
    assert names(client.get("/api/v1/search?q=shirt")) == TEES
    assert names(client.get("/api/v1/search?q=sneak")) == {"Canvas Sneaker"}
    assert names(client.get("/api/v1/search?q=stitched")) == {"Leather Chelsea Boot"}
    full = client.get("/api/v1/search?category=s-clothing").get_json()
    assert full["engine"] == "database" and _facet_map(full["facets"]) == EXPECTED_ALL
    page = client.get("/search?q=chelsea")
    assert page.status_code == 200 and b"Leather <mark>Chelsea</mark> Boot" in page.data
    assert b"basic mode" in page.data
    sug = client.get("/search/suggest?q=chel").get_json()
    assert sug["engine"] == "database" and [s["name"] for s in sug["suggestions"]] == ["Leather Chelsea Boot"]


def test_an_unreachable_typesense_is_not_asked_again_for_a_while(client, catalogue, typesense_down, caplog):
    """A search that cannot reach Typesense opens the circuit: the searches after it go straight to PostgreSQL
    instead of each trying the connection first (which costs up to TYPESENSE_TIMEOUT when a host is down)."""
    import logging

    caplog.set_level(logging.WARNING, logger="shop.search.services")
    assert client.get("/api/v1/search?q=chelsea").get_json()["engine"] == "database"
    said = [r.getMessage() for r in caplog.records if "Typesense" in r.getMessage()]
    # Before: httpx's ConnectError was read as a refused query, so the circuit never opened.
    assert len(said) == 1 and "failed" in said[0] and "answering from PostgreSQL" in said[0], said
    caplog.clear()
    for q in ("boot", "sneaker", "shirt"):
        assert client.get(f"/api/v1/search?q={q}").get_json()["engine"] == "database"
    assert [r.getMessage() for r in caplog.records if "Typesense" in r.getMessage()] == []


def test_no_index_yet_the_database_answers(client, db_session, search_alias):
    tees = make_category("T-shirts", slug="s-tees-2")
    make_product(tees, "Pocket T-Shirt", slug="s-pocket-2")
    body = client.get("/api/v1/search?q=pocket").get_json()
    assert body["engine"] == "database" and [i["name"] for i in body["items"]] == ["Pocket T-Shirt"]


@pytest.mark.parametrize(
    "query, field",
    [
        ("min_price=-1", "min_price"),
        ("max_price=abc", "max_price"),
        ("page=0", "page"),
        ("per_page=101", "per_page"),
        ("category=no-such-category", "category"),
        ("option=size", "option"),
        ("q=" + "x" * 201, "q"),
        ("min_price=500&max_price=100", "min_price"),
        ("in_stock=maybe", "in_stock"),
    ],
)
def test_bad_parameters_are_422(client, db_session, query, field):
    resp = client.get(f"/api/v1/search?{query}")
    assert resp.status_code == 422, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["error"]["code"] == "validation_failed"
    assert field in body["error"]["details"]["fields"]


def test_storefront_search_page(client, catalogue):
    resp = client.get("/search?q=tshrt")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "3 products" in html
    for name in TEES:
        assert name.split()[0] in html
    assert "<mark>" in html
    assert 'href="/search?q=tshrt&amp;category=s-tees"' in html  # facet links work without JS
    assert 'name="option" value="colour:Black"' in html
    assert resp.headers["Cache-Control"].startswith("public")
    narrowed = client.get("/search?q=tshrt&option=colour:Navy").get_data(as_text=True)
    assert "1 product<" in narrowed and "Pocket" in narrowed
    bad = client.get("/search?q=tshrt&min_price=abc&page=x&category=nope")
    assert bad.status_code == 200 and "was ignored" in bad.get_data(as_text=True)


def test_header_has_a_search_box_and_nothing_personal(client, catalogue):
    html = client.get("/search?q=boot").get_data(as_text=True)
    assert 'role="search"' in html and 'data-suggest="/search/suggest"' in html
    home = client.get("/").get_data(as_text=True)
    assert 'id="site-search-q"' in home and 'value="boot"' not in home


def test_names_are_escaped_except_the_marks(client, db_session, catalogue):
    from shop.search import jobs

    evil = make_product(catalogue["tees"], "Zebra <script>alert(1)</script> Tee", slug="s-evil")
    db_session.commit()
    jobs.sync_products([evil.id])
    body = client.get("/api/v1/search?q=zebra").get_json()
    assert body["items"][0]["highlight"]["name"] == "<mark>Zebra</mark> &lt;script&gt;alert(1)&lt;/script&gt; Tee"
    html = client.get("/search?q=zebra").get_data(as_text=True)
    assert "<script>alert(1)" not in html and "<mark>Zebra</mark> &lt;script&gt;" in html


def test_instant_suggestions(client, catalogue):
    resp = client.get("/search/suggest?q=chel")
    body = resp.get_json()
    assert resp.status_code == 200 and body["engine"] == "typesense"
    assert body["suggestions"][0] == {
        "name": "Leather Chelsea Boot",
        "slug": "s-chelsea",
        "highlight": "Leather <mark>Chel</mark>sea Boot",
        "url": "/p/s-chelsea",
    }
    assert client.get("/search/suggest?q=").get_json()["suggestions"] == []


def test_readyz_reports_search(client):
    assert client.get("/readyz").get_json()["checks"]["search"]["ok"] is True
