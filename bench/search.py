"""Search latency and throughput, Typesense against the PostgreSQL fallback: `.venv/bin/python bench/search.py`.

What is measured
    On a 100,000-product demo catalogue (`flask seed demo --products 100000`), GET /api/v1/search
    through gunicorn (bench/harness.py's set-up, as bench/catalog.py's: 2 workers, gthread x 4 threads,
    keep-alive clients in a closed loop at a fixed concurrency), for a mix of queries: plain words, typos ("tshrt",
    "hoodei", "chelsae boot"), prefixes as typed ("merin"), an empty query with facets only, and
    filters (category, price range, option values). Two servers in the same run, same set-up:
      typesense   the shop as deployed: Typesense answers (engine "typesense")
      database    the same shop with TYPESENSE_URL at a closed port: the PostgreSQL full-text
                  fallback answers (engine "database"), facet counts computed in SQL
    each measured on the whole mix, then on its typo-free queries only (the fallback finds nothing for
    a typo, which is cheap and would flatter it). For each: queries/s, p50/p95/p99 latency (send to last
    byte), errors. Every answer includes the facets (category, price buckets, option values) and the page
    of 20 summaries. Beforehand, each query is sent once to both, and the table of hits shows what the
    typos cost the fallback. The goals of issue 15 (item 4) are printed beside the figures: the
    fallback's p95 on typo-free queries at most 300 ms, and Typesense's under 1/5 of it.

How
    1. PostgreSQL, Redis and Typesense as bench/catalog.py starts them (var/bench, fsync off;
       BENCH_DATABASE_URL etc. to use running ones), in a database of its own (shop_bench_search).
    2. `flask db upgrade`, `flask seed demo --if-empty --products N` (kept between runs), and
       `flask search reindex` into the alias `bench_products` (skipped when the live collection
       already holds every active product and every field of the current schema, engine.schema();
       --reindex forces it, and its time is reported).
    3. The two gunicorns, an unrecorded warm-up per target, the measured windows, a table on stdout
       and JSON in bench/results/; everything it started is stopped.
The load generator, gunicorn, PostgreSQL and Typesense share the machine's cores; figures are this box's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402 - needs the repository root on sys.path
from bench.harness import say  # noqa: E402

DATABASE = "shop_bench_search"
ALIAS = "bench_products"

# (query string, kind): the mix sent round-robin.
QUERIES = [
    ({"q": "t-shirt"}, "word"),
    ({"q": "tshrt"}, "typo"),
    ({"q": "linen shirt"}, "word"),
    ({"q": "hoodei"}, "typo"),
    ({"q": "chelsea boot"}, "word"),
    ({"q": "chelsae boot"}, "typo"),
    ({"q": "merino"}, "word"),
    ({"q": "merin"}, "prefix"),
    ({"q": "cashmre cardigan"}, "typo"),
    ({"q": "backpack"}, "word"),
    ({"q": "backpak"}, "typo"),
    ({"q": "sneakr"}, "typo"),
    ({"q": "organic cotton tee"}, "word"),
    ({"q": "denim"}, "word"),
    ({"q": "vintge denim"}, "typo"),
    ({"q": "wool socks", "option": "size:M"}, "filter"),
    ({"q": "runner", "category": "footwear"}, "filter"),
    ({"q": "dress", "min_price": "5000", "max_price": "9000"}, "filter"),
    ({"q": "kestrel"}, "word"),
    ({"q": "northwnd"}, "typo"),
    ({"category": "men"}, "facets only"),
    ({"q": "bea"}, "prefix"),
]


# Issue 15, item 4: on typo-free queries, the fallback's p95 at most this, and Typesense's under this share of it.
GOAL_FALLBACK_P95_MS = 300.0
GOAL_TYPESENSE_SHARE = 0.2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--products", type=int, default=100_000, help="size of the demo catalogue")
    p.add_argument("--reseed", action="store_true", help="replace an existing catalogue instead of keeping it")
    p.add_argument("--reindex", action="store_true", help="rebuild the index even when it is current")
    harness.add_load_args(p, seconds=10.0)
    harness.add_server_args(p)
    return p.parse_args(argv)


def path(params: dict) -> str:
    return "/api/v1/search?" + urlencode({**params, "per_page": 20})


def prepare(env: dict, args) -> tuple[int, dict]:
    """Migrate, seed, index; the number of active products and what indexing did."""
    import psycopg
    import typesense

    from shop.search.engine import schema

    harness.flask_cli(env, "db", "upgrade")
    watch = harness.Stopwatch()
    out = harness.flask_cli(
        env, "seed", "demo", "--reset" if args.reseed else "--if-empty", "--products", str(args.products)
    )
    say(f"seed: {out.strip().splitlines()[-1]} ({watch.seconds:.0f}s)")
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        active = conn.execute("SELECT count(*) FROM product WHERE status = 'active'").fetchone()[0]
    url = env["TYPESENSE_URL"].rstrip("/")
    host, _, port = url.split("://", 1)[1].partition(":")
    ts = typesense.Client(
        {
            "nodes": [{"host": host, "port": int(port or 8108), "protocol": "http"}],
            "api_key": env["TYPESENSE_API_KEY"],
            "connection_timeout_seconds": 30,
        }
    )
    current, fields = 0, set()
    try:
        live = ts.collections[ALIAS].retrieve()
        current, fields = live["num_documents"], {f["name"] for f in live["fields"]}
    except typesense.exceptions.ObjectNotFound:
        pass
    missing = sorted({f["name"] for f in schema(ALIAS)["fields"]} - fields)
    if current == active and not missing and not args.reindex:
        say(f"index: {ALIAS} already holds the {active} active products; not rebuilt (--reindex forces it)")
        return active, {"reindexed": False, "documents": current}
    if current and missing:
        say(f"index: {ALIAS} lacks the fields {', '.join(missing)} of the current schema; rebuilt")
    watch = harness.Stopwatch()
    out = harness.flask_cli(env, "search", "reindex")
    took = watch.seconds
    say(f"index: {out.strip().splitlines()[-1]} (the command took {took:.0f}s)")
    return active, {
        "reindexed": True,
        "seconds": round(took, 1),
        "documents": active,
        "docs_per_s": round(active / took) if took else None,
    }


def hits(port: int) -> list[dict]:
    out = []
    for params, _kind in QUERIES:
        body = json.loads(harness.get(port, path(params), timeout=30))
        out.append({"total": body["total"], "engine": body["engine"]})
    return out


def table(results: dict, paths_shown: str) -> str:
    columns = [
        ("engine", "<20"),
        ("q/s", ">8"),
        ("p50 ms", ">7"),
        ("p95 ms", ">7"),
        ("p99 ms", ">7"),
        ("errors", ">6"),
        ("conns", ">6"),
        ("cpu ms/q", ">9"),
        ("client cpu", ">10"),
    ]
    rows = [
        [
            name,
            *(harness.fig(r[k]) for k in ("rps", "p50_ms", "p95_ms", "p99_ms")),
            r["errors"],
            r["connections"],
            harness.fig(r["server_cpu_ms_per_req"]),
            f"{r['client_cpu_share']:.0%}" if r.get("client_cpu_share") is not None else "",
        ]
        for name, r in results.items()
    ]
    lines = [f"GET {paths_shown}", *harness.table(columns, rows)]
    lines += [f"errors in {name}: {r['errors_by_kind']}" for name, r in results.items() if r["errors_by_kind"]]
    return "\n".join(lines)


def hits_table(ts_hits: list[dict], db_hits: list[dict]) -> str:
    rows = [
        ["&".join(f"{k}={v}" for k, v in params.items())[:44], kind, t["total"], d["total"]]
        for (params, kind), t, d in zip(QUERIES, ts_hits, db_hits)
    ]
    return "\n".join(harness.table([("query", "<44"), ("kind", "<11"), ("typesense", ">9"), ("database", ">9")], rows))


def goals(results: dict) -> tuple[str, dict]:
    """The goals beside what this run measured (typo-free queries), and the same as JSON."""
    db_p95, ts_p95 = results["database typo-free"]["p95_ms"], results["typesense typo-free"]["p95_ms"]
    share = ts_p95 / db_p95 if ts_p95 is not None and db_p95 else None
    met_db = db_p95 is not None and db_p95 <= GOAL_FALLBACK_P95_MS
    met_ts = share is not None and share < GOAL_TYPESENSE_SHARE
    lines = [
        f"goal: fallback p95 on typo-free queries <= {GOAL_FALLBACK_P95_MS:g} ms: {harness.fig(db_p95)} ms "
        f"({'met' if met_db else 'NOT met'})",
        f"goal: Typesense p95 < {GOAL_TYPESENSE_SHARE:g} x the fallback's (typo-free): {harness.fig(ts_p95)} ms = "
        f"{'?' if share is None else f'{share:.2f}'} x ({'met' if met_ts else 'NOT met'})",
    ]
    return "\n".join(lines), {
        "fallback_p95_ms": db_p95,
        "fallback_p95_goal_ms": GOAL_FALLBACK_P95_MS,
        "fallback_met": met_db,
        "typesense_share": None if share is None else round(share, 3),
        "typesense_share_goal": GOAL_TYPESENSE_SHARE,
        "typesense_met": met_ts,
    }


def bench(stack, args) -> None:
    env = harness.shop_env(stack, TYPESENSE_COLLECTION=ALIAS)
    say(f"services: DATABASE_URL={env['DATABASE_URL']}, TYPESENSE_URL={env['TYPESENSE_URL']}")
    active, indexing = prepare(env, args)
    down = {**env, "TYPESENSE_URL": f"http://127.0.0.1:{harness.free_port()}", "TYPESENSE_TIMEOUT": "0.5"}
    targets = {
        "typesense": harness.start_gunicorn(stack, "search-ts", "wsgi:app", "/healthz", env, args),
        "database": harness.start_gunicorn(stack, "search-db", "wsgi:app", "/healthz", down, args),
    }
    paths = [path(params) for params, _ in QUERIES]
    typo_free = [path(params) for params, kind in QUERIES if kind != "typo"]
    ts_hits, db_hits = hits(targets["typesense"][0]), hits(targets["database"][0])
    engines = {name: {h["engine"] for h in found} for name, found in (("typesense", ts_hits), ("database", db_hits))}
    if engines != {"typesense": {"typesense"}, "database": {"database"}}:
        raise RuntimeError(f"the targets were not answered by the engines they stand for: {engines}")
    setup = {
        **harness.machine(),
        "active_products": active,
        "queries": len(QUERIES),
        "typo_queries": sum(1 for _, k in QUERIES if k == "typo"),
        "gunicorn": harness.gunicorn_setup(args),
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "seconds": args.seconds,
        "client": args.client,
        "rounds": args.rounds,
        "indexing": indexing,
    }
    harness.say_setup(setup)
    harness.client_note(args)
    say(
        f"both engines in turn, {args.rounds} rounds of {args.seconds / args.rounds:g}s, {len(paths)} queries in turn "
        f"(then the {len(typo_free)} typo-free ones)"
    )
    measured = {name: (server, paths) for name, server in targets.items()}
    measured.update({f"{name} typo-free": (server, typo_free) for name, server in targets.items()})
    results = harness.run_interleaved(measured, args)
    shown = f"/api/v1/search?q=<{len(QUERIES)} queries in turn, {setup['typo_queries']} with typos>&per_page=20"
    goal_lines, goal_json = goals(results)
    print(
        f"\n{table(results, shown)}\n\n{goal_lines}\n\nHits per query (total matches):\n{hits_table(ts_hits, db_hits)}\n",
        flush=True,
    )
    hits_json = [
        {"query": q, "kind": k, "typesense": t["total"], "database": d["total"]}
        for (q, k), t, d in zip(QUERIES, ts_hits, db_hits)
    ]
    harness.write_results("search", {"setup": setup, "results": results, "goals": goal_json, "hits": hits_json})
    harness.write_chart(
        "search",
        f"Search: Typesense and the PostgreSQL fallback, {active:,} active products",
        [
            harness.Bars(
                "Throughput per engine", "queries/s", list(results), {"q/s": [r["rps"] for r in results.values()]}
            ),
            harness.Bars(
                "Latency per engine (send to last byte)",
                "ms",
                list(results),
                {f"p{q}": [r[f"p{q}_ms"] for r in results.values()] for q in (50, 95, 99)},
                refs=[harness.Ref("goal for the fallback's p95", 300, goal=True)],
            ),
        ],
        setup=setup,
        note=f"GET /api/v1/search, {len(QUERIES)} queries in turn ({setup['typo_queries']} with typos), facets in every "
        f"answer; gunicorn {setup['gunicorn']}; {args.client} with {args.concurrency} keep-alive connections; both "
        f"engines in turn, {args.rounds} rounds of {args.seconds / max(1, args.rounds):g} s each.",
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    stack = harness.make_stack(DATABASE)
    return harness.run(stack, lambda: bench(stack, args))


if __name__ == "__main__":
    sys.exit(main())
