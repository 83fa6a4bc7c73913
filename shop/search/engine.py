"""Typesense: the client, the products collection's schema, and documents built from PostgreSQL.

The index is derived data. Every document is built from the database through `db.session` (so a
job sees what its transaction sees), in batches with a fixed number of queries per batch.

Collections are named `<alias>_<timestamp>`; the alias (TYPESENSE_COLLECTION, default `products`)
points at the live one, so a reindex can build a new collection beside it and swap atomically.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import func, select

from shop.catalog.models import Category, Product, ProductImage, ProductOption, Variant
from shop.extensions import db

# Highlight marks: private-use characters that never reach a page unescaped (see services.highlight_html).
MARK_START, MARK_END = "\ue000", "\ue001"

# Price buckets for the facet, in minor units: [lo, hi) with None open. A bucket's link filters on
# min_price=lo, max_price=hi - 1 (bucket_bounds), and the price filter keeps a product whose price range
# [price_min, price_max] overlaps the range asked for; so a product counts in every bucket its range
# overlaps (price_buckets), on Typesense and on the PostgreSQL fallback alike.
PRICE_BUCKETS = [(0, 2500), (2500, 5000), (5000, 10000), (10000, 20000), (20000, None)]


def bucket_key(lo: int, hi: int | None) -> str:
    return f"{lo}-{'' if hi is None else hi}"


def bucket_bounds(lo: int, hi: int | None) -> tuple[int, int | None]:
    """The bucket as the price filter's inclusive (min_price, max_price): what its facet link asks for."""
    return lo, None if hi is None else hi - 1


def price_buckets(price_min: int | None, price_max: int | None) -> list[str]:
    """Keys of the buckets whose filter finds a product priced from `price_min` to `price_max`: those its
    range overlaps, as the price filter reads min_price and max_price (shop.catalog.queries._filtered)."""
    if price_min is None or price_max is None:
        return []  # no variants, no price: the price filter finds it in no range
    keys = []
    for lo, hi in PRICE_BUCKETS:
        low, high = bucket_bounds(lo, hi)
        if price_max >= low and (high is None or price_min <= high):
            keys.append(bucket_key(lo, hi))
    return keys


def alias_name() -> str:
    return current_app.config.get("TYPESENSE_COLLECTION") or "products"


def schema(name: str) -> dict:
    return {
        "name": name,
        "fields": [
            {"name": "name", "type": "string"},
            # The name with hyphens and slashes as spaces: "T-Shirt" is one token ("tshirt") in `name`,
            # so "tshrt" finds it there, and "shirt" finds it here.
            {"name": "name_words", "type": "string"},
            {"name": "brand", "type": "string", "facet": True},
            {"name": "description", "type": "string"},
            # Names of the category and its ancestors ("Men", "T-shirts"): searchable.
            {"name": "category_path", "type": "string[]"},
            # Slugs of the category and its ancestors: filter and facet (counts roll up the tree).
            {"name": "category_slugs", "type": "string[]", "facet": True},
            # "size=M", "colour=Black": one facet for every option, split by name when read.
            {"name": "option_values", "type": "string[]", "facet": True},
            # The bare values ("M", "Black"): searchable.
            {"name": "option_text", "type": "string[]"},
            {"name": "price_min", "type": "int64"},
            {"name": "price_max", "type": "int64"},
            # Every price bucket the product's range overlaps (a new name for a new type: the string
            # `price_bucket` of older collections held the lowest price's bucket only).
            {"name": "price_buckets", "type": "string[]", "facet": True, "optional": True},
            {"name": "in_stock", "type": "bool", "facet": True},
            {"name": "popularity", "type": "int32"},
            # When the product was added (Unix seconds): the "newest" sort.
            {"name": "created_at", "type": "int64", "optional": True},
            # For rendering a result without a database round trip.
            {"name": "slug", "type": "string", "index": False, "optional": True},
            {"name": "currency", "type": "string", "index": False, "optional": True},
            {"name": "image_path", "type": "string", "index": False, "optional": True},
            {"name": "image_alt", "type": "string", "index": False, "optional": True},
        ],
        "default_sorting_field": "popularity",
    }


_clients: dict = {}
_lock = threading.Lock()


logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise


def client(timeout: float | None = None):
    """A Typesense client for the configured URL and key (one per process and setting).

    Short timeouts and no retries for searches: one that cannot reach Typesense quickly falls back to
    PostgreSQL rather than keeping the shopper waiting. Jobs ask for a longer `timeout` (bulk imports)."""
    import typesense

    url = current_app.config["TYPESENSE_URL"].rstrip("/")
    key = current_app.config["TYPESENSE_API_KEY"]
    timeout = float(timeout or current_app.config.get("TYPESENSE_TIMEOUT", 2.0))
    cache_key = (url, key, timeout)
    with _lock:
        if cache_key not in _clients:
            parts = urlsplit(url)
            node = {
                "host": parts.hostname or "127.0.0.1",
                "port": parts.port or (443 if parts.scheme == "https" else 8108),
                "protocol": parts.scheme or "http",
            }
            if parts.path and parts.path != "/":
                node["path"] = parts.path
            _clients[cache_key] = typesense.Client(
                {
                    "nodes": [node],
                    "api_key": key,
                    "connection_timeout_seconds": timeout,
                    "num_retries": 0,
                    "retry_interval_seconds": 0.05,
                    "healthcheck_interval_seconds": 1,
                    "suppress_deprecation_warnings": True,
                }
            )
        return _clients[cache_key]


def _clean(text: str | None) -> str:
    return (text or "").replace(MARK_START, "").replace(MARK_END, "")


def _words(text: str | None) -> str:
    return re.sub(r"[-/]+", " ", _clean(text))


def _category_chains() -> dict[int, list[Category]]:
    """Each category id -> [root, ..., itself] (one query)."""
    cats = {c.id: c for c in db.session.scalars(select(Category))}
    chains: dict[int, list[Category]] = {}
    for cid in cats:
        chain, seen, cur = [], set(), cats.get(cid)
        while cur is not None and cur.id not in seen:
            seen.add(cur.id)
            chain.append(cur)
            cur = cats.get(cur.parent_id) if cur.parent_id else None
        chains[cid] = list(reversed(chain))
    return chains


def build_documents(product_ids: list[int], chains: dict[int, list[Category]] | None = None) -> dict[int, dict]:
    """Documents for the active products among `product_ids` (missing or draft ones are absent)."""
    from shop.orders.models import OrderLine

    if not product_ids:
        return {}
    chains = chains if chains is not None else _category_chains()
    products = db.session.execute(
        select(
            Product.id,
            Product.slug,
            Product.name,
            Product.brand,
            Product.description,
            Product.category_id,
            Product.price_min,
            Product.price_max,
            Product.currency,
            Product.created_at,
        ).where(Product.id.in_(product_ids), Product.status == "active")
    ).all()
    if not products:
        return {}
    ids = [p.id for p in products]
    options: dict[int, list[tuple[str, list[str]]]] = {}
    for pid, name, values in db.session.execute(
        select(ProductOption.product_id, ProductOption.name, ProductOption.values)
        .where(ProductOption.product_id.in_(ids))
        .order_by(ProductOption.product_id, ProductOption.position)
    ):
        options.setdefault(pid, []).append((name, list(values or [])))
    stock = dict(
        db.session.execute(
            select(Variant.product_id, func.bool_or(Variant.on_hand - Variant.reserved > 0))
            .where(Variant.product_id.in_(ids))
            .group_by(Variant.product_id)
        ).all()
    )
    first = (
        select(
            ProductImage.product_id,
            ProductImage.path,
            ProductImage.alt,
            func.row_number()
            .over(partition_by=ProductImage.product_id, order_by=(ProductImage.position, ProductImage.id))
            .label("n"),
        )
        .where(ProductImage.product_id.in_(ids))
        .subquery()
    )
    images = {r.product_id: (r.path, r.alt) for r in db.session.execute(select(first).where(first.c.n == 1))}
    sold = dict(
        db.session.execute(
            select(Variant.product_id, func.coalesce(func.sum(OrderLine.quantity), 0))
            .join(OrderLine, OrderLine.variant_id == Variant.id)
            .where(Variant.product_id.in_(ids))
            .group_by(Variant.product_id)
        ).all()
    )
    docs = {}
    for p in products:
        chain = chains.get(p.category_id, [])
        opts = options.get(p.id, [])
        image = images.get(p.id, (None, None))
        doc = {
            "id": str(p.id),
            "name": _clean(p.name),
            "name_words": _words(p.name),
            "brand": _clean(p.brand),
            "description": _clean(p.description),
            "category_path": [_clean(c.name) for c in chain],
            "category_slugs": [c.slug for c in chain],
            # Each value once: an option may list one twice, and Typesense would count the product twice.
            "option_values": [f"{n}={v}" for n, vals in opts for v in dict.fromkeys(vals)],
            "option_text": sorted({_clean(v) for _, vals in opts for v in vals}),
            "price_min": p.price_min if p.price_min is not None else 0,
            "price_max": p.price_max if p.price_max is not None else 0,
            "in_stock": bool(stock.get(p.id)),
            "popularity": min(int(sold.get(p.id, 0)), 2**31 - 1),
            "slug": p.slug,
            "currency": p.currency,
        }
        if p.created_at is not None:
            doc["created_at"] = int(p.created_at.timestamp())
        if buckets := price_buckets(p.price_min, p.price_max):
            doc["price_buckets"] = buckets
        if image[0]:
            doc["image_path"], doc["image_alt"] = image[0], image[1] or ""
        docs[p.id] = doc
    return docs


def all_product_batches(batch: int = 2000):
    """Every active product's document, `batch` at a time, by keyset pagination on id."""
    chains = _category_chains()
    last = 0
    while True:
        ids = list(
            db.session.scalars(
                select(Product.id)
                .where(Product.id > last, Product.status == "active")
                .order_by(Product.id)
                .limit(batch)
            )
        )
        if not ids:
            return
        last = ids[-1]
        yield list(build_documents(ids, chains).values())
