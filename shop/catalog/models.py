"""The catalogue: a category tree, products, their options, variants (the option matrix) and images.

Money is stored as integer minor units (`*_amount`) beside a currency code.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Computed, ForeignKey, Index, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shop import clock
from shop.extensions import db


def utcnow() -> datetime:
    return clock.now()


class Category(db.Model):
    __tablename__ = "category"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("category.id", ondelete="RESTRICT"), index=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(default=0)

    parent: Mapped[Category | None] = relationship(remote_side=[id], back_populates="children")
    children: Mapped[list[Category]] = relationship(back_populates="parent", order_by="Category.position")

    def __repr__(self) -> str:
        return f"<Category {self.slug}>"

    def __str__(self) -> str:  # how forms and lists name it
        return self.name


class Product(db.Model):
    __tablename__ = "product"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'draft')", name="status"),
        # The storefront lists active products of a category, newest or cheapest first.
        Index("ix_product_category_status_price", "category_id", "status", "price_min"),
        Index("ix_product_status_created", "status", "created_at"),
        Index("ix_product_status_name", "status", "name"),
        Index("ix_product_status_price", "status", "price_min"),
        Index("ix_product_featured", "featured", postgresql_where="featured"),
        # Full-text search when the search engine is away (shop.search falls back to it).
        Index("ix_product_search_vector", "search_vector", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="RESTRICT"))
    slug: Mapped[str] = mapped_column(String(160), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    brand: Mapped[str] = mapped_column(String(120), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    # Free-form attributes for facets, e.g. {"material": "cotton", "fit": "regular"}.
    attributes: Mapped[dict] = mapped_column(JSONB, default=dict)
    status: Mapped[str] = mapped_column(String(10), default="draft")
    featured: Mapped[bool] = mapped_column(default=False)
    # Derived from the variants by services.refresh_product_summary(); listings sort and filter on them.
    price_min: Mapped[int | None] = mapped_column()
    price_max: Mapped[int | None] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())
    # Weighted: name (A) over brand (B) over description (C); kept by PostgreSQL itself.
    search_vector: Mapped[str | None] = mapped_column(
        TSVECTOR,
        Computed(
            "setweight(to_tsvector('english', coalesce(name, '')), 'A') || "
            "setweight(to_tsvector('english', coalesce(brand, '')), 'B') || "
            "setweight(to_tsvector('english', coalesce(description, '')), 'C')",
            persisted=True,
        ),
        deferred=True,
    )

    category: Mapped[Category] = relationship()
    options: Mapped[list[ProductOption]] = relationship(
        back_populates="product", order_by="ProductOption.position", cascade="all, delete-orphan"
    )
    variants: Mapped[list[Variant]] = relationship(
        back_populates="product", order_by="Variant.position", cascade="all, delete-orphan"
    )
    images: Mapped[list[ProductImage]] = relationship(
        back_populates="product", order_by="ProductImage.position", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"<Product {self.slug}>"

    def __str__(self) -> str:
        return self.name


class ProductOption(db.Model):
    """An axis of the product's variant matrix, e.g. size with values [S, M, L], in display order."""

    __tablename__ = "product_option"
    __table_args__ = (UniqueConstraint("product_id", "name", name="uq_product_option_product_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(60))
    position: Mapped[int] = mapped_column(default=0)
    values: Mapped[list[str]] = mapped_column(ARRAY(String(60)), default=list)

    product: Mapped[Product] = relationship(back_populates="options")


class Variant(db.Model):
    """One cell of the option matrix: what is actually sold and counted."""

    __tablename__ = "variant"
    __table_args__ = (
        CheckConstraint("price_amount >= 0", name="price_nonnegative"),
        CheckConstraint("compare_at_amount IS NULL OR compare_at_amount >= 0", name="compare_at_nonnegative"),
        CheckConstraint("on_hand >= 0", name="on_hand_nonnegative"),
        CheckConstraint("reserved >= 0", name="reserved_nonnegative"),
        UniqueConstraint("product_id", "options", name="uq_variant_product_options"),
        # Option filters ask "has this product a variant with size M?": options @> '{"size": "M"}'.
        Index("ix_variant_options", "options", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"), index=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    # {"size": "M", "colour": "Red"}: one value for each of the product's options.
    options: Mapped[dict] = mapped_column(JSONB, default=dict)
    price_amount: Mapped[int] = mapped_column()
    compare_at_amount: Mapped[int | None] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    on_hand: Mapped[int] = mapped_column(default=0)
    # Units held by live reservations of pending orders (shop.inventory keeps it in step).
    reserved: Mapped[int] = mapped_column(default=0, server_default="0")
    # Warn when availability falls to this; None means the shop's LOW_STOCK_THRESHOLD.
    low_stock_threshold: Mapped[int | None] = mapped_column()
    weight_grams: Mapped[int] = mapped_column(default=0)
    position: Mapped[int] = mapped_column(default=0)

    product: Mapped[Product] = relationship(back_populates="variants")

    @property
    def available(self) -> int:
        """Units a shopper can buy now: on hand minus live reservations, never below 0."""
        return max(self.on_hand - (self.reserved or 0), 0)

    def __repr__(self) -> str:
        return f"<Variant {self.sku}>"


class ProductImage(db.Model):
    __tablename__ = "product_image"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"), index=True)
    # A path under the shop's media root (served locally or through CDN_BASE_URL) or an absolute URL.
    path: Mapped[str] = mapped_column(String(500))
    alt: Mapped[str] = mapped_column(String(300), default="")
    position: Mapped[int] = mapped_column(default=0)
    # The option value this picture shows (e.g. the colour "Red"), or None for any: the product page's gallery
    # turns to it when the shopper picks that value.
    option_value: Mapped[str | None] = mapped_column(String(60))

    product: Mapped[Product] = relationship(back_populates="images")
