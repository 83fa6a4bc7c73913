"""worker.py is a real RQ worker on the shop's queues."""

import os
import subprocess
import sys
import time

from redis import Redis
from rq import Worker

from shop.devstack import ROOT


def test_worker_listens_on_default_mail_and_search():
    redis = Redis.from_url(os.environ["REDIS_URL"])
    proc = subprocess.Popen(
        [sys.executable, "worker.py"], cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        workers = []
        while time.monotonic() < deadline and not workers:
            workers = [w for w in Worker.all(connection=redis) if w.pid == proc.pid]
            time.sleep(0.2)
        assert workers, proc.stdout.read1().decode() if proc.poll() is not None else "worker never registered"
        assert set(workers[0].queue_names()) == {"default", "mail", "search"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not [w for w in Worker.all(connection=redis) if w.pid == proc.pid]  # it deregisters on SIGTERM
