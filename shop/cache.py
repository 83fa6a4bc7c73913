"""A Redis cache for catalogue reads, invalidated by generation numbers, that steps aside when Redis fails.

What is cached is plain JSON data (query results as dicts and lists), never ORM objects or rendered
pages, so the storefront and the API share one entry and a cached answer renders exactly like a
fresh one. The keys carry generation numbers that a catalogue-change listener bumps right after
every commit that changed the catalogue (shop.catalog.changes), so a change is visible at once:

    catalog:gen                     any catalogue change: listings, facets, counts
    catalog:gen:categories          a category changed: the category tree, product breadcrumbs
    catalog:gen:product:<id>        that product (or a variant, option, image of it) changed

Listings, facets and the tree live under keys naming the generation they were computed at
(`catalog:listing:<gen>:<digest>`): a bump makes new keys, and the old ones expire. A product
entry lives under its slug and records the product's and the categories' generations; a read
checks them, so a stock move on one product does not throw away every other product page. The
generations are read *before* PostgreSQL is, so an entry can be older than its generation says,
never newer. Every entry also has a short TTL (CACHE_TTL_SECONDS) as a safety net, e.g. for a
change whose bump was lost while Redis was down.

Redis is derived data here: any Redis error (refused, timeout, anything) makes the cache step aside
for CACHE_RETRY_SECONDS, during which every read goes straight to PostgreSQL without touching
Redis; one WARNING per interval says so. Nothing in this module raises a Redis error to its caller.

Checkout and the cart never read from here: prices and availability they act on come from
PostgreSQL under row locks (shop.cart.services, shop.checkout.services).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, has_app_context
from redis import Redis
from sqlalchemy import event
from sqlalchemy.orm import Session

from shop.catalog.changes import on_catalog_change
from shop.consumers import consumer
from shop.telemetry import metrics

log = logging.getLogger(__name__)

GEN_KEY = "catalog:gen"
CATEGORIES_GEN_KEY = "catalog:gen:categories"
PRODUCT_GEN_KEY = "catalog:gen:product:{}"
PREFIX = "catalog:v1:"  # bump the version when the shape of cached data changes
_G_GENS = "_catalog_cache_gens"
_MISSING = object()


class CatalogCache:
    """One per app (app.extensions["catalog_cache"]), with its own connection pool and short timeouts:
    a cache that makes a page wait two seconds for Redis is worse than no cache."""

    def __init__(self, app: Flask):
        self.app = app
        self.client = Redis.from_url(
            app.config["REDIS_URL"], socket_connect_timeout=0.25, socket_timeout=0.5, health_check_interval=30
        )
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._last_warning = float("-inf")
        # Bumps this process could not make while Redis was away, made on the first call that works.
        self._pending: dict[str, Any] = {"products": set(), "categories": False, "any": False}

    # --- configuration -------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return bool(self.app.config.get("CACHE_ENABLED", True))

    @property
    def ttl(self) -> int:
        return max(1, int(self.app.config.get("CACHE_TTL_SECONDS", 60)))

    # --- Redis, or nothing ----------------------------------------------------------------------

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _redis(self, fn: Callable[[Redis], Any]) -> Any:
        """fn(client), or _MISSING when Redis is stepping aside or fails now. Never raises a Redis error."""
        if not self.available():
            return _MISSING
        try:
            if self._pending["any"]:
                self._flush_pending()
            return fn(self.client)
        except Exception as exc:  # noqa: BLE001 - refused, timeout, protocol, OOM...: PostgreSQL answers
            self._failed(exc)
            return _MISSING

    def attempt(self, fn: Callable[[Redis], Any]) -> Any:
        """fn(client), or None when Redis is stepping aside or fails now (for shop.response_cache)."""
        got = self._redis(fn)
        return None if got is _MISSING else got

    def _failed(self, exc: Exception) -> None:
        retry = max(0, int(self.app.config.get("CACHE_RETRY_SECONDS", 5)))
        now = time.monotonic()
        with self._lock:
            self._down_until = now + retry
            warn = now - self._last_warning >= max(retry, 1)
            if warn:
                self._last_warning = now
        if warn:
            log.warning(
                "catalogue cache: Redis unavailable (%s: %s); reading from PostgreSQL, retrying in %ss",
                type(exc).__name__,
                str(exc)[:200],
                retry,
            )
        if has_app_context():
            g.pop(_G_GENS, None)

    # --- generations ----------------------------------------------------------------------------

    def gens(self) -> tuple[int, int] | None:
        """(catalogue generation, categories generation), read once per request; None without Redis."""
        memo = g.get(_G_GENS) if has_app_context() else None
        if memo is not None:
            return memo
        got = self._redis(lambda r: r.mget(GEN_KEY, CATEGORIES_GEN_KEY))
        if got is _MISSING:
            return None
        gens = (int(got[0] or 0), int(got[1] or 0))
        if has_app_context():
            g.setdefault(_G_GENS, gens)
        return gens

    def bump(self, product_ids: set[int], categories_changed: bool) -> None:
        """Make the changed data's cache entries unreachable (called after each catalogue commit)."""
        if has_app_context():
            g.pop(_G_GENS, None)

        def incr(r: Redis) -> bool:
            pipe = r.pipeline(transaction=False)
            pipe.incr(GEN_KEY)
            if categories_changed:
                pipe.incr(CATEGORIES_GEN_KEY)
            for pid in sorted(product_ids):
                pipe.incr(PRODUCT_GEN_KEY.format(pid))
            pipe.execute()
            return True

        if self._redis(incr) is _MISSING:
            # Lost for now: made on the first Redis call that works (the TTL covers a process that dies first).
            with self._lock:
                self._pending["products"].update(product_ids)
                self._pending["categories"] = self._pending["categories"] or categories_changed
                self._pending["any"] = True

    def bump_now(self, product_ids: set[int]) -> None:
        """bump() that raises when Redis does not answer, instead of keeping the bump for later (the "cache"
        consumer group: its event is delivered again)."""
        if has_app_context():
            g.pop(_G_GENS, None)
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(GEN_KEY)
        for pid in sorted(product_ids):
            pipe.incr(PRODUCT_GEN_KEY.format(pid))
        pipe.execute()

    def _flush_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {"products": set(), "categories": False, "any": False}
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(GEN_KEY)
            if pending["categories"]:
                pipe.incr(CATEGORIES_GEN_KEY)
            for pid in sorted(pending["products"]):
                pipe.incr(PRODUCT_GEN_KEY.format(pid))
            pipe.execute()
            log.info(
                "catalogue cache: made %d invalidation(s) missed while Redis was away", len(pending["products"]) + 1
            )
        except Exception:
            with self._lock:  # put them back; the caller's except reports the failure
                self._pending["products"].update(pending["products"])
                self._pending["categories"] = self._pending["categories"] or pending["categories"]
                self._pending["any"] = True
            raise

    # --- reads ----------------------------------------------------------------------------------

    def _load(self, key: str) -> Any:
        raw = self._redis(lambda r: r.get(key))
        if raw is _MISSING or raw is None:
            return _MISSING
        try:
            return json.loads(raw)
        except ValueError:
            return _MISSING

    def _store(self, key: str, value: Any) -> None:
        data = json.dumps(value, separators=(",", ":"))
        self._redis(lambda r: r.set(key, data, ex=self.ttl))

    def cached(self, name: str, params: Any, compute: Callable[[], Any], *, scope: str = "catalog") -> Any:
        """compute()'s JSON-able result for `params`, from Redis when it holds one for the current
        generation of `scope` ("catalog" or "categories"); PostgreSQL answers whenever it does not."""
        if not self.enabled:
            return compute()
        gens = self.gens()
        if gens is None:
            return compute()
        gen = gens[1] if scope == "categories" else gens[0]
        key = f"{PREFIX}{name}:{gen}:{digest(params)}"
        hit = self._load(key)
        if hit is not _MISSING:
            _CATALOG_HIT.inc()
            return hit
        _CATALOG_MISS.inc()
        value = compute()
        self._store(key, value)
        return value

    def product(self, slug: str, compute: Callable[[], dict | None]) -> dict | None:
        """A product's data by slug (compute() gives a dict with "id", or None: not cached), checked
        against the product's and the categories' generations."""
        if not self.enabled:
            return compute()
        gens = self.gens()
        if gens is None:
            return compute()
        key = f"{PREFIX}product:{digest(slug)}"
        entry = self._load(key)
        known_gen = None
        if isinstance(entry, dict) and "id" in entry:
            pgen = self._redis(lambda r: r.get(PRODUCT_GEN_KEY.format(entry["id"])))
            if pgen is _MISSING:
                return compute()
            known_gen = int(pgen or 0)
            if entry.get("pgen") == known_gen and entry.get("cgen") == gens[1]:
                _PRODUCT_HIT.inc()
                return entry["data"]
        _PRODUCT_MISS.inc()
        value = compute()
        if value is None:
            return None
        if known_gen is None or value["id"] != entry["id"]:
            # Which product this slug names was unknown before the read: take its generation now. If
            # anything in the catalogue changed meanwhile the read may be stale, so the entry only
            # records the id (generation -1 never matches) and the next read refills it safely.
            now = self._redis(lambda r: r.mget(PRODUCT_GEN_KEY.format(value["id"]), GEN_KEY))
            if now is _MISSING:
                return value
            known_gen = int(now[0] or 0) if int(now[1] or 0) == gens[0] else -1
        self._store(key, {"id": value["id"], "pgen": known_gen, "cgen": gens[1], "data": value})
        return value


_CATALOG_HIT, _CATALOG_MISS = metrics.CACHE.labels("catalog", "hit"), metrics.CACHE.labels("catalog", "miss")
_PRODUCT_HIT, _PRODUCT_MISS = metrics.CACHE.labels("product", "hit"), metrics.CACHE.labels("product", "miss")


def digest(params: Any) -> str:
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


_last: CatalogCache | None = None


def init_app(app: Flask) -> CatalogCache:
    global _last
    cache = _last = CatalogCache(app)
    app.extensions["catalog_cache"] = cache
    return cache


def current() -> CatalogCache | None:
    """The current app's cache (or, outside an app context, the last one made)."""
    if has_app_context():
        return current_app.extensions.get("catalog_cache")
    return _last


def cached(name: str, params: Any, compute: Callable[[], Any], *, scope: str = "catalog") -> Any:
    cache = current()
    return compute() if cache is None else cache.cached(name, params, compute, scope=scope)


def cached_product(slug: str, compute: Callable[[], dict | None]) -> dict | None:
    cache = current()
    return compute() if cache is None else cache.product(slug, compute)


_TO_BUMP = "cache_bump_products"  # session.info: the products of the events the "cache" group applies in a transaction


def _max_event_age() -> float:
    """An entry cached before a change has expired CACHE_TTL_SECONDS after it: older events need no bump."""
    return float(current_app.config.get("CACHE_TTL_SECONDS", 60)) + 30.0


@consumer(
    "cache", types={"product.created", "product.updated", "product.deleted", "stock.changed"}, max_age=_max_event_age
)
def invalidate_on_event(envelope: dict) -> None:
    """Make the cached pages of the event's product stale, whichever process changed it.

    The process that commits a catalogue change bumps the generations itself right after the commit (_invalidate
    below), so its own next read is fresh. That bump is lost when the process dies between its commit and the bump,
    or when Redis was away and the process ended before it came back; this group makes the same bump from the event,
    which the outbox keeps until it is applied: once per batch of events, just before the batch's claims commit
    (_bump_before_commit). A second bump costs one more cache fill; events older than the TTL are skipped."""
    from shop.extensions import db

    db.session.info.setdefault(_TO_BUMP, set()).add(int(envelope["data"]["product_id"]))


@event.listens_for(Session, "before_commit")
def _bump_before_commit(session: Session) -> None:
    """The cache group's bump for its batch: a Redis error fails the commit, and the batch is delivered again."""
    if session.in_nested_transaction():
        return
    product_ids = session.info.pop(_TO_BUMP, None)
    if product_ids and (cache := current()) is not None:
        cache.bump_now(product_ids)


@event.listens_for(Session, "after_soft_rollback")
def _forget_bumps(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_TO_BUMP, None)


@on_catalog_change
def _invalidate(product_ids: set[int], categories_changed: bool) -> None:
    """Bump the generations after every catalogue commit, whether this process caches or not: other
    processes (the web servers) may."""
    cache = current()
    if cache is not None:
        cache.bump(product_ids, categories_changed)
