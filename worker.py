"""The RQ worker: `python worker.py [--burst] [--fork] [queue ...]`, the outbox relay: `python worker.py relay`, and the
event consumers: `python worker.py events [--burst] [group ...]` (every consumer group by default;
shop.consumers.run; with --burst: relay the outbox's events, apply what the stream holds, exit).

Listens on default, mail and search (or the queues named, served in the order given) with RQ's
scheduler, inside the app's context so jobs can use the database. `--burst` works until the queues are
empty, then exits. `make run` starts one worker per queue, so a backlog on one never delays another.

No fork per job (the default, ShopSimpleWorker): each job runs in the worker's own process, in an app
context of its own (a fresh database session and `g`, removed when the job ends, whatever it left behind),
under RQ's timeout (SIGALRM in the main thread, as in a work-horse). A thread renews the running job's
heartbeat every JOB_MONITORING_INTERVAL seconds, so its claim lapses HEARTBEAT_GRACE seconds after the
process dies, as with a forking worker; a job still running OVERRUN_GRACE seconds past its timeout (it
swallowed the timeout, or is stuck where the alarm cannot reach it) takes the process down, as RQ's forking worker kills its
work-horse 60 s past the timeout, and its claim lapses. The shop's jobs are short and I/O-bound (mail,
search sync, refunds, partner webhooks, sweeps), so a fork per job cost far more than the job (bench/jobs.py).
`--fork` gives RQ's forking worker back (ShopWorker: a work-horse per job, isolated from the worker:
memory a job leaves behind dies with it).

Without --burst it never exits on a Redis outage: RQ's own loop gives up on some connection errors
(a Redis restart while a job runs, a timeout), so `run()` starts a fresh worker once Redis answers again,
logging one line per outage. PostgreSQL errors only fail the job that met them (and its retries run
later).

Dead workers are noticed in seconds: a job's claim lapses HEARTBEAT_GRACE seconds after its last
heartbeat, maintenance (which requeues such abandoned jobs and restarts a dead scheduler process) runs
every MAINTENANCE_INTERVAL seconds, and RQ's scheduler lock lapses in SCHEDULER_LOCK_TTL seconds, so a
job whose worker was SIGKILLed runs again (on its next retry) within a minute, not RQ's ten.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time

from flask import Flask, current_app
from rq import SimpleWorker, Worker
from rq.job import JobStatus
from rq.scheduler import RQScheduler
from rq.worker import WorkerStatus

from shop import create_app, heartbeat
from shop.extensions import QUEUE_NAMES, redis_ext
from shop.telemetry import metrics, tracing

log = logging.getLogger("shop.worker")

WORKER_TTL = 25  # RQ blocks WORKER_TTL - 15 s per dequeue, then heartbeats and runs maintenance if due
JOB_MONITORING_INTERVAL = 5  # how often a running job's heartbeat is renewed
HEARTBEAT_GRACE = 15  # a running job's claim outlives its last heartbeat by this much (RQ: 60)
MAINTENANCE_INTERVAL = 10  # requeue abandoned jobs, restart the scheduler process (RQ: 600)
SCHEDULER_LOCK_TTL = 15  # a dead worker's scheduler lock lapses after this (RQ: 61)
BEAT_EVERY = 1.0  # seconds: RQ's heartbeats without a TTL of their own come at most this often (see heartbeat())
OVERRUN_GRACE = 15  # a job running in-process this long past its timeout ends the process (RQ's horse: 60)
OVERRUN_EXIT = 70  # the exit status it ends with (EX_SOFTWARE)


class ShopScheduler(RQScheduler):
    """RQ's scheduler (it moves due retries onto their queue) with locks that lapse in SCHEDULER_LOCK_TTL.

    RQ holds them for 61 s; a killed worker's lock would stall every retry of its queues that long.
    Only locks this scheduler has just acquired or refreshed are shortened.
    """

    def _shorten_locks(self):
        with self.connection.pipeline() as pipe:
            for name in self._acquired_locks:
                pipe.expire(self.get_locking_key(name), SCHEDULER_LOCK_TTL)
            pipe.execute()

    def acquire_locks(self, auto_start=False):
        locks = super().acquire_locks()
        self._shorten_locks()
        if locks and auto_start and (not self._process or not self._process.is_alive()):
            self.start()
        return locks

    def _worker_gone(self) -> bool:
        """Whether the worker that forked this scheduler process has died (SIGKILL leaves it running)."""
        return os.getppid() != self._worker_pid

    def heartbeat(self):
        if self._worker_gone():
            self._stop_requested = True  # RQ's loop stops at its next turn, releasing the locks
        super().heartbeat()
        self._shorten_locks()

    def work(self):
        """RQ's loop, resumed once Redis answers again instead of ending the scheduler process (the worker
        would only start a new one at its next maintenance); it ends with its worker."""
        self._worker_pid = os.getppid()
        while True:
            try:
                return super().work()
            except heartbeat.REDIS_DOWN:
                if not heartbeat.wait_for_redis(
                    self.connection, self.log, lambda: self._stop_requested or self._worker_gone()
                ):
                    return  # stopped, or orphaned: its locks lapse on their own


class _ShopWorkerMixin:
    """What the shop adds to RQ's workers, forking or not: short heartbeats, a shop heartbeat per queue, a job
    kept through a Redis blip, ShopScheduler, and a teardown that survives Redis being away."""

    def __init__(self, queues, **kwargs):
        kwargs = {
            "worker_ttl": WORKER_TTL,
            "job_monitoring_interval": JOB_MONITORING_INTERVAL,
            "maintenance_interval": MAINTENANCE_INTERVAL,
            **kwargs,
        }
        # monotonic times of the last beats (heartbeat()) and suspension check (check_for_suspension())
        self._beat_at = self._shop_beat_at = self._suspension_checked_at = float("-inf")
        super().__init__(queues, **kwargs)
        self.log_result_lifespan = False  # RQ's fourth log line per job: "result is kept for 500 seconds"
        self.stopping = False  # a SIGTERM/SIGINT asked it to stop (RQ's own flag misses an idle stop)

    def request_stop(self, signum, frame):
        self.stopping = True
        super().request_stop(signum, frame)

    def perform_job(self, job, queue, execution):
        """RQ's, in a span continuing the trace the job was recorded in (its meta's traceparent), timed and counted
        (shop_job_duration_seconds, shop_jobs_total: succeeded, retried or failed)."""
        started = time.perf_counter()
        with tracing.resumed(
            (job.meta or {}).get("traceparent"),
            f"job {job.func_name}",
            {"messaging.system": "rq", "messaging.destination.name": queue.name, "shop.job_id": job.id},
            "consumer",
        ):
            ok = super().perform_job(job, queue, execution)
        metrics.JOB_DURATION.labels(queue.name).observe(time.perf_counter() - started)
        if ok:
            outcome = "succeeded"
        else:
            outcome = "failed" if job.get_status(refresh=False) == JobStatus.FAILED else "retried"
        metrics.JOBS.labels(queue.name, outcome).inc()
        return ok

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        """RQ's TTL with HEARTBEAT_GRACE instead of its fixed 60 s, so an abandoned job is seen sooner (and, unlike
        RQ's SimpleWorker, not the job's whole timeout + 60 s). A job past its timeout, until it is stopped, keeps
        a claim of HEARTBEAT_GRACE (RQ's arithmetic would go to zero or below and let a running job's claim lapse)."""
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = max(0.0, min(job.timeout - working_time, interval))
        return int(interval) + HEARTBEAT_GRACE

    def heartbeat(self, timeout=None, pipeline=None):
        """RQ's heartbeat (the worker's key lives `timeout` more, by default WORKER_TTL + 60 s), and the shop's per
        queue at most every BEAT_EVERY seconds (it counts for heartbeat.TTL).

        RQ beats four or five times per job, most of them in round trips of their own, which cost more than a short
        job once there is no fork: a beat without a `timeout` of its own within BEAT_EVERY seconds of the last one
        is skipped. Every beat gives the key at least HEARTBEAT_GRACE seconds, and the worker's loop beats again
        within the dequeue timeout (WORKER_TTL - 15 s) at the latest."""
        now = time.monotonic()
        if timeout is None and now - self._beat_at < BEAT_EVERY:
            return
        super().heartbeat(timeout, pipeline)
        self._beat_at = now
        if now - self._shop_beat_at >= BEAT_EVERY:
            self._shop_beat_at = now
            for name in self.queue_names():
                heartbeat.beat(
                    pipeline if pipeline is not None else self.connection, f"worker:{name}", instance=self.name
                )

    def check_for_suspension(self, burst: bool):
        """RQ's (`rq suspend`), asked at most every BEAT_EVERY seconds instead of before every job."""
        if time.monotonic() - self._suspension_checked_at < BEAT_EVERY:
            return
        super().check_for_suspension(burst)
        self._suspension_checked_at = time.monotonic()

    def set_state(self, state, pipeline=None):
        """RQ's, without writing a state the worker's key already holds (RQ sets IDLE after each job and again
        before each dequeue)."""
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)

    def maintain_heartbeats(self, job, execution):
        """Keep watching the running job when Redis is away, instead of leaving it behind unwatched."""
        try:
            super().maintain_heartbeats(job, execution)
        except heartbeat.REDIS_DOWN as exc:
            self.log.warning(
                "Worker %s: cannot renew job %s's heartbeat (%s); still waiting for it", self.name, job.id, exc
            )

    def _start_scheduler(self, burst=False, logging_level="INFO", date_format=None, log_format=None):
        """RQ's own, with ShopScheduler for RQScheduler."""
        kwargs = {k: v for k, v in (("date_format", date_format), ("log_format", log_format)) if v}
        self.scheduler = ShopScheduler(
            self.queues,
            connection=self.connection,
            serializer=self.serializer,
            logging_level=logging_level or self.log.level,
            **kwargs,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    def teardown(self):
        """RQ's, but a Redis that is away does not leave the command listener thread running."""
        try:
            super().teardown()
        except heartbeat.REDIS_DOWN:
            if self.pubsub_thread:
                self.pubsub_thread.stop()
                self.pubsub_thread.join(timeout=1)


class ShopWorker(_ShopWorkerMixin, Worker):
    """RQ's forking worker (`python worker.py --fork`): a work-horse process per job, watched by this one."""


class _JobHeartbeat(threading.Thread):
    """ShopSimpleWorker's watcher, one thread per worker: every JOB_MONITORING_INTERVAL seconds it renews the
    heartbeat of the job the main thread runs (what a forking worker's main process does while its work-horse
    runs), so the job's claim lapses HEARTBEAT_GRACE seconds after the process dies and never while it lives.
    A job still running OVERRUN_GRACE seconds past its timeout ends the process instead. `release()` returns once
    no renewal of the job is in flight and none can follow."""

    def __init__(self, worker: ShopSimpleWorker):
        super().__init__(name=f"job-heartbeat-{worker.name}", daemon=True)
        self.worker = worker
        self.lock = threading.Lock()  # held while a renewal is in flight
        self.running: tuple | None = None  # (job, execution, the moment it overruns or None) of the running job
        self.stopped = threading.Event()

    def watch(self, job, execution) -> None:
        timeout = job.timeout or self.worker.queue_class.DEFAULT_TIMEOUT  # as RQ's perform_job() reads it
        overrun = time.monotonic() + timeout + OVERRUN_GRACE if timeout > 0 else None
        with self.lock:
            self.running = (job, execution, overrun)

    def release(self) -> None:
        with self.lock:
            self.running = None

    def stop(self) -> None:
        self.stopped.set()
        self.release()

    def run(self) -> None:
        while not self.stopped.wait(self.worker.job_monitoring_interval):
            with self.lock:
                if self.running is None:
                    continue
                job, execution, overrun = self.running
                if overrun is not None and time.monotonic() > overrun:
                    self.worker.log.error(
                        "Worker %s: job %s still runs %d s past its timeout; ending the process (its claim lapses "
                        "and it is retried or failed, as when a work-horse is killed)",
                        self.worker.name,
                        job.id,
                        OVERRUN_GRACE,
                    )
                    logging.shutdown()
                    os._exit(OVERRUN_EXIT)
                try:
                    self.worker.maintain_heartbeats(job, execution)
                except Exception:  # noqa: BLE001 - a renewal that failed is tried again at the next turn
                    self.worker.log.exception("Worker %s: renewing job %s's heartbeat failed", self.worker.name, job.id)


class ShopSimpleWorker(_ShopWorkerMixin, SimpleWorker):
    """RQ's non-forking worker (the default): each job runs in this process, in an app context of its own, under
    its timeout (SIGALRM), its heartbeat renewed by a thread (_JobHeartbeat): no fork per job."""

    def __init__(self, queues, app: Flask | None = None, **kwargs):
        super().__init__(queues, **kwargs)
        self.app = app if app is not None else current_app._get_current_object()
        self._job_heartbeat: _JobHeartbeat | None = None

    def execute_job(self, job, queue):
        if self._job_heartbeat is None:
            self._job_heartbeat = _JobHeartbeat(self)
            self._job_heartbeat.start()
        execution = self.prepare_execution(job)
        self._job_heartbeat.watch(job, execution)
        try:
            # A fresh app context per job: its own database session and `g`, removed at its end (the app's
            # teardown rolls back and drops whatever the job left open, a dead connection included).
            with self.app.app_context():
                self.perform_job(job, queue, execution)
        finally:
            self._job_heartbeat.release()
        # No set_state(IDLE) here, unlike RQ's SimpleWorker: cleanup_execution() wrote it with the job's end, and the
        # next dequeue writes it again; a round trip per job saved.

    def handle_execution_ended(self, job, queue, heartbeat_ttl):
        """The job returned or raised: its heartbeat is no longer renewed from here on, before RQ records its end
        (a renewal racing the clean-up would leave keys behind)."""
        if self._job_heartbeat is not None:
            self._job_heartbeat.release()
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def cleanup_execution(self, job, pipeline, execution=None):
        """RQ's, and the worker back to IDLE in the same transaction that records the job's end (RQ writes that in
        a round trip of its own after it)."""
        super().cleanup_execution(job, pipeline, execution)
        self.set_state(WorkerStatus.IDLE, pipeline=pipeline)

    def teardown(self):
        if self._job_heartbeat is not None:
            self._job_heartbeat.stop()
        super().teardown()


class _NoTracebackForOutages(logging.Filter):
    """RQ logs a Redis outage with a full traceback, from each process; the message says enough."""

    def filter(self, record):
        if record.exc_info and isinstance(record.exc_info[1], heartbeat.REDIS_DOWN):
            record.msg, record.args = f"{record.getMessage()} ({record.exc_info[1]})", ()
            record.exc_info = record.exc_text = None
        return True


def run(queue_names, burst: bool = False, fork: bool = False) -> None:
    """Work on the queues until stopped (SIGTERM/SIGINT) or, with `burst`, until they are empty; each job in this
    process (ShopSimpleWorker), or with `fork` in a work-horse of its own (ShopWorker). In the app's context."""
    connection = redis_ext.client
    app = current_app._get_current_object()

    def stop(signum, frame):
        raise SystemExit(0)

    while True:
        worker = None
        try:
            heartbeat.wait_for_redis(connection, log)
            queues = [redis_ext.queue(name) for name in queue_names]
            if fork:
                worker = ShopWorker(queues, connection=connection)
            else:
                worker = ShopSimpleWorker(queues, connection=connection, app=app)
            worker.work(with_scheduler=True, burst=burst)
        except heartbeat.REDIS_DOWN as exc:
            log.warning("Worker lost Redis (%s)", exc)
        if burst or (worker is not None and worker.stopping):
            return
        # RQ's loop ended without a stop request: it met an error (logged above by RQ). Start over,
        # with our own signal handlers in between (RQ's belong to the worker that just ended).
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        time.sleep(1)


def run_events(groups: list[str], burst: bool = False) -> None:
    """Consume the event stream for `groups` (all when empty) until SIGTERM/SIGINT, then leave cleanly (a Kafka
    consumer that leaves its group hands its partitions over at once instead of after its session timeout).
    `burst`: relay the outbox's events, apply everything the stream holds for the groups, then exit."""
    import threading

    from shop import consumers

    if burst:
        with create_app(service="shop-events").app_context():
            applied = consumers.drain(groups or None, timeout=600)
        logging.getLogger("worker").info("applied %d event(s); nothing is left", applied)
        return

    stopping = threading.Event()

    def stop(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with create_app(service="shop-events").app_context():
        consumers.run(groups or None, stop_event=stopping)  # rides out stream and database outages itself


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python worker.py")
    parser.add_argument(
        "queues",
        nargs="*",
        metavar="queue",
        help=f"any of {', '.join(QUEUE_NAMES)} (default: all), `relay` for the outbox relay, or "
        "`events [group ...]` for the event consumers",
    )
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument(
        "--fork",
        action="store_true",
        help="fork a work-horse process per job (RQ's forking worker) instead of running each job in this process",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in ("rq.worker", "rq.scheduler"):
        logging.getLogger(name).addFilter(_NoTracebackForOutages())
    if args.fork and args.queues[:1] in (["relay"], ["events"]):
        parser.error(f"--fork is for the RQ worker, not `{args.queues[0]}`")
    if args.queues == ["relay"]:
        from shop.outbox import run_relay

        with create_app(service="shop-relay").app_context():
            run_relay()  # loops forever, riding out outages itself
        return
    if args.queues[:1] == ["events"]:
        from shop import consumers

        if unknown := set(args.queues[1:]) - set(consumers.load_groups()):
            parser.error(
                f"unknown consumer group(s): {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(consumers.GROUPS))})"
            )
        run_events(args.queues[1:], burst=args.burst)
        return
    if unknown := set(args.queues) - set(QUEUE_NAMES):
        parser.error(f"unknown queue(s): {', '.join(sorted(unknown))}")
    app = create_app(service="shop-worker")
    if app.config["WORKER_METRICS_PORT"]:
        # A worker on a host of its own: its figures on a port of its own (with PROMETHEUS_MULTIPROC_DIR shared,
        # the web's /metrics has them already).
        from prometheus_client import start_http_server

        start_http_server(app.config["WORKER_METRICS_PORT"])
    with app.app_context():
        run(args.queues or list(QUEUE_NAMES), burst=args.burst, fork=args.fork)


if __name__ == "__main__":
    main()
