"""The storefront's search page (/search) and its instant suggestions (/search/suggest?q=).

Works without JavaScript: the header's search box is a plain GET form, facets are links and
checkboxes in a GET form, the sort menu is a GET form of its own. search.js only adds the suggestions
list as you type.
"""

from __future__ import annotations

import math
from urllib.parse import urlencode

from flask import current_app, jsonify, request, url_for

from shop.catalog import queries
from shop.http import cacheable
from shop.money import format_money
from shop.search import services
from shop.storefront import bp
from shop.storefront.routes import _page, read_price_range

PER_PAGE = 24


def _major(amount: int) -> str:
    """2500 -> "25" and 4999 -> "49.99": a price as the filter form shows it."""
    text = format_money(amount, current_app.config["SHOP_CURRENCY"])
    digits = "".join(ch for ch in text if ch.isdigit() or ch == ".")
    return digits[:-3] if digits.endswith(".00") else digits


def _read_query() -> tuple[services.SearchQuery, list[str], dict]:
    """Read the query string leniently: a bad value is dropped with a note, never an error page."""
    args = request.args
    currency = current_app.config["SHOP_CURRENCY"]
    notes: list[str] = []
    sq = services.SearchQuery(q=(args.get("q") or "")[:200], per_page=PER_PAGE)
    form = read_price_range(args, sq, currency, notes)
    slug = args.get("category") or None
    if slug and queries.category_by_slug(slug[:120]) is None:
        notes.append("That category does not exist, so all categories are searched.")
        slug = None
    sq.category = slug
    sq.in_stock = args.get("in_stock") in ("1", "on", "true")
    sort = args.get("sort") or "relevance"
    if sort not in services.SORTS:
        notes.append("That sort order is not one we know, so the results are sorted by relevance.")
        sort = "relevance"
    sq.sort = sort
    for raw in args.getlist("option")[:20]:
        name, sep, value = raw.partition(":")
        if sep and name and value and len(raw) <= 130:
            sq.options.setdefault(name, []).append(value)
    try:
        sq.page = max(1, min(int(args.get("page", 1)), 1000))
    except ValueError:
        sq.page = 1
    return sq, notes, form


def _url(**changes) -> str:
    """This search's URL with some parameters replaced (None removes one); back to page 1."""
    args = request.args.to_dict(flat=False)
    args.pop("page", None)
    for key, value in changes.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = value if isinstance(value, list) else [str(value)]
    return url_for("storefront.search") + ("?" + urlencode(args, doseq=True) if args else "")


@bp.get("/search")
def search():
    sq, notes, form = _read_query()
    result = services.search(sq)
    pages = max(1, math.ceil(result.total / sq.per_page))

    def page_url(n: int) -> str:
        args = request.args.to_dict(flat=False)
        args["page"] = [str(n)]
        return url_for("storefront.search") + "?" + urlencode(args, doseq=True)

    chosen = [f"{k}:{v}" for k, vs in sq.options.items() for v in vs]
    return _page(
        "storefront/search.html",
        sq=sq,
        result=result,
        notes=notes,
        form=form,
        pages=pages,
        page_url=page_url,
        search_url=_url,
        chosen_options=chosen,
        major=_major,
        category_name=services.category_name(sq.category),
        sort_labels=services.SORTS,
    )


@bp.get("/search/suggest")
def suggest():
    q = (request.args.get("q") or "")[:100]
    items, engine = services.suggest(q)
    for item in items:
        item["url"] = url_for("storefront.product", slug=item["slug"])
    return cacheable(jsonify(query=q, suggestions=items, engine=engine))
