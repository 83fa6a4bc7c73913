"""Catalogue reads for shoppers as plain data, through the Redis cache (shop.cache).

The storefront pages and the catalogue API read here; both get JSON-able data (dicts, lists and
ProductSummary rows), whether it came from Redis or from PostgreSQL (shop.catalog.queries), so the
same page renders either way. The cart and checkout never read here: prices and availability they
act on come from PostgreSQL (shop.cart.services, shop.checkout.services).
"""

from __future__ import annotations

from types import SimpleNamespace

from flask import g, has_app_context

from shop import cache
from shop.catalog import queries
from shop.catalog.models import Product

_G_TREE = "_catalog_tree"


# --- categories -----------------------------------------------------------------------------------


def category_rows() -> list[dict]:
    """Every category as {id, slug, name, parent_id}, parents before children, in display order."""
    return cache.cached("categories", None, _category_rows, scope="categories")


def _category_rows() -> list[dict]:
    return [{"id": c.id, "slug": c.slug, "name": c.name, "parent_id": c.parent_id} for c in queries.list_categories()]


class CategoryTree:
    """The category rows linked up in memory: nodes have id, slug, name, parent_id, parent, children."""

    def __init__(self, rows: list[dict]):
        self.nodes = [SimpleNamespace(**r, parent=None, children=[]) for r in rows]
        by_id = {n.id: n for n in self.nodes}
        self._by_slug = {n.slug: n for n in self.nodes}
        for n in self.nodes:
            if n.parent_id is not None and n.parent_id in by_id:
                n.parent = by_id[n.parent_id]
                n.parent.children.append(n)
        self.roots = [n for n in self.nodes if n.parent_id is None]

    def by_slug(self, slug: str):
        return self._by_slug.get(slug)

    def descendant_ids(self, node) -> list[int]:
        """The category and everything below it."""
        out, stack = [], [node]
        while stack:
            n = stack.pop()
            out.append(n.id)
            stack.extend(n.children)
        return sorted(out)


def tree() -> CategoryTree:
    """The category tree, built once per request (the header, the page and the API share it)."""
    if has_app_context() and _G_TREE in g:
        return g.get(_G_TREE)
    t = CategoryTree(category_rows())
    if has_app_context():
        g.setdefault(_G_TREE, t)
    return t


# --- listings -------------------------------------------------------------------------------------


def list_products(f: queries.ProductFilter) -> tuple[list[queries.ProductSummary], int]:
    """queries.list_products, cached per filter combination (category, prices, options, sort, page)."""
    params = dict(vars(f))  # shallow: asdict() deep-copies, a measurable cost on every listing
    if params["category_ids"] is not None:
        params["category_ids"] = sorted(params["category_ids"])
    params["options"] = {k: sorted(v) for k, v in params["options"].items() if v}
    data = cache.cached("listing", params, lambda: _listing(f))
    return [queries.ProductSummary(**i) for i in data["items"]], data["total"]


def _listing(f: queries.ProductFilter) -> dict:
    items, total = queries.list_products(f)
    return {"items": [_row(i) for i in items], "total": total}


def _row(summary: queries.ProductSummary) -> dict:
    """A summary as plain data (its fields are scalars: a shallow copy is enough, and far cheaper than asdict)."""
    return dict(vars(summary))


def option_facets(category_ids: list[int] | None) -> dict[str, list[str]]:
    ids = sorted(category_ids) if category_ids is not None else None
    return cache.cached("facets", ids, lambda: queries.option_facets(category_ids))


def related(product_id: int, category_id: int, limit: int = 4) -> list[queries.ProductSummary]:
    """Up to `limit` other in-stock products of the same category, newest first (cached like a listing)."""
    data = cache.cached(
        "related",
        {"id": product_id, "category": category_id, "limit": limit},
        lambda: [_row(i) for i in queries.related_products(product_id, category_id, limit)],
    )
    return [queries.ProductSummary(**i) for i in data]


# --- products -------------------------------------------------------------------------------------


def product(slug: str) -> dict | None:
    """An active product with its category, options, variants (price, availability) and images, or None."""
    if len(slug) > 160:
        return None
    return cache.cached_product(slug, lambda: _product(slug))


def _product(slug: str) -> dict | None:
    p = queries.product_by_slug(slug)
    return product_data(p) if p is not None else None


def product_data(p: Product) -> dict:
    """A loaded product as plain data."""
    return {
        "id": p.id,
        "slug": p.slug,
        "name": p.name,
        "brand": p.brand,
        "description": p.description,
        "status": p.status,
        "attributes": dict(p.attributes or {}),
        "category": {"id": p.category.id, "slug": p.category.slug, "name": p.category.name},
        "images": [{"path": i.path, "alt": i.alt, "option_value": i.option_value} for i in p.images],
        "options": [{"name": o.name, "values": list(o.values)} for o in p.options],
        "variants": [
            {
                "id": v.id,
                "sku": v.sku,
                "options": dict(v.options),
                "price_amount": v.price_amount,
                "compare_at_amount": v.compare_at_amount,
                "currency": v.currency,
                "available": v.available,
                "weight_grams": v.weight_grams,
            }
            for v in p.variants
        ],
    }


def product_view(data: dict) -> SimpleNamespace:
    """Product data with attribute access for templates (option.values must not be dict.values)."""
    return SimpleNamespace(
        **{
            **data,
            "category": SimpleNamespace(**data["category"]),
            "images": [SimpleNamespace(**{"option_value": None, **i}) for i in data["images"]],
            "options": [SimpleNamespace(**o) for o in data["options"]],
            "variants": [SimpleNamespace(**v) for v in data["variants"]],
        }
    )
