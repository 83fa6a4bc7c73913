"""After each commit that changed the catalogue, queue a search sync job for the products concerned.

The listener runs after the commit (shop.catalog.changes), so it enqueues directly; when Redis is
down the commit stands, the log says so, and the nightly reconcile() repairs the index.
"""
from __future__ import annotations

import logging

from shop.catalog.changes import on_catalog_change
from shop.extensions import redis_ext

log = logging.getLogger(__name__)


@on_catalog_change
def queue_search_sync(product_ids: set[int], categories_changed: bool) -> None:
    from rq import Retry

    from shop.search import jobs

    retry = Retry(max=3, interval=[10, 60, 300])  # Typesense restarting: try again a little later
    try:
        queue = redis_ext.queue("search")
        if categories_changed:
            # A renamed or moved category changes the path of every product below it: rebuild.
            queue.enqueue(jobs.reindex, job_timeout=3600, retry=retry)
        elif product_ids:
            queue.enqueue(jobs.sync_products, sorted(product_ids), job_timeout=600, retry=retry)
    except Exception:  # noqa: BLE001 - derived data: the nightly reconcile repairs what is missed
        log.warning("could not queue search sync for %d product(s); the nightly reconcile will catch up",
                    len(product_ids), exc_info=True)
