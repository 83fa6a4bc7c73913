"""Catalogue endpoints of /api/v1. Views parse, call the catalogue queries, serialise."""

from __future__ import annotations

from flask import jsonify, request

from shop.api import bp, schemas
from shop.api.contract import operation, query
from shop.api.params import Params
from shop.catalog import queries, reads
from shop.catalog.models import Product
from shop.errors import ApiError
from shop.http import cacheable
from shop.media import image_url
from shop.money import money

V1 = "/v1"


def _summary(p: queries.ProductSummary) -> dict:
    return {
        "id": p.id,
        "slug": p.slug,
        "name": p.name,
        "brand": p.brand,
        "price_from": money(p.price_from, p.currency),
        "image_url": image_url(p.image_path),
        "in_stock": p.in_stock,
    }


def _product(p: Product | dict) -> dict:
    """The contract's product detail, from a loaded Product or its data (shop.catalog.reads)."""
    d = reads.product_data(p) if isinstance(p, Product) else p
    return {
        "id": d["id"],
        "slug": d["slug"],
        "name": d["name"],
        "brand": d["brand"],
        "description": d["description"],
        "category": dict(d["category"]),
        "attributes": d["attributes"],
        "images": [image_url(i["path"]) for i in d["images"]],
        "image_alts": [i["alt"] for i in d["images"]],
        "options": [{"name": o["name"], "values": list(o["values"])} for o in d["options"]],
        "variants": [
            {
                "id": v["id"],
                "sku": v["sku"],
                "options": v["options"],
                "price": money(v["price_amount"], v["currency"]),
                "compare_at_price": money(v["compare_at_amount"], v["currency"]),
                "available": v["available"],
                "weight_grams": v["weight_grams"],
            }
            for v in d["variants"]
        ],
    }


@bp.get(f"{V1}/categories")
@operation(
    "All categories (a tree through parent_id)",
    tags=["catalog"],
    responses={200: schemas.CategoryList},
)
def categories():
    return cacheable(jsonify(reads.category_rows()))


PRICE = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


@bp.get(f"{V1}/products")
@operation(
    "A page of active products",
    tags=["catalog"],
    params=[
        query("category", {"type": "string", "maxLength": 120}, "category slug; includes its sub-categories"),
        query("min_price", PRICE, "minor units"),
        query("max_price", PRICE, "minor units; not below min_price"),
        query("in_stock", {"type": "boolean"}, "only products with a variant available"),
        query("sort", {"type": "string", "enum": list(queries.SORTS), "default": "newest"}, "order"),
        query("page", {"type": "integer", "minimum": 1, "maximum": 100_000, "default": 1}, "page number"),
        query(
            "per_page", {"type": "integer", "minimum": 1, "maximum": queries.MAX_PER_PAGE, "default": 20}, "page size"
        ),
    ],
    responses={200: schemas.ProductPage, 422: "validation_failed: a query parameter (details.fields names it)"},
)
def products():
    p = Params(request.args)
    slug = p.str("category", max_len=120)
    f = queries.ProductFilter(
        min_price=p.int("min_price", lo=0, hi=2**31 - 1),
        max_price=p.int("max_price", lo=0, hi=2**31 - 1),
        in_stock=p.bool("in_stock"),
        sort=p.choice("sort", list(queries.SORTS), "newest"),
        page=p.int("page", 1, lo=1, hi=100_000),
        per_page=p.int("per_page", 20, lo=1, hi=queries.MAX_PER_PAGE),
    )
    if f.min_price is not None and f.max_price is not None and f.min_price > f.max_price:
        p.errors["min_price"] = "must not be greater than max_price"
    p.raise_if_invalid()
    if slug:
        tree = reads.tree()
        category = tree.by_slug(slug)
        if category is None:
            raise ApiError(
                422,
                "validation_failed",
                "Some query parameters are not valid.",
                {"fields": {"category": f"no category with slug {slug!r}"}},
            )
        f.category_ids = tree.descendant_ids(category)
    items, total = reads.list_products(f)
    body = {"items": [_summary(i) for i in items], "page": f.page, "per_page": f.per_page, "total": total}
    return cacheable(jsonify(body))


@bp.get(f"{V1}/products/<slug>")
@operation(
    "One active product with its options and variants",
    tags=["catalog"],
    responses={200: schemas.Product, 404: "product_not_found: no such active product"},
)
def product(slug: str):
    data = reads.product(slug)
    if data is None:
        raise ApiError(404, "product_not_found", "No product with this slug.")
    return cacheable(jsonify(_product(data)))
