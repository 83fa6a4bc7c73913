"""The event stream: where the outbox relay publishes events and consumer groups read them.

    stream = open_stream()                          # EVENT_STREAM_URL / EVENT_STREAM_TOPIC of the app
    stream.publish([(key, envelope), ...])          # blocks until stored; raises StreamUnavailable
    c = stream.consumer("sales", "host:1234")       # a member of consumer group "sales"
    messages = c.poll(100, timeout=1.0); ...; c.ack(handled); c.close()
    for envelope in stream.read_from(since): ...    # replay: every envelope stored from a time on

Two back ends behind one interface, chosen by the URL:

- `redis://host:port/db` (the default: the app's REDIS_URL): one Redis Stream per topic. XADD in pipelined batches
  with approximate MAXLEN trimming; consumer groups (created with MKSTREAM from the first entry) read with
  XREADGROUP and acknowledge with XACK; the pending entries of a consumer that died (or of a handler that failed)
  are claimed by a live member with XAUTOCLAIM once idle for EVENT_CLAIM_IDLE_MS. One stream keeps one total order.
- `kafka://host:port[,host:port][?librdkafka.option=value...]`: confluent-kafka. An idempotent producer with
  acks=all keyed by aggregate, so one aggregate's events stay in one partition and in order; the topic is created
  with EVENT_STREAM_PARTITIONS partitions when missing; consumers commit offsets by hand after handling, only up to
  the first message not yet acknowledged in each partition, and seek back to a message left unacknowledged for
  EVENT_CLAIM_IDLE_MS (what XAUTOCLAIM does on Redis).

Delivery is at least once: consumers deduplicate by event id (shop.consumers.handle).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

PUBLISH_BATCH = 500  # XADDs per pipeline round trip
BLOCK_MS_MAX = 1000  # longest XREADGROUP BLOCK: well under the client's socket timeout
KAFKA_PUBLISH_TIMEOUT = 15.0  # seconds publish() waits for the broker's acknowledgements
DEFAULTS = {"maxlen": 1_000_000, "partitions": 3, "claim_idle_ms": 30_000}


class StreamUnavailable(Exception):
    """The stream could not be reached or did not store what was published; try again later."""


@dataclass
class Message:
    """One delivered event: `envelope` for the handler; the rest is the back end's bookkeeping."""

    envelope: dict
    key: str | None = None
    ref: object = None  # Redis: the entry id; Kafka: (partition, offset)
    delivered_at: float = field(default_factory=time.monotonic)
    trace: str | None = None  # the W3C traceparent the event was published in (shop.telemetry.tracing), if any


def default_consumer_name() -> str:
    return f"{socket.gethostname()}:{threading.get_native_id()}"


def open_stream(url: str | None = None, topic: str | None = None, **options) -> Stream:
    """The stream at `url` (the app's EVENT_STREAM_URL, or its REDIS_URL when that is empty) for `topic`
    (EVENT_STREAM_TOPIC). Options: maxlen, partitions, claim_idle_ms (the app's EVENT_* settings by default)."""
    if url is None or topic is None or not options:
        from flask import current_app, has_app_context

        if has_app_context():
            cfg = current_app.config
            url = url or cfg.get("EVENT_STREAM_URL") or cfg["REDIS_URL"]
            topic = topic or cfg.get("EVENT_STREAM_TOPIC") or "shop.events"
            for name, setting in (
                ("maxlen", "EVENT_STREAM_MAXLEN"),
                ("partitions", "EVENT_STREAM_PARTITIONS"),
                ("claim_idle_ms", "EVENT_CLAIM_IDLE_MS"),
            ):
                if cfg.get(setting) is not None:
                    options.setdefault(name, cfg[setting])
    if not url:
        raise ValueError("no event stream URL (EVENT_STREAM_URL or REDIS_URL)")
    topic = topic or "shop.events"
    options = {**DEFAULTS, **options}
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisStream(url, topic, **options)
    if scheme == "kafka":
        return KafkaStream(url, topic, **options)
    raise ValueError(f"EVENT_STREAM_URL must be redis://... or kafka://..., not {url!r}")


def current() -> Stream:
    """The current app's stream, opened once per app (a Kafka producer or a Redis pool is worth keeping)."""
    from flask import current_app

    cfg = current_app.config
    wanted = (cfg.get("EVENT_STREAM_URL") or cfg["REDIS_URL"], cfg.get("EVENT_STREAM_TOPIC") or "shop.events")
    held = current_app.extensions.get("event_stream")
    if held is None or held[0] != wanted:
        held = (wanted, open_stream())
        current_app.extensions["event_stream"] = held
    return held[1]


class Stream:
    """What both back ends offer (see the module docstring)."""

    url: str
    topic: str

    def publish(self, items: list[tuple[str, dict]] | list[tuple[str, dict, str | None]]) -> None:
        """Store (key, envelope) or (key, envelope, traceparent) items, in order."""
        raise NotImplementedError

    def consumer(self, group: str, name: str | None = None) -> Consumer:
        raise NotImplementedError

    def read_from(self, since: datetime | None = None) -> Iterator[dict]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Consumer:
    group: str
    name: str

    def poll(self, max_messages: int = 100, timeout: float = 1.0) -> list[Message]:
        raise NotImplementedError

    def ack(self, messages: list[Message]) -> None:
        raise NotImplementedError

    def caught_up(self) -> bool:
        """Whether nothing is waiting for this member right now (drain stops then)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def _since_ms(since: datetime | None) -> int:
    if since is None:
        return 0
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return max(0, int(since.timestamp() * 1000))


# -- Redis Streams ---------------------------------------------------------------------------------------------
def _redis_errors():
    from redis.exceptions import ConnectionError, TimeoutError

    return ConnectionError, TimeoutError


class RedisStream(Stream):
    def __init__(self, url: str, topic: str, *, maxlen: int, claim_idle_ms: int, **_):
        from redis import Redis

        self.url, self.topic, self.maxlen, self.claim_idle_ms = url, topic, maxlen, claim_idle_ms
        # A pool of its own: XREADGROUP blocks up to BLOCK_MS_MAX, within this socket timeout.
        self.client = Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=BLOCK_MS_MAX / 1000 + 4, health_check_interval=30
        )

    def publish(self, items):
        try:
            for start in range(0, len(items), PUBLISH_BATCH):
                pipe = self.client.pipeline(transaction=False)
                for key, envelope, *trace in items[start : start + PUBLISH_BATCH]:
                    fields = {"key": key or "", "event": json.dumps(envelope, separators=(",", ":"))}
                    if trace and trace[0]:
                        fields["trace"] = trace[0]
                    pipe.xadd(
                        self.topic,
                        fields,  # type: ignore[arg-type]
                        maxlen=self.maxlen,
                        approximate=True,
                    )
                pipe.execute()
        except _redis_errors() as exc:
            raise StreamUnavailable(f"Redis stream {self.topic}: {exc}") from exc

    def consumer(self, group, name=None):
        return RedisConsumer(self, group, name or default_consumer_name())

    def read_from(self, since=None):
        start = f"{_since_ms(since)}-0"
        try:
            while True:
                entries = self.client.xrange(self.topic, min=start, max="+", count=1000)
                for _entry_id, fields in entries:
                    yield json.loads(fields[b"event"])
                if len(entries) < 1000:
                    return
                start = "(" + entries[-1][0].decode()
        except _redis_errors() as exc:
            raise StreamUnavailable(f"Redis stream {self.topic}: {exc}") from exc

    def close(self):
        self.client.close()


class RedisConsumer(Consumer):
    CLAIM_EVERY = 0.5  # of the idle time: how often pending entries of others are looked at

    def __init__(self, stream: RedisStream, group: str, name: str):
        self.stream, self.group, self.name = stream, group, name
        self.client = stream.client
        self._ready = False
        self._next_claim = 0.0
        self._reclaimed = False

    def _ensure_group(self) -> None:
        from redis.exceptions import ResponseError

        if self._ready:
            return
        try:  # from the first entry: a new group reads what the stream still holds
            self.client.xgroup_create(self.stream.topic, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready = True

    def _messages(self, entries) -> list[Message]:
        out = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed away while pending
                continue
            out.append(
                Message(
                    json.loads(fields[b"event"]),
                    fields.get(b"key", b"").decode() or None,
                    entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
                    trace=fields[b"trace"].decode() if b"trace" in fields else None,
                )
            )
        return out

    def _claim(self, count: int) -> list[Message]:
        """Entries another member (or this one, after a failed handler) left pending for the idle time."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._next_claim = now + self.stream.claim_idle_ms / 1000 * self.CLAIM_EVERY
        _cursor, entries, *deleted = self.client.xautoclaim(
            self.stream.topic, self.group, self.name, self.stream.claim_idle_ms, "0-0", count=count
        )
        if len(entries) == count:
            self._next_claim = 0.0  # more may be waiting
        return self._messages(entries)

    def poll(self, max_messages=100, timeout=1.0):
        from redis.exceptions import ResponseError

        try:
            self._ensure_group()
            claimed = self._claim(max_messages)
            if claimed:
                return claimed
            block = int(min(max(timeout, 0), BLOCK_MS_MAX / 1000) * 1000)
            answer = self.client.xreadgroup(
                self.group, self.name, {self.stream.topic: ">"}, count=max_messages, block=block or None
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted (FLUSHDB): create the group again
                self._ready = False
                return []
            raise
        except _redis_errors() as exc:
            raise StreamUnavailable(f"Redis stream {self.stream.topic}: {exc}") from exc
        return self._messages(answer[0][1]) if answer else []

    def ack(self, messages):
        if not messages:
            return
        try:
            self.client.xack(self.stream.topic, self.group, *[m.ref for m in messages])
        except _redis_errors() as exc:
            raise StreamUnavailable(f"Redis stream {self.stream.topic}: {exc}") from exc

    def caught_up(self):
        return True  # poll() answers at once with what is new; an empty answer means nothing is

    def pending(self) -> int:
        """Entries delivered to the group and not acknowledged yet (any member)."""
        try:
            return self.client.xpending(self.stream.topic, self.group)["pending"]
        except _redis_errors() as exc:
            raise StreamUnavailable(str(exc)) from exc


# -- Kafka -----------------------------------------------------------------------------------------------------
def _kafka_conf(url: str) -> dict:
    """librdkafka settings from a kafka:// URL: its hosts, and any option given in its query string."""
    parts = urlsplit(url)
    return {"bootstrap.servers": parts.netloc, "client.id": "shop", **dict(parse_qsl(parts.query))}


# librdkafka settings that matter here. Consumers: fetch.wait.max.ms bounds how long a fetch sits on the broker when
# nothing is new (Tansu holds it that long even when a message arrives meanwhile; default 500 ms); a group join
# waits on Tansu for half the session timeout (45 s by default: 23 s before the first message), so the session
# timeout is the Kafka minimum, 6 s (a URL may set ?session.timeout.ms=2000 for a broker that allows it).
PRODUCER_CONF = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 2,
    "message.timeout.ms": 10_000,
    "socket.keepalive.enable": True,
}
CONSUMER_CONF = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "enable.partition.eof": True,
    "fetch.wait.max.ms": 20,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "socket.keepalive.enable": True,
}
PRODUCER_KEYS = {
    "linger.ms",
    "acks",
    "enable.idempotence",
    "message.timeout.ms",
    "batch.size",
    "compression.type",
    "queue.buffering.max.ms",
    "batch.num.messages",
}
CONSUMER_KEYS = {
    "fetch.wait.max.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "fetch.min.bytes",
    "auto.offset.reset",
    "group.instance.id",
}


def _split(conf: dict) -> tuple[dict, dict, dict]:
    """(common, producer-only, consumer-only) options of a URL's librdkafka settings."""
    common = {k: v for k, v in conf.items() if k not in PRODUCER_KEYS | CONSUMER_KEYS}
    return (
        common,
        {k: v for k, v in conf.items() if k in PRODUCER_KEYS},
        {k: v for k, v in conf.items() if k in CONSUMER_KEYS},
    )


class KafkaStream(Stream):
    def __init__(self, url: str, topic: str, *, partitions: int, claim_idle_ms: int, **_):
        self.url, self.topic, self.partitions, self.claim_idle_ms = url, topic, partitions, claim_idle_ms
        self.common, self.producer_extra, self.consumer_extra = _split(_kafka_conf(url))
        self._producer = None
        self._topic_ready = False
        self._lock = threading.Lock()

    def ensure_topic(self) -> None:
        """Create the topic with `partitions` partitions when it does not exist."""
        if self._topic_ready:
            return
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({**self.common, "socket.timeout.ms": 5000, "logger": log})
        try:
            metadata = admin.list_topics(timeout=5)
            if self.topic not in metadata.topics or metadata.topics[self.topic].error is not None:
                # Replication as the cluster's default.replication.factor says (-1): a production cluster keeps
                # 3 copies (with min.insync.replicas 2, acks=all then means something); one broker keeps one.
                future = admin.create_topics(
                    [NewTopic(self.topic, self.partitions, replication_factor=-1)],
                    operation_timeout=10,
                    request_timeout=10,
                )[self.topic]
                try:
                    future.result(timeout=15)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        except KafkaException as exc:
            raise StreamUnavailable(f"Kafka topic {self.topic}: {exc}") from exc
        self._topic_ready = True

    def _get_producer(self):
        from confluent_kafka import Producer

        with self._lock:
            if self._producer is None:
                self._producer = Producer({**self.common, **PRODUCER_CONF, **self.producer_extra, "logger": log})
            return self._producer

    def publish(self, items):
        if not items:
            return
        self.ensure_topic()
        producer = self._get_producer()
        failures: list = []

        def delivered(err, msg):
            if err is not None:
                failures.append(err)

        try:
            for key, envelope, *trace in items:
                while True:
                    try:
                        producer.produce(
                            self.topic,
                            key=(key or "").encode(),
                            value=json.dumps(envelope, separators=(",", ":")).encode(),
                            headers=[("traceparent", trace[0].encode())] if trace and trace[0] else None,
                            on_delivery=delivered,
                        )
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        producer.poll(0.05)
            left = producer.flush(KAFKA_PUBLISH_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - KafkaException and friends: the broker did not take them
            self._after_failure(producer, [exc.args[0]] if exc.args and hasattr(exc.args[0], "fatal") else [])
            raise StreamUnavailable(f"Kafka topic {self.topic}: {exc}") from exc
        if left or failures:
            self._after_failure(producer, failures)
            raise StreamUnavailable(
                f"Kafka topic {self.topic}: {left} message(s) unsent, "
                f"{len(failures)} failed ({failures[0] if failures else 'timeout'})"
            )

    def _after_failure(self, producer, errors) -> None:
        """Check the topic again next time (a broker that comes back may have lost it), and replace a producer
        that met a fatal error (an idempotent producer whose id the broker no longer knows cannot go on)."""
        self._topic_ready = False
        if any(err.fatal() for err in errors):
            log.warning("Kafka producer met a fatal error (%s); a new one takes over", errors[0])
            with self._lock:
                if self._producer is producer:
                    self._producer = None

    def consumer(self, group, name=None):
        return KafkaConsumer(self, group, name or default_consumer_name())

    def read_from(self, since=None):
        """Every envelope stored from `since` on, partition by partition (each in its own order)."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
        from confluent_kafka import Consumer as RawConsumer

        self.ensure_topic()
        raw = RawConsumer(
            {
                **self.common,
                "group.id": f"shop-replay-{default_consumer_name()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 20,
                "logger": log,
            }
        )
        try:
            partitions = sorted(raw.list_topics(self.topic, timeout=10).topics[self.topic].partitions)
            wanted = [
                TopicPartition(self.topic, p, _since_ms(since) if since else OFFSET_BEGINNING) for p in partitions
            ]
            starts = raw.offsets_for_times(wanted, timeout=10) if since else wanted
            for tp in starts:
                if since and tp.offset < 0:  # nothing stored from then on
                    continue
                # Read to the end the fetches report (Tansu's ListOffsets answers an end that is too early).
                raw.assign([TopicPartition(self.topic, tp.partition, tp.offset)])
                at_end = False
                while not at_end:
                    for msg in raw.consume(500, 1.0):
                        if msg.error():
                            if msg.error().code() == KafkaError._PARTITION_EOF:
                                at_end = True
                            elif not msg.error().retriable():
                                raise KafkaException(msg.error())
                            continue
                        yield json.loads(msg.value())
                raw.unassign()
        except KafkaException as exc:
            raise StreamUnavailable(f"Kafka topic {self.topic}: {exc}") from exc
        finally:
            raw.close()

    def close(self):
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None


class KafkaConsumer(Consumer):
    def __init__(self, stream: KafkaStream, group: str, name: str):
        from confluent_kafka import Consumer as RawConsumer

        self.stream, self.group, self.name = stream, group, name
        stream.ensure_topic()
        self.raw = RawConsumer(
            {
                **stream.common,
                **CONSUMER_CONF,
                **stream.consumer_extra,
                "group.id": group,
                "client.id": f"shop-{name}",
                "logger": log,
            }
        )
        # partition -> {offset: [delivered_at (monotonic), acked]}, in delivery order
        self._inflight: dict[int, dict[int, list]] = {}
        self._assigned: set[int] = set()
        self._at_end: set[int] = set()  # partitions whose end the last fetch reached
        self.raw.subscribe(
            [stream.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )

    @property
    def partitions(self) -> list[int]:
        """The partitions this member holds now (as the rebalance callbacks told it, in its poll())."""
        return sorted(self._assigned)

    def _on_assign(self, consumer, partitions):
        self._assigned |= {tp.partition for tp in partitions}

    def _on_revoke(self, consumer, partitions):
        for tp in partitions:
            self._assigned.discard(tp.partition)
            self._at_end.discard(tp.partition)
            self._inflight.pop(tp.partition, None)  # its new owner starts from the last commit

    def _redeliver_stale(self) -> None:
        """Seek back to a message left unacknowledged for the idle time (its handler failed): it and the ones
        after it in its partition come again (those already applied are skipped by their event id)."""
        from confluent_kafka import TopicPartition

        deadline = time.monotonic() - self.stream.claim_idle_ms / 1000
        for partition, offsets in list(self._inflight.items()):
            stale = next((off for off, (at, acked) in offsets.items() if not acked and at < deadline), None)
            if stale is None:
                continue
            self.raw.seek(TopicPartition(self.stream.topic, partition, stale))
            self._at_end.discard(partition)
            self._inflight[partition] = {off: v for off, v in offsets.items() if off < stale}

    def poll(self, max_messages=100, timeout=1.0):
        from confluent_kafka import KafkaError, KafkaException

        try:
            self._redeliver_stale()
            # consume(n, t) waits for n messages or t seconds: take the first as soon as it comes, then what is there.
            first = self.raw.poll(max(timeout, 0))
            raw = [first, *self.raw.consume(max_messages - 1, 0)] if first is not None else []
        except KafkaException as exc:
            raise StreamUnavailable(f"Kafka group {self.group}: {exc}") from exc
        out = []
        for msg in raw:
            if err := msg.error():
                if err.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(msg.partition())
                    continue
                if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT) or err.retriable():
                    raise StreamUnavailable(f"Kafka group {self.group}: {err}")
                log.warning("Kafka group %s: %s", self.group, err)
                continue
            self._at_end.discard(msg.partition())
            self._inflight.setdefault(msg.partition(), {})[msg.offset()] = [time.monotonic(), False]
            key = msg.key()
            headers = dict(msg.headers() or ())
            trace = headers.get("traceparent")
            out.append(
                Message(
                    json.loads(msg.value()),
                    key.decode() if key else None,
                    (msg.partition(), msg.offset()),
                    trace=trace.decode() if trace else None,
                )
            )
        return out

    def ack(self, messages):
        """Commit, per partition, up to the first message not acknowledged yet (a commit covers all before it)."""
        from confluent_kafka import KafkaException, TopicPartition

        touched = set()
        for m in messages:
            partition, offset = m.ref
            if offset in self._inflight.get(partition, {}):
                self._inflight[partition][offset][1] = True
                touched.add(partition)
        commits = []
        for partition in touched:
            offsets = self._inflight[partition]
            done = None
            for offset in sorted(offsets):
                if not offsets[offset][1]:
                    break
                done = offset
            if done is not None:
                commits.append(TopicPartition(self.stream.topic, partition, done + 1))
                self._inflight[partition] = {o: v for o, v in offsets.items() if o > done}
        if not commits:
            return
        try:
            self.raw.commit(offsets=commits, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if err.retriable() or err.code() in (-195, -187):  # _TRANSPORT, _ALL_BROKERS_DOWN
                raise StreamUnavailable(f"Kafka group {self.group}: {err}") from exc
            # The partition went to another member meanwhile: it starts from the last commit (a redelivery).
            log.info("Kafka group %s: commit refused (%s); the partition's next owner delivers again", self.group, err)

    def caught_up(self):
        """Assigned, at the end of every assigned partition (as the fetches report it: Tansu's ListOffsets answers
        an end that is too early), with nothing unacknowledged."""
        if not self._assigned or not self._assigned <= self._at_end:
            return False
        return all(acked for offsets in self._inflight.values() for _, acked in offsets.values())

    def close(self):
        try:
            self.raw.close()  # leaves the group: its partitions go to the others at once
        except Exception:  # noqa: BLE001 - closing a consumer of a broker that is away
            pass
