"""Every periodic job of the shop, declared once, run by RQ's cron scheduler.

    python -m shop.schedule        # what `make run` starts beside the worker (one per deployment)

Each entry enqueues its job on a queue at its time (cron fields in the server's local time); any
worker runs it, retried with backoff when it fails (each job is an idempotent sweep).
`build_scheduler(connection)` returns the CronScheduler with all of them registered.
"""

from __future__ import annotations

import logging
import sys

PERIODIC = [
    # (function path, queue, cron expression, what it is for)
    ("shop.orders.jobs.expire_reservations", "default", "* * * * *", "release expired holds, cancel unpaid orders"),
    ("shop.webhooks.jobs.retry_failed_webhooks", "default", "*/5 * * * *", "apply webhook events that failed"),
    ("shop.payments.services.retry_pending_refunds", "default", "*/5 * * * *", "ask again for pending refunds"),
    ("shop.payments.jobs.finish_stuck_payments", "default", "*/2 * * * *", "start or cancel payments stuck creating"),
    ("shop.idempotency.purge_expired", "default", "17 3 * * *", "forget idempotency keys older than a day"),
    ("shop.search.jobs.reconcile", "search", "41 2 * * *", "rebuild the search index from PostgreSQL (nightly)"),
    ("shop.inventory.jobs.scan_low_stock", "default", "7 * * * *", "mail managers what went low (hourly)"),
    ("shop.cart.jobs.purge_abandoned_carts", "default", "43 2 * * *", "delete carts abandoned for 30 days (daily)"),
    ("shop.outbox.purge_dispatched", "default", "53 2 * * *", "delete outbox rows dispatched over 7 days ago"),
    ("shop.consumers.purge_consumed", "default", "23 3 * * *", "forget consumer groups' event claims over 14 days"),
    (
        "shop.partners.jobs.deliver_due",
        "default",
        "* * * * *",
        "send due partner webhook retries; disable endpoints failing for 3 days",
    ),
]

CRON_RETRY = (2, [60, 300])  # attempts after a failure, seconds between them
CRON_JOB_TIMEOUT = 600
HEARTBEAT_EVERY = 10  # seconds; the heartbeat counts for shop.heartbeat.TTL
log = logging.getLogger("shop.schedule")


def _function(path: str):
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def build_scheduler(connection, periodic=None):
    """The CronScheduler with every periodic job registered (and retried with backoff)."""
    from rq import Retry
    from rq.cron import CronJob, CronScheduler

    from shop import heartbeat

    class RetryingCronJob(CronJob):
        """A cron job whose runs carry a Retry (kept out of what the scheduler saves to Redis)."""

        def to_dict(self):
            retry = self.job_options.pop("retry", None)
            try:
                return super().to_dict()
            finally:
                if retry is not None:
                    self.job_options["retry"] = retry

    class ShopCronScheduler(CronScheduler):
        """RQ's cron scheduler, also writing the shop's "scheduler" heartbeat at least every HEARTBEAT_EVERY s."""

        def heartbeat(self):
            super().heartbeat()
            heartbeat.beat(self.connection, "scheduler", instance=self.name)

        def calculate_sleep_interval(self):
            return min(super().calculate_sleep_interval(), HEARTBEAT_EVERY)

    cron = ShopCronScheduler(connection=connection)
    for path, queue, expression, _ in periodic or PERIODIC:
        job = cron.register(_function(path), queue, cron=expression, job_timeout=CRON_JOB_TIMEOUT)
        job.__class__ = RetryingCronJob
        job.job_options["retry"] = Retry(max=CRON_RETRY[0], interval=CRON_RETRY[1])
    return cron


def run_forever(cron, connection) -> None:
    """`cron.start()` until stopped, started again after any Redis outage (which RQ does not survive).

    The cron jobs keep their next due time across restarts, so a tick missed while Redis was away is
    enqueued once when it returns.
    """
    from rq.exceptions import StopRequested

    from shop import heartbeat

    while True:
        try:
            heartbeat.wait_for_redis(connection, log)
            cron.start()  # returns on SIGTERM/SIGINT
            return
        except heartbeat.REDIS_DOWN as exc:
            log.warning("scheduler lost Redis (%s)", exc)
        except (StopRequested, KeyboardInterrupt):  # a signal while waiting for Redis
            return


def main() -> None:
    from shop import create_app
    from shop.extensions import redis_ext

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app()
    with app.app_context():
        run_forever(build_scheduler(redis_ext.client), redis_ext.client)


if __name__ == "__main__":
    sys.exit(main())
