"""A web worker's memory under a long mixed load: `make bench` (or `.venv/bin/python bench/memory.py --help`).

What is measured
    The resident set (VmRSS in /proc/<pid>/status) of the one gunicorn worker that serves a mix of shopper reads,
    read while it is idle after about 1,000 requests and again at a few points up to 20,000 (--requests). Goal
    (issue 15, item 7): RSS after 20,000 grows less than 10% over its RSS after 1,000; the first figure is the
    baseline because the first requests fill what a worker keeps for good (imported code, compiled templates, the
    connection pools, SQLAlchemy's statement cache). RssAnon (the process's own heap, without the shared-library
    pages counted in RssFile) is printed beside it: a leak shows there first. One worker (--workers 1), so the RSS is
    one process's; gthread x 4 threads as in the other benches.

    The mix, sent in one fixed order (each block of 19 requests holds every kind):
      cached      the response cache (shop/response_cache.py) answers after the first request of each path:
                  /  (1)   /c/<top category> (2)   /p/<one of 20 slugs> (3)
                  /api/v1/products?[category=<top category>&]per_page=20 (2)   /api/v1/products/<one of 20 slugs> (3)
      uncached    the app answers every one:
                  /search?q=<word> (2) and /api/v1/search?q=<word>&per_page=20 (2): no response cache in front
                  /p/<slug> (2) and /api/v1/products/<slug> (2) over every other product of the catalogue in
                  turn, so each is a first visit (both cache levels miss) until the tail comes round again,
                  after (products - 20) x 19 / 2 requests (about 18,800 with the default 2,000 products)
    The slugs, names (search words come from them) and categories are read from the API first, as
    bench/catalog.py does; those set-up reads count among the worker's requests.

How
    1. PostgreSQL, Redis and Typesense under var/bench/memory (bench/harness.py, fsync off; BENCH_DATABASE_URL etc.
       to use running ones), database shop_bench_memory; `flask db upgrade`, `flask seed demo --if-empty
       --products N` (kept between runs; --reseed replaces it), `flask search reindex`.
    2. gunicorn `wsgi:app` with one worker; its pid from /proc/<master>/task/<master>/children.
    3. The load (wrk through bench/wrk.py, or --client python) in whole-second runs that each continue the mix
       where the last one stopped, until the next reading point is passed; the RSS is read between runs. A
       reading's request count is the worker's requests up to then (a run overshoots its point a little).
    4. A table on stdout with the goal marked met or NOT met, JSON in bench/results/; everything it started is
       stopped. A worker that restarted (its pid changed) voids the comparison, and the bench says so.
Other processes on the machine do not change a worker's RSS much, but they slow the run; the figures are this box's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402 - needs the repository root on sys.path
from bench.harness import say  # noqa: E402

DATABASE = "shop_bench_memory"
VAR = harness.VAR / "memory"
HOT = 20  # products whose pages and API answers are asked for again and again (cache hits)
GOAL = 10.0  # % growth from the baseline reading to the last
# (kind, cached, requests per block): one block of the mix
MIX = [
    ("home", True, 1),
    ("category", True, 2),
    ("product", True, 3),
    ("api products", True, 2),
    ("api product", True, 3),
    ("search", False, 2),
    ("api search", False, 2),
    ("product (tail)", False, 2),
    ("api product (tail)", False, 2),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench import wrk

    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--products", type=int, default=2000, help="size of the demo catalogue")
    p.add_argument("--reseed", action="store_true", help="replace an existing catalogue instead of keeping it")
    p.add_argument("--requests", type=int, default=20_000, help="requests by the last reading")
    p.add_argument("--baseline", type=int, default=1000, help="requests by the reading the growth is measured from")
    p.add_argument(
        "--points",
        default="2500,5000,10000,15000",
        help="readings between the baseline and the last (comma-separated request counts)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="client connections (one per gthread thread)")
    p.add_argument(
        "--client",
        choices=["wrk", "python"],
        default="wrk" if wrk.available() else "python",
        help="load generator: wrk (the default when installed) or bench/load.py's Python threads",
    )
    p.add_argument("--client-threads", type=int, default=1, help="wrk threads (more would each resend the tail)")
    harness.add_server_args(p)
    p.set_defaults(workers=1)
    args = p.parse_args(argv)
    if args.workers != 1:
        p.error("--workers must be 1: the RSS measured is one worker's")
    if not 0 < args.baseline < args.requests:
        p.error("--baseline must be between 0 and --requests")
    try:
        points = {int(x) for x in args.points.split(",") if x.strip()}
    except ValueError:
        p.error("--points: comma-separated request counts")
    args.points = sorted({args.baseline, args.requests} | {n for n in points if args.baseline < n < args.requests})
    return args


# -- the worker -------------------------------------------------------------------------------------------------
def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"gunicorn {master} has {len(children)} workers, not 1: {children}")
    return int(children[0])


def memory(pid: int) -> dict[str, Any]:
    """The worker's VmRSS, RssAnon, RssFile and VmHWM (MB) and threads, from /proc/<pid>/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    mb = {
        out: round(int(fields[key][0]) / 1024, 2)
        for key, out in (("VmRSS", "rss_mb"), ("RssAnon", "anon_mb"), ("RssFile", "file_mb"), ("VmHWM", "hwm_mb"))
        if key in fields
    }
    return {"pid": pid, **mb, "threads": int(fields["Threads"][0])}


# -- the mix ----------------------------------------------------------------------------------------------------
def catalogue(port: int) -> tuple[list[str], list[dict[str, Any]], int]:
    """Top-level category slugs, every active product (slug and name) through the API, and the requests it took."""
    sent = 1
    rows = json.loads(harness.get(port, "/api/v1/categories"))
    rows = rows.get("items", rows) if isinstance(rows, dict) else rows
    top = [c["slug"] for c in rows if not c.get("parent_id")]
    products: list[dict[str, Any]] = []
    page = 1
    while True:
        body = json.loads(harness.get(port, f"/api/v1/products?per_page=100&page={page}", timeout=30))
        sent += 1
        products += [{"slug": p["slug"], "name": p["name"]} for p in body["items"]]
        if not body["items"] or len(products) >= body["total"]:
            break
        page += 1
    if not top or len(products) <= HOT:
        raise RuntimeError(f"the catalogue API gave {len(top)} top categories and {len(products)} products")
    return top, products, sent


def words(products: list[dict[str, Any]]) -> list[str]:
    """Search words from the products' names: each name's longest word, lower case, in order of first sight."""
    seen: dict[str, None] = {}
    for p in products:
        word = max(p["name"].split(), key=len).strip(",.()").lower()
        if len(word) >= 3:
            seen.setdefault(word, None)
    return list(seen) or ["shirt"]


def mix(top: list[str], products: list[dict[str, Any]], length: int) -> tuple[list[str], dict[str, list[str]]]:
    """`length` paths in the order they are sent (block after block, each kind from its own list in turn), and each
    kind's list."""
    hot = [p["slug"] for p in products[:HOT]]
    tail = [p["slug"] for p in products[HOT:]]
    queries = words(products)
    kinds = {
        "home": ["/"],
        "category": [f"/c/{c}" for c in top],
        "product": [f"/p/{s}" for s in hot],
        "api products": ["/api/v1/products?per_page=20"]
        + [f"/api/v1/products?{urlencode({'category': c, 'per_page': 20})}" for c in top],
        "api product": [f"/api/v1/products/{s}" for s in hot],
        "search": [f"/search?{urlencode({'q': q})}" for q in queries],
        "api search": [f"/api/v1/search?{urlencode({'q': q, 'per_page': 20})}" for q in queries],
        "product (tail)": [f"/p/{s}" for s in tail],
        "api product (tail)": [f"/api/v1/products/{s}" for s in tail],
    }
    turn = dict.fromkeys(kinds, 0)
    out: list[str] = []
    while len(out) < length:
        for kind, _cached, n in MIX:
            for _ in range(n):
                out.append(kinds[kind][turn[kind] % len(kinds[kind])])
                turn[kind] += 1
    return out[:length], kinds


# -- the run ----------------------------------------------------------------------------------------------------
def growth(rss: float, base: float) -> float:
    return round((rss - base) / base * 100, 2)


def table(readings: list[dict[str, Any]], base: dict[str, Any]) -> str:
    columns = [
        ("requests", ">8"),
        ("RSS MB", ">7"),
        ("growth %", ">8"),
        ("anon MB", ">7"),
        ("anon growth %", ">13"),
        ("req/s", ">6"),
        ("errors", ">6"),
    ]
    rows = [
        [
            f"{r['requests']:,}",
            f"{r['rss_mb']:.1f}",
            f"{growth(r['rss_mb'], base['rss_mb']):+.1f}" if r["requests"] >= base["requests"] else "",
            f"{r['anon_mb']:.1f}",
            f"{growth(r['anon_mb'], base['anon_mb']):+.1f}" if r["requests"] >= base["requests"] else "",
            harness.fig(r.get("rps"), ".0f"),
            r.get("errors", ""),
        ]
        for r in readings
    ]
    return "\n".join(harness.table(columns, rows))


def bench(stack: Any, args: argparse.Namespace) -> bool:
    env = harness.shop_env(stack)
    say(f"services: DATABASE_URL={env['DATABASE_URL']}, REDIS_URL={env['REDIS_URL']}")
    harness.flask_cli(env, "db", "upgrade")
    watch = harness.Stopwatch()
    out = harness.flask_cli(
        env, "seed", "demo", "--reset" if args.reseed else "--if-empty", "--products", str(args.products)
    )
    say(f"seed: {out.strip().splitlines()[-1]} ({watch.seconds:.0f}s)")
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM product").fetchone()
    if row and row[0] != args.products:
        say(f"warning: the catalogue has {row[0]} products, not {args.products} (--reseed replaces it)")
    watch = harness.Stopwatch()
    out = harness.flask_cli(env, "search", "reindex")
    say(f"index: {out.strip().splitlines()[-1] if out.strip() else 'done'} ({watch.seconds:.0f}s)")
    port, master = harness.start_gunicorn(stack, "memory", "wsgi:app", "/healthz", env, args)
    pid = worker_pid(master)
    top, products, sent = catalogue(port)
    done = sent + 1  # the readiness check's /healthz
    paths, kinds = mix(top, products, args.requests * 2)
    block = sum(n for *_, n in MIX)
    setup = {
        **harness.machine(),
        "products": len(products),
        "gunicorn": harness.gunicorn_setup(args),
        "worker_pid": pid,
        "concurrency": args.concurrency,
        "client": args.client,
        "requests": args.requests,
        "baseline": args.baseline,
        "points": args.points,
        "mix_per_block": {kind: n for kind, _, n in MIX},
        "cached_share": round(sum(n for _, cached, n in MIX if cached) / block, 3),
        "distinct_paths": {kind: len(v) for kind, v in kinds.items()},
        "setup_requests": done,
        "cache_ttl_s": env.get("CACHE_TTL_SECONDS", "60 (default)"),
    }
    harness.say_setup(setup)
    harness.client_note(args)
    readings = [{"requests": done, **memory(pid)}]
    say(f"after the set-up ({done} requests): RSS {readings[0]['rss_mb']:.1f} MB")
    rate, offset, wanted = 0.0, 0, 0  # offset: where in `paths` the next run starts
    for point in args.points:
        if done >= point:
            continue  # passed already (a reading is taken where a run ends)
        sent_here, ok_here, errors, seconds = 0, 0, 0, 0.0
        while done < point:
            # Whole seconds (wrk's -d), aimed just short of the point from the last run's rate, and at most twice as
            # long as the last run (a cold worker's first second is slow; the warm one would overshoot).
            wanted = 1 if not rate else max(1, min(2 * wanted, int((point - done) * 0.9 / rate)))
            room = int((rate or 2000) * (wanted + 5))  # more than the run can send: it never comes round again
            while len(paths) < offset + room:
                paths += mix(top, products, args.requests)[0]
            r = harness.run_target(port, master, paths[offset : offset + room], args, seconds=wanted, warmup=0)
            got = r["sent_with_warmup"]
            if not got:
                raise RuntimeError(f"the worker answered nothing in {wanted}s: {r}")
            rate = got / max(r["seconds"], 1e-9)
            done, offset, sent_here, ok_here = done + got, offset + got, sent_here + got, ok_here + r["requests"]
            errors += r["errors"]
            seconds += r["seconds"]
        now = worker_pid(master)
        if now != pid:
            raise RuntimeError(f"the worker restarted ({pid} -> {now}): its RSS says nothing about growth")
        reading = {
            "requests": done,
            **memory(pid),
            "rps": round(sent_here / seconds, 1) if seconds else None,
            "ok": ok_here,
            "errors": errors,
        }
        readings.append(reading)
        say(f"{done:,} requests: RSS {reading['rss_mb']:.1f} MB, anon {reading['anon_mb']:.1f} MB")
    base = next(r for r in readings if r["requests"] >= args.baseline)
    last = readings[-1]
    grew = growth(last["rss_mb"], base["rss_mb"])
    met = grew < GOAL
    errors = sum(r.get("errors", 0) for r in readings)
    print(f"\nWorker {pid} ({harness.gunicorn_setup(args)}), {len(products)} products\n{table(readings, base)}")
    print(
        f"goal: RSS grows < {GOAL:g}% from {args.baseline:,} to {args.requests:,} requests: "
        f"{base['rss_mb']:.1f} MB at {base['requests']:,} -> {last['rss_mb']:.1f} MB at {last['requests']:,} = "
        f"{grew:+.1f}% ({'met' if met else 'NOT met'}); anon {growth(last['anon_mb'], base['anon_mb']):+.1f}%"
    )
    if errors:
        print(f"errors (non-2xx/3xx or socket): {errors}")
    print(flush=True)
    harness.write_results(
        "memory",
        {
            "setup": setup,
            "readings": readings,
            "baseline": base,
            "growth_pct": grew,
            "anon_growth_pct": growth(last["anon_mb"], base["anon_mb"]),
            "goal_pct": GOAL,
            "met": met,
        },
    )
    chart(readings, base, setup)
    return not errors


def chart(readings: list[dict[str, Any]], base: dict[str, Any], setup: dict[str, Any]) -> None:
    """The worker's RSS (and its anonymous part) over the requests it served, with the goal's limit."""
    harness.write_chart(
        "memory",
        "Memory of one web worker under a mixed load",
        [
            harness.Line(
                "Resident set size over requests",
                "MB",
                "requests served by the worker",
                [r["requests"] for r in readings],
                {
                    "VmRSS": [r["rss_mb"] for r in readings],
                    "RssAnon (its own heap)": [r["anon_mb"] for r in readings],
                },
                refs=[
                    harness.Ref(
                        f"goal: VmRSS below +{GOAL:g}% over the baseline, MB",
                        base["rss_mb"] * (1 + GOAL / 100),
                        goal=True,
                    )
                ],
                marks={base["requests"]: f"baseline ({base['requests']:,})"},
            )
        ],
        setup=setup,
        note=f"gunicorn {setup['gunicorn']}; {setup['products']:,} products; {setup['client']} with "
        f"{setup['concurrency']} connections; {setup['cached_share']:.0%} of the mix answered by the response cache.",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    VAR.mkdir(parents=True, exist_ok=True)
    stack = harness.make_stack(DATABASE, var=VAR)
    return harness.run(stack, lambda: bench(stack, args))


if __name__ == "__main__":
    sys.exit(main())
