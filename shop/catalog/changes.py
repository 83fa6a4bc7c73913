"""Catalogue change notifications: after a commit that touched products, variants, options, images
or categories, every registered listener is called once with the ids of the products concerned.

The cache's immediate invalidation subscribes here (and the search hook reads pending_changes() before a commit for
a category change), so every writer (back-office, admin API, checkout's stock moves, seeds) is covered without
knowing about them; the same commits
publish product.* events (below) and stock.* events (shop.inventory.services), from which the "search" and "cache"
consumer groups work.

    from shop.catalog.changes import on_catalog_change

    @on_catalog_change
    def reindex(product_ids: set[int], categories_changed: bool) -> None: ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
_KEY = "catalog_changes"
_listeners: list[Callable[[set[int], bool], None]] = []


def on_catalog_change(func: Callable[[set[int], bool], None]):
    """Register `func(product_ids, categories_changed)` to run after each commit that changed the catalogue."""
    _listeners.append(func)
    return func


def _product_id(obj) -> int | None:
    from shop.catalog.models import Product, ProductImage, ProductOption, Variant

    if isinstance(obj, Product):
        return obj.id
    if isinstance(obj, (Variant, ProductImage, ProductOption)):
        return obj.product_id
    return None


@event.listens_for(Session, "after_flush")
def _collect(session: Session, flush_context) -> None:
    from shop.catalog.models import Category

    changes = session.info.setdefault(_KEY, {"products": set(), "categories": False})
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Category):
            changes["categories"] = True
            continue
        pid = _product_id(obj)
        if pid is not None and (obj in session.new or obj in session.deleted or session.is_modified(obj)):
            changes["products"].add(pid)


def touch(product_ids=(), categories: bool = False, created=()) -> None:
    """Record changes made with bulk SQL (UPDATE ... or core INSERTs), which flush events do not see. `created`:
    the ids among them that are new products (product.created rather than product.updated)."""
    from shop.extensions import db

    changes = db.session.info.setdefault(_KEY, {"products": set(), "categories": False})
    changes["products"].update(product_ids)
    changes["categories"] = changes["categories"] or categories
    edits = _edits(db.session)
    edits["updated"].update(product_ids)
    edits["created"].update(created)


def pending_changes(session: Session) -> tuple[set[int], bool]:
    """What the open transaction changed so far (flushed changes and touch()): for before-commit hooks."""
    changes = session.info.get(_KEY) or {"products": set(), "categories": False}
    return set(changes["products"]), changes["categories"]


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_EDITS, None)  # published before the commit; nothing may leak into the next transaction
    changes = session.info.pop(_KEY, None)
    if not changes or not (changes["products"] or changes["categories"]):
        return
    for listener in _listeners:
        try:
            listener(set(changes["products"]), changes["categories"])
        except Exception:  # noqa: BLE001 - derived data; the commit stands and the log says why
            log.exception("catalogue change listener %s failed", getattr(listener, "__name__", listener))


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_KEY, None)
        session.info.pop(_EDITS, None)


# -- product.created / product.updated / product.deleted ------------------------------------------------------
# Published at commit, in the committing transaction, once per product: every writer (catalog.services, the
# back-office forms, the admin API, the seed) is covered. Unlike the change notification above, a variant whose only change
# is its stock (on_hand, reserved: checkout, payments, stock counts) is not a product edit: stock.* says that.
_EDITS = "catalog_product_events"
STOCK_ONLY = frozenset({"on_hand", "reserved", "updated_at"})


def _edits(session: Session) -> dict:
    return session.info.setdefault(_EDITS, {"created": set(), "updated": set(), "deleted": {}})


def _edited(obj) -> bool:
    """A variant changed in more than its stock counts (price, SKU, options ...)."""
    from sqlalchemy import inspect

    return any(attr.history.has_changes() for attr in inspect(obj).attrs if attr.key not in STOCK_ONLY)


@event.listens_for(Session, "after_flush")
def _collect_product_edits(session: Session, flush_context) -> None:
    from sqlalchemy import inspect

    from shop.catalog.models import Product, ProductImage, ProductOption, Variant

    edits = None
    for obj in (*session.new, *session.dirty, *session.deleted):
        if not isinstance(obj, (Product, Variant, ProductImage, ProductOption)):
            continue
        edits = edits or _edits(session)
        if isinstance(obj, Product):
            if obj in session.new:
                edits["created"].add(obj.id)
            elif obj in session.deleted:
                edits["deleted"][obj.id] = inspect(obj).dict.get("slug")  # the row is gone: read what was loaded
            elif session.is_modified(obj):
                edits["updated"].add(obj.id)
        elif obj in session.new or obj in session.deleted:
            edits["updated"].add(obj.product_id)
        elif _edited(obj) if isinstance(obj, Variant) else session.is_modified(obj):
            edits["updated"].add(obj.product_id)


def _product_data(session: Session, ids: set[int]) -> dict[int, dict]:
    """{product id: product.created/updated data} for the products of `ids` that exist: two queries in all."""
    from sqlalchemy import select

    from shop.catalog.models import Product, Variant

    found = {
        row.id: {
            "product_id": row.id,
            "slug": row.slug,
            "name": row.name,
            "status": row.status,
            "price_min": row.price_min,
            "currency": row.currency,
            "variants": [],
        }
        for row in session.execute(
            select(Product.id, Product.slug, Product.name, Product.status, Product.price_min, Product.currency).where(
                Product.id.in_(ids)
            )
        )
    }
    if found:
        for row in session.execute(
            select(Variant.id, Variant.product_id, Variant.sku, Variant.price_amount)
            .where(Variant.product_id.in_(list(found)))
            .order_by(Variant.product_id, Variant.position, Variant.id)
        ):
            found[row.product_id]["variants"].append({"id": row.id, "sku": row.sku, "price": row.price_amount})
    return found


@event.listens_for(Session, "before_commit")
def _publish_product_events(session: Session) -> None:
    from shop import events

    if session.in_nested_transaction():  # a savepoint: its changes are published with the outer commit
        return
    session.flush()  # this transaction's last changes are collected too
    edits = session.info.pop(_EDITS, None)
    if not edits:
        return
    deleted = edits["deleted"]
    created = edits["created"] - set(deleted)  # made and removed in one transaction: nothing happened outside
    updated = edits["updated"] - created - set(deleted)
    data = _product_data(session, created | updated) if created or updated else {}
    items = [
        ("product.created" if pid in created else "product.updated", "product", pid, data[pid]) for pid in sorted(data)
    ]
    items += [
        ("product.deleted", "product", pid, {"product_id": pid, "slug": slug})
        for pid, slug in sorted(deleted.items())
        if pid not in edits["created"]
    ]
    events.publish_many(items, session=session)
