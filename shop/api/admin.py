"""/api/v1/admin: the back-office's powers for scripts, for staff bearer tokens (API.md, Back-office)."""

from __future__ import annotations

from flask import current_app
from sqlalchemy.exc import IntegrityError

from shop.accounts.models import User
from shop.accounts.permissions import Permission as P
from shop.api import bp, schemas
from shop.api.auth import permission_required
from shop.api.contract import operation, parse_body
from shop.api.routes import _product
from shop.bounds import fits
from shop.catalog import queries
from shop.catalog.models import Category
from shop.catalog.services import CatalogError, build_product, slugify
from shop.errors import ApiError, ValidationError
from shop.extensions import db
from shop.inventory import services as inventory
from shop.storage import backends as storage

A = "/v1/admin"


def _category(ref) -> Category | None:
    """A category by id (within the id column's range) or slug."""
    if fits(ref, Category.id, lo=1):
        return db.session.get(Category, ref)
    if isinstance(ref, str):
        return queries.category_by_slug(ref)
    return None


@bp.post(f"{A}/products")
@operation(
    "Create a product with its options, variants and images (catalog.edit)",
    tags=["admin"],
    body=schemas.NewProduct,
    responses={
        201: schemas.Product,
        409: "duplicate: the slug or one of the SKUs is taken",
        422: "validation_failed: field errors (details.fields, e.g. variants[0].price)",
    },
)
@permission_required(P.CATALOG_EDIT)
def create_product():
    body = parse_body(schemas.NewProduct)
    currency = current_app.config["SHOP_CURRENCY"]
    fields = {}
    if body.currency is not None and body.currency != currency:
        fields["currency"] = f"must be in {currency}, the shop's currency"
    category = _category(body.category_id if body.category_id is not None else body.category)
    if category is None:
        fields["category"] = "must name an existing category (id or slug)"
    if not body.name.strip():
        fields["name"] = "is required (at most 200 characters)"
    for i, v in enumerate(body.variants):
        if not v.sku.strip():
            fields[f"variants[{i}].sku"] = "is required (at most 64 characters)"
    for i, image in enumerate(body.images):
        if not (image.url or image.path):
            fields[f"images[{i}].url"] = "is required: an upload's key or public_url, or a URL"
    if fields:
        raise ValidationError(fields)
    assert category is not None
    try:
        product = build_product(
            category_id=category.id,
            name=body.name.strip(),
            slug=slugify(body.slug) if body.slug and body.slug.strip() else None,
            brand=body.brand,
            description=body.description,
            attributes=body.attributes,
            status=body.status,
            currency=currency,
            options=[(o.name, o.values) for o in body.options],
            variants=[
                {
                    "sku": v.sku.strip(),
                    "options": v.options,
                    "price_amount": v.price,
                    "compare_at_amount": v.compare_at_price,
                    "on_hand": v.on_hand,
                    "weight_grams": v.weight_grams,
                }
                for v in body.variants
            ],
            images=[{"path": _image_path(i.url or i.path or ""), "alt": i.alt} for i in body.images],
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
@operation(
    "Record a stock count: the units on hand (stock.edit)",
    tags=["admin"],
    body=schemas.StockCount,
    responses={
        200: schemas.StockLevel,
        404: "variant_not_found: no such variant",
        422: "validation_failed: a count below 0 or above 10,000,000",
    },
)
@permission_required(P.STOCK_EDIT)
def set_stock(variant_id: int):
    variant = inventory.set_on_hand(variant_id, parse_body(schemas.StockCount).on_hand)
    return {"id": variant.id, "sku": variant.sku, "on_hand": variant.on_hand, "available": variant.available}


@bp.get(f"{A}/stock/low")
@operation(
    "Variants whose available stock is at or below their low-stock threshold (stock.view)",
    tags=["admin"],
    responses={200: schemas.LowStockPage},
)
@permission_required(P.STOCK_VIEW)
def low_stock():
    lines = inventory.low_stock()
    return {"items": [vars(line) for line in lines], "page": 1, "per_page": len(lines), "total": len(lines)}


@bp.post(f"{A}/uploads")
@operation(
    "A pre-signed URL to upload one product image straight to storage (catalog.edit)",
    tags=["admin"],
    body=schemas.NewUpload,
    responses={201: schemas.Upload, 422: "validation_failed: a type that is not an image, or too large"},
)
@permission_required(P.CATALOG_EDIT)
def create_upload():
    body = parse_body(schemas.NewUpload)
    signed = storage.presign(body.filename, body.content_type, body.size)
    return signed, 201


@bp.get(f"{A}/customers/<int:customer_id>")
@operation(
    "A customer's personal data (customers.pii)",
    tags=["admin"],
    responses={200: schemas.Customer, 404: "customer_not_found: no such customer"},
)
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
