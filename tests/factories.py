"""Factories: one per catalogue model, building valid rows with sensible defaults.

They go through the catalogue's own service (build_product), so tests exercise the real rules.
"""

from __future__ import annotations

import itertools
from datetime import UTC

from shop.catalog.models import Category, ProductImage
from shop.catalog.services import build_product, option_matrix
from shop.extensions import db

_seq = itertools.count(1)


def make_category(name: str | None = None, parent: Category | None = None, **kw) -> Category:
    n = next(_seq)
    name = name or f"Category {n}"
    cat = Category(name=name, slug=kw.pop("slug", f"cat-{n}"), parent_id=parent.id if parent else None, **kw)
    db.session.add(cat)
    db.session.flush()
    return cat


def make_product(
    category: Category,
    name: str | None = None,
    *,
    sizes=("S", "M", "L"),
    colours=("Black",),
    price: int = 2500,
    prices: dict | None = None,
    stock: int | dict = 10,
    status: str = "active",
    images: int = 1,
    **kw,
):
    """A product whose variants are the size x colour matrix.

    `prices` and `stock` may map a (size, colour) pair to its own value.
    """
    n = next(_seq)
    name = name or f"Product {n}"
    options = [(k, list(v)) for k, v in (("size", sizes), ("colour", colours)) if v]
    variants = []
    for i, combo in enumerate(option_matrix(options)):
        key = (combo.get("size"), combo.get("colour"))
        variants.append(
            {
                "sku": f"SKU-{n}-{i}",
                "options": combo,
                "price_amount": (prices or {}).get(key, price),
                "on_hand": stock.get(key, 0) if isinstance(stock, dict) else stock,
            }
        )
    product = build_product(
        category_id=category.id,
        name=name,
        slug=kw.pop("slug", f"product-{n}"),
        status=status,
        options=options,
        variants=variants,
        images=[{"path": f"placeholder/{n % 360}/item.svg", "alt": f"{name} photo {i + 1}"} for i in range(images)],
        **kw,
    )
    return product


def add_image(product, path: str, alt: str = "", position: int = 99) -> ProductImage:
    img = ProductImage(product_id=product.id, path=path, alt=alt, position=position)
    db.session.add(img)
    db.session.flush()
    return img


def make_user(
    email: str | None = None,
    *,
    role: str | None = None,
    password: str = "correct horse battery",
    name: str = "Test Person",
    verified: bool = True,
):
    """A shopper (role None) or a staff member. The password hash is real argon2."""
    from datetime import datetime, timezone

    from shop.accounts.models import User
    from shop.accounts.passwords import hash_password

    n = next(_seq)
    user = User(
        email=email or f"person{n}@example.com",
        name=name,
        role=role,
        password_hash=_hash_cache.get(password) or _hash_cache.setdefault(password, hash_password(password)),
        email_verified_at=datetime.now(UTC) if verified else None,
    )
    db.session.add(user)
    db.session.flush()
    return user


_hash_cache: dict[str, str] = {}  # argon2 is slow on purpose; tests reuse one hash per password
