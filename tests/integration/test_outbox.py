"""The job outbox: what must happen after a commit is recorded in PostgreSQL with the commit, so Redis
being away at that moment loses nothing (issue 10). Real PostgreSQL, Redis and RQ workers; Redis
"away" is a port nothing listens on, and "back" is a redis-server started on that port."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import select, update

from shop import create_app
from shop.afterwards import after_commit
from shop.extensions import db
from shop.outbox import OutboxJob, record, recover_lost, relay_once, run_relay
from tests.conftest import config_for, local_path
from tests.integration.test_buying_api import checkout, guest_cart, shelf  # noqa: F401 - a fixture
from tests.integration.test_jobs import work
from tests.integration.test_storefront_accounts import token_of


def echo(value):
    """A job for these tests: RQ imports it by its path, as it imports the shop's jobs."""
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_later(tmp_path):
    """A Redis URL on a free port where nothing listens yet (Redis is away); start() brings a real
    redis-server up on it (Redis is back)."""
    from shop.devstack import Stack

    port = free_port()
    stack = Stack(tmp_path / "redis", ports={"redis": port}, quiet=True, durable=False)

    class Later:
        url = f"redis://127.0.0.1:{port}/0"

        def start(self):
            stack.var.mkdir(parents=True, exist_ok=True)
            assert stack._start_redis() == self.url

        def client(self):
            return Redis.from_url(self.url)

    yield Later()
    stack.stop()


def rows(**where) -> list[OutboxJob]:
    query = select(OutboxJob).order_by(OutboxJob.id).execution_options(populate_existing=True)
    for name, value in where.items():
        query = query.where(getattr(OutboxJob, name) == value)
    return list(db.session.scalars(query))


def wait_until(check, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


# -- the case: a refund is not lost ------------------------------------------------------
def test_a_paid_order_cancelled_while_redis_is_away_is_refunded_once_it_is_back(
    app, client, shelf, db_session, redis_later, caplog
):  # noqa: F811
    from shop.payments import services as payments
    from shop.payments.models import Payment, Refund

    placed = checkout(client, guest_cart(client, shelf["M"].sku, 1)).get_json()["order"]
    payment = db_session.scalar(select(Payment).where(Payment.order_id == placed["id"]))
    payments.on_succeeded({"id": payment.provider_id, "amount": payment.amount})
    db_session.commit()

    away = create_app(config_for(REDIS_URL=redis_later.url))
    with caplog.at_level(logging.WARNING, logger="shop.outbox"):
        resp = away.test_client().post(
            f"/api/v1/orders/{placed['id']}/cancel", headers={"X-Order-Token": placed["access_token"]}
        )
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"
    [job] = rows(function="shop.payments.services.refund_remaining_job")
    assert job.args[0] == placed["id"] and job.dispatched_at is None
    assert len([r for r in caplog.records if "Redis is unreachable" in r.getMessage()]) == 1
    assert db_session.scalars(select(Refund)).all() == []

    redis_later.start()
    with away.app_context():
        assert relay_once() >= 1
        work(redis_later.client(), "default")
        work(redis_later.client(), "default")  # nothing left: the job ran once
    assert rows(id=job.id)[0].dispatched_at is not None
    [refund] = db_session.scalars(select(Refund).where(Refund.payment_id == payment.id)).all()
    db_session.refresh(payment)
    assert refund.status == "succeeded" and refund.amount == payment.amount == payment.refunded_amount


def test_a_test_gateway_decision_made_while_redis_is_away_reaches_the_queue_once_it_is_back(
    app, client, shelf, db_session, redis_later
):  # noqa: F811
    placed = checkout(client, guest_cart(client, shelf["M"].sku, 1)).get_json()
    pay_url = local_path(placed["payment"]["redirect_url"])
    away = create_app(config_for(REDIS_URL=redis_later.url))
    browser = away.test_client()
    page = browser.get(pay_url)
    resp = browser.post(pay_url, data={"csrf_token": token_of(page.get_data(as_text=True)), "decision": "approve"})
    assert resp.status_code in (302, 303)
    [row] = rows(function="shop.payments.routes.deliver_test_event")
    url, event = row.args  # the signing secret is not stored: the worker signs
    assert url == app.config["PUBLIC_BASE_URL"] + "/webhooks/stripe" and event["type"] == "payment_intent.succeeded"
    assert row.dispatched_at is None

    redis_later.start()
    with away.app_context():
        relay_once()
    [job] = Queue("default", connection=redis_later.client()).jobs
    assert job.id == f"outbox-{row.id}" and job.args == (url, event)


# -- the outbox's rules --------------------------------------------------------------------------
def test_a_rollback_drops_the_job_and_a_commit_keeps_and_queues_it(app, db_session, redis_client):
    after_commit("default", echo, "dropped")
    db_session.rollback()
    assert rows() == []

    after_commit("default", echo, "kept")
    db_session.commit()
    [row] = rows()
    assert (row.function, row.args, row.queue) == ("tests.integration.test_outbox.echo", ["kept"], "default")
    assert row.dispatched_at is not None  # handed to RQ right after the commit
    queue = Queue("default", connection=redis_client)
    assert queue.job_ids == [f"outbox-{row.id}"]
    with app.app_context():
        work(redis_client, "default")
    assert queue.fetch_job(f"outbox-{row.id}").return_value() == "kept"


def test_a_row_dispatched_again_does_not_queue_a_second_job(app, db_session, redis_client):
    after_commit("default", echo, "once")
    db_session.commit()
    [row] = rows()
    # The relay died between queueing the job and marking the row: the row is due again.
    db_session.execute(update(OutboxJob).where(OutboxJob.id == row.id).values(dispatched_at=None))
    db_session.commit()
    assert relay_once() == 1
    assert rows()[0].dispatched_at is not None
    assert Queue("default", connection=redis_client).job_ids == [f"outbox-{row.id}"]


def test_a_job_lost_from_redis_after_dispatch_is_dispatched_again_and_done_once(app, db_session, redis_client):
    """A worker took the job off the queue just as Redis went down (seen under the fault drills): the
    row said dispatched, nothing would ever run it. recover_lost() finds it and the relay sends it again."""
    after_commit("default", echo, "lost")
    db_session.commit()
    [row] = rows()
    queue = Queue("default", connection=redis_client)
    job_id = f"outbox-{row.id}"
    assert queue.job_ids == [job_id]
    redis_client.lrem(queue.key, 0, job_id)  # what the dying worker's dequeue left behind: no trace in Redis
    redis_client.delete(f"rq:job:{job_id}")

    assert recover_lost(older_than=timedelta(seconds=30)) == 0  # too recent to call lost
    assert recover_lost(older_than=timedelta(0)) == 1
    assert rows()[0].dispatched_at is None and "lost" in rows()[0].last_error
    assert relay_once() == 1 and queue.job_ids == [job_id]
    with app.app_context():
        work(redis_client, "default")
    assert queue.fetch_job(job_id).return_value() == "lost"
    db_session.expire_all()
    assert rows()[0].done_at is not None  # the success callback marked it
    assert recover_lost(older_than=timedelta(0)) == 0  # nothing sent a third time


def test_a_finished_job_whose_callback_was_missed_is_marked_done_not_sent_again(app, db_session, redis_client):
    after_commit("default", echo, "ran")
    db_session.commit()
    [row] = rows()
    with app.app_context():
        work(redis_client, "default")
    db_session.execute(update(OutboxJob).where(OutboxJob.id == row.id).values(done_at=None))  # callback lost
    db_session.commit()
    assert recover_lost(older_than=timedelta(0)) == 0
    db_session.expire_all()
    assert rows()[0].done_at is not None and rows()[0].dispatched_at is not None
    assert Queue("default", connection=redis_client).job_ids == []


def test_two_relays_at_once_dispatch_each_row_once(committed_db, redis_client):
    shop = create_app(config_for(committed_db))
    with shop.app_context():
        ids = [record(db.session, "default", echo, [i]) for i in range(60)]
        db.session.commit()
    start, counts = threading.Barrier(2), []

    def relay():
        with shop.app_context():
            start.wait()
            done = 0
            while n := relay_once(limit=5):
                done += n
            counts.append(done)

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(counts) == 2 and sum(counts) == 60  # a row handed over twice would count twice
    assert sorted(Queue("default", connection=redis_client).job_ids) == sorted(f"outbox-{i}" for i in ids)
    with shop.app_context():
        assert all(r.dispatched_at and r.attempts == 0 for r in rows())
        db.engine.dispose()


@contextlib.contextmanager
def relay_running(shop, **timing):
    """run_relay() in a thread of its own, in `shop`'s app context; stopped on leaving, and checked ended."""
    stop = threading.Event()

    def relay():
        with shop.app_context():
            run_relay(stop, **timing)

    thread = threading.Thread(target=relay)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def relay_log(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("outbox relay")]


def test_the_relay_rides_out_a_redis_outage_and_catches_up(committed_db, redis_later, caplog):
    shop = create_app(config_for(committed_db, REDIS_URL=redis_later.url))
    with shop.app_context():
        after_commit("default", echo, "waited")
        db.session.commit()  # Redis is away: the commit stands, the row waits
        [row] = rows()
    with (
        caplog.at_level(logging.WARNING, logger="shop.outbox"),
        relay_running(shop, interval=0.05, max_backoff=0.5) as thread,
    ):
        time.sleep(1.5)
        assert thread.is_alive()
        redis_later.start()
        redis = redis_later.client()
        wait_until(lambda: redis.exists("shop:heartbeat:relay"))
        wait_until(lambda: Queue("default", connection=redis).job_ids == [f"outbox-{row.id}"])
    lines = relay_log(caplog)
    assert len(lines) == 2 and "Redis" in lines[0] and "back" in lines[1]  # one line per outage, not per try
    with shop.app_context():
        [row] = rows()
        assert row.dispatched_at and row.attempts >= 1 and "Connection" in row.last_error
        db.engine.dispose()


def test_the_relay_keeps_running_while_postgresql_is_away(app, redis_client, caplog):
    shop = create_app(config_for(f"postgresql://shop@127.0.0.1:{free_port()}/nowhere"))
    with (
        caplog.at_level(logging.WARNING, logger="shop.outbox"),
        relay_running(shop, interval=0.05, max_backoff=0.2) as thread,
    ):
        time.sleep(1.5)
        assert thread.is_alive() and redis_client.exists("shop:heartbeat:relay")  # alive, and says so
    [line] = relay_log(caplog)
    assert "PostgreSQL" in line  # one line for the outage, not one per attempt


def test_old_dispatched_rows_are_purged_and_waiting_ones_kept(app, db_session, redis_client):
    from shop.outbox import purge_dispatched

    after_commit("default", echo, "old")
    after_commit("default", echo, "new")
    db_session.commit()
    waiting = record(db_session, "default", echo, ["waiting"])
    old, new = rows()[:2]
    db_session.execute(
        update(OutboxJob).where(OutboxJob.id == old.id).values(dispatched_at=datetime.now(UTC) - timedelta(days=8))
    )
    db_session.commit()
    assert purge_dispatched() == 1
    assert [r.id for r in rows()] == [new.id, waiting]
