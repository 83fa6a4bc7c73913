"""GET /api/v1/search: a page of product summaries with facets, and which engine answered."""

from __future__ import annotations

from flask import jsonify, request

from shop.api import bp, schemas
from shop.api.contract import operation, query
from shop.api.params import Params
from shop.api.routes import PRICE, V1, _summary
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
@operation(
    "Search active products (typo-tolerant), with facet counts",
    tags=["catalog"],
    description="Answered by Typesense; when it cannot be reached, by PostgreSQL full-text search (`engine` says "
    "which). Facet counts are over all the products matching the query and filters, except that PostgreSQL counts "
    "option values over the 1,000 most relevant matches (SEARCH_FACET_SAMPLE) and scales them to the total when "
    "more match (`facets.options_estimated` is then true). A product counts in every price range its variants' "
    "prices overlap, as the price filter finds it. `highlight.name` is the name HTML-escaped with `<mark>` around the matches.",
    params=[
        query("q", {"type": "string", "maxLength": 200}, "what to look for; typos are forgiven"),
        query("category", {"type": "string", "maxLength": 120}, "category slug; includes its sub-categories"),
        query("min_price", PRICE, "minor units"),
        query("max_price", PRICE, "minor units; not below min_price"),
        query("in_stock", {"type": "boolean"}, "only products with a variant available"),
        query(
            "sort",
            {"type": "string", "enum": list(services.SORTS), "default": "relevance"},
            "order of the results (price: the lowest variant price)",
        ),
        query(
            "option",
            {"type": "array", "items": {"type": "string", "maxLength": 130}, "maxItems": 20},
            "option value as name:value, e.g. size:M (repeatable; any of the values of one option, all of the options)",
            style="form",
            explode=True,
        ),
        query("page", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1}, "page number"),
        query(
            "per_page",
            {"type": "integer", "minimum": 1, "maximum": services.MAX_PER_PAGE, "default": 20},
            "page size",
        ),
    ],
    responses={200: schemas.SearchResults, 422: "validation_failed: a query parameter (details.fields names it)"},
)
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
