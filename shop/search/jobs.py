"""Search index jobs (RQ, queue `search`): keep Typesense in step with PostgreSQL.

    sync_products(ids)   upsert the active ones, delete the rest (drafts, deleted products)
    reindex()            build `<alias>_<timestamp>`, import everything, swap the alias, drop the old
    reconcile()          the nightly safety net: a full reindex (cheap at this scale, and exact)

Every job reads through `db.session` and is idempotent, so a retried or duplicated job is harmless.
"""
from __future__ import annotations

import logging
import time

from shop.extensions import db, redis_ext
from shop.search import engine

log = logging.getLogger(__name__)
IMPORT_BATCH = 2000
JOB_TIMEOUT = 120.0  # seconds: an import of a batch can take a while on a busy server


def _import(collection, docs: list[dict]) -> int:
    """Upsert `docs`; raises when Typesense refused any of them."""
    if not docs:
        return 0
    results = collection.documents.import_(docs, {"action": "upsert"})
    failed = [r for r in results if not r.get("success")]
    if failed:
        raise RuntimeError(f"Typesense refused {len(failed)} of {len(docs)} documents: {failed[:3]}")
    return len(docs)


def live_collection_name() -> str | None:
    """The collection the alias points at, or None when there is no alias yet."""
    import typesense

    try:
        return engine.client(JOB_TIMEOUT).aliases[engine.alias_name()].retrieve()["collection_name"]
    except typesense.exceptions.ObjectNotFound:
        return None


def sync_products(product_ids) -> dict:
    """Make the index agree with the database for these products."""
    ids = sorted({int(i) for i in product_ids})
    if not ids:
        return {"upserted": 0, "deleted": 0}
    if live_collection_name() is None:  # nothing indexed yet: build it all once
        reindex()
        return {"upserted": len(ids), "deleted": 0, "reindexed": True}
    _note_during_reindex(ids)
    collection = engine.client(JOB_TIMEOUT).collections[engine.alias_name()]
    upserted = deleted = 0
    for start in range(0, len(ids), IMPORT_BATCH):
        chunk = ids[start:start + IMPORT_BATCH]
        docs = engine.build_documents(chunk)
        db.session.rollback()  # read-only: no transaction stays open while Typesense works
        upserted += _import(collection, list(docs.values()))
        gone = [i for i in chunk if i not in docs]
        if gone:
            collection.documents.delete({"filter_by": f"id:[{','.join(str(i) for i in gone)}]"})
            deleted += len(gone)
    return {"upserted": upserted, "deleted": deleted}


def reindex(batch: int = IMPORT_BATCH, echo=None) -> dict:
    """Build a fresh collection from the database and point the alias at it.

    Searches keep using the old collection until the alias moves (one atomic call), so there is no
    moment without results; the old collection is dropped afterwards."""

    ts = engine.client(JOB_TIMEOUT)
    alias = engine.alias_name()
    lock = redis_ext.client.lock(f"search:reindex:{alias}", timeout=3600, blocking=False)
    if not lock.acquire():
        log.info("search reindex of %s already running; this one is skipped", alias)
        return {"skipped": "another reindex is running"}
    try:
        # Products changed while this runs are noted by sync_products and synced again after the swap.
        redis_ext.client.delete(_changed_key(alias))
        redis_ext.client.set(_running_key(alias), "1", ex=3600)
        name = f"{alias}_{time.strftime('%Y%m%d%H%M%S')}_{time.time_ns() % 1_000_000:06d}"
        ts.collections.create(engine.schema(name))
        count = 0
        started = time.perf_counter()
        try:
            for docs in engine.all_product_batches(batch):
                db.session.rollback()  # read-only: no transaction stays open while Typesense works
                count += _import(ts.collections[name], docs)
                if echo:
                    echo(f"  indexed {count} products")
        except BaseException:
            ts.collections[name].delete()
            raise
        old = live_collection_name()
        ts.aliases.upsert(alias, {"collection_name": name})
        redis_ext.client.delete(_running_key(alias))
        late = [int(i) for i in redis_ext.client.smembers(_changed_key(alias))]
        if late:
            sync_products(late)
        return _drop_old(ts, alias, name, old, count, started)
    finally:
        redis_ext.client.delete(_running_key(alias))
        try:
            lock.release()
        except Exception:  # noqa: BLE001 - expired: nothing to release
            pass


def _running_key(alias: str) -> str:
    return f"search:reindex:{alias}:running"


def _changed_key(alias: str) -> str:
    return f"search:reindex:{alias}:changed"


def _note_during_reindex(ids) -> None:
    alias = engine.alias_name()
    if redis_ext.client.exists(_running_key(alias)):
        pipe = redis_ext.client.pipeline()
        pipe.sadd(_changed_key(alias), *ids)
        pipe.expire(_changed_key(alias), 3600)
        pipe.execute()


def _drop_old(ts, alias: str, name: str, old: str | None, count: int, started: float) -> dict:
    import typesense

    dropped = []
    # Drop the previous live collection and leftovers of interrupted runs (only older than ours).
    for c in ts.collections.retrieve():
        cname = c["name"]
        if cname != name and (cname == old or (_is_ours(cname, alias) and cname < name)):
            try:
                ts.collections[cname].delete()
                dropped.append(cname)
            except typesense.exceptions.ObjectNotFound:
                pass
    took = time.perf_counter() - started
    log.info("search reindex: %d products into %s in %.1fs (dropped %s)", count, name, took, dropped or "none")
    return {"collection": name, "documents": count, "seconds": round(took, 2), "dropped": dropped}


def _is_ours(collection_name: str, alias: str) -> bool:
    """`<alias>_<14 digits>_<6 digits>`: a collection reindex() made for this alias."""
    rest = collection_name[len(alias) + 1:] if collection_name.startswith(alias + "_") else ""
    parts = rest.split("_")
    return len(parts) == 2 and len(parts[0]) == 14 and parts[0].isdigit() and parts[1].isdigit()


def drop_all() -> None:
    """Remove the alias and its collections (tests clean up with it)."""
    import typesense

    ts = engine.client(JOB_TIMEOUT)
    alias = engine.alias_name()
    try:
        ts.aliases[alias].delete()
    except typesense.exceptions.ObjectNotFound:
        pass
    for c in ts.collections.retrieve():
        if _is_ours(c["name"], alias):
            ts.collections[c["name"]].delete()


def reconcile() -> dict:
    """Nightly: rebuild the index from PostgreSQL, repairing whatever sync jobs missed."""
    return reindex()
