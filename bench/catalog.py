"""Catalogue read throughput: `make bench` (or `.venv/bin/python bench/catalog.py --help`).

What is measured
    Requests/s and latency (p50/p95/p99, from sending a GET to the last byte of its body) at a fixed
    concurrency, for the catalogue reads a shopper makes, each target on its own:
      category   /c/men                                  storefront listing of a top-level category
      product    /p/<slug>                               storefront product page, 50 real slugs in turn
      api        /api/v1/products?category=men&per_page=20
      bare       /bare                                   bench/bare_app.py: Flask + SQLAlchemy `SELECT 1`
    Each catalogue target is measured twice in the same run: against a shop with the Redis cache of
    catalogue reads (shop/cache.py, `cache on`) and against an identical shop with CACHE_ENABLED=0
    (`off`, every read from PostgreSQL); `x no-cache` is the cached row's requests/s over the
    uncached one's. Before measuring, both shops must answer every path with the same body.
    The bare endpoint is the floor: `x bare` is a target's requests/s over the bare one's, i.e. the
    share of "Flask plus one database round trip" throughput the real page keeps. `cpu ms/r` is the
    gunicorn workers' CPU time per request (from /proc, warm-up included): the app's own cost, less
    sensitive than req/s to the load generator sharing the cores. `conns` is how many connections
    the clients opened; it equals the concurrency when keep-alive held. Only 200s count; other
    statuses and socket errors are reported apart. Clients send no If-None-Match, so the shop's
    ETag/304 path and any CDN are out of the picture: this is the cost at the origin.

How
    1. An embedded PostgreSQL, Redis and Typesense under var/bench (bench/harness.py, fsync off),
       unless BENCH_DATABASE_URL / BENCH_REDIS_URL / BENCH_TYPESENSE_URL point at running ones.
    2. `flask db upgrade` and `flask seed demo --if-empty --products N` (the database persists
       between runs; --reseed replaces the catalogue, `make clean` removes var/bench).
    3. Three gunicorns with the same set-up (2 workers, gthread with 4 threads each by default): the
       shop (`wsgi:app`) with the cache, the shop without it, and the bare app, each on a free port. gthread because gunicorn's sync
       worker closes every connection after one response (gunicorn/workers/sync.py, force_close),
       so keep-alive clients would reconnect per request; 2 x 4 threads also give one slot per
       client at the default concurrency of 8. `--worker-class sync` measures the other set-up.
    4. The load: wrk (bench/wrk.py; `sudo apt-get install wrk`) with --concurrency keep-alive connections, or
       with `--client python` (the fallback when wrk is missing) bench/load.py's closed loop of Python threads.
       The targets are measured in turn, --rounds times each (a warm-up before the first round), so noise on
       the machine hits them alike; `client cpu` is the load generator's share of all the cores during its
       runs: a client near one core's share (50% here) per thread is saturated, and its row says more about
       the client than about the server.
    5. A table on stdout, the same figures as JSON in bench/results/, and everything it started
       is stopped (also on Ctrl-C or SIGTERM).
The load generator, the gunicorns and PostgreSQL share the machine's cores, so absolute figures are
this box's (and any other busy process skews them: the JSON records the load average); ratios travel better.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402 - needs the repository root on sys.path
from bench.harness import say  # noqa: E402

CATEGORY = "men"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--products", type=int, default=2000, help="size of the demo catalogue")
    p.add_argument("--reseed", action="store_true", help="replace an existing catalogue instead of keeping it")
    harness.add_load_args(p, seconds=7.0)
    harness.add_server_args(p)
    return p.parse_args(argv)


def prepare_database(env: dict, args) -> int:
    """Migrate and seed; return the number of products in the catalogue."""
    harness.flask_cli(env, "db", "upgrade")
    out = harness.flask_cli(
        env, "seed", "demo", "--reset" if args.reseed else "--if-empty", "--products", str(args.products)
    )
    say("seed: " + out.strip().splitlines()[-1])
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as conn:
        return conn.execute("SELECT count(*) FROM product").fetchone()[0]


def table(results: dict[str, dict], paths: dict[str, str]) -> str:
    columns = [
        ("target", "<9"),
        ("cache", "<5"),
        ("path", "<42"),
        ("req/s", ">7"),
        ("p50 ms", ">7"),
        ("p95 ms", ">7"),
        ("p99 ms", ">7"),
        ("errors", ">6"),
        ("conns", ">6"),
        ("cpu ms/r", ">8"),
        ("client cpu", ">10"),
        ("x bare", ">7"),
        ("x no-cache", ">10"),
    ]
    rows = []
    for key, r in results.items():
        name, _, mode = key.partition(":")
        rows.append(
            [
                name,
                mode or "-",
                paths[name][:42],
                *(harness.fig(r[k]) for k in ("rps", "p50_ms", "p95_ms", "p99_ms")),
                r["errors"],
                r["connections"],
                harness.fig(r["server_cpu_ms_per_req"]),
                f"{r['client_cpu_share']:.0%}" if r.get("client_cpu_share") is not None else "",
                harness.fig(r["ratio_to_bare"], ".3f"),
                f"{r['ratio_to_no_cache']:.2f}" if r.get("ratio_to_no_cache") else "",
            ]
        )
    lines = harness.table(columns, rows)
    lines += [f"errors in {name}: {r['errors_by_kind']}" for name, r in results.items() if r["errors_by_kind"]]
    return "\n".join(lines)


def bench(stack, args) -> None:
    env = harness.shop_env(stack)
    say("services: " + ", ".join(f"{k}={env[k]}" for k in harness.SERVICES[:3]))
    n_products = prepare_database(env, args)
    if n_products != args.products:
        say(f"warning: the catalogue has {n_products} products, not {args.products} (--reseed replaces it)")
    shop = harness.start_gunicorn(stack, "shop", "wsgi:app", "/healthz", {**env, "CACHE_ENABLED": "1"}, args)
    nocache = harness.start_gunicorn(stack, "shop-nocache", "wsgi:app", "/healthz", {**env, "CACHE_ENABLED": "0"}, args)
    bare = harness.start_gunicorn(stack, "bare", "bench.bare_app:app", "/bare", env, args)
    slugs = [p["slug"] for p in json.loads(harness.get(nocache[0], "/api/v1/products?per_page=50"))["items"]]
    if not slugs:
        raise RuntimeError("the catalogue API returned no products")
    catalogue = {
        "category": [f"/c/{CATEGORY}"],
        "product": [f"/p/{s}" for s in slugs],
        "api": [f"/api/v1/products?category={CATEGORY}&per_page=20"],
    }
    for paths in catalogue.values():  # the cache must not change an answer: same bytes with and without it
        for path in paths[:5]:
            harness.get(shop[0], path)  # fill the cache, then compare what it serves
            if harness.get(shop[0], path) != harness.get(nocache[0], path):
                raise RuntimeError(f"{path}: the cached shop answers differently from the uncached one")
    targets = {}  # "name:mode": ((port, gunicorn master pid), paths)
    for name, paths in catalogue.items():
        targets[f"{name}:on"] = (shop, paths)
        targets[f"{name}:off"] = (nocache, paths)
    targets["bare"] = (bare, ["/bare"])
    shown = {
        key.partition(":")[0]: paths[0] if len(paths) == 1 else f"/p/<{len(paths)} slugs in turn>"
        for key, (_, paths) in targets.items()
    }
    setup = {
        **harness.machine(),
        "products": n_products,
        "gunicorn": harness.gunicorn_setup(args),
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "seconds": args.seconds,
        "client": args.client,
        "rounds": args.rounds,
        "shop_env": env["SHOP_ENV"],
        "shop_port": shop[0],
        "shop_nocache_port": nocache[0],
        "bare_port": bare[0],
        "cache_ttl_s": env.get("CACHE_TTL_SECONDS", "60 (default)"),
    }
    harness.say_setup(setup)
    harness.client_note(args)
    say(f"{len(targets)} targets in turn, {args.rounds} rounds of {args.seconds / args.rounds:g}s each")
    results = harness.run_interleaved(targets, args)
    floor = results["bare"]["rps"]
    for key, r in results.items():
        r["ratio_to_bare"] = round(r["rps"] / floor, 4) if floor else None
        if key.endswith(":on"):
            off = results[key[:-3] + ":off"]["rps"]
            r["ratio_to_no_cache"] = round(r["rps"] / off, 3) if off else None
    print(f"\n{table(results, shown)}\n", flush=True)
    harness.write_results("catalog", {"setup": setup, "paths": shown, "results": results})
    chart(results, setup)


def chart(results: dict, setup: dict) -> None:
    """Requests/s and p95 of each target with and without the cache, the bare endpoint as a reference line."""
    names = {
        "category": f"category page\n/c/{CATEGORY}",
        "product": "product page\n/p/<slug>",
        "api": "catalogue API\n/api/v1/products",
    }
    bare = results["bare"]
    harness.write_chart(
        "catalog",
        "Catalogue reads with and without the response cache",
        [
            harness.Bars(
                "Throughput per target",
                "requests/s",
                list(names.values()),
                {f"cache {mode}": [results[f"{name}:{mode}"]["rps"] for name in names] for mode in ("on", "off")},
                refs=[
                    harness.Ref("bare Flask + SELECT 1", bare["rps"]),
                    harness.Ref("goal for cached: 0.8 x bare", 0.8 * bare["rps"], goal=True),
                ],
            ),
            harness.Bars(
                "Latency per target (send to last byte)",
                "p95 latency, ms",
                list(names.values()),
                {f"cache {mode}": [results[f"{name}:{mode}"]["p95_ms"] for name in names] for mode in ("on", "off")},
                refs=[harness.Ref("bare p95", bare["p95_ms"])],
                fmt="{:,.1f}",
            ),
        ],
        setup=setup,
        note=f"{setup['products']:,} products; gunicorn {setup['gunicorn']}; {setup['client']} with "
        f"{setup['concurrency']} keep-alive connections; targets in turn, {setup['rounds']} rounds of "
        f"{setup['seconds'] / max(1, setup['rounds']):g} s each.",
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    stack = harness.make_stack("shop_bench")
    return harness.run(stack, lambda: bench(stack, args))


if __name__ == "__main__":
    sys.exit(main())
