"""Every periodic job of the shop, declared once, run by RQ's cron scheduler.

    python -m shop.schedule        # what `make run` starts beside the worker (one per deployment)

Each entry enqueues its job on a queue at its time; any worker runs it.
"""
from __future__ import annotations

import sys

PERIODIC = [
    # (function path, queue, cron expression, what it is for)
    ("shop.inventory.jobs.expire_reservations", "default", "* * * * *", "release expired holds, cancel unpaid orders"),
    ("shop.payments.jobs.retry_failed_webhooks", "default", "*/5 * * * *", "apply webhook events that failed"),
    ("shop.idempotency.purge_expired", "default", "17 3 * * *", "forget idempotency keys older than a day"),
]


def main() -> None:
    from rq.cron import CronScheduler

    from shop import create_app
    from shop.extensions import redis_ext

    app = create_app()
    with app.app_context():
        cron = CronScheduler(connection=redis_ext.client)
        for path, queue, expression, _ in PERIODIC:
            module, _, name = path.rpartition(".")
            func = getattr(__import__(module, fromlist=[name]), name)
            cron.register(func, queue, cron=expression)
        cron.start()


if __name__ == "__main__":
    sys.exit(main())
