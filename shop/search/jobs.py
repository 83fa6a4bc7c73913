"""Search index jobs (RQ, queue `search`): keep Typesense in step with PostgreSQL.

    sync_products(ids)   upsert the active ones, delete the rest (drafts, deleted products), and every
                         product of the syncs waiting for a job (see "Coalesced syncs" below)
    reindex()            build `<alias>_<timestamp>`, import everything, swap the alias, drop the old
    reconcile()          the nightly safety net: a full reindex (cheap at this scale, and exact)

Every job reads through `db.session` and is idempotent, so a retried or duplicated job is harmless.

Coalesced syncs: each commit that changed products records an outbox row of kind SYNC_KIND (in its own
transaction, shop/search/hooks.py), so a change is never lost. Handing such a row over (dispatch_sync)
adds its id to a Redis set of waiting rows, and enqueues a sync_products job only when no sync job is
queued or running already. That job syncs the products of every waiting row in one pass, marks the rows
done in the outbox, and looks again until nothing waits: a burst of checkouts costs a job or two instead
of one forked job per commit. A row leaves the set only once synced, so a row whose job failed or died
with its worker waits for that job's retry or the next job, whichever comes first (a retry left with
nothing to do is dropped); a row lost with Redis is dispatched again by the relay (outbox.recover_lost).
"""

from __future__ import annotations

import logging
import time
import uuid

from shop.extensions import db, redis_ext
from shop.search import engine
from shop.search.hooks import SYNC_KIND  # outbox rows of product syncs: coalesced into few jobs (dispatch_sync)

log = logging.getLogger(__name__)
IMPORT_BATCH = 2000
JOB_TIMEOUT = 120.0  # seconds: an import of a batch can take a while on a busy server
SYNC_FLAG_TTL = 900  # seconds: the "a sync job is on its way" flag outlives no job by longer than this
SYNC_LOOP_SECONDS = 60.0  # one job drains this long at most, then hands the rest to a fresh job


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


def sync_products(product_ids, pending: bool = True) -> dict:
    """Make the index agree with the database for these products and (with `pending`) for those of
    every coalesced sync waiting for a job, marking those outbox rows done."""
    ids = {int(i) for i in product_ids}
    if not pending:
        return _sync(ids)
    client, (waiting, flag) = redis_ext.client, _sync_keys()
    try:
        return _drain(ids, client, waiting, flag)
    except BaseException:
        from rq import get_current_job

        job = get_current_job()
        try:  # its retry is needless once another job drained what waited (_drop_needless_retries)
            if job is not None:
                client.sadd(f"{waiting}:failed", job.id)
        except Exception:  # noqa: BLE001 - Redis away: the retry just runs
            pass
        raise


def _drain(ids: set[int], client, waiting: str, flag: str) -> dict:
    total = {"upserted": 0, "deleted": 0, "rows": 0}
    started = time.monotonic()
    while True:
        row_ids = sorted(int(i) for i in client.smembers(waiting))
        rows = _sync_rows(row_ids)
        for args in rows.values():
            ids.update(int(i) for i in (args[0] if args else ()))
        done = _sync(ids)
        total["upserted"] += done["upserted"]
        total["deleted"] += done["deleted"]
        if rows:
            _mark_done(list(rows))
            total["rows"] += len(rows)
        if row_ids:
            client.srem(waiting, *row_ids)
        ids = set()
        if _release_flag(keys=[waiting, flag]):
            _drop_needless_retries(client, waiting)
            return total
        if time.monotonic() - started > SYNC_LOOP_SECONDS:  # rows keep coming: a fresh job takes the rest
            client.delete(flag)
            _claim_and_enqueue(f"search-sync-{uuid.uuid4().hex}", [])
            return total


def _drop_needless_retries(client, waiting: str) -> None:
    """Delete the retries of sync jobs that failed (Typesense away) while nothing waits any more: the rows
    they had to sync were synced since, and every row added later has a job of its own (dispatch_sync)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    for job_id in client.smembers(f"{waiting}:failed"):
        job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
        try:
            job = Job.fetch(job_id, connection=client)
        except NoSuchJobError:
            client.srem(f"{waiting}:failed", job_id)
            continue
        status = job.get_status(refresh=False)
        if status != JobStatus.SCHEDULED:
            if status not in (JobStatus.QUEUED, JobStatus.STARTED):  # out of retries, or done
                client.srem(f"{waiting}:failed", job_id)
            continue
        if client.scard(waiting):
            return  # rows wait again: keep the retries
        job.delete()
        client.srem(f"{waiting}:failed", job_id)
        log.info("search sync job %s's retry dropped: what it had to sync is synced", job_id)


def _sync(ids) -> dict:
    ids = sorted(ids)
    if not ids:
        return {"upserted": 0, "deleted": 0}
    if live_collection_name() is None:  # nothing indexed yet: build it all once
        reindex()
        return {"upserted": len(ids), "deleted": 0, "reindexed": True}
    _note_during_reindex(ids)
    collection = engine.client(JOB_TIMEOUT).collections[engine.alias_name()]
    upserted = deleted = 0
    for start in range(0, len(ids), IMPORT_BATCH):
        chunk = ids[start : start + IMPORT_BATCH]
        docs = engine.build_documents(chunk)
        db.session.rollback()  # read-only: no transaction stays open while Typesense works
        upserted += _import(collection, list(docs.values()))
        gone = [i for i in chunk if i not in docs]
        if gone:
            collection.documents.delete({"filter_by": f"id:[{','.join(str(i) for i in gone)}]"})
            deleted += len(gone)
    return {"upserted": upserted, "deleted": deleted}


# -- coalesced syncs ---------------------------------------------------------------------------------
def _sync_keys() -> tuple[str, str]:
    """(set of waiting outbox row ids, flag naming the sync job on its way): per index and database,
    since row ids are a database's own."""
    prefix = f"search:sync:{engine.alias_name()}:{db.engine.url.database}"
    return f"{prefix}:waiting", f"{prefix}:job"


# Drop the flag only when nothing waits, atomically, so a row added meanwhile is never left without a job.
_RELEASE = """
if redis.call('SCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) return 1 end
return 0
"""


def _release_flag(keys) -> bool:
    return bool(redis_ext.client.eval(_RELEASE, 2, *keys))


def _sync_rows(row_ids) -> dict:
    """{row id: args} of the waiting rows (a row id not found belongs to no row of this database)."""
    from sqlalchemy import select

    from shop.outbox import OutboxJob

    if not row_ids:
        return {}
    found = dict(
        db.session.execute(
            select(OutboxJob.id, OutboxJob.args).where(OutboxJob.id.in_(row_ids), OutboxJob.kind == SYNC_KIND)
        ).all()
    )
    db.session.rollback()
    return found


def _mark_done(row_ids) -> None:
    from sqlalchemy import func, update

    from shop.outbox import OutboxJob

    db.session.execute(
        update(OutboxJob).where(OutboxJob.id.in_(row_ids), OutboxJob.done_at.is_(None)).values(done_at=func.now())
    )
    db.session.commit()


def _job_on_its_way(job_id: str) -> bool:
    """Whether sync job `job_id` is queued or running. One waiting for a retry (it failed: Typesense was
    away) is not: the new row gets a job now, which takes the failed job's rows too once it succeeds."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    try:
        status = Job.fetch(job_id, connection=redis_ext.client).get_status(refresh=False)
    except NoSuchJobError:
        return False
    return status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.CREATED)


def sync_in_hand(row) -> bool:
    """Whether outbox row `row` (a product sync) waits for a sync job that is still coming: queued, running,
    or waiting for its retry. Such a row has no RQ job of its own, and is not lost."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    client, (waiting, flag) = redis_ext.client, _sync_keys()
    holder = client.get(flag)
    if not holder or not client.sismember(waiting, row.id):
        return False
    try:
        status = Job.fetch(holder.decode() if isinstance(holder, bytes) else holder, connection=client).get_status(
            refresh=False
        )
    except NoSuchJobError:
        return False
    return status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.CREATED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


def _claim_and_enqueue(job_id: str, product_ids, row_id: int | None = None, retry=None, job_timeout: int = 600) -> bool:
    """Note `row_id` as waiting and enqueue sync job `job_id` unless one is on its way; True if enqueued."""
    from rq import Retry
    from rq.exceptions import DuplicateJobError

    client, (waiting, flag) = redis_ext.client, _sync_keys()
    pipe = client.pipeline()
    if row_id is not None:
        pipe.sadd(waiting, row_id)
        pipe.expire(waiting, 7 * 86400)
    pipe.set(flag, job_id, nx=True, ex=SYNC_FLAG_TTL)
    pipe.get(flag)
    *_, claimed, holder = pipe.execute()
    if not claimed:
        holder = holder.decode() if isinstance(holder, bytes) else holder
        if holder and _job_on_its_way(holder):
            return False  # that job takes this row too
        client.set(flag, job_id, ex=SYNC_FLAG_TTL)  # its job is gone (failed, lost, emptied): take over
    try:
        redis_ext.queue("search").enqueue_call(
            "shop.search.jobs.sync_products",
            args=(list(product_ids),),
            timeout=job_timeout,
            job_id=job_id,
            unique=True,
            retry=retry if retry is not None else Retry(max=3, interval=[10, 60, 300]),
        )
    except DuplicateJobError:
        log.info("search sync job %s exists already", job_id)
    return True


def dispatch_sync(row) -> None:
    """The outbox's dispatcher for SYNC_KIND rows (shop.outbox.DISPATCHERS): the row waits in Redis for
    the sync job on its way, or becomes one (job `outbox-<row id>`, as the outbox names its jobs)."""
    from rq import Retry

    from shop.outbox import JOB_PREFIX

    retry = Retry(max=row.retry["max"], interval=row.retry["interval"]) if row.retry else None
    _claim_and_enqueue(
        f"{JOB_PREFIX}{row.id}",
        row.args[0] if row.args else [],
        row_id=row.id,
        retry=retry,
        job_timeout=row.job_timeout,
    )


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
            sync_products(late, pending=False)
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
    rest = collection_name[len(alias) + 1 :] if collection_name.startswith(alias + "_") else ""
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
