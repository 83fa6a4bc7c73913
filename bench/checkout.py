"""Flash-sale checkout: `.venv/bin/python bench/checkout.py` (run by `make bench` after bench/catalog.py).

What is measured
    N buyers (default 1,000) each hold their own guest cart with one unit of the same SKU, of which only
    M units (default 100) exist. Released together, each sends one POST /api/v1/checkout (its own
    Idempotency-Key, a fresh connection) through gunicorn with PAYMENT_PROVIDER=test. Per round:
      checkouts/s   checkout answers (201 and 409) per second, from the release to the last answer
      ok/s          successful checkouts per second: M over the time from the release to the last 201
      p50/p95/p99   latency of one checkout, from opening the connection to the last byte of the answer;
                    `ok p50` and `409 p50` the same for the 201s and the 409s alone (queueing included)
      ok            201s: orders placed with stock held; must equal M
      409           out_of_stock refusals; must be N - M (anything else is listed as an error)
      oversold      units promised beyond M, from the database afterwards: max(reserved - on_hand,
                    held by active reservations - M, orders' units - M, 0); must be 0
    Beside it, in the same database and run, the floors without the app, from as many threads as the
    gunicorns have (--sql-connections): the minimal checkout transaction (lock the variant row, take a
    unit, insert an order and a line, commit; through SQLAlchemy's pool and psycopg, as the app) in
    transactions/s, `x minimal` being ok/s over it (goal: 0.25); and the guarded
    `UPDATE variant SET reserved = reserved + 1 WHERE id = $1 AND on_hand - reserved >= 1` alone.
    A probe then times --probe checkouts one after another that succeed, and as many of a sold-out SKU
    (refused by the stock gate, shop/inventory/gate.py): the 409's cost against the 201's (goal: 5x less), in
    latency and in the gunicorn workers' CPU per request of each kind.
    Carts are created and filled through the API before the clock starts; an unrecorded warm-up round
    (a quarter of the buyers) runs first so every gunicorn thread has its connections and code warm.

How
    1. PostgreSQL, Redis and Typesense as bench/catalog.py starts them (bench/harness.py, under
       var/bench, fsync off; BENCH_DATABASE_URL etc. to use running ones), but in a database of its own
       (shop_bench_checkout), so the catalogue bench's database keeps its catalogue.
    2. `flask db upgrade`; then, per round, a new active product with one variant (SKU FLASH-<run>-<n>,
       on_hand M), created with the catalogue's own build_product.
    3. gunicorn `wsgi:app`, 2 workers, gthread x 4 threads (the set-up of bench/harness.py, as bench/catalog.py's).
    4. The rounds, then the SQL loop; a table on stdout, JSON in bench/results/, everything stopped.
The buyers, gunicorn and PostgreSQL share the machine's cores; absolute figures are this box's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402 - needs the repository root on sys.path
from bench.harness import say  # noqa: E402

DATABASE = "shop_bench_checkout"
PRICE = 4900
ADDRESS = {
    "name": "Flash Buyer",
    "line1": "1 Sale Street",
    "city": "Springfield",
    "postal_code": "12345",
    "country": "US",
}
GUARDED_UPDATE = "UPDATE variant SET reserved = reserved + 1 WHERE id = %s AND on_hand - reserved >= 1"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--buyers", type=int, default=1000, help="concurrent buyers")
    p.add_argument("--units", type=int, default=100, help="units of the SKU on sale per round")
    p.add_argument(
        "--sql-connections",
        type=int,
        default=0,
        help="connections of the SQL floors (default: the gunicorn threads in all, the app's own concurrency)",
    )
    p.add_argument("--probe", type=int, default=50, help="sequential checkouts per kind for the 201-vs-409 cost")
    p.add_argument("--rounds", type=int, default=3, help="measured flash sales, each on a new SKU")
    p.add_argument("--sql-seconds", type=float, default=5.0, help="measured window of the guarded UPDATE loop")
    p.add_argument("--sql-warmup", type=float, default=1.0, help="unrecorded warm-up of the UPDATE loop")
    harness.add_server_args(p)
    args = p.parse_args(argv)
    if args.buyers < 1 or args.units < 0 or args.rounds < 1:
        p.error("--buyers and --rounds must be at least 1, --units at least 0")
    return args


# -- HTTP -------------------------------------------------------------------------------------------
def request(port: int, method: str, path: str, body=None, headers=None, timeout: float = 60.0):
    """One request on a new connection: (status, parsed body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            method,
            path,
            body=json.dumps(body) if body is not None else None,
            headers={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
        )
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None)
    finally:
        conn.close()


def prepare_buyers(port: int, sku: str, n: int) -> list[dict]:
    """n guest carts holding one unit of `sku` each, through the API (before any clock starts)."""
    buyers = []
    for i in range(n):
        status, cart = request(port, "POST", "/api/v1/carts")
        if status != 201:
            raise RuntimeError(f"creating a cart answered {status}: {cart}")
        headers = {"X-Cart-Token": cart["token"]}
        status, body = request(port, "POST", f"/api/v1/carts/{cart['id']}/items", {"sku": sku, "quantity": 1}, headers)
        if status != 201:
            raise RuntimeError(f"adding {sku} to a cart answered {status}: {body}")
        buyers.append({"cart_id": cart["id"], "headers": headers, "email": f"buyer{i}@example.com"})
    return buyers


def stampede(port: int, buyers: list[dict]) -> dict:
    """Every buyer checks out at once; statuses, error codes, latencies and the wall time."""
    barrier = threading.Barrier(len(buyers) + 1)
    results: list = [None] * len(buyers)

    def buy(i: int, buyer: dict) -> None:
        body = {"cart_id": buyer["cart_id"], "email": buyer["email"], "shipping_address": ADDRESS}
        headers = {**buyer["headers"], "Idempotency-Key": str(uuid.uuid4())}
        barrier.wait()
        started = time.perf_counter()
        try:
            status, answer = request(port, "POST", "/api/v1/checkout", body, headers)
            code = (answer or {}).get("error", {}).get("code") if status != 201 else None
        except (OSError, http.client.HTTPException) as exc:
            status, code = type(exc).__name__, None
        results[i] = (status, code, time.perf_counter() - started, time.perf_counter())

    threads = [threading.Thread(target=buy, args=(i, b), daemon=True) for i, b in enumerate(buyers)]
    for t in threads:
        t.start()
    barrier.wait()
    released = time.perf_counter()
    for t in threads:
        t.join(120)
    done = [r for r in results if r is not None]
    wall = max(r[3] for r in done) - released if done else 0.0
    ms = harness.milliseconds(r[2] for r in done)
    ok_ms = harness.milliseconds(r[2] for r in done if r[0] == 201)
    refused_ms = harness.milliseconds(r[2] for r in done if r[0] == 409)
    kinds = Counter(r[0] if r[0] in (201,) else f"{r[0]} {r[1] or ''}".strip() for r in done)
    ok, refused = kinds.pop(201, 0), kinds.pop("409 out_of_stock", 0)
    # Successful checkouts/s: the units sold over the time it took to sell them (the last 201 after the release);
    # the refusals that go on answering after the sell-out do not dilute it.
    sold_in = max((r[3] for r in done if r[0] == 201), default=released) - released
    return {
        "buyers": len(buyers),
        "answered": len(done),
        "ok": ok,
        "out_of_stock": refused,
        "errors": sum(kinds.values()) + len(buyers) - len(done),
        "errors_by_kind": dict(kinds),
        "seconds": round(wall, 4),
        "checkouts_per_s": round(len(done) / wall, 1) if wall > 0 else None,
        "sold_out_s": round(sold_in, 4),
        "ok_per_s": round(ok / sold_in, 1) if sold_in > 0 else None,
        **harness.percentiles(ms),
        "max_ms": ms[-1] if ms else None,
        "ok_p50_ms": harness.percentile(ok_ms, 50),
        "out_of_stock_p50_ms": harness.percentile(refused_ms, 50),
        "latencies_ms": ms,
    }


def probe(port: int, app, run: str, n: int, master: int) -> dict:
    """Per-request cost without queueing: `n` checkouts one after another that succeed (a SKU with plenty of
    stock), then `n` of a sold-out SKU (refused, by the stock gate once the first refusal closed it); the latency
    of each, and the CPU the gunicorn workers spent per request of each kind."""
    plenty, gone = f"PROBE-{run}-OK", f"PROBE-{run}-GONE"
    flash_product(app, plenty, n * 2)
    gone_variant = flash_product(app, gone, 1)
    ok_buyers, late_buyers = prepare_buyers(port, plenty, n), prepare_buyers(port, gone, n + 1)
    take_last = late_buyers.pop()
    one(port, take_last)  # the single unit is taken: the rest are refused
    times: dict[str, list[float]] = {"201": [], "409": []}
    cpu: dict[str, float | None] = {}
    for kind, buyers in (("201", ok_buyers), ("409", late_buyers)):
        before = harness.workers_cpu(master)
        for buyer in buyers:
            started = time.perf_counter()
            status = one(port, buyer)
            times.setdefault(str(status), []).append(time.perf_counter() - started)
        cpu[kind] = harness.cpu_ms_per(before, harness.workers_cpu(master), len(buyers))
    ok, refused = harness.milliseconds(times["201"]), harness.milliseconds(times["409"])
    ok_p50, refused_p50 = harness.percentile(ok, 50), harness.percentile(refused, 50)
    return {
        "n": n,
        "ok": len(ok),
        "out_of_stock": len(refused),
        "ok_p50_ms": ok_p50,
        "out_of_stock_p50_ms": refused_p50,
        "refusal_speedup": round(ok_p50 / refused_p50, 2) if ok_p50 and refused_p50 else None,
        "ok_cpu_ms": cpu["201"],
        "out_of_stock_cpu_ms": cpu["409"],
        "gone_variant": gone_variant,
    }


def one(port: int, buyer: dict) -> int:
    body = {"cart_id": buyer["cart_id"], "email": buyer["email"], "shipping_address": ADDRESS}
    headers = {**buyer["headers"], "Idempotency-Key": str(uuid.uuid4())}
    return int(request(port, "POST", "/api/v1/checkout", body, headers)[0])


# -- the database -----------------------------------------------------------------------------------
def flash_product(app, sku: str, units: int) -> int:
    """A new active product with one variant `sku` (on_hand `units`); its variant id."""
    from sqlalchemy import select

    from shop.catalog.models import Category
    from shop.catalog.services import build_product
    from shop.extensions import db

    with app.app_context():
        cat = db.session.scalar(select(Category).where(Category.slug == "flash-sale"))
        if cat is None:
            cat = Category(slug="flash-sale", name="Flash sale", description="Gone in seconds.")
            db.session.add(cat)
            db.session.flush()
        product = build_product(
            category_id=cat.id,
            name=f"Flash {sku}",
            slug=sku.lower(),
            status="active",
            variants=[{"sku": sku, "options": {}, "price_amount": PRICE, "on_hand": units}],
        )
        db.session.commit()
        return product.variants[0].id


def stock_check(dsn: str, variant_id: int, units: int) -> dict:
    import psycopg

    with psycopg.connect(dsn) as conn:
        on_hand, reserved = conn.execute(
            "SELECT on_hand, reserved FROM variant WHERE id = %s", (variant_id,)
        ).fetchone()
        held = conn.execute(
            "SELECT coalesce(sum(quantity), 0) FROM reservation WHERE variant_id = %s AND status = 'active'",
            (variant_id,),
        ).fetchone()[0]
        ordered = conn.execute(
            'SELECT coalesce(sum(l.quantity), 0) FROM order_line l JOIN "order" o '
            "ON o.id = l.order_id WHERE l.variant_id = %s AND o.status <> 'cancelled'",
            (variant_id,),
        ).fetchone()[0]
    return {
        "on_hand": on_hand,
        "reserved": reserved,
        "held": int(held),
        "ordered": int(ordered),
        "oversold": max(reserved - on_hand, int(held) - units, int(ordered) - units, 0),
    }


def timed_loops(steps: list[Callable[[], bool]], warmup: float, seconds: float) -> tuple[list[float], int, float]:
    """Each step() looped on a thread of its own, all released together; recorded after `warmup`, for `seconds`.
    A step returns whether it did its work (its latency counts) or missed. Returns the latencies in ms (sorted),
    the misses and the measured window in seconds."""
    barrier = threading.Barrier(len(steps) + 1)
    out: list = []
    lock = threading.Lock()
    clock: dict = {}

    def loop(step: Callable[[], bool]) -> None:
        latencies, missed = [], 0
        barrier.wait()
        record_from, stop_at = clock["record_from"], clock["stop_at"]
        while (started := time.perf_counter()) < stop_at:
            done = step()
            if started >= record_from:
                if done:
                    latencies.append(time.perf_counter() - started)
                else:
                    missed += 1
        with lock:
            out.append((latencies, missed, time.perf_counter()))

    threads = [threading.Thread(target=loop, args=(step,), daemon=True) for step in steps]
    for t in threads:
        t.start()
    now = time.perf_counter()
    clock.update(record_from=now + warmup, stop_at=now + warmup + seconds)
    barrier.wait()
    for t in threads:
        t.join(warmup + seconds + 60)
    ms = harness.milliseconds(x for lat, _, _ in out for x in lat)
    return ms, sum(m for _, m, _ in out), max(end for *_, end in out) - clock["record_from"]


def guarded_update_loop(dsn: str, variant_id: int, connections: int, warmup: float, seconds: float) -> dict:
    """`connections` autocommit connections looping the guarded UPDATE on one row: updates/s, latency."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:  # room for the whole loop, so the guard keeps passing
        conn.execute("UPDATE variant SET on_hand = reserved + 1000000000 WHERE id = %s", (variant_id,))
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(connections)]
    try:
        ms, missed, window = timed_loops(
            [lambda c=c: c.execute(GUARDED_UPDATE, (variant_id,)).rowcount == 1 for c in conns], warmup, seconds
        )
    finally:
        for c in conns:
            c.close()
    return {
        "connections": connections,
        "updates": len(ms),
        "seconds": round(window, 3),
        "updates_per_s": round(len(ms) / window, 1) if window > 0 else None,
        "guard_refused": missed,
        **harness.percentiles(ms),
    }


MINIMAL_TABLES = """
CREATE TABLE IF NOT EXISTS bench_order (id bigserial PRIMARY KEY, total integer NOT NULL, created_at timestamptz
    NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS bench_order_line (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES bench_order,
    variant_id integer NOT NULL, quantity integer NOT NULL, unit_price integer NOT NULL)
"""


def minimal_checkout_loop(dsn: str, variant_id: int, connections: int, warmup: float, seconds: float) -> dict:
    """The least a checkout can do, from Python through the app's driver and pool (SQLAlchemy's QueuePool over
    psycopg 3): lock the variant row, take a unit, insert an order and its line, commit. Transactions/s from
    `connections` threads on the one hot row: the ceiling this design can reach."""
    from sqlalchemy import create_engine, text

    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, pool_size=connections, max_overflow=0)
    with engine.begin() as conn:
        for statement in MINIMAL_TABLES.split(";"):
            conn.execute(text(statement))
        conn.execute(text("UPDATE variant SET on_hand = reserved + 1000000000 WHERE id = :v"), {"v": variant_id})
    lock_row = text("SELECT on_hand - reserved FROM variant WHERE id = :v FOR NO KEY UPDATE")
    take = text("UPDATE variant SET reserved = reserved + 1 WHERE id = :v")
    new_order = text("INSERT INTO bench_order (total) VALUES (:t) RETURNING id")
    new_line = text("INSERT INTO bench_order_line (order_id, variant_id, quantity, unit_price) VALUES (:o, :v, 1, :p)")

    def checkout() -> bool:
        with engine.begin() as conn:
            if conn.execute(lock_row, {"v": variant_id}).scalar_one() < 1:
                return False
            conn.execute(take, {"v": variant_id})
            order_id = conn.execute(new_order, {"t": PRICE}).scalar_one()
            conn.execute(new_line, {"o": order_id, "v": variant_id, "p": PRICE})
        return True

    try:
        ms, _, window = timed_loops([checkout] * connections, warmup, seconds)
    finally:
        engine.dispose()
    return {
        "connections": connections,
        "transactions": len(ms),
        "seconds": round(window, 3),
        "transactions_per_s": round(len(ms) / window, 1) if window > 0 else None,
        **harness.percentiles(ms),
    }


# -- the run ----------------------------------------------------------------------------------------
def table(rounds: list[dict], sql: dict, minimal: dict, units: int) -> str:
    columns = [
        ("round", "<12"),
        ("checkouts/s", ">11"),
        ("ok/s", ">7"),
        ("p50 ms", ">7"),
        ("p95 ms", ">7"),
        ("p99 ms", ">7"),
        ("ok p50", ">7"),
        ("409 p50", ">7"),
        ("ok", ">5"),
        ("409", ">5"),
        ("errors", ">6"),
        ("oversold", ">9"),
        ("cpu ms/c", ">8"),
        ("x minimal", ">9"),
    ]
    rows = []
    for r in rounds:
        floor = minimal["transactions_per_s"]
        ratio = f"{r['ok_per_s'] / floor:.3f}" if r["ok_per_s"] and floor else "-"
        rows.append(
            [
                r["name"],
                harness.fig(r["checkouts_per_s"]),
                harness.fig(r["ok_per_s"]),
                *(harness.fig(r[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "ok_p50_ms", "out_of_stock_p50_ms")),
                r["ok"],
                r["out_of_stock"],
                r["errors"],
                r["stock"]["oversold"],
                harness.fig(r.get("server_cpu_ms_per_checkout")),
                ratio,
            ]
        )
    for name, figures, per_s in (("minimal tx", minimal, "transactions_per_s"), ("sql loop", sql, "updates_per_s")):
        rows.append(
            [
                name,
                harness.fig(figures[per_s]),
                "",
                *(harness.fig(figures[k], ".2f") for k in ("p50_ms", "p95_ms", "p99_ms")),
                *[""] * 8,
            ]
        )
    lines = harness.table(columns, rows)
    lines.append(
        f"(minimal tx: lock the variant, take a unit, insert an order and a line, commit, from {minimal['connections']} "
        f"threads through SQLAlchemy's pool and psycopg; x minimal = successful checkouts/s over it. sql loop: the "
        f"guarded UPDATE alone, autocommit. ok p50 / 409 p50: latency of the 201s and of the 409s in the stampede, "
        f"queueing included)"
    )
    lines += [f"errors in {r['name']}: {r['errors_by_kind']}" for r in rounds if r["errors_by_kind"]]
    bad = [r["name"] for r in rounds if r["ok"] != units or r["stock"]["oversold"]]
    lines.append(
        f"CHECK FAILED in {', '.join(bad)}: successes must equal {units} and oversold must be 0"
        if bad
        else f"check: every round sold exactly {units} units, none oversold"
    )
    return "\n".join(lines)


def goals(rounds: list[dict], minimal: dict, probe_result: dict) -> str:
    """The issue's goals beside what this run measured."""
    oversold = sum(r["stock"]["oversold"] for r in rounds)
    ok_per_s = sorted(r["ok_per_s"] or 0 for r in rounds)[len(rounds) // 2]
    floor = minimal["transactions_per_s"] or 0
    ratio = ok_per_s / floor if floor else 0.0
    speedup = probe_result["refusal_speedup"] or 0.0

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return "\n".join(
        [
            f"goal: 0 oversold: {oversold} ({verdict(oversold == 0)})",
            f"goal: successful checkouts/s >= 0.25 x the minimal checkout transaction: median round {ok_per_s:.1f}/s "
            f"over {floor:.1f}/s = {ratio:.3f} ({verdict(ratio >= 0.25)})",
            f"goal: a 409 at least 5x faster than a 201 ({probe_result['n']} of each, one after another): "
            f"p50 {probe_result['ok_p50_ms']} ms vs {probe_result['out_of_stock_p50_ms']} ms = {speedup:.1f}x "
            f"({verdict(speedup >= 5)}); server CPU per request {probe_result['ok_cpu_ms']} ms vs "
            f"{probe_result['out_of_stock_cpu_ms']} ms",
        ]
    )


def bench(stack, args) -> bool:
    # one client machine plays 50 buyers: per-IP hold and rate limits would refuse it
    env = harness.shop_env(stack, PAYMENT_PROVIDER="test", ABUSE_LIMITS="off")
    for key in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE"):
        env.pop(key, None)
    dsn = env["DATABASE_URL"]
    say(f"services: DATABASE_URL={dsn}, REDIS_URL={env['REDIS_URL']}")
    harness.flask_cli(env, "db", "upgrade")
    os.environ.update(env)  # create_app() in this process reads the same settings as gunicorn's
    from shop import create_app

    app = create_app()
    port, master = harness.start_gunicorn(stack, "checkout", "wsgi:app", "/healthz", env, args)
    setup = {
        **harness.machine(),
        "gunicorn": harness.gunicorn_setup(args),
        "buyers": args.buyers,
        "units": args.units,
        "stock_gate": env.get("STOCK_GATE_ENABLED", "1"),
        "rounds": args.rounds,
        "payment_provider": "test",
        "shop_port": port,
    }
    harness.say_setup(setup)
    run = datetime.now().strftime("%H%M%S") + secrets.token_hex(2).upper()
    warm = max(2, args.buyers // 4)
    plan = [("warm-up", warm, max(1, warm // 2))] + [
        (f"round {n}", args.buyers, args.units) for n in range(1, args.rounds + 1)
    ]
    rounds, last_variant = [], None
    for n, (name, buyers, units) in enumerate(plan):
        sku = f"FLASH-{run}-{n}"
        last_variant = flash_product(app, sku, units)
        carts = prepare_buyers(port, sku, buyers)
        cpu_before = harness.workers_cpu(master)
        result = stampede(port, carts)
        result["server_cpu_ms_per_checkout"] = harness.cpu_ms_per(
            cpu_before, harness.workers_cpu(master), result["answered"]
        )
        result.update(name=name, sku=sku, units=units, stock=stock_check(dsn, last_variant, units))
        say(
            f"{name}: {buyers} buyers for {units} units of {sku}: {result['ok']} ok, {result['out_of_stock']} "
            f"out of stock, {result['errors']} errors in {result['seconds'] * 1000:.0f} ms; "
            f"stock {result['stock']}"
        )
        if name != "warm-up":
            rounds.append(result)
    connections = args.sql_connections or args.workers * (args.threads if args.worker_class == "gthread" else 1)
    say(
        f"sql loop: {connections} connections, guarded UPDATE on variant {last_variant}, "
        f"{args.sql_warmup:g}s warm-up + {args.sql_seconds:g}s"
    )
    sql = guarded_update_loop(dsn, last_variant, connections, args.sql_warmup, args.sql_seconds)
    say(f"minimal checkout transaction: {connections} threads, {args.sql_warmup:g}s warm-up + {args.sql_seconds:g}s")
    minimal = minimal_checkout_loop(dsn, last_variant, connections, args.sql_warmup, args.sql_seconds)
    say(f"probe: {args.probe} successful checkouts one after another, then {args.probe} refused")
    probed = probe(port, app, run, args.probe, master)
    print(f"\n{table(rounds, sql, minimal, args.units)}\n\n{goals(rounds, minimal, probed)}\n", flush=True)
    harness.write_results(
        "checkout", {"setup": setup, "rounds": rounds, "sql_loop": sql, "minimal_checkout": minimal, "probe": probed}
    )
    chart(rounds, minimal, probed, setup)
    with app.app_context():
        from shop.extensions import db

        db.engine.dispose()
    return all(r["ok"] == args.units and not r["stock"]["oversold"] for r in rounds)


def chart(rounds: list[dict], minimal: dict, probed: dict, setup: dict) -> None:
    """Checkouts/s and latency per round against the minimal transaction; the probe's 201 against its 409."""
    names = [r["name"] for r in rounds]
    floor = minimal["transactions_per_s"]
    harness.write_chart(
        "checkout",
        f"Flash sale: {setup['buyers']:,} buyers for {setup['units']:,} units",
        [
            harness.Bars(
                "Throughput per round",
                "checkouts/s",
                names,
                {
                    "answers/s (201s and 409s)": [r["checkouts_per_s"] for r in rounds],
                    "successful/s (units over the time to sell out)": [r["ok_per_s"] for r in rounds],
                },
                refs=[
                    harness.Ref("minimal checkout transaction, tx/s", floor),
                    harness.Ref("goal for successful/s: 0.25 x minimal", 0.25 * floor if floor else None, goal=True),
                ],
            ),
            harness.Bars(
                "Latency per round (all buyers, queueing included)",
                "ms",
                names,
                {f"p{q}": [r[f"p{q}_ms"] for r in rounds] for q in (50, 95, 99)},
            ),
            harness.Bars(
                f"One checkout at a time ({probed['n']} of each)",
                "p50 latency, ms",
                ["201 (sold)", "409 (sold out)"],
                {"p50": [probed["ok_p50_ms"], probed["out_of_stock_p50_ms"]]},
                refs=[
                    harness.Ref(
                        "goal for a 409: 201's p50 / 5",
                        probed["ok_p50_ms"] / 5 if probed["ok_p50_ms"] else None,
                        goal=True,
                    )
                ],
                fmt="{:,.1f}",
            ),
        ],
        setup=setup,
        note=f"gunicorn {setup['gunicorn']}; every buyer on a fresh connection, released together; the minimal "
        f"transaction from {minimal['connections']} threads through the same driver and pool; oversold: "
        f"{sum(r['stock']['oversold'] for r in rounds)}.",
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    stack = harness.make_stack(DATABASE)
    return harness.run(stack, lambda: bench(stack, args))


if __name__ == "__main__":
    sys.exit(main())
