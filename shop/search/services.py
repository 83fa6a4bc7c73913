"""Product search for the storefront and the API: Typesense first, PostgreSQL when it cannot answer.

    search(SearchQuery(q="tshrt", category="men", options={"size": ["M"]}, page=1)) -> SearchResult
    suggest("oxf") -> [{"name": ..., "slug": ..., "highlight": ...}], engine

Typesense forgives typos (up to two per word), matches prefixes and counts facets. When it errors,
times out or has no index yet, the same question goes to PostgreSQL: full-text search over the
weighted `product.search_vector` (GIN index), prefix matching for the words as typed, ranked by
ts_rank, with the page and the facet counts from one pass over the matches in SQL (option counts
estimated from the most relevant SEARCH_FACET_SAMPLE matches when more match, and flagged so). The
result says which engine answered.

A failed Typesense call opens a short circuit (per URL and process): for BREAKER_SECONDS searches
go straight to PostgreSQL instead of each paying the connection timeout.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from markupsafe import Markup, escape
from sqlalchemy import Text, and_, any_, cast, exists, func, literal, null, or_, select, true, union_all

from shop.catalog import queries, reads
from shop.catalog.models import Category, Product, ProductImage, ProductOption, Variant
from shop.extensions import db
from shop.search import engine
from shop.search.engine import MARK_END, MARK_START, PRICE_BUCKETS, bucket_bounds, bucket_key
from shop.telemetry import metrics

log = logging.getLogger(__name__)
MAX_PER_PAGE = 100
MAX_FACET_VALUES = 50
BREAKER_SECONDS = 5.0
QUERY_BY = "name,name_words,brand,category_path,option_text,description"
QUERY_WEIGHTS = "6,6,3,3,2,1"


@dataclass
class SearchQuery:
    q: str = ""
    category: str | None = None  # a category slug; its sub-categories are included
    min_price: int | None = None  # minor units, on the product's price range
    max_price: int | None = None
    in_stock: bool = False
    options: dict[str, list[str]] = field(default_factory=dict)  # {"size": ["M", "L"]}: any of, per option
    sort: str = "relevance"  # one of SORTS
    page: int = 1
    per_page: int = 20


# The orders a result page can be sorted in (the listings' own, plus relevance), and their labels.
SORTS = {"relevance": "Relevance", "price": "Price: low to high", "-price": "Price: high to low", "newest": "Newest"}


@dataclass
class SearchItem(queries.ProductSummary):
    """A product summary with its name highlighted (MARK_START/MARK_END around the matches)."""

    highlight: str | None = None

    @property
    def name_html(self) -> Markup:
        return highlight_html(self.highlight or self.name)


@dataclass
class SearchResult:
    query: SearchQuery
    items: list[SearchItem]
    total: int
    facets: dict[str, Any]
    engine: str  # "typesense" or "database"


def highlight_html(marked: str) -> Markup:
    """Escape everything, then turn the highlight marks (and only them) into <mark> elements."""
    text = str(escape(marked))
    return Markup(text.replace(MARK_START, "<mark>").replace(MARK_END, "</mark>"))


def highlight_plain(marked: str | None) -> str | None:
    """The API's form: the same <mark> markup, every other character HTML-escaped."""
    return None if marked is None else str(highlight_html(marked))


# -- circuit breaker ------------------------------------------------------------------------------
_open_until: dict[str, float] = {}
_breaker_lock = threading.Lock()


def _typesense_allowed() -> bool:
    url = current_app.config["TYPESENSE_URL"]
    return _open_until.get(url, 0.0) <= time.monotonic()


def _typesense_failed(exc: Exception) -> None:
    url = current_app.config["TYPESENSE_URL"]
    with _breaker_lock:
        _open_until[url] = time.monotonic() + float(
            current_app.config.get("TYPESENSE_BREAKER_SECONDS", BREAKER_SECONDS)
        )
    log.warning(
        "search: Typesense at %s failed (%s: %s); answering from PostgreSQL", url, type(exc).__name__, str(exc)[:200]
    )


def reset_breaker() -> None:
    _open_until.clear()


# -- entry points ---------------------------------------------------------------------------------
def search(sq: SearchQuery) -> SearchResult:
    sq.q = _clean_query(sq.q)
    if _typesense_allowed():
        try:
            found = _typesense_search(sq)
            metrics.SEARCH.labels("search", "typesense").inc()
            return found
        except Exception as exc:  # noqa: BLE001 - any failure of derived data means: ask PostgreSQL
            if _is_outage(exc):
                _typesense_failed(exc)  # only an outage sends everyone to PostgreSQL for a while
            else:
                log.warning(
                    "search: Typesense refused a query (%s: %s); answering this one from PostgreSQL",
                    type(exc).__name__,
                    str(exc)[:200],
                )
    metrics.SEARCH.labels("search", "database").inc()
    return _database_search(sq)


def _is_outage(exc: Exception) -> bool:
    """Whether `exc` says Typesense cannot answer (down, unreachable, too slow, failing), rather than that it
    refused this one query. The client (typesense 2.x) lets httpx's transport errors through as they are."""
    import httpx
    import typesense

    return isinstance(
        exc,
        (
            httpx.TransportError,  # refused or reset connections, timeouts
            ConnectionError,
            TimeoutError,
            typesense.exceptions.Timeout,
            typesense.exceptions.HTTPStatus0Error,
            typesense.exceptions.ServiceUnavailable,
            typesense.exceptions.ServerError,
        ),
    )


def suggest(prefix: str, limit: int = 8) -> tuple[list[dict[str, Any]], str]:
    """Up to `limit` distinct product names for what has been typed so far, and the engine used."""
    prefix = _clean_query(prefix)
    if not prefix:
        return [], "typesense"
    if _typesense_allowed():
        try:
            names = _typesense_suggest(prefix, limit)
            metrics.SEARCH.labels("suggest", "typesense").inc()
            return names, "typesense"
        except Exception as exc:  # noqa: BLE001
            _typesense_failed(exc)
    metrics.SEARCH.labels("suggest", "database").inc()
    return _database_suggest(prefix, limit), "database"


def _clean_query(q: str | None) -> str:
    q = (q or "").replace(MARK_START, "").replace(MARK_END, "")
    return " ".join(q.split())[:200]


# -- Typesense ------------------------------------------------------------------------------------
def _quote(value: str) -> str:
    """A filter_by value in backticks (commas, spaces and brackets inside are then literal)."""
    return "`" + value.replace("`", "") + "`"


def _filter_by(sq: SearchQuery) -> str:
    parts = []
    if sq.category:
        parts.append(f"category_slugs:={_quote(sq.category)}")
    if sq.min_price is not None:
        parts.append(f"price_max:>={int(sq.min_price)}")
    if sq.max_price is not None:
        parts.append(f"price_min:<={int(sq.max_price)}")
    if sq.in_stock:
        parts.append("in_stock:=true")
    for name, values in sorted(sq.options.items()):
        if values:
            parts.append("option_values:=[" + ",".join(_quote(f"{name}={v}") for v in values) + "]")
    return " && ".join(parts)


def _typesense_sort(sq: SearchQuery) -> str:
    relevance = "_text_match:desc,popularity:desc" if sq.q else "popularity:desc"
    return {
        "price": "price_min:asc," + relevance,
        "-price": "price_min:desc," + relevance,
        "newest": "created_at:desc," + relevance,
    }.get(sq.sort, relevance)


def _typesense_search(sq: SearchQuery) -> SearchResult:
    params = {
        "q": sq.q or "*",
        "query_by": QUERY_BY,
        "query_by_weights": QUERY_WEIGHTS,
        # Two typos in names, one elsewhere (so "tshrt" does not pull in the "Tops & T-shirts" category).
        "num_typos": "2,2,1,1,1,1",
        "typo_tokens_threshold": 1,
        "prioritize_exact_match": True,
        "prefix": "true,true,true,false,false,false",  # prefixes of names and brands, as typed
        "facet_by": "category_slugs,price_buckets,option_values",
        "max_facet_values": MAX_FACET_VALUES * 4,
        "sort_by": _typesense_sort(sq),
        "highlight_fields": "name,name_words",
        "highlight_full_fields": "name",
        "highlight_start_tag": MARK_START,
        "highlight_end_tag": MARK_END,
        "page": sq.page,
        "per_page": sq.per_page,
        "exclude_fields": "description,option_text,name_words",
    }
    if filter_by := _filter_by(sq):
        params["filter_by"] = filter_by
    res = engine.client().collections[engine.alias_name()].documents.search(params)
    items = []
    for hit in res.get("hits", []):
        d = hit["document"]
        items.append(
            SearchItem(
                id=int(d["id"]),
                slug=d.get("slug", ""),
                name=d["name"],
                brand=d.get("brand", ""),
                price_from=d.get("price_min"),
                price_to=d.get("price_max"),
                currency=d.get("currency") or current_app.config["SHOP_CURRENCY"],
                image_path=d.get("image_path"),
                image_alt=d.get("image_alt"),
                in_stock=bool(d.get("in_stock")),
                highlight=_hit_highlight(hit, "name") or _words_highlight(d["name"], _hit_tokens(hit, "name_words")),
            )
        )
    counts = {
        f["field_name"]: [(c["value"], c["count"]) for c in f.get("counts", [])] for f in res.get("facet_counts", [])
    }
    options: dict[str, list[tuple[str, int]]] = {}
    for value, count in counts.get("option_values", []):
        name, _, val = value.partition("=")
        options.setdefault(name, []).append((val, count))
    facets = _facets(
        dict(counts.get("category_slugs", [])), dict(counts.get("price_buckets", [])), options, reads.tree().nodes
    )
    return SearchResult(sq, items, int(res.get("found", 0)), facets, "typesense")


def _hit_highlight(hit: dict[str, Any], field_name: str) -> str | None:
    for h in hit.get("highlights") or []:
        if h.get("field") == field_name:
            return h.get("value") or h.get("snippet")
    nested = (hit.get("highlight") or {}).get(field_name)
    if isinstance(nested, dict) and nested.get("matched_tokens"):
        return nested.get("value") or nested.get("snippet")
    return None


def _hit_tokens(hit: dict[str, Any], field_name: str) -> list[str]:
    for h in hit.get("highlights") or []:
        if h.get("field") == field_name:
            return [t for t in h.get("matched_tokens") or [] if isinstance(t, str)]
    return []


def _words_highlight(name: str, tokens: list[str]) -> str | None:
    """Mark in `name` the tokens Typesense matched in name_words (the hyphen-split copy)."""
    if not tokens:
        return None
    pattern = re.compile("|".join(re.escape(t) for t in sorted(set(tokens), key=len, reverse=True)), re.IGNORECASE)
    marked = pattern.sub(lambda m: MARK_START + m.group(0) + MARK_END, name)
    return marked if MARK_START in marked else None


def _typesense_suggest(prefix: str, limit: int) -> list[dict[str, Any]]:
    res = (
        engine.client()
        .collections[engine.alias_name()]
        .documents.search(
            {
                "q": prefix,
                "query_by": "name,name_words,brand,category_path",
                "query_by_weights": "4,4,2,1",
                "prefix": True,
                "num_typos": 1,
                "per_page": limit * 3,
                "include_fields": "name,slug",
                "sort_by": "_text_match:desc,popularity:desc",
                "highlight_fields": "name",
                "highlight_full_fields": "name",
                "highlight_start_tag": MARK_START,
                "highlight_end_tag": MARK_END,
            }
        )
    )
    out, seen = [], set()
    for hit in res.get("hits", []):
        name = hit["document"]["name"]
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        out.append(
            {
                "name": name,
                "slug": hit["document"].get("slug", ""),
                "highlight": highlight_plain(_hit_highlight(hit, "name") or name),
            }
        )
        if len(out) == limit:
            break
    return out


# -- facets, shared by both engines ---------------------------------------------------------------
def _price_label(lo: int, hi: int | None) -> str:
    from shop.money import format_money

    currency = current_app.config["SHOP_CURRENCY"]
    if lo == 0 and hi is not None:
        return f"Under {format_money(hi, currency)}"
    if hi is None:
        return f"{format_money(lo, currency)} and over"
    return f"{format_money(lo, currency)} to {format_money(hi, currency)}"


def _facets(
    category_counts: dict[str, int],
    bucket_counts: dict[str, int],
    option_counts: dict[str, list[tuple[str, int]]],
    cats: list[Any] | None = None,
    *,
    options_estimated: bool = False,
) -> dict[str, Any]:
    category = _category_facet(reads.tree().nodes if cats is None else cats, category_counts)
    price = []
    for lo, hi in PRICE_BUCKETS:
        n = bucket_counts.get(bucket_key(lo, hi), 0)
        if n:
            low, high = bucket_bounds(lo, hi)  # what the bucket's link filters on; the counts use the same
            price.append(
                {
                    "key": bucket_key(lo, hi),
                    "min": low,
                    "max": high,
                    "label": _price_label(lo, hi),
                    "count": n,
                }
            )
    options = {}
    for name in sorted(option_counts):
        if "size" in name.lower():  # sizes in size order, whatever sells most
            values = sorted(option_counts[name], key=lambda vc: size_key(vc[0]))
        else:
            values = sorted(option_counts[name], key=lambda vc: (-vc[1], _natural(vc[0])))
        options[name] = [{"value": v, "count": n} for v, n in values[:MAX_FACET_VALUES]]
    return {"category": category, "price": price, "options": options, "options_estimated": options_estimated}


def _category_facet(cats: Any, counts: dict[str, int]) -> list[dict[str, Any]]:
    """The categories with results, in tree order: each one straight after its parent, its own
    sub-categories under it (depth 1, 2, ...), siblings in display order."""
    children: dict[int | None, list[Any]] = {}
    ids = {c.id for c in cats}
    for c in cats:  # parents before children, in display order
        children.setdefault(c.parent_id if c.parent_id in ids else None, []).append(c)
    parents = {c.id: c for c in cats}
    out: list[dict[str, Any]] = []

    def walk(parent_id: int | None, depth: int, seen: set[int]) -> None:
        for c in children.get(parent_id, []):
            if c.id in seen:
                continue
            seen.add(c.id)
            if counts.get(c.slug):
                parent = parents.get(c.parent_id)
                out.append(
                    {
                        "slug": c.slug,
                        "name": c.name,
                        "parent_id": c.parent_id,
                        "parent": parent.slug if parent else None,
                        "depth": depth,
                        "count": counts[c.slug],
                    }
                )
            walk(c.id, depth + 1, seen)

    walk(None, 0, set())
    return out


# Letter sizes, smallest first ("S/M" between S and M). Numeric sizes (shoes: 38-46) come after them,
# in number order, then anything else in natural order.
LETTER_SIZES = ["XXXS", "XXS", "XS", "XS/S", "S", "S/M", "M", "M/L", "L", "L/XL", "XL", "XL/XXL", "XXL", "XXXL"]
_LETTER_RANK = {v: i for i, v in enumerate(LETTER_SIZES)}
_LETTER_RANK.update({"2XS": _LETTER_RANK["XXS"], "2XL": _LETTER_RANK["XXL"], "3XL": _LETTER_RANK["XXXL"]})
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)?$")


def size_key(value: str) -> tuple[Any, ...]:
    """Sort key for size values: XS < S < M < L < XL < XXL, then 38 < 39 < 40.5 < 41, then the rest."""
    v = value.strip().upper()
    if v in _LETTER_RANK:
        return (0, _LETTER_RANK[v], 0.0, v)
    if _NUMBER.match(v):
        return (1, 0, float(v.replace(",", ".")), v)
    return (2, 0, 0.0, _natural(value))


def _natural(value: str) -> list[int | str]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", value)]


# -- PostgreSQL fallback --------------------------------------------------------------------------
_WORD = re.compile(r"\w+", re.UNICODE)


def _text_condition(q: str) -> tuple[Any, Any]:
    """(condition, prefix tsquery) for `q`: websearch syntax, or every word as a prefix."""
    words = _WORD.findall(q.lower())[:12]
    web = func.websearch_to_tsquery("english", q)
    if not words:
        return Product.search_vector.op("@@")(web), web
    # \w+ words only, so nothing in the string is tsquery syntax.
    prefix = func.to_tsquery("english", " & ".join(f"{w}:*" for w in words))
    return or_(Product.search_vector.op("@@")(web), Product.search_vector.op("@@")(prefix)), prefix


def _database_where(sq: SearchQuery) -> Any:
    category_ids = None
    if sq.category:
        cat = queries.category_by_slug(sq.category)
        category_ids = queries.descendant_ids(cat) if cat else []
    f = queries.ProductFilter(
        category_ids=category_ids,
        min_price=sq.min_price,
        max_price=sq.max_price,
        in_stock=sq.in_stock,
        options={k: v for k, v in sq.options.items() if v},
    )
    where = queries._filtered(f)  # the listings' own filter: same meaning for price, stock, options
    tsq = None
    if sq.q:
        cond, tsq = _text_condition(sq.q)
        where = and_(where, cond)
    return where, tsq


def _database_search(sq: SearchQuery) -> SearchResult:
    """The page and every facet from one pass over the matching products, then the page's cards.

    One statement finds the matches once (a MATERIALIZED CTE: the text match, the filters and ts_rank,
    each evaluated once per matching row) and reads from that set the total, the page's ids in order, the
    category and price counts (exact: a count over the whole set), and the option values of the
    SEARCH_FACET_SAMPLE most relevant matches (exact when no more match; else scaled to the total and
    flagged as estimates); a second fetches the page's cards (name, image, stock, highlight) for those ids
    only. Two queries, whatever the page size and the number of matches."""
    where, tsq = _database_where(sq)
    rank = func.ts_rank(Product.search_vector, tsq) if tsq is not None else literal(0)
    matching = (
        select(
            Product.id.label("id"),
            Product.category_id.label("category_id"),
            Product.price_min.label("price_min"),
            Product.price_max.label("price_max"),
            Product.created_at.label("created_at"),
            rank.label("rank"),
        )
        .where(where)
        .cte("matching")
        .prefix_with("MATERIALIZED")  # read by every branch below: found once
    )
    m = matching.c
    # Relevance, or the listings' own orders (relevance breaks their ties).
    first = {
        "price": m.price_min.asc().nulls_last(),
        "-price": m.price_min.desc().nulls_last(),
        "newest": m.created_at.desc(),
    }.get(sq.sort)
    order: tuple[Any, ...] = ((first,) if first is not None else ()) + (m.rank.desc(), m.id.desc())
    page = (
        select(m.id, func.row_number().over(order_by=order).label("n"))
        .order_by(*order)
        .limit(sq.per_page)
        .offset((sq.page - 1) * sq.per_page)
        .subquery("page")
    )
    # Counting every (option, value) of 10,000+ matches cost more than the rest of the search together.
    size = int(current_app.config["SEARCH_FACET_SAMPLE"])
    sample = select(m.id).order_by(m.rank.desc(), m.id.desc()).limit(size).scalar_subquery()
    values = func.unnest(ProductOption.values).table_valued("value", with_ordinality="ord").render_derived()
    branches = [
        select(literal("total"), null(), null(), func.count()).select_from(matching),
        select(literal("page"), cast(page.c.id, Text), null(), page.c.n),
        select(literal("category"), cast(m.category_id, Text), null(), func.count()).group_by(m.category_id),
        # Price: a product counts in every bucket the price filter would find it in (engine.price_buckets).
        *[
            select(literal("price"), literal(bucket_key(lo, hi)), null(), func.count())
            .select_from(matching)
            .where(_price_overlap(m.price_min, m.price_max, *bucket_bounds(lo, hi)))
            for lo, hi in PRICE_BUCKETS
        ],
        # Each value once per product (its first place in its list: a value listed twice is one product). A FILTER,
        # not a WHERE: PostgreSQL then expects as many rows as there are and groups them in a hash table,
        # instead of sorting them all (to disk, beyond work_mem) for the few it expected. The sample's options
        # are found by product_id = ANY(array): index lookups, where a join read all of product_option.
        select(
            literal("option"),
            ProductOption.name,
            values.c.value,
            func.count().filter(func.array_position(ProductOption.values, values.c.value) == values.c.ord),
        )
        .select_from(ProductOption)
        .join(values, true())
        .where(ProductOption.product_id == any_(func.array(sample)))
        .group_by(ProductOption.name, values.c.value),
    ]
    total, ids = 0, []
    per_category: dict[int, int] = {}
    bucket_counts: dict[str, int] = {}
    options: dict[str, list[tuple[str, int]]] = {}
    for kind, key, value, n in db.session.execute(union_all(*branches)).all():
        if kind == "total":
            total = n
        elif kind == "page":
            ids.append((n, int(key)))
        elif kind == "category":
            per_category[int(key)] = n
        elif kind == "price":
            bucket_counts[key] = n
        else:
            options.setdefault(key, []).append((value, n))
    estimated = total > size
    if estimated:  # counted over the sample: scaled to every match (a value seen at all stays at least 1)
        options = {k: [(v, max(1, round(n * total / size))) for v, n in vs] for k, vs in options.items()}
    items = _database_items([i for _, i in sorted(ids)], tsq)
    cats = reads.tree().nodes
    facets = _facets(_rolled_up(per_category, cats), bucket_counts, options, cats, options_estimated=estimated)
    return SearchResult(sq, items, total, facets, "database")


def _database_items(ids: list[int], tsq: Any) -> list[SearchItem]:
    """The cards of the products `ids`, in that order: one query, whatever the page size."""
    if not ids:
        return []
    first_image = (
        select(ProductImage.path, ProductImage.alt)
        .where(ProductImage.product_id == Product.id)
        .order_by(ProductImage.position, ProductImage.id)
        .limit(1)
        .lateral("first_image")
    )
    in_stock = (
        exists().where(Variant.product_id == Product.id, Variant.on_hand - Variant.reserved > 0).correlate(Product)
    )
    headline: Any
    if tsq is not None:
        headline = func.ts_headline(
            "english", Product.name, tsq, f"StartSel={MARK_START}, StopSel={MARK_END}, HighlightAll=true"
        )
    else:
        headline = literal(None)
    rows = db.session.execute(
        select(
            Product.id,
            Product.slug,
            Product.name,
            Product.brand,
            Product.price_min,
            Product.price_max,
            Product.currency,
            first_image.c.path,
            first_image.c.alt,
            in_stock.label("in_stock"),
            headline.label("headline"),
        )
        .where(Product.id.in_(ids))
        .outerjoin(first_image, true())
    ).all()
    by_id = {
        r.id: SearchItem(
            r.id,
            r.slug,
            r.name,
            r.brand,
            r.price_min,
            r.price_max,
            r.currency,
            r.path,
            r.alt,
            bool(r.in_stock),
            highlight=r.headline if r.headline and MARK_START in r.headline else None,
        )
        for r in rows
    }
    return [by_id[i] for i in ids if i in by_id]


def _rolled_up(per_category: dict[int, int], cats: list[Any]) -> dict[str, int]:
    """Counts per category slug: each leaf's count added to every ancestor (as Typesense's category_slugs do)."""
    by_id = {c.id: c for c in cats}
    counts: dict[str, int] = {}
    for cid, n in per_category.items():
        cur, seen = by_id.get(cid), set()
        while cur is not None and cur.id not in seen:
            seen.add(cur.id)
            counts[cur.slug] = counts.get(cur.slug, 0) + n
            cur = by_id.get(cur.parent_id) if cur.parent_id else None
    return counts


def _price_overlap(price_min: Any, price_max: Any, low: int, high: int | None) -> Any:
    """The price filter's own condition (shop.catalog.queries._filtered) for min_price=low, max_price=high."""
    return price_max >= low if high is None else and_(price_max >= low, price_min <= high)


def _database_suggest(prefix: str, limit: int) -> list[dict[str, Any]]:
    cond, tsq = _text_condition(prefix)
    rows = db.session.execute(
        select(
            Product.name,
            func.min(Product.slug).label("slug"),
            func.max(func.ts_rank(Product.search_vector, tsq)).label("rank"),
        )
        .where(Product.status == "active", cond)
        .group_by(Product.name)
        .order_by(func.max(func.ts_rank(Product.search_vector, tsq)).desc(), Product.name)
        .limit(limit)
    ).all()
    out = []
    for r in rows:
        marked = _mark_words(r.name, _WORD.findall(prefix.lower()))
        out.append({"name": r.name, "slug": r.slug, "highlight": highlight_plain(marked)})
    return out


def _mark_words(name: str, words: list[str]) -> str:
    """Mark the words of `name` that start with one of `words` (for suggestions from PostgreSQL)."""
    if not words:
        return name
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")", re.IGNORECASE)
    return pattern.sub(lambda m: MARK_START + m.group(0) + MARK_END, name)


def category_name(slug: str | None) -> str | None:
    if not slug:
        return None
    cat = db.session.scalar(select(Category).where(Category.slug == slug))
    return cat.name if cat else None
