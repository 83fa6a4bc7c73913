"""Catalogue writes: the rules for products and their variant matrix, and the transaction boundaries."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update

from shop.bounds import column_max, fits, is_whole
from shop.catalog.models import Product, ProductImage, ProductOption, Variant
from shop.extensions import db


class CatalogError(ValueError):
    """A product definition that breaks a catalogue rule; `field` names the culprit."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def slugify(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "item"


def option_matrix(options: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """Every combination of option values, in declaration order: the variant matrix."""
    if not options:
        return [{}]
    names = [name for name, _ in options]
    return [dict(zip(names, combo)) for combo in itertools.product(*[values for _, values in options])]


def refresh_product_summary(product_ids: list[int] | None = None) -> None:
    """Recompute the listing columns (price range) from the variants. Flushes; the caller commits."""
    query = select(
        Variant.product_id, func.min(Variant.price_amount).label("lo"), func.max(Variant.price_amount).label("hi")
    ).group_by(Variant.product_id)
    if product_ids is not None:
        query = query.where(Variant.product_id.in_(product_ids))
    prices = query.subquery()
    db.session.execute(
        update(Product)
        .where(Product.id == prices.c.product_id)
        .values(price_min=prices.c.lo, price_max=prices.c.hi)
        .execution_options(synchronize_session=False)
    )


# The variant numbers a definition sets, each checked against its own column's range.
_VARIANT_NUMBERS = {
    "price_amount": Variant.price_amount,
    "compare_at_amount": Variant.compare_at_amount,
    "on_hand": Variant.on_hand,
    "weight_grams": Variant.weight_grams,
}


def _check_numbers(variant: dict[str, Any]) -> None:
    """Prices, stock and weight are whole numbers from 0 to what their columns hold."""
    for key, column in _VARIANT_NUMBERS.items():
        value = variant.get(key)
        if value is None and key != "price_amount":
            continue
        if is_whole(value, -column_max(column), -1):
            raise CatalogError("prices and stock cannot be negative", "variants")
        if not fits(value, column):
            raise CatalogError(
                f"{key} of variant {variant.get('sku')} must be a whole number from 0 to {column_max(column)}",
                "variants",
            )


def _check_definition(status: str, options: Sequence[tuple[str, list[str]]]) -> None:
    if status not in ("active", "draft"):
        raise CatalogError("status must be active or draft", "status")
    names = [n for n, _ in options]
    if len(set(names)) != len(names):
        raise CatalogError("option names must be unique", "options")


def _check_variants(options: Sequence[tuple[str, list[str]]], variants: Sequence[dict[str, Any]]) -> None:
    """Each variant picks one value of each option, no two pick the same values, and its numbers fit."""
    allowed = dict(options)
    declared = "; ".join(f"{k}: {', '.join(vals)}" for k, vals in options) or "none"
    seen = set()
    for v in variants:
        chosen = v.get("options") or {}
        if set(chosen) != set(allowed) or any(chosen[k] not in allowed[k] for k in chosen):
            raise CatalogError(f"variant {v.get('sku')} must pick one value of each option ({declared})", "variants")
        key = tuple(sorted(chosen.items()))
        if key in seen:
            raise CatalogError(f"two variants share the options {chosen}", "variants")
        seen.add(key)
        _check_numbers(v)


def revise_product(product: Product, options: list[tuple[str, list[str]]], *, currency: str) -> None:
    """Check and complete a product whose fields and variants an editor has just set (the back-office form), by
    the rules build_product applies to a new one: variants against the options, their numbers, an active product
    has a variant; then the slug, the option rows, the positions and the listing's price range. Raises
    CatalogError before anything is flushed; the caller commits."""
    _check_definition(product.status, options)
    _check_variants(
        options,
        [
            {"sku": v.sku, "options": v.options, **{k: getattr(v, k) for k in _VARIANT_NUMBERS}}
            for v in product.variants
        ],
    )
    if product.status == "active" and not product.variants:
        raise CatalogError("an active product needs at least one variant", "variants")
    product.currency = product.currency or currency
    for pos, v in enumerate(product.variants):
        v.currency, v.position = product.currency, pos
    product.slug = slugify(product.slug or product.name)
    existing = {o.name: o for o in product.options}
    product.options = [existing.get(name) or ProductOption(name=name) for name, _ in options]
    for pos, (option, (_, values)) in enumerate(zip(product.options, options)):
        option.values, option.position = values, pos
    prices = [v.price_amount for v in product.variants if v.price_amount is not None]
    product.price_min, product.price_max = (min(prices), max(prices)) if prices else (None, None)


def build_product(
    *,
    category_id: int,
    name: str,
    slug: str | None = None,
    brand: str = "",
    description: str = "",
    attributes: dict[str, Any] | None = None,
    status: str = "draft",
    featured: bool = False,
    currency: str = "USD",
    options: Sequence[tuple[str, list[str]]] = (),
    variants: Sequence[dict[str, Any]] = (),
    images: Sequence[dict[str, Any]] = (),
) -> Product:
    """A new product with its options, variants and images, checked against the catalogue rules.

    Each variant dict has sku, price_amount and options (one value per product option), and may have
    compare_at_amount, on_hand and weight_grams. Adds to the session and flushes; the caller commits.
    """
    _check_definition(status, options)
    product = Product(
        category_id=category_id,
        name=name,
        slug=slug or slugify(name),
        brand=brand,
        description=description,
        attributes=attributes or {},
        status=status,
        featured=featured,
        currency=currency,
    )
    product.options = [ProductOption(name=n, values=list(vals), position=i) for i, (n, vals) in enumerate(options)]
    _check_variants(options, variants)
    for i, v in enumerate(variants):
        chosen = v.get("options", {})
        product.variants.append(
            Variant(
                sku=v["sku"],
                options=chosen,
                price_amount=v["price_amount"],
                compare_at_amount=v.get("compare_at_amount"),
                currency=currency,
                on_hand=v.get("on_hand", 0),
                weight_grams=v.get("weight_grams", 0),
                position=i,
            )
        )
    product.images = [
        ProductImage(path=img["path"], alt=img.get("alt", ""), option_value=img.get("option_value"), position=i)
        for i, img in enumerate(images)
    ]
    prices = [v.price_amount for v in product.variants]
    product.price_min = min(prices) if prices else None
    product.price_max = max(prices) if prices else None
    db.session.add(product)
    db.session.flush()
    return product


MAX_MATRIX = 200  # variants generated in one go (a product page with more is not one product any more)


def variant_sku(prefix: str, combo: dict[str, str]) -> str:
    """ "HARBOUR-TEE", {"size": "S", "colour": "Sky Blue"} -> "HARBOUR-TEE-S-SKY-BLUE" (at most 64 characters)."""
    parts = [prefix.strip().strip("-").upper()] + [slugify(v).upper() for v in combo.values()]
    return "-".join(p for p in parts if p)[:64]


def add_variant_matrix(
    product: Product,
    options: list[tuple[str, list[str]]],
    *,
    price_amount: int,
    sku_prefix: str | None = None,
    on_hand: int = 0,
    currency: str = "USD",
) -> list[Variant]:
    """Give `product` a variant for every combination of `options` it has no variant for yet (the matrix
    "size: S, M, L" x "colour: Black, Navy" is six variants), each at `price_amount` (minor units) with
    `on_hand` units and a SKU made of the prefix (default: the slug) and the option values.

    Works on the product object (new or loaded) before its flush; raises CatalogError for a bad price or
    stock, or for SKUs another variant has already. Returns the variants added."""
    combinations = 1
    for _, values in options:
        combinations *= max(1, len(values))
    if combinations > MAX_MATRIX:
        raise CatalogError(
            f"{combinations} combinations is more than {MAX_MATRIX} variants at once; "
            "split the options or generate them in parts",
            "variants",
        )
    prefix = sku_prefix or slugify(product.slug or product.name or "item")
    have = {tuple(sorted((v.options or {}).items())) for v in product.variants}
    new = [combo for combo in option_matrix(options) if combo and tuple(sorted(combo.items())) not in have]
    if not new:
        return []
    made = []
    for combo in new:
        variant = {
            "sku": variant_sku(prefix, combo),
            "options": combo,
            "price_amount": price_amount,
            "on_hand": on_hand,
        }
        _check_numbers(variant)
        made.append(variant)
    skus = [v["sku"] for v in made]
    mine = {v.sku for v in product.variants}
    if len(set(skus)) != len(skus) or mine & set(skus):
        raise CatalogError(
            "two generated variants would share a SKU; use option values that differ in letters "
            "or digits, or another SKU prefix",
            "variants",
        )
    own_ids = [v.id for v in product.variants if v.id is not None]
    taken_q = select(Variant.sku).where(Variant.sku.in_(skus))
    if own_ids:
        taken_q = taken_q.where(Variant.id.notin_(own_ids))
    with db.session.no_autoflush:
        taken = sorted(db.session.scalars(taken_q))
    if taken:
        raise CatalogError(
            f"the SKUs {', '.join(taken[:5])} belong to other variants already; choose another SKU prefix", "variants"
        )
    start = len(product.variants)
    added = []
    for i, v in enumerate(made):
        variant = Variant(
            sku=v["sku"],
            options=v["options"],
            price_amount=price_amount,
            currency=currency,
            on_hand=on_hand,
            weight_grams=0,
            position=start + i,
        )
        product.variants.append(variant)
        added.append(variant)
    return added
