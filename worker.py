"""The RQ worker: `python worker.py [--burst] [queue ...]`, the outbox relay: `python worker.py relay`, and the
event consumers: `python worker.py events [--burst] [group ...]` (every consumer group by default;
shop.consumers.run; with --burst: relay the outbox's events, apply what the stream holds, exit).

Listens on default, mail and search (or the queues named, served in the order given) with RQ's
scheduler, inside the app's context so jobs can use the database. `--burst` works until the queues are
empty, then exits. `make run` starts one worker per queue, so a backlog on one never delays another.

Without --burst it never exits on a Redis outage: RQ's own loop gives up on some connection errors
(a Redis restart while a job runs, a timeout), so `run()` starts a fresh worker once Redis answers again,
logging one line per outage. PostgreSQL errors only fail the job that met them (and its retries run
later): the worker process itself never talks to PostgreSQL.

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
import time

from rq import Worker
from rq.scheduler import RQScheduler

from shop import create_app, heartbeat
from shop.extensions import QUEUE_NAMES, redis_ext

log = logging.getLogger("shop.worker")

WORKER_TTL = 25  # RQ blocks WORKER_TTL - 15 s per dequeue, then heartbeats and runs maintenance if due
JOB_MONITORING_INTERVAL = 5  # how often a running job's heartbeat is renewed
HEARTBEAT_GRACE = 15  # a running job's claim outlives its last heartbeat by this much (RQ: 60)
MAINTENANCE_INTERVAL = 10  # requeue abandoned jobs, restart the scheduler process (RQ: 600)
SCHEDULER_LOCK_TTL = 15  # a dead worker's scheduler lock lapses after this (RQ: 61)


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


class ShopWorker(Worker):
    """RQ's worker with short heartbeats, a shop heartbeat per queue, and a job kept through a Redis blip."""

    def __init__(self, queues, **kwargs):
        kwargs = {
            "worker_ttl": WORKER_TTL,
            "job_monitoring_interval": JOB_MONITORING_INTERVAL,
            "maintenance_interval": MAINTENANCE_INTERVAL,
            **kwargs,
        }
        super().__init__(queues, **kwargs)
        self.stopping = False  # a SIGTERM/SIGINT asked it to stop (RQ's own flag misses an idle stop)

    def request_stop(self, signum, frame):
        self.stopping = True
        super().request_stop(signum, frame)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        """RQ's TTL with HEARTBEAT_GRACE instead of its fixed 60 s, so an abandoned job is seen sooner."""
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(interval) + HEARTBEAT_GRACE

    def heartbeat(self, timeout=None, pipeline=None):
        super().heartbeat(timeout, pipeline)
        for name in self.queue_names():
            heartbeat.beat(pipeline if pipeline is not None else self.connection, f"worker:{name}", instance=self.name)

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


class _NoTracebackForOutages(logging.Filter):
    """RQ logs a Redis outage with a full traceback, from each process; the message says enough."""

    def filter(self, record):
        if record.exc_info and isinstance(record.exc_info[1], heartbeat.REDIS_DOWN):
            record.msg, record.args = f"{record.getMessage()} ({record.exc_info[1]})", ()
            record.exc_info = record.exc_text = None
        return True


def run(queue_names, burst: bool = False) -> None:
    """Work on the queues until stopped (SIGTERM/SIGINT) or, with `burst`, until they are empty."""
    connection = redis_ext.client

    def stop(signum, frame):
        raise SystemExit(0)

    while True:
        worker = None
        try:
            heartbeat.wait_for_redis(connection, log)
            worker = ShopWorker([redis_ext.queue(name) for name in queue_names], connection=connection)
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
        with create_app().app_context():
            applied = consumers.drain(groups or None, timeout=600)
        logging.getLogger("worker").info("applied %d event(s); nothing is left", applied)
        return

    stopping = threading.Event()

    def stop(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with create_app().app_context():
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in ("rq.worker", "rq.scheduler"):
        logging.getLogger(name).addFilter(_NoTracebackForOutages())
    if args.queues == ["relay"]:
        from shop.outbox import run_relay

        with create_app().app_context():
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
    app = create_app()
    with app.app_context():
        run(args.queues or list(QUEUE_NAMES), burst=args.burst)


if __name__ == "__main__":
    main()
