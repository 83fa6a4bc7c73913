"""The non-forking worker (`python worker.py`, the default; `--fork` for RQ's forking one), run as the real process:
jobs run in the worker's own process, a job past its timeout is failed and the next one runs, no job sees what
another left in the database session, and a running job's claim is renewed while it runs and lapses within
HEARTBEAT_GRACE + JOB_MONITORING_INTERVAL seconds of the process's death (not the job's timeout + 60 s, as RQ's
SimpleWorker would have it). The job functions below are what the worker imports and runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from redis import Redis
from rq import Queue, Retry, Worker
from rq.job import Job, JobStatus
from sqlalchemy import select, text

import worker as shop_worker
from shop.devstack import ROOT
from tests.conftest import wait_until

SCRATCH = "test.worker"  # the sent_notification rows these jobs write carry this event


# -- the jobs ---------------------------------------------------------------------------------------------------
def _row(key: str):
    from shop.notifications.models import SentNotification

    return SentNotification(event=SCRATCH, object_key=key, recipient="worker@example.com")


def forgets_to_commit(key: str) -> None:
    """Writes a row and returns without committing."""
    from shop.extensions import db

    db.session.add(_row(key))
    db.session.flush()


def fails_mid_transaction(key: str) -> None:
    from shop.extensions import db

    db.session.add(_row(key))
    db.session.flush()
    raise RuntimeError("failed with a row written and not committed")


def stuck_in_a_query(key: str) -> None:
    """Writes a row, then waits in PostgreSQL past its timeout."""
    from shop.extensions import db

    db.session.add(_row(key))
    db.session.flush()
    db.session.execute(text("SELECT pg_sleep(20)"))


def looks_around(key: str) -> dict:
    """What a job finds when it starts (its session, the rows others committed), then a row of its own, committed."""
    from shop.extensions import db
    from shop.notifications.models import SentNotification

    found = {
        "pid": os.getpid(),
        "in_transaction": db.session().in_transaction(),
        "identity_map": len(db.session.identity_map),
        "rows": sorted(
            db.session.scalars(select(SentNotification.object_key).where(SentNotification.event == SCRATCH))
        ),
    }
    db.session.add(_row(key))
    db.session.commit()
    return found


def swallows_its_timeout(seconds: float) -> None:
    from rq.timeouts import JobTimeoutException

    try:
        time.sleep(seconds)
    except JobTimeoutException:
        time.sleep(seconds)


# -- helpers ----------------------------------------------------------------------------------------------------
def _burst(env: dict, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "worker.py", "--burst", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def _start(env: dict, *args: str, log=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "worker.py", *args],
        cwd=ROOT,
        env=env,
        stdout=open(log, "wb") if log else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _claim(redis: Redis, queue: Queue, job_id: str) -> float | None:
    """The time the running job's claim lapses (its score in the queue's StartedJobRegistry), or None."""
    for member, score in redis.zrange(queue.started_job_registry.key, 0, -1, withscores=True):
        if member.decode().startswith(f"{job_id}:"):
            return score
    return None


@pytest.fixture
def redis():
    client = Redis.from_url(os.environ["REDIS_URL"])
    client.flushdb()
    yield client
    client.flushdb()


# -- the tests --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["non-forking", "forking"])
def test_jobs_run_in_the_workers_process_unless_it_forks(redis, mode):
    queue = Queue("default", connection=redis)
    job = queue.enqueue("os.getpid")
    proc = subprocess.Popen(
        [sys.executable, "worker.py", "--burst", *(["--fork"] if mode == "forking" else []), "default"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert (job.return_value() == proc.pid) is (mode == "non-forking")


def test_a_job_past_its_timeout_is_failed_and_the_next_one_runs(redis):
    queue = Queue("default", connection=redis)
    slow = queue.enqueue("time.sleep", 60, job_timeout=1)
    after = queue.enqueue("os.getpid")
    _burst(os.environ.copy(), "default")
    assert slow.get_status(refresh=True) == JobStatus.FAILED
    assert "JobTimeoutException" in slow.latest_result().exc_string
    assert after.get_status(refresh=True) == JobStatus.FINISHED


def test_no_job_sees_what_another_left_in_its_database_session(redis, committed_db):
    """In one worker process: a job that forgets to commit, one that fails mid-transaction and one stopped by its
    timeout in the middle of a query; the job after each finds a fresh session, none of their rows, and commits its
    own."""
    from shop import create_app
    from shop.extensions import db
    from shop.notifications.models import SentNotification
    from tests.conftest import config_for

    queue = Queue("default", connection=redis)
    here = __name__
    jobs = [
        queue.enqueue(f"{here}.forgets_to_commit", "a"),
        queue.enqueue(f"{here}.looks_around", "after-a"),
        queue.enqueue(f"{here}.fails_mid_transaction", "b"),
        queue.enqueue(f"{here}.looks_around", "after-b"),
        queue.enqueue(f"{here}.stuck_in_a_query", "c", job_timeout=2),
        queue.enqueue(f"{here}.looks_around", "after-c"),
    ]
    _burst({**os.environ, "DATABASE_URL": committed_db}, "default")

    statuses = [job.get_status(refresh=True) for job in jobs]
    assert statuses == ["finished", "finished", "failed", "finished", "failed", "finished"], statuses
    assert "failed with a row written" in jobs[2].latest_result().exc_string
    assert "JobTimeoutException" in jobs[4].latest_result().exc_string
    seen = [jobs[n].return_value() for n in (1, 3, 5)]
    assert len({s["pid"] for s in seen}) == 1  # one process ran them all
    assert [(s["in_transaction"], s["identity_map"]) for s in seen] == [(False, 0)] * 3
    assert [s["rows"] for s in seen] == [[], ["after-a"], ["after-a", "after-b"]]
    app = create_app(config_for(committed_db))
    with app.app_context():
        committed = db.session.scalars(select(SentNotification.object_key).where(SentNotification.event == SCRATCH))
        assert sorted(committed) == ["after-a", "after-b", "after-c"]
        db.session.remove()
        db.engine.dispose()


def test_the_running_jobs_claim_is_renewed_and_lapses_soon_after_the_worker_dies(redis, tmp_path):
    queue = Queue("default", connection=redis)
    ceiling = shop_worker.HEARTBEAT_GRACE + shop_worker.JOB_MONITORING_INTERVAL  # RQ's SimpleWorker: 600 + 60
    proc = _start(os.environ.copy(), "default", log=tmp_path / "worker.log")
    try:
        job = queue.enqueue("time.sleep", 120, job_timeout=600, retry=Retry(max=1, interval=0))
        first = wait_until(lambda: _claim(redis, queue, job.id), 30, "the job to start")
        assert first <= time.time() + ceiling + 1
        renewed = wait_until(
            lambda: (score := _claim(redis, queue, job.id)) and score > first and score,
            shop_worker.JOB_MONITORING_INTERVAL * 3,
            "the claim to be renewed while the job runs",
        )
        assert job.get_status(refresh=True) == JobStatus.STARTED and proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        died = time.time()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    last = _claim(redis, queue, job.id)
    assert renewed <= last <= died + ceiling + 1  # nothing renews it now: it lapses at `last`
    # At that moment RQ's clean-up (any live worker's maintenance) gives the job its retry.
    queue.started_job_registry.cleanup(timestamp=last + 0.001)
    assert Job.fetch(job.id, connection=redis).retries_left == 0
    assert job.get_status(refresh=True) in (JobStatus.QUEUED, JobStatus.SCHEDULED)


def test_the_worker_shows_busy_while_its_job_runs_and_idle_once_it_has_ended(redis, tmp_path):
    """What `rq info` and the back-office read: the state is written with the job's end, in the same transaction."""
    queue = Queue("default", connection=redis)
    proc = _start(os.environ.copy(), "default", log=tmp_path / "worker.log")
    try:

        def state():
            mine = [w for w in Worker.all(queue=queue) if w.pid == proc.pid]
            return mine[0].get_state() if mine else None

        job = queue.enqueue("time.sleep", 2)
        wait_until(lambda: state() == "busy", 30, "the worker to show busy")
        wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, 30, "the job to end")
        assert state() == "idle"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_heartbeat_ttls_are_short_and_never_lapse_while_the_job_is_watched(app, redis):
    """RQ's SimpleWorker would claim a job for its whole timeout + 60 s; past its timeout (until the watcher ends
    it), RQ's arithmetic would give the claim no time at all."""
    job = Queue("default", connection=redis).enqueue("os.getpid", job_timeout=600)
    for cls in (shop_worker.ShopSimpleWorker, shop_worker.ShopWorker):
        kwargs = {"app": app} if cls is shop_worker.ShopSimpleWorker else {}
        worker = cls([Queue("default", connection=redis)], connection=redis, **kwargs)
        grace, interval = shop_worker.HEARTBEAT_GRACE, shop_worker.JOB_MONITORING_INTERVAL
        assert worker.get_heartbeat_ttl(job) == interval + grace
        assert worker.get_heartbeat_ttl(job, working_time=598) == 2 + grace
        assert worker.get_heartbeat_ttl(job, working_time=700) == grace


@pytest.mark.slow
def test_a_job_that_swallows_its_timeout_ends_the_process_and_is_retried(redis, tmp_path):
    """What RQ's forking worker does to a work-horse 60 s past its timeout, done to the process itself."""
    queue = Queue("default", connection=redis)
    log = tmp_path / "worker.log"
    proc = _start(os.environ.copy(), "default", log=log)
    try:
        job = queue.enqueue(f"{__name__}.swallows_its_timeout", 120, job_timeout=1, retry=Retry(max=1, interval=0))
        wait_until(lambda: _claim(redis, queue, job.id), 30, "the job to start")
        assert proc.wait(1 + shop_worker.OVERRUN_GRACE + shop_worker.JOB_MONITORING_INTERVAL + 15) == (
            shop_worker.OVERRUN_EXIT
        ), log.read_text()[-3000:]
        ended = time.time()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert "past its timeout; ending the process" in log.read_text()
    last = _claim(redis, queue, job.id)
    assert last <= ended + shop_worker.HEARTBEAT_GRACE + 1
    queue.started_job_registry.cleanup(timestamp=last + 0.001)
    assert Job.fetch(job.id, connection=redis).retries_left == 0
