"""Storefront pages: home, category listings, product pages. Thin: parse, query, render."""

from __future__ import annotations

import math
import re
from urllib.parse import quote, urlencode

from flask import abort, current_app, g, jsonify, make_response, redirect, render_template, request, url_for

from shop.catalog import queries, reads
from shop.http import cacheable
from shop.media import image_srcset, image_url
from shop.money import format_money, parse_major
from shop.promotions import services as promotions
from shop.storefront import bp

PER_PAGE = 24
MAX_PRICE = 2**31 - 1  # the price columns are integers; anything above is not a price
SORT_LABELS = {"newest": "Newest", "price": "Price: low to high", "-price": "Price: high to low", "name": "Name"}


@bp.app_template_filter("money")
def money_filter(amount, currency=None):
    return format_money(amount, currency or current_app.config["SHOP_CURRENCY"])


@bp.app_context_processor
def shop_globals():
    return {
        "shop_name": current_app.config["SHOP_NAME"],
        "image_url": image_url,
        "image_srcset": image_srcset,
        "product_url": product_url,
        "nav_categories": _nav,
        "free_shipping_over": _free_shipping_over(),
    }


def product_url(slug: str) -> str:
    """url_for("storefront.product", slug=slug), with the URL map walked once per request, not once per card."""
    prefix = g.get("_product_url_prefix")
    if prefix is None:
        prefix = g._product_url_prefix = url_for("storefront.product", slug="-").removesuffix("-")
    return prefix + quote(slug, safe="")


def _free_shipping_over() -> str | None:
    """ "$75.00" when standard shipping is free above FREE_SHIPPING_THRESHOLD (minor units); None when it never is."""
    threshold = current_app.config.get("FREE_SHIPPING_THRESHOLD")
    if not threshold or threshold <= 0:
        return None
    return format_money(threshold, current_app.config["SHOP_CURRENCY"])


def _not_found(what: str):
    """A 404 whose page says what was missing (a product, a category) rather than guessing."""
    g.not_found = what
    abort(404)


@bp.get("/favicon.ico")
def favicon():
    # Browsers ask for /favicon.ico on their own (a PDF viewer, a bookmark): point them at the SVG icon.
    resp = redirect(url_for("static", filename="favicon.svg"), 301)
    resp.headers["Cache-Control"] = "public, max-age=86400"
    return resp


@bp.get("/cart/count")
def cart_count():
    """{"count": units in this visitor's cart}, for the header badge. Never cached: the pages around it are public."""
    from shop.storefront.cart import visitor_cart

    cart = visitor_cart()
    count = sum(item.quantity for item in cart.items) if cart is not None else 0
    resp = jsonify(count=count)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def _nav():
    """Top-level categories with their children, for the header (the cached tree, else one query).

    Error pages use it too, so a database outage yields a page without the menu, not a second error.
    """
    try:
        tree = reads.tree()
    except Exception:  # noqa: BLE001
        return []
    return [(r, r.children) for r in tree.roots]


def _page(template: str, **context):
    return cacheable(make_response(render_template(template, **context)))


@bp.get("/")
def home():
    featured, _ = reads.list_products(queries.ProductFilter(per_page=8, sort="newest"))
    cats = [c for c in reads.tree().nodes if c.parent_id is not None]
    return _page("storefront/home.html", featured=featured, categories=cats)


def read_price_range(args, target, currency: str, notes: list[str]) -> dict:
    """Set target.min_price/max_price (minor units) from "19.99"-style fields, leniently: a bad value
    is dropped with a note, a reversed range swapped. Returns the values to show back in the form."""
    form = {"min_price": args.get("min_price", ""), "max_price": args.get("max_price", "")}
    for key, label in (("min_price", "minimum price"), ("max_price", "maximum price")):
        raw = args.get(key, "").strip()
        if raw:
            try:
                value = parse_major(raw, currency)
                if value > MAX_PRICE:
                    raise ValueError("too large")
                setattr(target, key, value)
            except ValueError as exc:
                notes.append(f"The {label} “{raw[:20]}” was ignored: {exc}.")
                form[key] = ""
    if target.min_price is not None and target.max_price is not None and target.min_price > target.max_price:
        notes.append("The minimum price was above the maximum, so they were swapped.")
        target.min_price, target.max_price = target.max_price, target.min_price
        form["min_price"], form["max_price"] = form["max_price"], form["min_price"]
    return form


def _listing_filter(category_ids, facets) -> tuple[queries.ProductFilter, list[str], dict]:
    """Read the listing's query string leniently: a bad value is dropped with a note, never a 500."""
    currency = current_app.config["SHOP_CURRENCY"]
    notes: list[str] = []
    args = request.args
    f = queries.ProductFilter(category_ids=category_ids, per_page=PER_PAGE)
    form = read_price_range(args, f, currency, notes)
    f.in_stock = args.get("in_stock") in ("1", "on", "true")
    f.sort = args.get("sort") if args.get("sort") in queries.SORTS else "newest"
    try:
        f.page = max(1, min(int(args.get("page", 1)), 10_000))
    except ValueError:
        f.page = 1
    f.options = {name: [v for v in args.getlist(name) if v in values] for name, values in facets.items()}
    f.options = {k: v for k, v in f.options.items() if v}
    return f, notes, form


def _listing(title: str, category=None, category_ids=None):
    facets = reads.option_facets(category_ids)
    f, notes, form = _listing_filter(category_ids, facets)
    items, total = reads.list_products(f)
    pages = max(1, math.ceil(total / f.per_page))
    if f.page > pages and total:
        abort(404)

    def page_url(n: int) -> str:
        args = request.args.to_dict(flat=False)
        args["page"] = [str(n)]
        return f"{request.path}?{urlencode(args, doseq=True)}"

    return _page(
        "storefront/listing.html",
        title=title,
        category=category,
        items=items,
        total=total,
        filter=f,
        pages=pages,
        page_url=page_url,
        facets=facets,
        notes=notes,
        form=form,
        sort_labels=SORT_LABELS,
        subcategories=category.children if category else [],
    )


@bp.get("/products")
def all_products():
    return _listing("All products")


@bp.get("/c/<slug>")
def category(slug: str):
    tree = reads.tree()
    cat = tree.by_slug(slug)
    if cat is None:
        _not_found("category")
    return _listing(cat.name, cat, tree.descendant_ids(cat))


@bp.get("/p/<slug>")
def product(slug: str):
    data = reads.product(slug)
    if data is None:
        _not_found("product")
    p = reads.product_view(data)
    # Home › Men › Hoodies › the product: every ancestor of its category, from the top.
    trail, node = [], reads.tree().by_slug(p.category.slug)
    while node is not None:
        trail.insert(0, node)
        node = node.parent
    trail = trail or [p.category]
    # The variant picker works without JavaScript: the chosen options arrive in the query string.
    chosen = {o.name: request.args.get(o.name) for o in p.options if request.args.get(o.name) in o.values}
    selected = None
    if p.variants:
        matching = [v for v in p.variants if all(v.options.get(k) == val for k, val in chosen.items())]
        in_stock = [v for v in matching if v.available > 0]
        selected = (in_stock or matching or p.variants)[0]
    # A live automatic sale is priced now, from the cached product data: never baked into the cache.
    sales = promotions.product_sales(data)
    variants_json = [
        {
            "id": v.id,
            "sku": v.sku,
            "options": v.options,
            "price": format_money(v.price_amount, v.currency),
            "compare_at": format_money(v.compare_at_amount, v.currency) if v.compare_at_amount else None,
            "sale": format_money(sales[v.id]["price"], v.currency) if v.id in sales else None,
            "available": v.available,
        }
        for v in p.variants
    ]
    sale = sales.get(selected.id) if selected else None
    resp = _page(
        "storefront/product.html",
        product=p,
        selected=selected,
        variants_json=variants_json,
        sale=sale,
        trail=trail,
        sale_ends=next((s["ends_at"] for s in sales.values() if s["ends_at"]), None),
    )
    return _no_longer_than_the_next_sale_change(resp)


@bp.get("/p/<slug>/related")
def related_products(slug: str):
    """ "You may also like" for a product page, as an HTML fragment its script inserts: up to 4 other in-stock
    products of its category. Apart from the page, so a change to a neighbour leaves the page's cache alone."""
    data = reads.product(slug)
    if data is None:
        _not_found("product")
    items = reads.related(data["id"], data["category"]["id"])
    return _page("storefront/_related.html", items=items)


def _no_longer_than_the_next_sale_change(resp):
    """A shared cache may keep the page until the next sale starts or ends, no longer."""
    due = promotions.seconds_to_next_change()
    cc = resp.headers.get("Cache-Control", "")
    if due is not None and "s-maxage=" in cc and due < current_app.config["CATALOG_MAX_AGE"]:
        resp.headers["Cache-Control"] = re.sub(r"s-maxage=\d+", f"s-maxage={due}", cc)
    return resp
