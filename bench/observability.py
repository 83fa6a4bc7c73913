"""What observability costs per request: `.venv/bin/python bench/observability.py` (run by `make bench`).

What is measured
    Requests/s, latency (p50/p95, from sending a GET to the last byte of its body) and the gunicorn workers' CPU
    per request (`cpu ms/r`, from /proc, warm-up included) of the same shop (`wsgi:app`) in four set-ups:
      off       METRICS=off, no OTEL_EXPORTER_OTLP_ENDPOINT, LOG_FORMAT=text: no counting, no GET /metrics, no
                spans (the baseline)
      metrics   metrics on (the default), PROMETHEUS_MULTIPROC_DIR at a fresh empty directory per gunicorn (as
                gunicorn's workers run in production); no tracing, LOG_FORMAT=text
      tracing   metrics as above, plus traces exported over OTLP/HTTP with OTEL_TRACES_SAMPLER=
                parentbased_traceidratio and OTEL_TRACES_SAMPLER_ARG=0.1 (a tenth of the requests sampled)
      json      tracing as above, plus LOG_FORMAT=json: one access line per request (production's default)
    on two catalogue reads, each on its own:
      api       /api/v1/products?category=men&per_page=20
      product   /p/<slug>, 50 real slugs in turn
    Every set-up runs with CACHE_ENABLED=0, so every request runs the app (views, SQL, templates) and the
    instrumentation has the work it wraps: with the response cache on, most requests would be Redis reads and
    the share observability takes of them would be larger. ABUSE_LIMITS=off, as the other benches: one client
    address sends everything. `vs off` is the change of a row's median requests/s from the baseline's on the
    same target; `cpu vs off` the same for cpu ms/r (less at the mercy of other work on the machine than
    requests/s). Goal (the issue): requests/s at most 5% lower with metrics on, at most 15% lower with tracing
    sampled at 10%; the json row, production's set-up, is held to the tracing goal.
    The traces go to a stand-in collector in this process (see How, 3). Its figures show they were exported:
    export requests and bytes received, spans, and traces (root spans, one per sampled request) over the
    requests the set-up answered, which should be near 10%; spans a trace is 1.0 when only the request's own
    span arrives (the SQL statements' spans missing: the bench says so). A set-up that exported no spans at all
    fails the run. The shop_http_requests_total of GET /metrics is printed beside the requests each set-up with
    metrics on answered (its readiness polls come on top); the baseline's /metrics must answer 404.

How
    1. An embedded PostgreSQL and Redis under var/bench/observability (bench/harness.py, fsync off), unless
       BENCH_DATABASE_URL / BENCH_REDIS_URL point at running ones, with a database of its own (shop_bench_obs):
       `flask db upgrade` and `flask seed demo --if-empty --products N` (bench/catalog.py's prepare_database;
       the database persists between runs, --reseed replaces the catalogue).
    2. Four gunicorns, one per set-up, with bench/catalog.py's set-up (2 workers, gthread with 4 threads each by
       default), each on a free port; their logs (the json set-up's access lines too) in var/bench.
    3. The OTLP sink: a ThreadingHTTPServer in a thread of this process, on a free port, answering every POST to
       <prefix>/v1/traces with 200, an empty body and Content-Type application/x-protobuf, and keeping what it
       got; each tracing set-up exports under its own prefix, so the figures are per set-up. The spans are
       decoded (opentelemetry-proto) only after the measurements, so the sink costs next to nothing meanwhile.
       After the last round the bench waits 6 s, the batch span processor's delay (5 s) and a second, so the
       last batches arrive.
    4. Every path must answer 200 in every set-up first. Then the load: wrk (bench/wrk.py; `sudo apt-get install
       wrk`) with --concurrency keep-alive connections, or bench/load.py's Python threads (--client python, the
       fallback when wrk is missing). For each target, the four set-ups are measured one after another, in an
       order that rotates each round, --rounds times (an unrecorded warm-up before the first round), each time
       for --seconds / --rounds: a burst of noise on the machine then hits every set-up alike. A row is the median
       of its rounds (requests/s, p50, p95, cpu ms/r, client cpu). `client cpu` is the load generator's share of
       all the cores during its runs: near one core's share (50% here) per thread, the client is saturated.
    5. A table on stdout, the figures (every round's too) as JSON and a PNG chart in bench/results/; everything it
       started is stopped (also on Ctrl-C or SIGTERM), the metrics directories removed.
The load generator, the gunicorns and PostgreSQL share the machine's cores, so absolute figures are this box's
(and any other busy process skews them: the JSON records the load average); the changes against off travel better,
though a few per cent is within a busy two-core box's noise: more --rounds and --seconds narrow it.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402 - needs the repository root on sys.path
from bench.catalog import CATEGORY, prepare_database  # noqa: E402
from bench.harness import say  # noqa: E402

DATABASE = "shop_bench_obs"
VAR = harness.VAR / "observability"
SAMPLE_RATIO = "0.1"
BATCH_DELAY_S = 6.0  # the SDK's BatchSpanProcessor exports every 5 s (OTEL_BSP_SCHEDULE_DELAY): then one more
# Set-up -> what it sets (the tracing ones also get OTEL_EXPORTER_OTLP_ENDPOINT, the metrics ones a fresh
# PROMETHEUS_MULTIPROC_DIR).
SETUPS: dict[str, dict[str, str]] = {
    "off": {"METRICS": "off", "LOG_FORMAT": "text"},
    "metrics": {"METRICS": "on", "LOG_FORMAT": "text"},
    "tracing": {
        "METRICS": "on",
        "LOG_FORMAT": "text",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": SAMPLE_RATIO,
    },
    "json": {
        "METRICS": "on",
        "LOG_FORMAT": "json",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": SAMPLE_RATIO,
    },
}
NAMES = {
    "off": "off (METRICS=off, no tracing, text logs)",
    "metrics": "metrics on (multiprocess)",
    "tracing": "metrics + tracing 10%",
    "json": "metrics + tracing 10% + JSON logs",
}
GOALS = {"metrics": 5.0, "tracing": 15.0, "json": 15.0}  # at most this many per cent fewer requests/s than off
# Settings a developer's environment must not slip into a set-up.
CLEARED = ("METRICS", "LOG_FORMAT", "PROMETHEUS_MULTIPROC_DIR", "SENTRY_DSN")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--products", type=int, default=2000, help="size of the demo catalogue")
    p.add_argument("--reseed", action="store_true", help="replace an existing catalogue instead of keeping it")
    harness.add_load_args(p, seconds=12.0)
    harness.add_server_args(p)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        p.error("--rounds must be at least 1 and --seconds above 0")
    return args


# -- the stand-in collector ---------------------------------------------------------------------------------------
class OtlpSink:
    """An OTLP/HTTP trace collector that only listens: 200 to every POST <prefix>/v1/traces, the bodies kept by
    prefix (a set-up's name) and decoded when asked (stats())."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, list[tuple[str, bytes]]] = {}  # prefix -> (Content-Encoding, body) per request
        self.refused = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a collector would: the exporter's session reuses it

            def do_POST(self) -> None:
                length = self.headers.get("Content-Length")
                prefix, found, rest = self.path.rpartition("/v1/traces")
                if length is None or not found or rest:
                    with sink.lock:
                        sink.refused += 1
                    self.send_response(411 if length is None else 404)
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    return
                body = self.rfile.read(int(length))
                with sink.lock:
                    sink.received.setdefault(prefix.strip("/"), []).append(
                        (self.headers.get("Content-Encoding", ""), body)
                    )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-sink", daemon=True)
        self.thread.start()

    def endpoint(self, prefix: str) -> str:
        """OTEL_EXPORTER_OTLP_ENDPOINT for a set-up: the shop posts to <this>/v1/traces."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/{prefix}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def stats(self, prefix: str) -> dict[str, int]:
        """What `prefix`'s set-up exported: requests, bytes (as sent), spans, and traces (root spans)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        with self.lock:
            got = list(self.received.get(prefix, []))
        spans = roots = 0
        for encoding, body in got:
            message = ExportTraceServiceRequest.FromString(gzip.decompress(body) if encoding == "gzip" else body)
            for resource_spans in message.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    spans += len(scope_spans.spans)
                    roots += sum(1 for s in scope_spans.spans if not s.parent_span_id)
        return {"requests": len(got), "bytes": sum(len(b) for _, b in got), "spans": spans, "traces": roots}


# -- checks -------------------------------------------------------------------------------------------------------
def status(port: int, path: str) -> int:
    """The status of GET `path`, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def counted_requests(port: int) -> int | None:
    """The shop_http_requests_total that GET /metrics reports (all routes, all workers), None if unreadable."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = harness.get(port, "/metrics", timeout=10).decode()
    except OSError:
        return None
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "shop_http_requests_total"
        )
    )


# -- reporting ----------------------------------------------------------------------------------------------------
def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def change(value: float | None, base: float | None) -> float | None:
    """Per cent change of `value` from `base`."""
    if value is None or not base:
        return None
    return round((value / base - 1) * 100, 2)


def summarise(rounds: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """target -> set-up -> the medians of its rounds, its change from off, and its goal."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (target, setup), measured in rounds.items():
        out.setdefault(target, {})[setup] = {
            "rps": median([r["rps"] for r in measured]),
            "p50_ms": median([r["p50_ms"] for r in measured]),
            "p95_ms": median([r["p95_ms"] for r in measured]),
            "server_cpu_ms_per_req": median([r["server_cpu_ms_per_req"] for r in measured]),
            "client_cpu_share": median([r["client_cpu_share"] for r in measured]),
            "rounds_rps": [r["rps"] for r in measured],
            "requests": sum(r["requests"] for r in measured),
            "errors": sum(r["errors"] for r in measured),
            "errors_by_kind": [r["errors_by_kind"] for r in measured if r["errors_by_kind"]],
        }
    for rows in out.values():
        off = rows["off"]
        for setup, row in rows.items():
            row["rps_vs_off_pct"] = change(row["rps"], off["rps"])
            row["cpu_vs_off_pct"] = change(row["server_cpu_ms_per_req"], off["server_cpu_ms_per_req"])
            goal = GOALS.get(setup)
            row["goal_max_lower_pct"] = goal
            vs = row["rps_vs_off_pct"]
            row["goal_met"] = None if goal is None or vs is None else vs >= -goal
    return out


def report(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    columns = [
        ("set-up", "<8"),
        ("target", "<8"),
        ("req/s", ">7"),
        ("p50 ms", ">7"),
        ("p95 ms", ">7"),
        ("errors", ">6"),
        ("cpu ms/r", ">8"),
        ("client cpu", ">10"),
        ("vs off", ">7"),
        ("cpu vs off", ">10"),
        ("goal", "<20"),
    ]

    def pct(value: float | None) -> str:
        return "" if value is None else f"{value:+.1f}%"

    rows = []
    for target, by_setup in results.items():
        for setup, r in by_setup.items():
            goal = ""
            if r["goal_max_lower_pct"] is not None:
                goal = f"<={r['goal_max_lower_pct']:g}% lower: " + ("met" if r["goal_met"] else "NOT met")
            rows.append(
                [
                    setup,
                    target,
                    harness.fig(r["rps"]),
                    harness.fig(r["p50_ms"], ".2f"),
                    harness.fig(r["p95_ms"], ".2f"),
                    r["errors"],
                    harness.fig(r["server_cpu_ms_per_req"], ".2f"),
                    f"{r['client_cpu_share']:.0%}" if r["client_cpu_share"] is not None else "",
                    pct(r["rps_vs_off_pct"]) if setup != "off" else "",
                    pct(r["cpu_vs_off_pct"]) if setup != "off" else "",
                    goal,
                ]
            )
    lines = harness.table(columns, rows)
    lines += [
        f"errors in {setup} {target}: {r['errors_by_kind']}"
        for target, by_setup in results.items()
        for setup, r in by_setup.items()
        if r["errors"]
    ]
    return lines


# -- the run ------------------------------------------------------------------------------------------------------
def bench(stack, args: argparse.Namespace, sink: OtlpSink, metrics_dirs: list[Path]) -> bool:
    base = harness.shop_env(stack, CACHE_ENABLED="0", ABUSE_LIMITS="off")
    for key in [k for k in base if k in CLEARED or k.startswith("OTEL_")]:
        del base[key]
    say(f"services: DATABASE_URL={base['DATABASE_URL']}, REDIS_URL={base['REDIS_URL']}")
    n_products = prepare_database(base, args)
    if n_products != args.products:
        say(f"warning: the catalogue has {n_products} products, not {args.products} (--reseed replaces it)")

    servers: dict[str, tuple[int, int]] = {}  # set-up -> (port, gunicorn master pid)
    settings: dict[str, dict[str, str]] = {}
    for setup, extra in SETUPS.items():
        env = {**base, **extra}
        if extra["METRICS"] == "on":
            metrics_dirs.append(Path(tempfile.mkdtemp(prefix=f"prometheus-{setup}-", dir=VAR)))
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dirs[-1])
        if "OTEL_TRACES_SAMPLER" in extra:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint(setup)
        settings[setup] = {k: env[k] for k in sorted(env) if k in extra or k in CLEARED or k.startswith("OTEL_")}
        settings[setup].update(CACHE_ENABLED="0", ABUSE_LIMITS="off")
        servers[setup] = harness.start_gunicorn(stack, f"obs-{setup}", "wsgi:app", "/healthz", env, args)

    slugs = [p["slug"] for p in json.loads(harness.get(servers["off"][0], "/api/v1/products?per_page=50"))["items"]]
    if not slugs:
        raise RuntimeError("the catalogue API returned no products")
    targets = {
        "api": [f"/api/v1/products?category={CATEGORY}&per_page=20"],
        "product": [f"/p/{s}" for s in slugs],
    }
    checked = dict.fromkeys(SETUPS, 0)  # requests the checks sent, per set-up (the traced share's denominator)
    for setup, (port, _) in servers.items():
        for paths in targets.values():
            for path in paths:
                if (code := status(port, path)) != 200:
                    raise RuntimeError(f"{setup}: GET {path} answered {code}, not 200")
                checked[setup] += 1
        wanted = 404 if SETUPS[setup]["METRICS"] == "off" else 200
        if (code := status(port, "/metrics")) != wanted:
            raise RuntimeError(f"{setup}: GET /metrics answered {code}, not {wanted}")
    say(f"every path answers 200 in every set-up ({len(targets['product'])} product pages); /metrics as expected")

    setup_info = {
        **harness.machine(),
        "products": n_products,
        "gunicorn": harness.gunicorn_setup(args),
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "client": args.client,
        "shop_env": base["SHOP_ENV"],
        "ports": {setup: port for setup, (port, _) in servers.items()},
        "otlp_sink": sink.endpoint(""),
    }
    harness.say_setup(setup_info)
    harness.client_note(args)
    share = args.seconds / args.rounds
    whole = f" (wrk's window is whole seconds: {max(round(share), 1)}s)" if args.client == "wrk" else ""
    say(f"{len(targets)} targets x {len(SETUPS)} set-ups, {args.rounds} rounds of {share:g}s each{whole}")

    order = list(SETUPS)
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {(t, s): [] for t in targets for s in SETUPS}
    for n in range(args.rounds):
        turn = order[n % len(order) :] + order[: n % len(order)]
        for target, paths in targets.items():
            for setup in turn:
                port, pid = servers[setup]
                measured = harness.run_target(
                    port, pid, paths, args, seconds=share, warmup=args.warmup if n == 0 else 0
                )
                rounds[(target, setup)].append(measured)
        say(
            f"round {n + 1}/{args.rounds}: "
            + "; ".join(
                f"{target} " + ", ".join(f"{s} {rounds[(target, s)][-1]['rps']:.0f}/s" for s in order)
                for target in targets
            )
        )
    results = summarise(rounds)

    answered = {
        setup: checked[setup] + sum(r["sent_with_warmup"] for t in targets for r in rounds[(t, setup)])
        for setup in SETUPS
    }
    say(f"waiting {BATCH_DELAY_S:g}s for the last span batches")
    time.sleep(BATCH_DELAY_S)
    exported: dict[str, dict[str, Any]] = {}
    for setup, extra in SETUPS.items():
        if "OTEL_TRACES_SAMPLER" in extra:
            got = sink.stats(setup)
            got["traced_share"] = round(got["traces"] / answered[setup], 4) if answered[setup] else None
            exported[setup] = got
    counted = {s: counted_requests(servers[s][0]) for s, extra in SETUPS.items() if extra["METRICS"] == "on"}

    print(
        f"\nCatalogue reads with observability off and on (CACHE_ENABLED=0), gunicorn {setup_info['gunicorn']}, "
        f"{args.concurrency} connections; medians of {args.rounds} round(s)"
    )
    print("\n".join(report(results)))
    print()
    for setup, got in exported.items():
        per_trace = got["spans"] / max(1, got["traces"])
        traced = None if got["traced_share"] is None else got["traced_share"] * 100
        print(
            f"OTLP sink, {setup}: {got['requests']} export requests, {got['bytes'] / 1024:,.0f} KiB, "
            f"{got['spans']:,} spans in {got['traces']:,} traces ({per_trace:.1f} a trace) = {harness.fig(traced)}% "
            f"of the {answered[setup]:,} requests answered (sampler ratio {float(SAMPLE_RATIO):.0%})"
        )
        if got["traces"] and got["spans"] <= got["traces"]:
            print(
                f"  note: {setup}'s traces hold their request span only (no SQL, Redis or HTTP child spans): see "
                f"var/bench/gunicorn-obs-{setup}.log for an instrumentor that refused to instrument"
            )
    if sink.refused:
        print(f"OTLP sink refused {sink.refused} request(s) (no Content-Length or not /v1/traces)")
    for setup, n in counted.items():
        print(
            f"GET /metrics, {setup}: shop_http_requests_total {harness.fig(n, ',')} "
            f"(the set-up answered {answered[setup]:,} to the bench, plus its readiness polls)"
        )
    for setup, goal in GOALS.items():
        verdicts = ", ".join(
            f"{target} {results[target][setup]['rps_vs_off_pct']:+.1f}% "
            f"({'met' if results[target][setup]['goal_met'] else 'NOT met'})"
            for target in targets
        )
        print(f"goal: {NAMES[setup]}: requests/s at most {goal:g}% lower than off: {verdicts}")
    print(flush=True)

    harness.write_results(
        "observability",
        {
            "setup": setup_info,
            "settings": settings,
            "paths": {t: p[0] if len(p) == 1 else f"/p/<{len(p)} slugs in turn>" for t, p in targets.items()},
            "results": results,
            "otlp_sink": exported,
            "metrics_counted": counted,
            "answered": answered,
            "rounds": {f"{t}:{s}": measured for (t, s), measured in rounds.items()},
        },
    )
    chart(results, setup_info)
    missing = [setup for setup, got in exported.items() if not got["spans"]]
    if missing:
        say(f"FAILED: the sink received no spans from {', '.join(missing)}; see var/bench/gunicorn-obs-*.log")
        return False
    return True


def chart(results: dict[str, dict[str, dict[str, Any]]], setup: dict[str, Any]) -> None:
    """Requests/s of each set-up per target, and each one's share of off's with the goals as lines."""
    targets = {"api": "catalogue API\n/api/v1/products", "product": "product page\n/p/<slug>"}
    harness.write_chart(
        "observability",
        "Catalogue reads with metrics, tracing and JSON logs off and on (response cache off)",
        [
            harness.Bars(
                "Throughput per target",
                "requests/s (median round)",
                list(targets.values()),
                {NAMES[s]: [results[t][s]["rps"] for t in targets] for s in SETUPS},
            ),
            harness.Bars(
                "Requests/s as a share of off's",
                "% of off's requests/s",
                list(targets.values()),
                {  # off too (100%), so each set-up keeps its colour from the first panel
                    NAMES[s]: [
                        100.0 if s == "off" else None if r is None else 100 + r
                        for t in targets
                        for r in [results[t][s]["rps_vs_off_pct"]]
                    ]
                    for s in SETUPS
                },
                refs=[
                    harness.Ref("goal for metrics", 100 - GOALS["metrics"], goal=True),
                    harness.Ref("goal for tracing 10%", 100 - GOALS["tracing"], goal=True),
                ],
                fmt="{:.1f}%",
            ),
        ],
        setup=setup,
        note=f"{setup['products']:,} products, CACHE_ENABLED=0; gunicorn {setup['gunicorn']}; {setup['client']} with "
        f"{setup['concurrency']} keep-alive connections; set-ups in turn per target, {setup['rounds']} rounds of "
        f"{setup['seconds'] / max(1, setup['rounds']):g} s each, medians.",
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    VAR.mkdir(parents=True, exist_ok=True)
    stack = harness.make_stack(DATABASE, var=VAR, search=False)
    sink = OtlpSink()
    metrics_dirs: list[Path] = []
    try:
        return harness.run(stack, lambda: bench(stack, args, sink, metrics_dirs))
    finally:  # after run() has stopped the gunicorns
        sink.stop()
        for directory in metrics_dirs:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
