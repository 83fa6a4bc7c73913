"""Search over HTTP on the demo catalogue, with a Typesense of the test's own that is then stopped:
the same endpoint keeps answering, from PostgreSQL, and says so."""

from __future__ import annotations

import json
import urllib.request

import pytest


def _get(url: str) -> tuple[int, dict | str]:
    with urllib.request.urlopen(url, timeout=15) as resp:
        body = resp.read().decode()
        return resp.status, json.loads(body) if resp.headers.get_content_type() == "application/json" else body


def _price_counts_fit(body: dict) -> bool:
    """Every result is in at least one price bucket, and one whose range spans two buckets is in both."""
    counts = [p["count"] for p in body["facets"]["price"]]
    return all(0 < n <= body["total"] for n in counts) and sum(counts) >= body["total"]


@pytest.fixture
def own_typesense(tmp_path):
    from shop.devstack import Stack

    (tmp_path / "var").mkdir()
    stack = Stack(tmp_path / "var", ports={"typesense": 0}, quiet=True)
    url = stack._start_typesense()
    yield stack, url
    stack.stop()


def test_search_survives_typesense_being_stopped(seeded_shop, own_typesense):
    from shop.search import jobs, services

    stack, url = own_typesense
    app = seeded_shop.app
    saved = {k: app.config[k] for k in ("TYPESENSE_URL", "TYPESENSE_API_KEY", "TYPESENSE_COLLECTION")}
    app.config.update(TYPESENSE_URL=url, TYPESENSE_API_KEY="dev-typesense-key", TYPESENSE_COLLECTION="live_products")
    services.reset_breaker()
    try:
        with app.app_context():
            result = jobs.reindex()
        assert result["documents"] > 150  # the demo's 200 products, less the drafts

        status, body = _get(f"{seeded_shop.url}/api/v1/search?q=tshrt")
        assert status == 200 and body["engine"] == "typesense"
        assert body["total"] > 0 and all("T-Shirt" in i["name"] for i in body["items"][:5]), [
            i["name"] for i in body["items"]
        ]
        cats = {c["slug"]: c["count"] for c in body["facets"]["category"]}
        assert cats["men-t-shirts"] <= cats["men"] and _price_counts_fit(body)
        status, page = _get(f"{seeded_shop.url}/search?q=tshrt")
        assert status == 200 and "<mark>" in page

        stack.stop()  # Typesense is gone

        status, body = _get(f"{seeded_shop.url}/api/v1/search?q=oxford%20shirt")
        assert status == 200 and body["engine"] == "database"
        assert body["total"] > 0 and all("Oxford" in i["name"] for i in body["items"])
        assert _price_counts_fit(body)
        status, page = _get(f"{seeded_shop.url}/search?q=oxford")
        assert status == 200 and "Oxford" in page and "basic mode" in page
        status, sug = _get(f"{seeded_shop.url}/search/suggest?q=oxf")
        assert status == 200 and sug["engine"] == "database" and sug["suggestions"]
    finally:
        app.config.update(saved)
        services.reset_breaker()
