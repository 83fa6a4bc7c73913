"""Processes that survive (issue 10): the embedded Redis keeps its data through a SIGKILL, workers and the
cron scheduler ride out a Redis restart, a killed worker's job runs again within a minute, /readyz?deep=1
says which processes are missing, and `make run`'s supervisor starts a dead child again.

Each test talks to a Redis of its own (a private redis-server under tmp_path, killed and restarted
there), and runs `worker.py` and `python -m shop.schedule` as the real processes they are in production.
The slow ones (tens of seconds: they wait out real outages and RQ's timers) are marked `slow`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from redis import Redis
from rq import Queue, Retry, Worker
from rq.job import Job

from shop.devstack import ROOT, Stack


def _wait(predicate, seconds: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except Exception:  # noqa: BLE001 - Redis restarting, a process not up yet: try again
            pass
        time.sleep(step)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


class PrivateRedis:
    """A redis-server of the test's own, started as the durable `make run` stack starts it, that can be
    SIGKILLed and started again on the same port and data directory."""

    def __init__(self, var, durable=True):
        var.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(var, ports={"redis": 0}, quiet=True, durable=durable)
        self.url = self.stack._start_redis()
        self.stack.ports["redis"] = int(self.url.rsplit(":", 1)[1].split("/")[0])  # come back on this port

    def client(self) -> Redis:
        return Redis.from_url(self.url, socket_timeout=5)

    def kill(self):
        [proc] = [p for name, p in self.stack.procs if name == "redis" and p.poll() is None]
        proc.kill()
        proc.wait(10)

    def restart(self):
        assert self.stack._start_redis() == self.url

    def stop(self):
        self.stack.stop()


@pytest.fixture
def private_redis(tmp_path):
    redis = PrivateRedis(tmp_path / "var")
    yield redis
    redis.stop()


def _start(argv, redis_url, log):
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _end(proc):
    """SIGKILL the process and every process it started (an RQ worker's work-horse, in a process group of
    its own, and its scheduler process)."""
    try:
        family = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(10)


def _worker_of(redis: Redis, proc) -> Worker:
    return _wait(
        lambda: next((w for w in Worker.all(connection=redis) if w.pid == proc.pid), None),
        30,
        f"worker {proc.pid} to register",
    )


def test_the_durable_redis_appends_every_write_and_keeps_it_through_a_sigkill(private_redis):
    redis = private_redis.client()
    config = redis.config_get("appendonly") | redis.config_get("appendfsync") | redis.config_get("save")
    assert config == {"appendonly": "yes", "appendfsync": "everysec", "save": "3600 1 300 100"}
    redis.set("queued-job", "must survive")
    time.sleep(1.5)  # everysec: the append log reaches the disk within a second
    private_redis.kill()
    private_redis.restart()
    assert private_redis.client().get("queued-job") == b"must survive"


# Each worker drill runs the default worker (each job in the worker's process) and the forking one (`--fork`).
MODES = pytest.mark.parametrize("fork", [[], ["--fork"]], ids=["non-forking", "forking"])


@pytest.mark.slow
@MODES
def test_a_worker_rides_out_redis_dying_mid_job_and_then_works_again(private_redis, tmp_path, fork):
    redis = private_redis.client()
    queue = Queue("default", connection=redis)
    worker = _start(["worker.py", *fork, "default"], private_redis.url, tmp_path / "worker.log")
    try:
        _worker_of(redis, worker)
        running = queue.enqueue("time.sleep", 4)
        _wait(lambda: running.get_status(refresh=True) == "started", 30, "the job to start")
        private_redis.kill()  # mid-job: RQ's loop gives up when it cannot report the job's end
        time.sleep(6)  # the job ends while Redis is away
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        private_redis.restart()

        after = Queue("default", connection=private_redis.client()).enqueue("os.getpid")
        pid = _wait(
            lambda: after.get_status(refresh=True) == "finished" and after.return_value(),
            90,
            "a job enqueued after the outage to be done",
        )
        # run by the same, still running, worker process (or a work-horse of it)
        assert (pid == worker.pid) is not fork
        assert worker.poll() is None
        log = (tmp_path / "worker.log").read_text()
        assert "Connection refused" in log and "Traceback" not in log, log  # the outage in lines, not tracebacks
    finally:
        _end(worker)


@pytest.mark.slow
def test_the_cron_scheduler_rides_out_a_redis_restart(private_redis, tmp_path):
    scheduler = _start(["-m", "shop.schedule"], private_redis.url, tmp_path / "scheduler.log")
    try:
        _wait(lambda: private_redis.client().exists("shop:heartbeat:scheduler"), 30, "the scheduler's heartbeat")
        private_redis.kill()
        time.sleep(12)  # past its next heartbeat (every 10 s at most): it has met the outage
        assert scheduler.poll() is None, (tmp_path / "scheduler.log").read_text()
        private_redis.restart()  # this one starts empty-handed but for what the append log kept
        private_redis.client().delete("shop:heartbeat:scheduler")
        _wait(
            lambda: private_redis.client().exists("shop:heartbeat:scheduler"),
            45,
            "the scheduler to beat again after the restart",
        )
        assert scheduler.poll() is None
        assert "scheduler lost Redis" in (tmp_path / "scheduler.log").read_text()
    finally:
        _end(scheduler)


@pytest.mark.slow
@MODES
def test_a_job_whose_worker_was_killed_runs_again_within_a_minute(private_redis, tmp_path, fork):
    redis = private_redis.client()
    queue = Queue("default", connection=redis)
    first = _start(["worker.py", *fork, "default"], private_redis.url, tmp_path / "first.log")
    second = None
    try:
        _worker_of(redis, first)
        job = queue.enqueue("time.sleep", 20, retry=Retry(max=2, interval=[10, 30]))  # as the shop's jobs retry
        _wait(lambda: job.get_status(refresh=True) == "started", 30, "the job to start")
        _end(first)  # the worker, its work-horse and its scheduler process, mid-job
        killed_at = time.monotonic()

        second = _start(["worker.py", *fork, "default"], private_redis.url, tmp_path / "second.log")
        name = _worker_of(redis, second).name
        _wait(
            lambda: Job.fetch(job.id, connection=redis).worker_name == name,
            60,
            "the second worker to take the abandoned job",
        )
        assert time.monotonic() - killed_at < 60
        assert Job.fetch(job.id, connection=redis).retries_left == 1
    finally:
        _end(first)
        if second is not None:
            _end(second)


@MODES
def test_a_killed_workers_scheduler_process_does_not_outlive_it(private_redis, tmp_path, fork):
    worker = _start(["worker.py", *fork, "default"], private_redis.url, tmp_path / "worker.log")
    try:
        _worker_of(private_redis.client(), worker)
        [scheduler] = _wait(lambda: psutil.Process(worker.pid).children(), 30, "RQ's scheduler process")
        worker.kill()  # the worker alone, as the OOM killer or `kill -9 <pid>` would
        worker.wait(10)
        scheduler.wait(timeout=15)  # psutil.TimeoutExpired if it lingers on (holding locks and pipes)
    finally:
        _end(worker)


def test_deep_readiness_reports_the_scheduler_missing_then_present(client, redis_client, tmp_path):
    from shop import heartbeat

    shallow = client.get("/readyz")
    deep = client.get("/readyz?deep=1")
    assert shallow.status_code == 200  # load balancers keep sending traffic: pages do not need workers
    assert deep.status_code == 503 and deep.json["status"] == "unavailable"
    assert deep.json["checks"]["scheduler"] == {"ok": False, "alive": 0, "last_seen_s": None}
    assert deep.json["checks"]["workers"]["ok"] is False

    scheduler = _start(["-m", "shop.schedule"], os.environ["REDIS_URL"], tmp_path / "scheduler.log")
    try:
        seen = _wait(
            lambda: (
                client.get("/readyz?deep=1").json["checks"]["scheduler"]["ok"]
                and client.get("/readyz?deep=1").json["checks"]["scheduler"]
            ),
            30,
            "the scheduler's heartbeat",
        )
        assert seen["alive"] == 1 and 0 <= seen["last_seen_s"] < heartbeat.TTL
        for role in ("worker:default", "worker:mail", "worker:search", "relay", "events"):  # the rest, as they beat
            heartbeat.beat(redis_client, role, instance="test:1")
        deep = client.get("/readyz?deep=1")
        assert deep.status_code == 200, deep.json
        assert deep.json["checks"]["workers"]["queues"]["mail"]["alive"] == 1
    finally:
        _end(scheduler)


def test_the_supervisor_restarts_a_child_that_dies_and_stops_for_a_dead_server(tmp_path, capsys):
    stack = Stack(tmp_path, quiet=False)
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    try:
        worker = stack.spawn("worker", sleep, restart=True)
        server = stack.spawn("redis", sleep)
        assert stack.supervise()
        worker.kill()
        worker.wait(5)
        restarted = _wait(
            lambda: stack.supervise() and [p for n, p in stack.procs if n == "worker" and p.poll() is None],
            10,
            "the worker to be started again",
            step=0.1,
        )
        assert restarted[0].pid != worker.pid
        out = capsys.readouterr().out
        assert "worker exited with -9; restarting it in 1s" in out and "restarted worker" in out

        server.kill()
        server.wait(5)
        assert stack.supervise() is False  # a server is not restarted: the shop stops, saying why
        assert "redis exited with -9; stopping" in capsys.readouterr().out
    finally:
        stack.stop()
    assert all(p.poll() is not None for p in [worker, server, *restarted])


def test_the_supervisor_backs_off_a_child_that_keeps_dying(tmp_path, capsys):
    stack = Stack(tmp_path, quiet=False)
    try:
        stack.spawn("relay", [sys.executable, "-c", "raise SystemExit(3)"], restart=True)
        deadline = time.monotonic() + 6.5
        while time.monotonic() < deadline:
            assert stack.supervise()
            time.sleep(0.05)
    finally:
        stack.stop()
    out = capsys.readouterr().out
    # 1 s, then 2 s, then 4 s between attempts: two restarts in 6.5 s, not a hundred
    assert out.count("restarted relay") == 2, out
    assert "relay exited with 3; restarting it in 4s" in out, out
