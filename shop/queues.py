"""The job queues as staff see them: counts per queue, the jobs that kept failing, requeue and delete.

Jobs retry with backoff on their own (RQ's Retry, set by every enqueue path); a job lands in its
queue's FailedJobRegistry only when its retries ran out (or its worker died with none left). The
back-office (admin/jobs.py, admins only) lists them here and puts them back or throws them away.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime

from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from shop.extensions import QUEUE_NAMES, redis_ext


@dataclass
class QueueCounts:
    name: str
    queued: int
    started: int
    scheduled: int
    failed: int


@dataclass
class FailedJob:
    id: str
    queue: str
    function: str
    args: str
    exc_first: str
    exc_last: str
    failed_at: datetime | None


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def overview() -> list[QueueCounts]:
    counts = []
    for name in QUEUE_NAMES:
        q = redis_ext.queue(name)
        counts.append(
            QueueCounts(
                name, q.count, q.started_job_registry.count, q.scheduled_job_registry.count, q.failed_job_registry.count
            )
        )
    return counts


def _exc_lines(job: Job) -> tuple[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            text = job.exc_info or ""
        except Exception:  # noqa: BLE001 - a result that cannot be read still lists the job
            text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[0].strip() if lines else ""), (lines[-1].strip() if lines else "")


def failed_jobs(limit: int = 100) -> list[FailedJob]:
    """The failed jobs of every queue, newest first within each queue."""
    out = []
    for name in QUEUE_NAMES:
        q = redis_ext.queue(name)
        ids = q.failed_job_registry.get_job_ids(0, limit - 1, desc=True)
        for job in Job.fetch_many(ids, connection=redis_ext.client):
            if job is None:
                continue
            args = ", ".join(
                [_short(a, 60) for a in job.args or ()]
                + [f"{k}={_short(v, 60)}" for k, v in (job.kwargs or {}).items()]
            )
            first, last = _exc_lines(job)
            out.append(FailedJob(job.id, name, job.func_name or "?", args[:300], first[:300], last[:300], job.ended_at))
    return out


def _failed(queue: str, job_id: str) -> Job | None:
    if queue not in QUEUE_NAMES:
        return None
    registry = redis_ext.queue(queue).failed_job_registry
    if job_id not in registry.get_job_ids():
        return None
    try:
        return Job.fetch(job_id, connection=redis_ext.client)
    except NoSuchJobError:
        registry.remove(job_id)
        return None


def requeue(queue: str, job_id: str) -> bool:
    """Put a failed job back on its queue; False when it is not a failed job (any more)."""
    job = _failed(queue, job_id)
    if job is None:
        return False
    try:
        redis_ext.queue(queue).failed_job_registry.requeue(job)
    except InvalidJobOperation:
        return False
    return True


def delete(queue: str, job_id: str) -> bool:
    """Throw a failed job away; False when it is not a failed job (any more)."""
    job = _failed(queue, job_id)
    if job is None:
        return False
    redis_ext.queue(queue).failed_job_registry.remove(job, delete_job=True)
    return True
