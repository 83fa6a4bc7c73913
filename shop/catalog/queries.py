"""Catalogue reads shared by the storefront and the API.

Every listing is answered with a fixed number of SQL queries whatever the page size: one for the
total, one for the page (first image and stock state come from correlated subqueries), so a page of
100 costs what a page of 10 does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, exists, func, or_, select, true
from sqlalchemy.orm import selectinload

from shop.catalog.models import Category, Product, ProductImage, ProductOption, Variant
from shop.extensions import db

SORTS = {
    "name": (Product.name.asc(), Product.id.asc()),
    "price": (Product.price_min.asc().nulls_last(), Product.id.asc()),
    "-price": (Product.price_min.desc().nulls_last(), Product.id.desc()),
    "newest": (Product.created_at.desc(), Product.id.desc()),
}
MAX_PER_PAGE = 100


@dataclass
class ProductFilter:
    category_ids: list[int] | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool = False
    # {"size": ["M", "L"], "colour": ["Red"]}: a product matches when one variant has one of the
    # chosen values for every named option (and is in stock, when in_stock is asked).
    options: dict[str, list[str]] = field(default_factory=dict)
    sort: str = "newest"
    page: int = 1
    per_page: int = 20


@dataclass
class ProductSummary:
    id: int
    slug: str
    name: str
    brand: str
    price_from: int | None
    price_to: int | None
    currency: str
    image_path: str | None
    image_alt: str | None
    in_stock: bool


def list_categories() -> list[Category]:
    """All categories, parents before children, in display order."""
    return list(
        db.session.scalars(select(Category).order_by(Category.parent_id.nulls_first(), Category.position, Category.id))
    )


def category_by_slug(slug: str) -> Category | None:
    return db.session.scalar(select(Category).where(Category.slug == slug))


def descendant_ids(category: Category) -> list[int]:
    """The category and everything below it, by one recursive query."""
    tree = select(Category.id).where(Category.id == category.id).cte("tree", recursive=True)
    tree = tree.union_all(select(Category.id).where(Category.parent_id == tree.c.id))
    return list(db.session.scalars(select(tree.c.id)))


def _stock_condition():
    return Variant.on_hand - Variant.reserved > 0


def _filtered(f: ProductFilter):
    conditions = [Product.status == "active"]
    if f.category_ids is not None:
        conditions.append(Product.category_id.in_(f.category_ids))
    if f.min_price is not None:
        conditions.append(Product.price_max >= f.min_price)
    if f.max_price is not None:
        conditions.append(Product.price_min <= f.max_price)
    variant_conditions = []
    for name, values in sorted(f.options.items()):
        if values:
            variant_conditions.append(or_(*[Variant.options.contains({name: v}) for v in values]))
    if f.in_stock:
        variant_conditions.append(_stock_condition())
    if variant_conditions:
        conditions.append(exists().where(Variant.product_id == Product.id, *variant_conditions))
    return and_(*conditions)


def list_products(f: ProductFilter) -> tuple[list[ProductSummary], int]:
    """One page of active products matching `f`, and the total count. Two queries.

    The page's ids are chosen first (an index-friendly sort with LIMIT/OFFSET), and only those rows
    get their first image and stock state: PostgreSQL would otherwise compute them for every row an
    OFFSET skips, which makes deep pages slow on a large catalogue.
    """
    where = _filtered(f)
    total = db.session.scalar(select(func.count()).select_from(Product).where(where))
    page = (
        select(Product.id)
        .where(where)
        .order_by(*SORTS[f.sort])
        .limit(f.per_page)
        .offset((f.page - 1) * f.per_page)
        .subquery("page")
    )
    first_image = (
        select(ProductImage.path, ProductImage.alt)
        .where(ProductImage.product_id == Product.id)
        .order_by(ProductImage.position, ProductImage.id)
        .limit(1)
        .lateral("first_image")
    )
    in_stock = exists().where(Variant.product_id == Product.id, _stock_condition()).correlate(Product)
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
        )
        .join(page, page.c.id == Product.id)
        .outerjoin(first_image, true())
        .order_by(*SORTS[f.sort])
    ).all()
    items = [
        ProductSummary(
            r.id, r.slug, r.name, r.brand, r.price_min, r.price_max, r.currency, r.path, r.alt, bool(r.in_stock)
        )
        for r in rows
    ]
    return items, total or 0


def option_facets(category_ids: list[int] | None) -> dict[str, list[str]]:
    """The option values sold in these categories, e.g. {"colour": ["Black", "Red"], "size": [...]}.

    One query over the products' option declarations (far fewer rows than variants); values keep
    the order products usually declare them in (S, M, L rather than L, M, S).
    """
    values = func.unnest(ProductOption.values).table_valued("value", with_ordinality="ord").render_derived()
    stmt = (
        select(ProductOption.name, values.c.value)
        .select_from(ProductOption)
        .join(Product, Product.id == ProductOption.product_id)
        .join(values, true())
        .where(Product.status == "active")
        .group_by(ProductOption.name, values.c.value)
        .order_by(ProductOption.name, func.avg(values.c.ord), values.c.value)
    )
    if category_ids is not None:
        stmt = stmt.where(Product.category_id.in_(category_ids))
    facets: dict[str, list[str]] = {}
    for name, value in db.session.execute(stmt):
        facets.setdefault(name, []).append(value)
    return facets


def featured_products(limit: int = 8) -> list[ProductSummary]:
    items, _ = list_products(ProductFilter(per_page=limit, sort="newest"))
    return items


def related_products(product_id: int, category_id: int, limit: int = 4) -> list[ProductSummary]:
    """Other active, in-stock products of the same category, newest first: "you may also like"."""
    f = ProductFilter(category_ids=[category_id], in_stock=True, per_page=limit + 1, sort="newest")
    items, _ = list_products(f)
    return [i for i in items if i.id != product_id][:limit]


def product_by_slug(slug: str, *, include_drafts: bool = False) -> Product | None:
    """A product with its category, options, variants and images: four queries, however many variants."""
    stmt = (
        select(Product)
        .where(Product.slug == slug)
        .options(
            selectinload(Product.options),
            selectinload(Product.variants),
            selectinload(Product.images),
            selectinload(Product.category),
        )
    )
    if not include_drafts:
        stmt = stmt.where(Product.status == "active")
    return db.session.scalar(stmt)


def count_by_status() -> dict[str, int]:
    """How many products are in each status ({"active": 120, "draft": 3}), in one query (the back-office home)."""
    rows = db.session.execute(select(Product.status, func.count()).group_by(Product.status)).all()
    return {status: n for status, n in rows}
