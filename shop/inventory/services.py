"""Stock levels: setting on-hand counts and finding what runs low."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select

from shop.catalog.models import Product, Variant
from shop.errors import ApiError, ValidationError
from shop.extensions import db


@dataclass
class LowStockLine:
    variant_id: int
    sku: str
    product_id: int
    product_name: str
    options: dict
    on_hand: int
    threshold: int


def set_on_hand(variant_id: int, on_hand) -> Variant:
    """A stock count from the warehouse replaces the number on hand. Row-locked so counts don't interleave."""
    if not isinstance(on_hand, int) or isinstance(on_hand, bool) or not 0 <= on_hand <= 10_000_000:
        raise ValidationError({"on_hand": "must be a whole number from 0 to 10,000,000"})
    variant = db.session.scalar(select(Variant).where(Variant.id == variant_id).with_for_update())
    if variant is None:
        raise ApiError(404, "variant_not_found", "No variant with this id.")
    variant.on_hand = on_hand
    db.session.commit()
    return variant


def low_stock(threshold: int | None = None, limit: int = 500) -> list[LowStockLine]:
    """Variants of active products at or below the threshold, emptiest first."""
    threshold = current_app.config["LOW_STOCK_THRESHOLD"] if threshold is None else threshold
    rows = db.session.execute(
        select(Variant.id, Variant.sku, Product.id, Product.name, Variant.options, Variant.on_hand)
        .join(Product, Product.id == Variant.product_id)
        .where(Product.status == "active", Variant.on_hand <= threshold)
        .order_by(Variant.on_hand, Variant.sku).limit(limit)).all()
    return [LowStockLine(*r, threshold) for r in rows]
