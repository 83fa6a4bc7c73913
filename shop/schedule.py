"""Every periodic job of the shop, declared once, run by RQ's cron scheduler.

    python -m shop.schedule        # what `make run` starts beside the worker (one per deployment)

Each entry enqueues its job on a queue at its time (cron fields in the server's local time); any
worker runs it, retried with backoff when it fails (each job is an idempotent sweep).
`build_scheduler(connection)` returns the CronScheduler with all of them registered.
"""
from __future__ import annotations

import sys

PERIODIC = [
    # (function path, queue, cron expression, what it is for)
    ("shop.inventory.jobs.expire_reservations", "default", "* * * * *", "release expired holds, cancel unpaid orders"),
    ("shop.payments.jobs.retry_failed_webhooks", "default", "*/5 * * * *", "apply webhook events that failed"),
    ("shop.payments.services.retry_pending_refunds", "default", "*/5 * * * *", "ask again for pending refunds"),
    ("shop.idempotency.purge_expired", "default", "17 3 * * *", "forget idempotency keys older than a day"),
    ("shop.search.jobs.reconcile", "search", "41 2 * * *", "rebuild the search index from PostgreSQL (nightly)"),
    ("shop.inventory.jobs.scan_low_stock", "default", "7 * * * *", "mail managers what went low (hourly)"),
    ("shop.cart.jobs.purge_abandoned_carts", "default", "43 2 * * *", "delete carts abandoned for 30 days (daily)"),
]

CRON_RETRY = (2, [60, 300])  # attempts after a failure, seconds between them
CRON_JOB_TIMEOUT = 600


def _function(path: str):
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def build_scheduler(connection, periodic=None):
    """The CronScheduler with every periodic job registered (and retried with backoff)."""
    from rq import Retry
    from rq.cron import CronJob, CronScheduler

    class RetryingCronJob(CronJob):
        """A cron job whose runs carry a Retry (kept out of what the scheduler saves to Redis)."""

        def to_dict(self):
            retry = self.job_options.pop("retry", None)
            try:
                return super().to_dict()
            finally:
                if retry is not None:
                    self.job_options["retry"] = retry

    cron = CronScheduler(connection=connection)
    for path, queue, expression, _ in periodic or PERIODIC:
        job = cron.register(_function(path), queue, cron=expression, job_timeout=CRON_JOB_TIMEOUT)
        job.__class__ = RetryingCronJob
        job.job_options["retry"] = Retry(max=CRON_RETRY[0], interval=CRON_RETRY[1])
    return cron


def main() -> None:
    from shop import create_app
    from shop.extensions import redis_ext

    app = create_app()
    with app.app_context():
        build_scheduler(redis_ext.client).start()


if __name__ == "__main__":
    sys.exit(main())
