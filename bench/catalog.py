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
    1. An embedded PostgreSQL, Redis and Typesense under var/bench (shop.devstack.Stack, fsync off),
       unless BENCH_DATABASE_URL / BENCH_REDIS_URL / BENCH_TYPESENSE_URL point at running ones.
    2. `flask db upgrade` and `flask seed demo --if-empty --products N` (the database persists
       between runs; --reseed replaces the catalogue, `make clean` removes var/bench).
    3. Three gunicorns with the same set-up (2 workers, gthread with 4 threads each by default): the
       shop (`wsgi:app`) with the cache, the shop without it, and the bare app, each on a free port. gthread because gunicorn's sync
       worker closes every connection after one response (gunicorn/workers/sync.py, force_close),
       so keep-alive clients would reconnect per request; 2 x 4 threads also give one slot per
       client at the default concurrency of 8. `--worker-class sync` measures the other set-up.
    4. Per target, a separate load process (bench/load.py, spawned with multiprocessing) runs a
       closed loop over keep-alive connections: a warm-up, then the measured window.
    5. A table on stdout, the same figures as JSON in bench/results/, and everything it started
       is stopped (also on Ctrl-C or SIGTERM).
The load generator, the gunicorns and PostgreSQL share the machine's cores, so absolute figures are
this box's (and any other busy process skews them: the JSON records the load average); ratios travel better.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import queue
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import load  # noqa: E402 - needs ROOT on sys.path
from shop.devstack import Stack  # noqa: E402

VAR = ROOT / "var" / "bench"
RESULTS = ROOT / "bench" / "results"
SERVICES = ("DATABASE_URL", "REDIS_URL", "TYPESENSE_URL", "TYPESENSE_API_KEY")
CATEGORY = "men"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--products", type=int, default=2000, help="size of the demo catalogue")
    p.add_argument("--reseed", action="store_true", help="replace an existing catalogue instead of keeping it")
    p.add_argument("--seconds", type=float, default=7.0, help="measured window per target")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded warm-up per target")
    p.add_argument("--concurrency", type=int, default=8, help="client connections per target")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    p.add_argument("--worker-class", choices=["gthread", "sync"], default="gthread")
    p.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    return p.parse_args(argv)


def say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return resp.read()


def start_services(stack: Stack) -> dict[str, str]:
    """URLs of the services: BENCH_* ones as given, the rest started by the stack."""
    for key in SERVICES:
        if os.environ.get(f"BENCH_{key}"):
            os.environ[key] = os.environ[f"BENCH_{key}"]
        else:
            os.environ.pop(key, None)  # never a developer's DATABASE_URL by accident
    return stack.start()


def flask_cli(env: dict, *argv: str) -> str:
    """Run `flask --app wsgi ARGV...`; its output, or an error carrying what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *argv], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"flask {' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def prepare_database(env: dict, args) -> int:
    """Migrate and seed; return the number of products in the catalogue."""
    flask_cli(env, "db", "upgrade")
    out = flask_cli(env, "seed", "demo", "--reset" if args.reseed else "--if-empty", "--products", str(args.products))
    say("seed: " + out.strip().splitlines()[-1])
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as conn:
        return conn.execute("SELECT count(*) FROM product").fetchone()[0]


def start_gunicorn(stack: Stack, name: str, app: str, ready_path: str, env: dict, args) -> tuple[int, int]:
    """Serve `app` on a free port with the bench's gunicorn set-up; (port, master pid) once it answers."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        app,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "--worker-class",
        args.worker_class,
        "--graceful-timeout",
        "5",
        "--log-level",
        "warning",
    ]
    if args.worker_class == "gthread":
        argv += ["--threads", str(args.threads)]
    log = VAR / f"gunicorn-{name}.log"
    env = {"PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **env}  # absolute links point at this gunicorn
    proc = stack.spawn(f"gunicorn-{name}", argv, env=env, log=log, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn {name} exited with {proc.returncode}; see {log}")
        try:
            get(port, ready_path, timeout=2)
            return port, proc.pid
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn {name} did not answer {ready_path} in 60s; see {log}")


def workers_cpu(master_pid: int) -> float | None:
    """CPU seconds (user + system) the gunicorn master's workers have used so far; None off Linux."""
    try:
        total = 0.0
        for pid in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total
    except (OSError, IndexError, ValueError):
        return None


def run_target(port: int, master_pid: int, paths: list[str], args) -> dict:
    """One measurement in a fresh load process (terminated if we are interrupted), plus the
    gunicorn workers' CPU per request, warm-up included: the app's cost, whatever the client's."""
    cpu_before = workers_cpu(master_pid)
    ctx = multiprocessing.get_context("spawn")
    answers = ctx.Queue()
    proc = ctx.Process(
        target=load.run_in_child,
        daemon=True,
        args=(answers, "127.0.0.1", port, paths, args.concurrency, args.warmup, args.seconds),
    )
    proc.start()
    try:
        result = answers.get(timeout=args.warmup + args.seconds + 60)
        proc.join(timeout=10)
    except queue.Empty:
        raise RuntimeError(f"the load process gave no answer (exit code {proc.exitcode})") from None
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join()
    if "failed" in result:
        raise RuntimeError(f"load process failed: {result['failed']}")
    cpu_after = workers_cpu(master_pid)
    result["server_cpu_ms_per_req"] = (
        round((cpu_after - cpu_before) * 1000 / result["sent_with_warmup"], 2)
        if cpu_before is not None and cpu_after is not None
        else None
    )
    return result


def table(results: dict[str, dict], paths: dict[str, str]) -> str:
    fmt = "{:<9} {:<5} {:<42} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8} {:>7} {:>10}"
    lines = [
        fmt.format(
            "target",
            "cache",
            "path",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "errors",
            "conns",
            "cpu ms/r",
            "x bare",
            "x no-cache",
        ),
        "-" * 132,
    ]
    for key, r in results.items():
        name, _, mode = key.partition(":")
        figs = [
            f"{r[k]:.1f}" if r[k] is not None else "-"
            for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "server_cpu_ms_per_req")
        ]
        ratio = f"{r['ratio_to_bare']:.3f}" if r["ratio_to_bare"] is not None else "-"
        speedup = f"{r['ratio_to_no_cache']:.2f}" if r.get("ratio_to_no_cache") else ""
        lines.append(
            fmt.format(
                name, mode or "-", paths[name][:42], *figs[:4], r["errors"], r["connections"], figs[4], ratio, speedup
            )
        )
    lines += [f"errors in {name}: {r['errors_by_kind']}" for name, r in results.items() if r["errors_by_kind"]]
    return "\n".join(lines)


def bench(stack: Stack, args) -> None:
    env = {
        **os.environ,
        **start_services(stack),
        "SHOP_ENV": "development",
        "SECRET_KEY": secrets.token_hex(32),
        "PYTHONUNBUFFERED": "1",
    }
    say("services: " + ", ".join(f"{k}={env[k]}" for k in SERVICES[:3]))
    n_products = prepare_database(env, args)
    if n_products != args.products:
        say(f"warning: the catalogue has {n_products} products, not {args.products} (--reseed replaces it)")
    shop = start_gunicorn(stack, "shop", "wsgi:app", "/healthz", {**env, "CACHE_ENABLED": "1"}, args)
    nocache = start_gunicorn(stack, "shop-nocache", "wsgi:app", "/healthz", {**env, "CACHE_ENABLED": "0"}, args)
    bare = start_gunicorn(stack, "bare", "bench.bare_app:app", "/bare", env, args)
    slugs = [p["slug"] for p in json.loads(get(nocache[0], "/api/v1/products?per_page=50"))["items"]]
    if not slugs:
        raise RuntimeError("the catalogue API returned no products")
    catalogue = {
        "category": [f"/c/{CATEGORY}"],
        "product": [f"/p/{s}" for s in slugs],
        "api": [f"/api/v1/products?category={CATEGORY}&per_page=20"],
    }
    for paths in catalogue.values():  # the cache must not change an answer: same bytes with and without it
        for path in paths[:5]:
            get(shop[0], path)  # fill the cache, then compare what it serves
            if get(shop[0], path) != get(nocache[0], path):
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
    threads = f" x {args.threads} threads" if args.worker_class == "gthread" else ""
    setup = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "products": n_products,
        "gunicorn": f"{args.workers} workers, {args.worker_class}{threads}",
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "seconds": args.seconds,
        "shop_env": env["SHOP_ENV"],
        "shop_port": shop[0],
        "shop_nocache_port": nocache[0],
        "bare_port": bare[0],
        "cache_ttl_s": env.get("CACHE_TTL_SECONDS", "60 (default)"),
    }
    say("setup: " + ", ".join(f"{k}={v}" for k, v in setup.items()))
    results = {}
    for key, ((port, pid), paths) in targets.items():
        name, _, mode = key.partition(":")
        cache = f" (cache {mode})" if mode else ""
        say(f"{name}{cache}: {shown[name]}, {args.warmup:g}s warm-up + {args.seconds:g}s")
        results[key] = run_target(port, pid, paths, args)
    floor = results["bare"]["rps"]
    for key, r in results.items():
        r["ratio_to_bare"] = round(r["rps"] / floor, 4) if floor else None
        if key.endswith(":on"):
            off = results[key[:-3] + ":off"]["rps"]
            r["ratio_to_no_cache"] = round(r["rps"] / off, 3) if off else None
    print(f"\n{table(results, shown)}\n", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"catalog-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"setup": setup, "paths": shown, "results": results}, indent=2) + "\n")
    say(f"wrote {out.relative_to(ROOT)}")


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    stack = Stack(
        VAR, ports={"postgres": 0, "redis": 0, "typesense": 0}, database="shop_bench", quiet=True, durable=False
    )
    try:
        bench(stack, args)
        return 0
    except KeyboardInterrupt:
        say("interrupted; stopping")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stack.stop()
        say(f"stopped everything; {time.monotonic() - started:.0f}s in all")


if __name__ == "__main__":
    sys.exit(main())
