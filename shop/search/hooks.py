"""The search index follows the catalogue: consumer group "search" on the event stream, and a commit hook.

Product changes arrive as events: product.created, product.updated, product.deleted and stock.changed (a stock
move changes a product's "in stock" and, with an order, its popularity). The "search" group (search_on_event)
collects the products of the events it applies in a transaction, and the commit hook below writes one sync job for
them into that same transaction (an outbox row, shop.afterwards): claims and job stand or fall together, so an
event is synced once in effect, and a sync recorded while Redis is down is queued by the outbox relay once it is
back. A batch of events costs one job.

Category changes have no event: the hook records a full reindex with the commit that renamed or moved a category
(the path of every product below it changes). The nightly reconcile() still repairs anything the index missed
(Typesense away for longer than the job's retries).

Product syncs are rows of their own kind (jobs.SYNC_KIND), handed over by jobs.dispatch_sync, which coalesces the
syncs of many commits into one job; reindexes stay plain jobs.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from shop import outbox
from shop.afterwards import record_job
from shop.catalog.changes import pending_changes
from shop.consumers import consumer

SYNC_KIND = "search-sync"  # the outbox kind of product syncs (shop.search.jobs.dispatch_sync hands them over)
_TO_SYNC = "search_sync_products"  # session.info: the products of the events applied in this transaction


def _dispatch_sync(row) -> None:
    from shop.search import jobs

    jobs.dispatch_sync(row)


def _sync_in_hand(row) -> bool:
    from shop.search import jobs

    return jobs.sync_in_hand(row)


outbox.DISPATCHERS[SYNC_KIND] = _dispatch_sync
outbox.STILL_IN_HAND[SYNC_KIND] = _sync_in_hand


@consumer("search", types={"product.created", "product.updated", "product.deleted", "stock.changed"})
def search_on_event(envelope: dict) -> None:
    """Keep the search index in step with the catalogue: the event's product is synced with this transaction."""
    from shop.extensions import db

    db.session.info.setdefault(_TO_SYNC, set()).add(int(envelope["data"]["product_id"]))


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_TO_SYNC, None)


@event.listens_for(Session, "before_commit")
def queue_search_sync(session: Session) -> None:
    from rq import Retry

    from shop.search import jobs

    if session.in_nested_transaction():  # a savepoint: its changes are recorded with the outer commit
        return
    session.flush()  # so this transaction's last changes are collected too
    categories_changed = pending_changes(session)[1]  # changed products: their events bring them (above)
    product_ids = session.info.pop(_TO_SYNC, set())
    retry = Retry(max=3, interval=[10, 60, 300])  # Typesense restarting: try again a little later
    if categories_changed:
        # A renamed or moved category changes the path of every product below it: rebuild.
        record_job(session, "search", jobs.reindex, job_timeout=3600, retry=retry)
    elif product_ids:
        # One coalesced job stands for every waiting sync, so its first retries come sooner.
        record_job(
            session,
            "search",
            jobs.sync_products,
            [sorted(product_ids)],
            job_timeout=600,
            kind=SYNC_KIND,
            retry=Retry(max=4, interval=[5, 15, 60, 300]),
        )
