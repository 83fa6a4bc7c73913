"""/api/v1/admin: the back-office's powers for scripts, for staff bearer tokens (API.md, Back-office)."""

from __future__ import annotations

from flask import current_app
from sqlalchemy.exc import IntegrityError

from shop.accounts.models import User
from shop.accounts.permissions import Permission as P
from shop.api import bp
from shop.api.auth import json_body, permission_required
from shop.api.routes import _product
from shop.bounds import column_max, fits
from shop.catalog import queries
from shop.catalog.models import Category, Variant
from shop.catalog.services import CatalogError, build_product, slugify
from shop.errors import ApiError, ValidationError
from shop.extensions import db
from shop.inventory import services as inventory
from shop.money import foreign_currency, minor_units
from shop.storage import backends as storage

A = "/v1/admin"


def _count(value, field: str, column, *, required: bool = True, money: bool = False):
    """A whole number from 0 to what `column` holds; for money also a Money object in the shop's currency."""
    if value is None and not required:
        return None
    if money:
        if problem := foreign_currency(value, current_app.config["SHOP_CURRENCY"]):
            raise ValidationError({field: problem})
        value = minor_units(value)
    if not fits(value, column):
        hi = column_max(column)
        raise ValidationError(
            {
                field: f"must be an amount in minor units from 0 to {hi}"
                if money
                else f"must be a whole number from 0 to {hi}"
            }
        )
    return value


def _category(ref) -> Category | None:
    """A category by id (within the id column's range) or slug."""
    if fits(ref, Category.id, lo=1):
        return db.session.get(Category, ref)
    if isinstance(ref, str):
        return queries.category_by_slug(ref)
    return None


@bp.post(f"{A}/products")
@permission_required(P.CATALOG_EDIT)
def create_product():
    data = json_body()
    fields = {}
    if problem := foreign_currency(data, current_app.config["SHOP_CURRENCY"]):
        fields["currency"] = problem
    category = _category(data.get("category_id", data.get("category")))
    if category is None:
        fields["category"] = "must name an existing category (id or slug)"
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        fields["name"] = "is required (at most 200 characters)"
    options = data.get("options") or []
    if not isinstance(options, list) or not all(
        isinstance(o, dict)
        and isinstance(o.get("name"), str)
        and isinstance(o.get("values"), list)
        and o["values"]
        and all(isinstance(v, str) and v for v in o["values"])
        for o in options
    ):
        fields["options"] = "must be a list of {name, values: [text]}"
    variants = data.get("variants")
    if not isinstance(variants, list) or not variants or not all(isinstance(v, dict) for v in variants):
        fields["variants"] = "must be a non-empty list of variants"
    if fields:
        raise ValidationError(fields)
    parsed = []
    for i, v in enumerate(variants):
        sku = v.get("sku")
        if not isinstance(sku, str) or not sku.strip() or len(sku) > 64:
            raise ValidationError({f"variants[{i}].sku": "is required (at most 64 characters)"})
        if not isinstance(v.get("options", {}), dict):
            raise ValidationError({f"variants[{i}].options": "must be an object"})
        parsed.append(
            {
                "sku": sku.strip(),
                "options": v.get("options", {}),
                "price_amount": _count(v.get("price"), f"variants[{i}].price", Variant.price_amount, money=True),
                "compare_at_amount": _count(
                    v.get("compare_at_price"),
                    f"variants[{i}].compare_at_price",
                    Variant.compare_at_amount,
                    required=False,
                    money=True,
                ),
                "on_hand": _count(v.get("on_hand", 0), f"variants[{i}].on_hand", Variant.on_hand),
                "weight_grams": _count(v.get("weight_grams", 0), f"variants[{i}].weight_grams", Variant.weight_grams),
            }
        )
    images = data.get("images") or []
    if not isinstance(images, list) or not all(
        isinstance(i, dict) and isinstance(i.get("url") or i.get("path"), str) for i in images
    ):
        raise ValidationError({"images": "must be a list of {url, alt}"})
    try:
        product = build_product(
            category_id=category.id,
            name=name.strip(),
            slug=slugify(data["slug"]) if isinstance(data.get("slug"), str) and data["slug"].strip() else None,
            brand=str(data.get("brand") or ""),
            description=str(data.get("description") or ""),
            attributes=data.get("attributes") if isinstance(data.get("attributes"), dict) else {},
            status=data.get("status", "draft"),
            currency=current_app.config["SHOP_CURRENCY"],
            options=[(o["name"], o["values"]) for o in options],
            variants=parsed,
            images=[
                {"path": _image_path(i.get("url") or i.get("path")), "alt": str(i.get("alt") or "")} for i in images
            ],
        )
        db.session.commit()
    except CatalogError as exc:
        db.session.rollback()
        raise ValidationError({exc.field or "product": str(exc)}) from None
    except IntegrityError:
        db.session.rollback()
        raise ApiError(
            409, "duplicate", "A product with this slug or a variant with one of these SKUs exists."
        ) from None
    return _product(queries.product_by_slug(product.slug, include_drafts=True)), 201


def _image_path(url: str) -> str:
    """Store our own uploads by key (so CDN_BASE_URL can change later); other URLs as given."""
    for prefix in ("/media/", f"{current_app.config['PUBLIC_BASE_URL']}/media/"):
        if url.startswith(prefix):
            return url.removeprefix(prefix)
    return url


@bp.put(f"{A}/variants/<int:variant_id>/stock")
@permission_required(P.STOCK_EDIT)
def set_stock(variant_id: int):
    variant = inventory.set_on_hand(variant_id, json_body().get("on_hand"))
    return {"id": variant.id, "sku": variant.sku, "on_hand": variant.on_hand, "available": variant.available}


@bp.get(f"{A}/stock/low")
@permission_required(P.STOCK_VIEW)
def low_stock():
    lines = inventory.low_stock()
    return {"items": [vars(line) for line in lines], "page": 1, "per_page": len(lines), "total": len(lines)}


@bp.post(f"{A}/uploads")
@permission_required(P.CATALOG_EDIT)
def create_upload():
    data = json_body()
    signed = storage.presign(data.get("filename"), data.get("content_type"), data.get("size"))
    return signed, 201


@bp.get(f"{A}/customers/<int:customer_id>")
@permission_required(P.CUSTOMERS_PII)
def customer(customer_id: int):
    user = db.session.get(User, customer_id)
    if user is None or user.is_staff:
        raise ApiError(404, "customer_not_found", "No customer with this id.")
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "email_verified": user.email_verified_at is not None,
        "created_at": user.created_at.isoformat(),
        "addresses": [a.as_dict() for a in user.addresses],
    }
