"""A worker killed (SIGKILL) in the middle of sending a mail: the job runs again and exactly one mail
arrives, with the default worker (the job in its process) and with `--fork` (in a work-horse). The clock is moved
(RQ's abandoned-job cut-off, the age of the dead worker's claim), never slept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import select, text

from shop.devstack import ROOT
from tests.conftest import config_for
from tests.fakes.sendgrid import FakeSendGrid

PAYLOAD = {"number": "K1", "lines": [], "link": "https://shop.example/orders/1", "total": "$10.00"}


def _worker(env, *args):
    return subprocess.Popen(
        [sys.executable, "worker.py", *args, "mail"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait(predicate, seconds=30, what="condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("fork", [[], ["--fork"]], ids=["non-forking", "forking"])
def test_a_worker_killed_mid_send_sends_the_mail_exactly_once(committed_db, fork):
    from shop import create_app
    from shop.extensions import db
    from shop.notifications import notify
    from shop.notifications.models import SentNotification

    redis = Redis.from_url(os.environ["REDIS_URL"])
    redis.flushdb()
    mail = Queue("mail", connection=redis)
    with FakeSendGrid() as fake:
        fake.stall_next = 1
        env = {
            **os.environ,
            "DATABASE_URL": committed_db,
            "MAIL_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": fake.api_key,
            "SENDGRID_API_HOST": fake.url,
        }
        app = create_app(
            config_for(committed_db, MAIL_BACKEND="sendgrid", SENDGRID_API_KEY=fake.api_key, SENDGRID_API_HOST=fake.url)
        )
        with app.app_context():
            notify("order.confirmed", "kill@example.com", PAYLOAD)
            db.session.commit()
        [job_id] = mail.job_ids

        first = _worker(env, *fork)
        try:
            _wait(fake.stalled.is_set, what="the worker to start sending")
            with app.app_context():
                assert db.session.scalar(select(SentNotification.status)) == "sending"
                db.session.commit()
            os.killpg(first.pid, signal.SIGKILL)  # the worker (and its work-horse, when it forks), mid-send
            first.wait(10)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait(10)
        fake.release.set()  # the half-sent request is dropped: SendGrid never accepted it
        assert fake.messages == []

        # Time passes: RQ's cut-off for the abandoned job (its timeout) is behind us. The clean-up
        # retries it (it has retries left); its backoff has passed too, so it is queued again.
        later = time.time() + 3600
        mail.started_job_registry.cleanup(timestamp=later)
        due = mail.scheduled_job_registry.get_jobs_to_schedule(int(later))
        assert due == [job_id]
        job = Job.fetch(job_id, connection=redis)
        mail.scheduled_job_registry.remove(job)
        mail.enqueue_job(job)
        # ...and the dead worker's claim on the mail is older than any live send could be.
        with app.app_context():
            db.session.execute(text("UPDATE sent_notification SET claimed_at = claimed_at - interval '10 minutes'"))
            db.session.commit()
            # a duplicate job, queued behind the retried one, must not send a second mail
            notify("order.confirmed", "kill@example.com", PAYLOAD)
            db.session.commit()

        second = _worker(env, *fork, "--burst")
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 0, out.decode()[-3000:]
        assert len(fake.messages) == 1, out.decode()[-3000:]
        [sent] = fake.messages
        assert sent["personalizations"][0]["to"] == [{"email": "kill@example.com"}]
        assert mail.failed_job_registry.count == 0 and mail.count == 0
        with app.app_context():
            row = db.session.scalar(select(SentNotification))
            assert (row.status, row.object_key) == ("sent", "order:K1")
            db.session.commit()
            db.engine.dispose()
    redis.flushdb()
