"""With each commit that changed the catalogue, record a search sync job for the products concerned.

The job is written into the committing transaction itself (an outbox row, shop.afterwards), just
before it commits: catalogue change and sync job stand or fall together, and a sync recorded while
Redis is down is queued by the outbox relay once it is back. The nightly reconcile() still repairs
anything the index missed (Typesense away for longer than the job's retries).

Product syncs are rows of their own kind (jobs.SYNC_KIND), handed over by jobs.dispatch_sync, which
coalesces the syncs of many commits into one job; category changes stay plain reindex jobs.
"""
from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from shop import outbox
from shop.afterwards import record_job
from shop.catalog.changes import pending_changes

SYNC_KIND = "search-sync"  # the outbox kind of product syncs (shop.search.jobs.dispatch_sync hands them over)


def _dispatch_sync(row) -> None:
    from shop.search import jobs

    jobs.dispatch_sync(row)


def _sync_in_hand(row) -> bool:
    from shop.search import jobs

    return jobs.sync_in_hand(row)


outbox.DISPATCHERS[SYNC_KIND] = _dispatch_sync
outbox.STILL_IN_HAND[SYNC_KIND] = _sync_in_hand


@event.listens_for(Session, "before_commit")
def queue_search_sync(session: Session) -> None:
    from rq import Retry

    from shop.search import jobs

    if session.in_nested_transaction():  # a savepoint: its changes are recorded with the outer commit
        return
    session.flush()  # so this transaction's last changes are collected too
    product_ids, categories_changed = pending_changes(session)
    retry = Retry(max=3, interval=[10, 60, 300])  # Typesense restarting: try again a little later
    if categories_changed:
        # A renamed or moved category changes the path of every product below it: rebuild.
        record_job(session, "search", jobs.reindex, job_timeout=3600, retry=retry)
    elif product_ids:
        # One coalesced job stands for every waiting sync, so its first retries come sooner.
        record_job(session, "search", jobs.sync_products, [sorted(product_ids)], job_timeout=600, kind=SYNC_KIND,
                   retry=Retry(max=4, interval=[5, 15, 60, 300]))
