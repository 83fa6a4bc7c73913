"""A believable, deterministic demo catalogue (`flask seed demo`).

The same `--products N` always gives the same catalogue: every choice comes from one seeded RNG.
Rows go in with bulk INSERTs in batches, so 100,000 products (for benchmarks) take minutes, not hours.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, text

from shop.catalog.changes import touch
from shop.catalog.models import Category, Product, ProductImage, ProductOption, Variant
from shop.catalog.services import option_matrix, slugify
from shop.extensions import db

# (slug, name, parent slug, kind) -- kind picks names, options and prices below.
CATEGORIES = [
    ("women", "Women", None, None),
    ("women-dresses", "Dresses", "women", "dress"),
    ("women-tops", "Tops & T-shirts", "women", "top"),
    ("women-knitwear", "Knitwear", "women", "knit"),
    ("men", "Men", None, None),
    ("men-t-shirts", "T-shirts", "men", "tee"),
    ("men-shirts", "Shirts", "men", "shirt"),
    ("men-hoodies", "Hoodies & Sweatshirts", "men", "hoodie"),
    ("footwear", "Footwear", None, None),
    ("footwear-sneakers", "Sneakers", "footwear", "sneaker"),
    ("footwear-boots", "Boots", "footwear", "boot"),
    ("accessories", "Accessories", None, None),
    ("accessories-hats", "Hats & Caps", "accessories", "hat"),
    ("accessories-bags", "Bags", "accessories", "bag"),
    ("accessories-socks", "Socks", "accessories", "sock"),
]

APPAREL_SIZES = ["XS", "S", "M", "L", "XL", "XXL"]
SHOE_SIZES = ["38", "39", "40", "41", "42", "43", "44", "45", "46"]
COLOURS = ["Black", "White", "Navy", "Grey", "Red", "Olive", "Sand", "Sky Blue", "Burgundy", "Mustard"]
HUES = {
    "Black": 220,
    "White": 40,
    "Navy": 225,
    "Grey": 210,
    "Red": 2,
    "Olive": 75,
    "Sand": 38,
    "Sky Blue": 200,
    "Burgundy": 345,
    "Mustard": 45,
}
BRANDS = ["Northwind", "Harbor & Pine", "Kestrel", "Oakline", "Tidewater", "Fieldnote", "Alder", "Lumen"]
ADJECTIVES = [
    "Classic",
    "Everyday",
    "Relaxed",
    "Essential",
    "Heritage",
    "Lightweight",
    "Organic",
    "Vintage",
    "Urban",
    "Weekend",
    "Trail",
    "Studio",
    "Coastal",
    "Alpine",
    "Modern",
    "Soft",
]
MATERIALS = ["Cotton", "Linen", "Merino", "Denim", "Fleece", "Canvas", "Leather", "Jersey", "Twill", "Cashmere"]
KINDS = {
    # kind: (nouns, sizes, colours per product (lo, hi), price range in cents)
    "dress": (["Wrap Dress", "Midi Dress", "Slip Dress", "Shirt Dress"], APPAREL_SIZES[:5], (1, 3), (4900, 12900)),
    "top": (["Tee", "Blouse", "Tank Top", "Long-Sleeve Top"], APPAREL_SIZES[:5], (2, 4), (1500, 4500)),
    "knit": (["Crewneck Sweater", "Cardigan", "Turtleneck", "Knit Vest"], APPAREL_SIZES[:5], (1, 3), (5900, 14900)),
    "tee": (["T-Shirt", "Pocket Tee", "Henley", "Graphic Tee"], APPAREL_SIZES, (2, 4), (1500, 3900)),
    "shirt": (
        ["Oxford Shirt", "Flannel Shirt", "Camp Shirt", "Chambray Shirt"],
        APPAREL_SIZES[1:],
        (1, 3),
        (3900, 8900),
    ),
    "hoodie": (["Hoodie", "Zip Hoodie", "Sweatshirt", "Quarter-Zip"], APPAREL_SIZES, (1, 3), (4500, 9900)),
    "sneaker": (["Runner", "Court Sneaker", "High-Top", "Slip-On"], SHOE_SIZES, (1, 2), (6900, 15900)),
    "boot": (["Chelsea Boot", "Hiking Boot", "Chukka Boot", "Work Boot"], SHOE_SIZES, (1, 2), (9900, 24900)),
    "hat": (["Beanie", "Baseball Cap", "Bucket Hat", "Wool Cap"], ["S/M", "L/XL"], (2, 4), (1900, 4500)),
    "bag": (["Tote Bag", "Backpack", "Crossbody Bag", "Weekender"], None, (2, 4), (3900, 18900)),
    "sock": (["Crew Socks", "Ankle Socks", "Hiking Socks", "Wool Socks"], ["S", "M", "L"], (2, 5), (900, 2400)),
}
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def catalogue_is_empty() -> bool:
    return not db.session.scalar(select(func.count()).select_from(Product))


def reset_catalogue() -> None:
    """Remove every product and category, and what refers to them (carts, orders, reservations).

    Meant for demo and benchmark databases; runs in one transaction with the new seed."""
    db.session.execute(
        text("TRUNCATE product_image, variant, product_option, product, category RESTART IDENTITY CASCADE")
    )


HEALTHY_STOCK = [14, 18, 24, 30, 36, 45, 60, 80, 120]  # well above LOW_STOCK_THRESHOLD (5)


def _stock(rng: random.Random, sold_out: bool) -> int:
    """Units on hand for one variant: most shelves healthy, a few running low (about 4%) or empty (1-2%),
    so the first low-stock scan lists a handful of variants, not half the catalogue.

    Draws from `rng` exactly as the earlier seed did (one random(), then a choice of nine only when it
    is 0.12 or more), so names, prices and SKUs of a seeded catalogue stay the same."""
    if sold_out:
        return 0
    r = rng.random()
    if r < 0.015:
        return 0
    if r < 0.05:
        return 1 + int((r - 0.015) * 100)  # 1 to 4: at or below the threshold
    if r < 0.12:
        return 10 + int(r * 100)  # 15 to 21
    return rng.choice(HEALTHY_STOCK)


def _product_rows(rng: random.Random, index: int, leaf: tuple, currency: str, used_slugs: dict):
    slug_c, _, _, kind = leaf
    nouns, sizes, colour_range, (lo, hi) = KINDS[kind]
    noun = rng.choice(nouns)
    material = rng.choice(MATERIALS)
    name = f"{rng.choice(ADJECTIVES)} {material} {noun}"
    base = slugify(name)
    n = used_slugs.get(base, 0) + 1
    used_slugs[base] = n
    slug = base if n == 1 else f"{base}-{n}"
    colours = rng.sample(COLOURS, rng.randint(*colour_range))
    options = ([("size", sizes)] if sizes else []) + [("colour", colours)]
    base_price = rng.randrange(lo, hi + 1, 100) - 1  # prices end in .99
    on_sale = rng.random() < 0.2
    sold_out = rng.random() < 0.015
    brand = rng.choice(BRANDS)
    product = dict(
        slug=slug,
        name=name,
        brand=brand,
        status="active" if rng.random() > 0.03 else "draft",
        featured=rng.random() < 0.06,
        currency=currency,
        description=(
            f"The {name.lower()} from {brand}: {material.lower()} that wears in, not out. "
            f"Cut for every day, made to last, and easy to care for."
        ),
        attributes={"material": material.lower(), "kind": kind},
        created_at=EPOCH + timedelta(hours=index * 3 % 8000, minutes=index % 60),
    )
    variants = []
    for pos, combo in enumerate(option_matrix(options)):
        price = base_price + (1000 if combo.get("size") in ("XXL", "46") else 0)
        stock = _stock(rng, sold_out)
        sku = f"{kind[:3].upper()}-{index:06d}-{pos:02d}"
        variants.append(
            dict(
                sku=sku,
                options=combo,
                price_amount=price,
                currency=currency,
                compare_at_amount=price + rng.choice([1000, 2000, 3000]) if on_sale else None,
                on_hand=stock,
                weight_grams=rng.randint(80, 1400),
                position=pos,
            )
        )
    images = [
        dict(
            path=f"placeholder/{HUES[c]}/{slugify(noun)}.svg", alt=f"{name} in {c.lower()}", option_value=c, position=i
        )
        for i, c in enumerate(colours[:3])
    ]
    return product, options, variants, images


def seed_demo(products: int = 200, *, batch: int = 2000, currency: str = "USD", echo=print) -> dict:
    """Insert the demo catalogue: categories, `products` products with their variants and images.

    Commits once per batch so a 100,000-product seed does not hold one giant transaction.
    """
    rng = random.Random(20261126)
    by_slug: dict[str, int] = {}
    for pos, (slug, name, parent, _) in enumerate(CATEGORIES):
        cat = Category(
            slug=slug,
            name=name,
            parent_id=by_slug.get(parent),
            position=pos,
            description=f"{name} from independent makers, picked for the long run.",
        )
        db.session.add(cat)
        db.session.flush()
        by_slug[slug] = cat.id
    leaves = [c for c in CATEGORIES if c[3]]
    used_slugs: dict[str, int] = {}
    counts = {"categories": len(CATEGORIES), "products": 0, "variants": 0, "images": 0}
    for start in range(0, products, batch):
        prows, orows, vrows, irows = [], [], [], []
        for i in range(start, min(start + batch, products)):
            leaf = leaves[i % len(leaves)]
            p, opts, vs, imgs = _product_rows(rng, i, leaf, currency, used_slugs)
            p["category_id"] = by_slug[leaf[0]]
            p["price_min"] = min(v["price_amount"] for v in vs)
            p["price_max"] = max(v["price_amount"] for v in vs)
            prows.append(p)
            orows.append(opts)
            vrows.append(vs)
            irows.append(imgs)
        ids = db.session.scalars(insert(Product).returning(Product.id, sort_by_parameter_order=True), prows).all()
        options, variants, images = [], [], []
        for pid, opts, vs, imgs in zip(ids, orows, vrows, irows):
            options += [dict(product_id=pid, name=n, values=vals, position=k) for k, (n, vals) in enumerate(opts)]
            variants += [dict(v, product_id=pid) for v in vs]
            images += [dict(img, product_id=pid) for img in imgs]
        db.session.execute(insert(ProductOption), options)
        db.session.execute(insert(Variant), variants)
        db.session.execute(insert(ProductImage), images)
        touch(ids, categories=start == 0, created=ids)  # bulk inserts: tell search, caches and product.created
        db.session.commit()
        counts["products"] += len(ids)
        counts["variants"] += len(variants)
        counts["images"] += len(images)
        if products > batch:
            echo(f"  {counts['products']:,} / {products:,} products")
    db.session.commit()
    return counts
