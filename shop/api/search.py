"""GET /api/v1/search: a page of product summaries with facets, and which engine answered."""

from __future__ import annotations

from flask import jsonify, request

from shop.api import bp
from shop.api.params import Params
from shop.api.routes import V1, _summary
from shop.catalog import queries
from shop.errors import ApiError
from shop.http import cacheable
from shop.search import services


def parse_options(values: list[str], errors: dict) -> dict[str, list[str]]:
    """`option=size:M` (repeatable) -> {"size": ["M"]}."""
    options: dict[str, list[str]] = {}
    for raw in values[:20]:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip() or not value.strip() or len(raw) > 130:
            errors["option"] = "must look like name:value, e.g. size:M"
            continue
        options.setdefault(name.strip(), []).append(value.strip())
    return options


@bp.get(f"{V1}/search")
def search():
    p = Params(request.args)
    q = p.str("q", max_len=200) or ""
    slug = p.str("category", max_len=120)
    sq = services.SearchQuery(
        q=q,
        category=slug,
        min_price=p.int("min_price", lo=0, hi=2**31 - 1),
        max_price=p.int("max_price", lo=0, hi=2**31 - 1),
        in_stock=p.bool("in_stock"),
        page=p.int("page", 1, lo=1, hi=1000),
        per_page=p.int("per_page", 20, lo=1, hi=services.MAX_PER_PAGE),
    )
    sq.options = parse_options(request.args.getlist("option"), p.errors)
    sq.sort = p.str("sort", max_len=20) or "relevance"
    if sq.sort not in services.SORTS:
        p.errors["sort"] = "must be one of " + ", ".join(services.SORTS)
    if sq.min_price is not None and sq.max_price is not None and sq.min_price > sq.max_price:
        p.errors["min_price"] = "must not be greater than max_price"
    p.raise_if_invalid()
    if slug and queries.category_by_slug(slug) is None:
        raise ApiError(
            422,
            "validation_failed",
            "Some query parameters are not valid.",
            {"fields": {"category": f"no category with slug {slug!r}"}},
        )
    result = services.search(sq)
    items = [{**_summary(i), "highlight": {"name": services.highlight_plain(i.highlight)}} for i in result.items]
    body = {
        "items": items,
        "page": sq.page,
        "per_page": sq.per_page,
        "total": result.total,
        "facets": result.facets,
        "engine": result.engine,
        "query": sq.q,
    }
    return cacheable(jsonify(body))
