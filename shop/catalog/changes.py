"""Catalogue change notifications: after a commit that touched products, variants, options, images
or categories, every registered listener is called once with the ids of the products concerned.

Search sync and cache invalidation subscribe here, so every writer (back-office, admin API,
checkout's stock moves, seeds) is covered without knowing about them.

    from shop.catalog.changes import on_catalog_change

    @on_catalog_change
    def reindex(product_ids: set[int], categories_changed: bool) -> None: ...
"""
from __future__ import annotations

import logging
from typing import Callable

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


def touch(product_ids=(), categories: bool = False) -> None:
    """Record changes made with bulk SQL (UPDATE ... or core INSERTs), which flush events do not see."""
    from shop.extensions import db

    changes = db.session.info.setdefault(_KEY, {"products": set(), "categories": False})
    changes["products"].update(product_ids)
    changes["categories"] = changes["categories"] or categories


def pending_changes(session: Session) -> tuple[set[int], bool]:
    """What the open transaction changed so far (flushed changes and touch()): for before-commit hooks."""
    changes = session.info.get(_KEY) or {"products": set(), "categories": False}
    return set(changes["products"]), changes["categories"]


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
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

