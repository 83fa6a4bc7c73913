"""Search syncs are coalesced: the events of many catalogue commits while a sync job waits become that one job, which
indexes every product they changed and marks their outbox rows done; a sync whose job was lost is
taken over by the next commit. Real PostgreSQL, Redis, Typesense and an RQ worker."""

from __future__ import annotations

from sqlalchemy import func, select, update

from tests.integration.test_jobs import work
from tests.integration.test_search import catalogue, names, search_alias  # noqa: F401 - fixtures


def sync_rows(db_session):
    from shop.outbox import OutboxJob
    from shop.search.hooks import SYNC_KIND

    return list(
        db_session.scalars(
            select(OutboxJob)
            .where(OutboxJob.kind == SYNC_KIND)
            .order_by(OutboxJob.id)
            .execution_options(populate_existing=True)
        )
    )


def rename(db_session, product, name):
    """Rename and commit; the "search" group applies the product.updated event (one sync row per transaction)."""
    from shop import consumers

    product.name = name
    db_session.commit()
    consumers.drain(["search"])


def test_a_burst_of_catalogue_commits_is_one_sync_job_that_indexes_them_all(
    client, db_session, redis_client, catalogue
):  # noqa: F811
    from shop.extensions import redis_ext

    queue = redis_ext.queue("search")
    queue.empty()
    rename(db_session, catalogue["pocket"], "Pocket Henley")
    rename(db_session, catalogue["boot"], "Leather Jodhpur Boot")
    rename(db_session, catalogue["sneaker"], "Canvas Plimsoll")
    assert len(queue.get_jobs()) == 1  # not one forked job per commit
    assert len(sync_rows(db_session)) == 3  # each change is recorded with its commit all the same

    work(redis_client, "search")
    assert names(client.get("/api/v1/search?q=henley")) == {"Pocket Henley"}
    assert names(client.get("/api/v1/search?q=jodhpur")) == {"Leather Jodhpur Boot"}
    assert names(client.get("/api/v1/search?q=plimsoll")) == {"Canvas Plimsoll"}
    assert all(row.done_at is not None for row in sync_rows(db_session))

    rename(db_session, catalogue["organic"], "Organic Raglan")  # the job is done: the next commit queues one
    assert len(queue.get_jobs()) == 1
    work(redis_client, "search")
    assert names(client.get("/api/v1/search?q=raglan")) == {"Organic Raglan"}


def test_syncs_waiting_for_the_one_job_are_not_taken_for_lost(client, db_session, redis_client, catalogue):  # noqa: F811
    """The relay's lost-job check: rows with no RQ job of their own, waiting for the job on its way, stay put
    (one job for the burst, not one per row again); once that job is gone, they are dispatched again."""
    from datetime import timedelta

    from shop import outbox
    from shop.extensions import redis_ext

    queue = redis_ext.queue("search")
    queue.empty()
    db_session.execute(update(outbox.OutboxJob).values(done_at=func.now()))  # the fixture's own jobs: not ours
    db_session.commit()
    for product, name in (
        ("pocket", "Pocket Henley"),
        ("boot", "Leather Jodhpur Boot"),
        ("sneaker", "Canvas Plimsoll"),
    ):
        rename(db_session, catalogue[product], name)
    assert len(queue.get_jobs()) == 1
    assert outbox.recover_lost(older_than=timedelta(0)) == 0
    assert len(queue.get_jobs()) == 1 and all(r.dispatched_at is not None for r in sync_rows(db_session))

    queue.empty()  # the job is lost after all (Redis lost it): every row it stood for goes back to the relay
    assert outbox.recover_lost(older_than=timedelta(0)) == 3
    assert outbox.relay_once() == 3
    assert len(queue.get_jobs()) == 1  # handed over again as one job
    work(redis_client, "search")
    assert names(client.get("/api/v1/search?q=plimsoll")) == {"Canvas Plimsoll"}
    assert all(row.done_at is not None for row in sync_rows(db_session))


def test_a_sync_whose_job_was_lost_is_taken_over_by_the_next_commit(client, db_session, redis_client, catalogue):  # noqa: F811
    from shop.extensions import redis_ext

    queue = redis_ext.queue("search")
    queue.empty()
    rename(db_session, catalogue["pocket"], "Pocket Henley")
    queue.empty()  # its job is gone (Redis lost it, or it failed for good)
    rename(db_session, catalogue["boot"], "Leather Jodhpur Boot")
    assert len(queue.get_jobs()) == 1

    work(redis_client, "search")
    assert names(client.get("/api/v1/search?q=henley")) == {"Pocket Henley"}
    assert names(client.get("/api/v1/search?q=jodhpur")) == {"Leather Jodhpur Boot"}
    assert all(row.done_at is not None for row in sync_rows(db_session))


def test_a_sync_that_failed_while_typesense_was_away_is_done_by_the_next_job_and_its_retry_dropped(
    app, client, db_session, redis_client, catalogue
):  # noqa: F811
    from rq.registry import ScheduledJobRegistry

    from shop.extensions import redis_ext
    from shop.search import services
    from tests.integration.test_search import _closed_port

    queue = redis_ext.queue("search")
    queue.empty()
    saved = app.config["TYPESENSE_URL"]
    app.config["TYPESENSE_URL"] = f"http://127.0.0.1:{_closed_port()}"  # Typesense is away
    try:
        rename(db_session, catalogue["pocket"], "Pocket Henley")
        work(redis_client, "search")
    finally:
        app.config["TYPESENSE_URL"] = saved
        services.reset_breaker()
    retries = ScheduledJobRegistry(queue=queue)
    assert retries.count == 1  # the failed job waits for its retry

    rename(db_session, catalogue["boot"], "Leather Jodhpur Boot")  # Typesense is back: a job now, no waiting
    assert len(queue.get_jobs()) == 1
    work(redis_client, "search")
    assert names(client.get("/api/v1/search?q=henley")) == {"Pocket Henley"}
    assert names(client.get("/api/v1/search?q=jodhpur")) == {"Leather Jodhpur Boot"}
    assert all(row.done_at is not None for row in sync_rows(db_session))
    assert retries.count == 0  # nothing left for that retry to do: dropped


def test_a_sell_out_and_a_deletion_reach_the_index_through_their_events(client, db_session, redis_client, catalogue):  # noqa: F811
    from shop import consumers
    from shop.inventory.services import set_on_hand

    assert names(client.get("/api/v1/search?q=pocket&in_stock=1")) == {"Pocket T-Shirt"}
    for variant in catalogue["pocket"].variants:
        set_on_hand(variant.id, 0)  # stock.changed, not a product edit
    assert consumers.drain(["search"]) >= len(catalogue["pocket"].variants)
    work(redis_client, "search")
    assert names(client.get("/api/v1/search?q=pocket&in_stock=1")) == set()
    assert names(client.get("/api/v1/search?q=pocket")) == {"Pocket T-Shirt"}  # still found, shown sold out

    assert names(client.get("/api/v1/search?q=sneaker")) == {"Canvas Sneaker"}
    db_session.delete(catalogue["sneaker"])
    db_session.commit()  # product.deleted
    consumers.drain(["search"])
    work(redis_client, "search")
    assert names(client.get("/api/v1/search?q=sneaker")) == set()
