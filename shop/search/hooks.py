"""With each commit that changed the catalogue, record a search sync job for the products concerned.

The job is written into the committing transaction itself (an outbox row, shop.afterwards), just
before it commits: catalogue change and sync job stand or fall together, and a sync recorded while
Redis is down is queued by the outbox relay once it is back. The nightly reconcile() still repairs
anything the index missed (Typesense away for longer than the job's retries).
"""
from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from shop.afterwards import record_job
from shop.catalog.changes import pending_changes


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
        record_job(session, "search", jobs.sync_products, [sorted(product_ids)], job_timeout=600, retry=retry)
