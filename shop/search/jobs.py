"""Search index jobs (RQ, queue `search`): keep Typesense in step with PostgreSQL.

    sync_products(ids)   upsert the active ones, delete the rest (drafts, deleted products)
    reindex()            build `<alias>_<timestamp>`, import everything, swap the alias, drop the old
    reconcile()          the nightly safety net: a full reindex (cheap at this scale, and exact)

Every job reads through `db.session` and is idempotent, so a retried or duplicated job is harmless.
"""
from __future__ import annotations

import logging
import time

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
    collection = engine.client(JOB_TIMEOUT).collections[engine.alias_name()]
    upserted = deleted = 0
    for start in range(0, len(ids), IMPORT_BATCH):
        chunk = ids[start:start + IMPORT_BATCH]
        docs = engine.build_documents(chunk)
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
    import typesense

    ts = engine.client(JOB_TIMEOUT)
    alias = engine.alias_name()
    name = f"{alias}_{time.strftime('%Y%m%d%H%M%S')}_{time.time_ns() % 1_000_000:06d}"
    ts.collections.create(engine.schema(name))
    count = 0
    started = time.perf_counter()
    try:
        for docs in engine.all_product_batches(batch):
            count += _import(ts.collections[name], docs)
            if echo:
                echo(f"  indexed {count} products")
    except BaseException:
        ts.collections[name].delete()
        raise
    old = live_collection_name()
    ts.aliases.upsert(alias, {"collection_name": name})
    dropped = []
    # Drop the previous live collection and any leftovers of interrupted runs of this alias.
    for c in ts.collections.retrieve():
        cname = c["name"]
        if cname != name and (cname == old or _is_ours(cname, alias)):
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
