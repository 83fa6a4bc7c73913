"""Flash-sale checkout: `.venv/bin/python bench/checkout.py` (run by `make bench` after bench/catalog.py).

What is measured
    N buyers (default 50) each hold their own guest cart with one unit of the same SKU, of which only
    M units (default 20) exist. Released together, each sends one POST /api/v1/checkout (its own
    Idempotency-Key, a fresh connection) through gunicorn with PAYMENT_PROVIDER=test. Per round:
      checkouts/s   checkout answers (201 and 409) per second, from the release to the last answer
      p50/p95/p99   latency of one checkout, from opening the connection to the last byte of the answer
      ok            201s: orders placed with stock held; must equal M
      409           out_of_stock refusals; must be N - M (anything else is listed as an error)
      oversold      units promised beyond M, from the database afterwards: max(reserved - on_hand,
                    held by active reservations - M, orders' units - M, 0); must be 0
    Beside it, the floor of the same contention without the app: N psycopg connections (autocommit)
    looping `UPDATE variant SET reserved = reserved + 1 WHERE id = $1 AND on_hand - reserved >= 1` on
    that very variant row (its on_hand raised first so the guard keeps passing), in the same database
    in the same run: updates/s and latency. `x sql` is successful checkouts/s over that figure.
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
    p.add_argument("--buyers", type=int, default=50, help="concurrent buyers (and SQL connections)")
    p.add_argument("--units", type=int, default=20, help="units of the SKU on sale per round")
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
    kinds = Counter(r[0] if r[0] in (201,) else f"{r[0]} {r[1] or ''}".strip() for r in done)
    ok, refused = kinds.pop(201, 0), kinds.pop("409 out_of_stock", 0)
    return {
        "buyers": len(buyers),
        "answered": len(done),
        "ok": ok,
        "out_of_stock": refused,
        "errors": sum(kinds.values()) + len(buyers) - len(done),
        "errors_by_kind": dict(kinds),
        "seconds": round(wall, 4),
        "checkouts_per_s": round(len(done) / wall, 1) if wall > 0 else None,
        "ok_per_s": round(ok / wall, 1) if wall > 0 else None,
        **harness.percentiles(ms),
        "max_ms": ms[-1] if ms else None,
        "latencies_ms": ms,
    }


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


def guarded_update_loop(dsn: str, variant_id: int, connections: int, warmup: float, seconds: float) -> dict:
    """`connections` autocommit connections looping the guarded UPDATE on one row: updates/s, latency."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:  # room for the whole loop, so the guard keeps passing
        conn.execute("UPDATE variant SET on_hand = reserved + 1000000000 WHERE id = %s", (variant_id,))
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(connections)]
    barrier = threading.Barrier(connections + 1)
    out: list = []
    lock = threading.Lock()
    clock: dict = {}

    def loop(conn) -> None:
        latencies, missed = [], 0
        barrier.wait()
        record_from, stop_at = clock["record_from"], clock["stop_at"]
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                break
            updated = conn.execute(GUARDED_UPDATE, (variant_id,)).rowcount
            if started >= record_from:
                if updated == 1:
                    latencies.append(time.perf_counter() - started)
                else:
                    missed += 1
        with lock:
            out.append((latencies, missed, time.perf_counter()))

    threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    now = time.perf_counter()
    clock.update(record_from=now + warmup, stop_at=now + warmup + seconds)
    barrier.wait()
    for t in threads:
        t.join(warmup + seconds + 60)
    for c in conns:
        c.close()
    ms = harness.milliseconds(x for lat, _, _ in out for x in lat)
    window = max(end for *_, end in out) - clock["record_from"]
    return {
        "connections": connections,
        "updates": len(ms),
        "seconds": round(window, 3),
        "updates_per_s": round(len(ms) / window, 1) if window > 0 else None,
        "guard_refused": sum(m for _, m, _ in out),
        **harness.percentiles(ms),
    }


# -- the run ----------------------------------------------------------------------------------------
def table(rounds: list[dict], sql: dict, units: int) -> str:
    columns = [
        ("round", "<10"),
        ("checkouts/s", ">11"),
        ("p50 ms", ">7"),
        ("p95 ms", ">7"),
        ("p99 ms", ">7"),
        ("ok", ">5"),
        ("409", ">5"),
        ("errors", ">6"),
        ("oversold", ">9"),
        ("cpu ms/c", ">8"),
        ("x sql", ">7"),
    ]
    rows = []
    for r in rounds:
        ratio = f"{r['ok_per_s'] / sql['updates_per_s']:.4f}" if r["ok_per_s"] and sql["updates_per_s"] else "-"
        rows.append(
            [
                r["name"],
                harness.fig(r["checkouts_per_s"]),
                *(harness.fig(r[k]) for k in ("p50_ms", "p95_ms", "p99_ms")),
                r["ok"],
                r["out_of_stock"],
                r["errors"],
                r["stock"]["oversold"],
                harness.fig(r.get("server_cpu_ms_per_checkout")),
                ratio,
            ]
        )
    rows.append(
        [
            "sql loop",
            harness.fig(sql["updates_per_s"]),
            *(harness.fig(sql[k], ".2f") for k in ("p50_ms", "p95_ms", "p99_ms")),
            *[""] * 6,
        ]
    )
    lines = harness.table(columns, rows)
    lines.append(
        f"(sql loop: updates/s of the guarded UPDATE from {sql['connections']} connections on the same "
        f"variant row; x sql = successful checkouts/s over it)"
    )
    lines += [f"errors in {r['name']}: {r['errors_by_kind']}" for r in rounds if r["errors_by_kind"]]
    bad = [r["name"] for r in rounds if r["ok"] != units or r["stock"]["oversold"]]
    lines.append(
        f"CHECK FAILED in {', '.join(bad)}: successes must equal {units} and oversold must be 0"
        if bad
        else f"check: every round sold exactly {units} units, none oversold"
    )
    return "\n".join(lines)


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
    say(
        f"sql loop: {args.buyers} connections, guarded UPDATE on variant {last_variant}, "
        f"{args.sql_warmup:g}s warm-up + {args.sql_seconds:g}s"
    )
    sql = guarded_update_loop(dsn, last_variant, args.buyers, args.sql_warmup, args.sql_seconds)
    print(f"\n{table(rounds, sql, args.units)}\n", flush=True)
    harness.write_results("checkout", {"setup": setup, "rounds": rounds, "sql_loop": sql})
    with app.app_context():
        from shop.extensions import db

        db.engine.dispose()
    return all(r["ok"] == args.units and not r["stock"]["oversold"] for r in rounds)


def main(argv=None) -> int:
    args = parse_args(argv)
    stack = harness.make_stack(DATABASE)
    return harness.run(stack, lambda: bench(stack, args))


if __name__ == "__main__":
    sys.exit(main())
