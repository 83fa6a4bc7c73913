"""Side effects after the commit: `after_commit(queue, func, *args)` runs func as an RQ job once the
surrounding transaction commits, and never when it rolls back. Mail, refunds, payment-event
deliveries and search sync all go this way, so a worker never acts on a row that does not exist.

The job is an `outbox_job` row written in the same transaction (shop.outbox), so it survives Redis
being away at commit time: right after the commit this process hands the rows to RQ, and when Redis
cannot take them the relay (`python worker.py relay`) does as soon as it can.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from shop import outbox
from shop.extensions import db

_PENDING = "outbox_job_ids"  # rows written in the open transaction
_COMMITTED = "outbox_job_ids_committed"  # rows of the transaction that just committed, for the fast path


def default_retry():
    """Transient failures (a provider's outage, a lock timeout) pass: try again with backoff."""
    from rq import Retry

    return Retry(max=3, interval=[10, 60, 300])


def record_job(
    session: Session, queue: str, func, args=(), kwargs=None, retry=None, job_timeout: int = 120, kind: str = "job"
) -> None:
    """after_commit() in a given session's transaction (for session event hooks); `kind` as in outbox.record."""
    row_id = outbox.record(
        session, queue, func, args, kwargs, retry if retry is not None else default_retry(), job_timeout, kind
    )
    session.info.setdefault(_PENDING, []).append(row_id)


def after_commit(queue: str, func, *args, retry=None, job_timeout: int = 120, **kwargs) -> None:
    """Run func(*args, **kwargs) on `queue` once this transaction commits, retried with backoff
    (`retry`, or default_retry()) when it raises. Arguments must be JSON-able (they are stored)."""
    record_job(db.session(), queue, func, args, kwargs, retry, job_timeout)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.in_nested_transaction():  # a released savepoint: the rows are not committed yet
        return
    if ids := session.info.pop(_PENDING, None):
        session.info.setdefault(_COMMITTED, []).extend(ids)


@event.listens_for(Session, "after_transaction_end")
def _dispatch(session: Session, transaction) -> None:
    """Hand the committed rows to RQ once the session gave its connection back to the pool (so the
    hand-over's own short transaction never holds a second connection per request)."""
    if transaction.parent is None and (ids := session.info.pop(_COMMITTED, None)):
        outbox.dispatch_now(session.get_bind(), ids)


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)
