"""The event backbone end to end: `make bench` (or `.venv/bin/python bench/events.py --help`).

What is measured, for Redis Streams and for Kafka (Tansu), each in a fresh topic:
    throughput  A backlog of N events committed to the outbox (events.publish, 500 a transaction), then the relay
                (shop.outbox.run_relay) and a consumer group (shop.consumers.run, applying handle() with a claim per
                event in consumed_event) start: events/s = N / the time from the relay's start to the last event
                applied.
    latency     A writer commits events at a fixed offered rate (default 1,000/s, 4 a transaction as a checkout
                commits an order's events together) while the relay and the consumer run; lag = the moment the handler applies an event minus its occurred_at
                (set just before its commit): outbox -> NOTIFY -> relay -> stream -> consumer. p50/p95/p99.
The relay, the consumer and the writer are separate processes, as in production (`python worker.py relay`,
`python worker.py events`). Goal on this 2-core machine: >= 5,000 events/s, p95 lag < 250 ms at 1,000/s.

How: an embedded PostgreSQL (fsync off) and Redis under var/bench/events (bench/harness.py), unless
BENCH_DATABASE_URL / BENCH_REDIS_URL point at running ones; Tansu (shop.devstack.Tansu, in-memory) for Kafka. A
table on stdout, the figures as JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402 - needs the repository root on sys.path
from bench.harness import ROOT, say  # noqa: E402
from shop.devstack import Tansu  # noqa: E402

VAR = harness.VAR / "events"
GROUP = "bench_events"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--events", type=int, default=30_000, help="backlog size of the throughput run")
    p.add_argument("--rate", type=int, default=1000, help="offered events/s of the latency run")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    p.add_argument("--writers", type=int, default=1, help="writer processes sharing the offered rate")
    p.add_argument("--per-transaction", type=int, default=4, help="events a writer commits together")
    p.add_argument("--backends", default="redis,kafka", help="which streams to measure")
    return p.parse_args(argv)


# -- the processes ------------------------------------------------------------------------------------------------
def _app():
    from shop import create_app

    return create_app()


def _register_group(results, expected: int):
    """The bench's consumer group: records each application's lag; tells the parent when all arrived."""
    from shop import consumers

    lags: list[float] = []
    state = {"first": None}

    @consumers.consumer(GROUP)
    def apply(envelope: dict) -> None:
        now = time.time()
        lags.append(now - datetime.fromisoformat(envelope["occurred_at"]).timestamp())
        if state["first"] is None:
            state["first"] = now
        if len(lags) == expected:
            results.put({"lags": lags, "first": state["first"], "last": now})

    return lags


def consumer_process(results, expected: int, stop) -> None:
    from shop import consumers

    _register_group(results, expected)
    with _app().app_context():
        consumers.run([GROUP], stop_event=stop, name=f"bench-{os.getpid()}")


def relay_process(stop, started) -> None:
    from shop.outbox import run_relay

    with _app().app_context():
        started.value = time.time()
        run_relay(stop_event=stop)


def write_backlog(count: int) -> None:
    from shop import events
    from shop.extensions import db

    with _app().app_context():
        for i in range(count):
            events.publish("stock.changed", "variant", i % 500, {"variant_id": i % 500, "seq": i})
            if (i + 1) % 500 == 0:
                db.session.commit()
        db.session.commit()


def writer_process(rate: float, seconds: float, done, offset: int = 0, per_tx: int = 1) -> None:
    """`rate` events/s, `per_tx` a transaction (as a checkout commits an order's events together), paced against
    the clock so a slow commit is caught up."""
    from shop import events
    from shop.extensions import db

    with _app().app_context():
        total = int(rate * seconds)
        start = time.monotonic()
        for i in range(total):
            due = start + i / rate
            if (pause := due - time.monotonic()) > 0:
                time.sleep(pause)
            events.publish("stock.changed", "variant", offset + i % 250, {"variant_id": offset + i % 250, "seq": i})
            if (i + 1) % per_tx == 0 or i + 1 == total:
                db.session.commit()
        with done.get_lock():
            done.value = max(done.value, time.monotonic() - start)


# -- one measurement ----------------------------------------------------------------------------------------------
def run_case(ctx, mode: str, args) -> dict:
    os.environ["EVENT_STREAM_TOPIC"] = f"bench.events.{uuid.uuid4().hex[:8]}"
    results, stop = ctx.Queue(), ctx.Event()
    started, wrote = ctx.Value("d", 0.0), ctx.Value("d", 0.0)
    expected = args.events if mode == "throughput" else args.writers * int(args.rate / args.writers * args.seconds)
    consumer = ctx.Process(target=consumer_process, args=(results, expected, stop))
    consumer.start()
    time.sleep(4.0)  # the group joins (Kafka) before anything arrives
    procs = [consumer]
    try:
        if mode == "throughput":
            watch = harness.Stopwatch()
            write_backlog(args.events)
            write_s = watch.seconds
            relay = ctx.Process(target=relay_process, args=(stop, started))
            relay.start()
            procs.append(relay)
        else:
            relay = ctx.Process(target=relay_process, args=(stop, started))
            relay.start()
            procs.append(relay)
            time.sleep(1.0)
            # One Python process commits ~500 one-event transactions a second here: --writers splits the rate.
            share = args.rate / args.writers
            for n in range(args.writers):
                writer = ctx.Process(
                    target=writer_process, args=(share, args.seconds, wrote, n * 1000, args.per_transaction)
                )
                writer.start()
                procs.append(writer)
        got = results.get(timeout=300)
    finally:
        stop.set()
        for proc in procs:
            proc.join(20)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    lags_ms = harness.milliseconds(got["lags"])
    out = {"events": expected, **harness.percentiles(lags_ms), "max_ms": lags_ms[-1]}
    if mode == "throughput":
        out["events_per_s"] = expected / max(1e-9, got["last"] - started.value)
        out["outbox_write_per_s"] = expected / write_s
    else:
        out["offered_per_s"] = args.rate
        out["achieved_write_per_s"] = expected / max(1e-9, wrote.value)
        out["events_per_s"] = expected / max(1e-9, got["last"] - got["first"])
    return out


def prepare_database(url: str) -> None:
    import psycopg
    from flask_migrate import upgrade

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    with _app().app_context():
        upgrade(directory=str(ROOT / "migrations"))


def bench(stack, tansu: Tansu, args) -> None:
    started = harness.machine()
    os.environ.update(harness.shop_env(stack, SHOP_VAR_DIR=str(VAR), ABUSE_LIMITS="off"))
    prepare_database(os.environ["DATABASE_URL"])
    say(f"PostgreSQL and Redis up ({os.environ['DATABASE_URL']})")
    ctx = multiprocessing.get_context("fork")
    rows = []
    for backend in args.backends.split(","):
        if backend == "kafka":
            os.environ["EVENT_STREAM_URL"] = tansu.start()
        else:
            os.environ["EVENT_STREAM_URL"] = ""  # REDIS_URL
        for mode in ("throughput", "latency"):
            say(f"{backend}: {mode} ...")
            result = run_case(ctx, mode, args)
            rows.append({"stream": backend, "mode": mode, **result})
            say(json.dumps(rows[-1]))
        if backend == "kafka":
            tansu.stop()
    print_table(rows, args)
    harness.write_results(
        "events",
        {
            "args": vars(args),
            "rows": rows,
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
        },
    )
    chart(rows, args, started)


def chart(rows: list[dict], args, started: dict) -> None:
    """Events/s per stream (backlog and offered rate) and the lag percentiles at the offered rate."""
    names = {"redis": "Redis Streams", "kafka": "Kafka (Tansu)"}
    streams = list(dict.fromkeys(r["stream"] for r in rows))
    by = {(r["stream"], r["mode"]): r for r in rows}

    def figure(stream: str, mode: str, key: str):
        return by[(stream, mode)][key] if (stream, mode) in by else None

    harness.write_chart(
        "events",
        "Events end to end: outbox -> relay -> stream -> consumer group",
        [
            harness.Bars(
                "Throughput per stream",
                "events/s",
                [names.get(s, s) for s in streams],
                {
                    f"backlog of {args.events:,}": [figure(s, "throughput", "events_per_s") for s in streams],
                    f"{args.rate:,}/s offered (applied/s; the writer may fall short)": [
                        figure(s, "latency", "events_per_s") for s in streams
                    ],
                },
                refs=[harness.Ref("goal for the backlog", 5000, goal=True)],
            ),
            harness.Bars(
                f"Lag at {args.rate:,} events/s offered (commit to handler)",
                "lag, ms",
                [names.get(s, s) for s in streams],
                {f"p{q}": [figure(s, "latency", f"p{q}_ms") for s in streams] for q in (50, 95, 99)},
                refs=[harness.Ref("goal for p95", 250, goal=True)],
            ),
        ],
        setup=started,
        note=f"Relay, consumer and {args.writers} writer(s) as separate processes, {args.per_transaction} events a "
        f"transaction; the offered-rate run lasts {args.seconds:g} s.",
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    VAR.mkdir(parents=True, exist_ok=True)
    stack = harness.make_stack("shop_bench_events", var=VAR, search=False)
    tansu = Tansu(VAR / "tansu")
    return harness.run(stack, lambda: bench(stack, tansu, args), also_stop=[tansu.stop])


def print_table(rows: list[dict], args) -> None:
    print(f"\nEvents end to end (outbox -> relay -> stream -> consumer group), {os.cpu_count()} cores")
    print("(a backlog's lag is its wait in the queue: only the offered-rate rows measure lag)")
    columns = [
        ("stream", "<8"),
        ("run", "<30"),
        ("events", ">7"),
        ("events/s", ">9"),
        ("p50 ms", ">8"),
        ("p95 ms", ">8"),
        ("p99 ms", ">8"),
    ]
    lines = []
    for r in rows:
        if r["mode"] == "throughput":
            run, lags = f"backlog of {r['events']}", ["-"] * 3
        else:
            run = f"{r['offered_per_s']}/s offered ({r['achieved_write_per_s']:.0f} written)"
            lags = [harness.fig(r[k]) for k in ("p50_ms", "p95_ms", "p99_ms")]
        lines.append([r["stream"], run, r["events"], f"{r['events_per_s']:.0f}", *lags])
    print("\n".join(harness.table(columns, lines)))
    latency = [r for r in rows if r["mode"] == "latency"]
    if latency:
        worst = max(r["p95_ms"] for r in latency)
        best = min(r["events_per_s"] for r in rows if r["mode"] == "throughput")
        print(
            f"goal: >= 5,000 events/s ({'met' if best >= 5000 else 'NOT met'}: {best:.0f}), p95 < 250 ms at "
            f"{args.rate}/s ({'met' if worst < 250 else 'NOT met'}: {worst:.0f} ms)"
        )


if __name__ == "__main__":
    sys.exit(main())
