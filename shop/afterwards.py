"""Side effects after the commit: `after_commit(queue, func, *args)` enqueues an RQ job only when the
surrounding transaction commits, and forgets it when it rolls back. Mail, refunds and search sync
all go this way, so a worker never acts on a row that does not exist."""
from __future__ import annotations

import logging

from sqlalchemy import event
from sqlalchemy.orm import Session

from shop.extensions import db, redis_ext

log = logging.getLogger(__name__)
_PENDING = "after_commit_jobs"


def default_retry():
    """Transient failures (a provider's outage, a lock timeout) pass: try again with backoff."""
    from rq import Retry

    return Retry(max=3, interval=[10, 60, 300])


def after_commit(queue: str, func, *args, retry=None, **kwargs) -> None:
    """Enqueue func(*args, **kwargs) on `queue` once this transaction commits, retried with backoff
    (`retry`, or default_retry()) when it raises."""
    retry = retry if retry is not None else default_retry()
    db.session.connection()  # make sure a transaction is open, so its rollback also drops the job
    db.session.info.setdefault(_PENDING, []).append((queue, func, args, kwargs, retry))


@event.listens_for(Session, "after_commit")
def _enqueue(session: Session) -> None:
    for queue, func, args, kwargs, retry in session.info.pop(_PENDING, None) or ():
        try:
            redis_ext.queue(queue).enqueue(func, *args, retry=retry, job_timeout=120, **kwargs)
        except Exception:  # noqa: BLE001 - the commit stands; an operator sees the log line
            log.exception("could not queue %s%r on %s", getattr(func, "__name__", func), args, queue)


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)
