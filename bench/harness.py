"""What the bench scripts share (bench/catalog.py, checkout.py, search.py, events.py, memory.py).

    the stack     make_stack(): the embedded PostgreSQL, Redis (and Typesense) under var/bench, fsync off;
                  start_services() / shop_env(): BENCH_DATABASE_URL etc. when set, never a developer's own
                  DATABASE_URL; start_gunicorn(): the shop (or bench/bare_app.py) under the bench's gunicorn set-up
    the run       run(): the script's work, then everything it started is stopped (also on Ctrl-C or SIGTERM)
    measuring     Stopwatch; run_target(): wrk (bench/wrk.py) or bench/load.py's closed loop, plus the gunicorn
                  workers' CPU per request and the client's CPU share; run_interleaved(): targets in turn, in
                  rounds; percentile() (nearest rank), milliseconds(), percentiles()
    reporting     say(), say_setup(), machine(), table() and fig() for the tables on stdout, write_results() for
                  the JSON in bench/results/, write_chart() for a PNG beside it (matplotlib: Bars and Line
                  panels, Ref lines, the machine and the date in a caption)

The scripts put the repository root on sys.path before importing this module.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import queue
import resource
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from shop.devstack import Stack

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"
RESULTS = ROOT / "bench" / "results"
SERVICES = ("DATABASE_URL", "REDIS_URL", "TYPESENSE_URL", "TYPESENSE_API_KEY")


# -- reporting --------------------------------------------------------------------------------------------------
def say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def machine() -> dict[str, Any]:
    """The set-up figures every bench records: a busy box (the load average) skews absolute figures."""
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}


def say_setup(setup: dict[str, Any]) -> None:
    say("setup: " + ", ".join(f"{k}={v}" for k, v in setup.items()))


def fig(value: float | None, spec: str = ".1f") -> str:
    """A figure for a table, or "-" when there is none."""
    return format(value, spec) if value is not None else "-"


def table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a text table: the header, a rule as wide as it, one line per row. A column is (title, format
    spec), e.g. ("req/s", ">7"); a row gives its cells in column order."""
    fmt = " ".join(f"{{:{spec}}}" for _, spec in columns)
    header = fmt.format(*(title for title, _ in columns))
    return [header, "-" * len(header), *(fmt.format(*row) for row in rows)]


_written: dict[str, Path] = {}  # name -> the JSON write_results() last wrote (write_chart() names its PNG alike)


def write_results(name: str, data: dict[str, Any]) -> Path:
    """The figures as JSON in bench/results/<name>-<date>-<time>.json; says where."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    _written[name] = out
    say(f"wrote {out.relative_to(ROOT)}")
    return out


# -- charts -----------------------------------------------------------------------------------------------------
@dataclass
class Ref:
    """A horizontal line across a panel: a reference figure (solid grey) or a goal (dashed red)."""

    label: str
    value: float | None
    goal: bool = False


@dataclass
class Bars:
    """A panel of grouped bars: one group per entry of `groups`, in it one bar per series (legend label -> one
    value per group; None leaves the bar out). Each bar carries its value, formatted with `fmt`."""

    title: str
    ylabel: str
    groups: Sequence[str]
    series: dict[str, Sequence[float | None]]
    refs: Sequence[Ref] = ()
    fmt: str = "{:,.0f}"
    xlabel: str = ""


@dataclass
class Line:
    """A panel of lines over a shared x: legend label -> one y per x (None leaves the point out)."""

    title: str
    ylabel: str
    xlabel: str
    x: Sequence[float]
    series: dict[str, Sequence[float | None]]
    refs: Sequence[Ref] = ()
    fmt: str = "{:,.1f}"
    from_zero: bool = True  # the y axis starts at 0, so a small change looks small
    marks: dict[float, str] = field(default_factory=dict)  # x -> a label on a vertical dotted line


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown CPU"


def caption(setup: dict[str, Any] | None = None, note: str = "") -> str:
    """The machine and the date for a chart: CPU, cores, the load average before the measurements (from `setup`,
    machine()'s keys, when given; else now), Python, then `note`."""
    setup = {**machine(), **(setup or {})}
    text = (
        f"{_cpu_model()}, {setup['cpus']} cores, load average {setup['loadavg_1m']} (1 min, before measuring); "
        f"Python {setup['python']}; {datetime.now():%Y-%m-%d %H:%M}."
    )
    return f"{text} {note}".strip()


def write_chart(
    name: str,
    title: str,
    panels: Sequence[Bars | Line],
    *,
    setup: dict[str, Any] | None = None,
    note: str = "",
) -> Path | None:
    """`panels` side by side in one PNG, bench/results/<the stem of the JSON write_results(name) last wrote>.png
    (a new stem when there is none); `title` above, the caption (caption(setup, note)) below. Drawn with
    matplotlib's Agg backend (no display needed); says where. None, after saying why, without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        say("matplotlib is not installed (`make install` puts it in .venv): no chart")
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = _written.get(name, RESULTS / f"{name}-{datetime.now():%Y%m%d-%H%M%S}.json").with_suffix(".png")
    width = max(8.0, 5.6 * len(panels))
    lines = textwrap.wrap(caption(setup, note), width=int(width * 15))
    height = 5.2 + 0.16 * len(lines)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, height), squeeze=False)
    colours = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    thousands = FuncFormatter(lambda v, _pos: f"{v:,.0f}")
    label_box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.2}  # a line never strikes a value
    for ax, panel in zip(axes[0], panels):
        top = 0.0
        if isinstance(panel, Bars):
            n = max(1, len(panel.series))
            slot = 0.8 / n
            for i, (label, values) in enumerate(panel.series.items()):
                xs = [g + (i - (n - 1) / 2) * slot for g in range(len(panel.groups))]
                heights = [math.nan if v is None else v for v in values]
                bars = ax.bar(xs, heights, slot * 0.92, label=label, color=colours[i % len(colours)])
                ax.bar_label(
                    bars,
                    labels=["" if v is None else panel.fmt.format(v) for v in values],
                    fontsize=7.5,
                    padding=2,
                    bbox=label_box,
                )
                top = max([top, *(v for v in values if v is not None)])
            ax.set_xticks(range(len(panel.groups)), list(panel.groups))
            ax.set_xlim(-0.6, len(panel.groups) - 0.4)
        else:
            for i, (label, values) in enumerate(panel.series.items()):
                points = [(x, y) for x, y in zip(panel.x, values) if y is not None]
                ax.plot(*zip(*points), marker="o", label=label, color=colours[i % len(colours)])
                for x, y in points:
                    ax.annotate(
                        panel.fmt.format(y),
                        (x, y),
                        textcoords="offset points",
                        xytext=(0, 6),
                        ha="center",
                        fontsize=7,
                        bbox=label_box,
                    )
                top = max([top, *(y for _, y in points)])
            for x, label in panel.marks.items():
                ax.axvline(x, color="grey", linestyle=":", linewidth=1)
                ax.annotate(label, (x, 0), xytext=(3, 4), textcoords="offset points", fontsize=7.5, color="dimgrey")
            ax.xaxis.set_major_formatter(thousands)
        for ref in panel.refs:
            if ref.value is None:
                continue
            style = {"color": "tab:red", "linestyle": "--"} if ref.goal else {"color": "dimgrey", "linestyle": "-"}
            ax.axhline(ref.value, linewidth=1.2, label=f"{ref.label}: {panel.fmt.format(ref.value)}", **style)
            top = max(top, ref.value)
        if isinstance(panel, Bars) or panel.from_zero:
            ax.set_ylim(0, (top or 1) * 1.4)  # room above the bars for their labels and the legend
        ax.yaxis.set_major_formatter(thousands if top >= 10 else FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_title(panel.title, fontsize=10.5)
        ax.set_ylabel(panel.ylabel)
        ax.set_xlabel(panel.xlabel)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    fig.suptitle(title, fontsize=13)
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=8, va="bottom", ha="left", color="dimgrey")
    fig.tight_layout(rect=(0, (0.25 + 0.16 * len(lines)) / height, 1, 0.95))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    say(f"wrote {out.relative_to(ROOT)}")
    return out


# -- measuring --------------------------------------------------------------------------------------------------
class Stopwatch:
    """Started when made; `seconds` is the time since (time.monotonic)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending list; None for an empty one."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def milliseconds(seconds: Iterable[float]) -> list[float]:
    """Durations in seconds as ascending milliseconds, to the microsecond."""
    return sorted(round(s * 1000, 3) for s in seconds)


def percentiles(sorted_ms: Sequence[float]) -> dict[str, float | None]:
    """p50_ms, p95_ms and p99_ms of ascending milliseconds."""
    return {f"p{q}_ms": percentile(sorted_ms, q) for q in (50, 95, 99)}


# -- the stack and the servers ----------------------------------------------------------------------------------
class _StackWithoutSearch(Stack):
    """PostgreSQL and Redis only (the event path needs no search)."""

    def _start_typesense(self) -> str:
        return "http://127.0.0.1:9"


def make_stack(database: str, *, var: Path = VAR, search: bool = True) -> Stack:
    """The bench's servers on free ports under `var`, fsync off (started by start_services(), stopped by run())."""
    if search:
        return Stack(
            var, ports={"postgres": 0, "redis": 0, "typesense": 0}, database=database, quiet=True, durable=False
        )
    return _StackWithoutSearch(var, ports={"postgres": 0, "redis": 0}, database=database, quiet=True, durable=False)


def start_services(stack: Stack, keys: Sequence[str] = SERVICES) -> dict[str, str]:
    """URLs of the services: BENCH_* ones as given, the rest started by the stack."""
    for key in keys:
        if os.environ.get(f"BENCH_{key}"):
            os.environ[key] = os.environ[f"BENCH_{key}"]
        else:
            os.environ.pop(key, None)  # never a developer's DATABASE_URL by accident
    return stack.start()


def shop_env(stack: Stack, **settings: str) -> dict[str, str]:
    """The environment of the bench's shop processes: the services' URLs, development settings, a fresh secret
    key, then `settings`."""
    return {
        **os.environ,
        **start_services(stack),
        "SHOP_ENV": "development",
        "SECRET_KEY": secrets.token_hex(32),
        "PYTHONUNBUFFERED": "1",
        **settings,
    }


def flask_cli(env: dict[str, str], *argv: str) -> str:
    """Run `flask --app wsgi ARGV...`; its output, or an error carrying what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *argv], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"flask {' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return bytes(resp.read())


def add_server_args(p: argparse.ArgumentParser) -> None:
    """The gunicorn set-up options (see start_gunicorn)."""
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    p.add_argument("--worker-class", choices=["gthread", "sync"], default="gthread")
    p.add_argument("--threads", type=int, default=4, help="threads per gthread worker")


def add_load_args(p: argparse.ArgumentParser, *, seconds: float) -> None:
    """The closed-loop load options (see run_target)."""
    from bench import wrk

    p.add_argument("--seconds", type=float, default=seconds, help="measured window per target (all rounds)")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded warm-up per target")
    p.add_argument("--concurrency", type=int, default=8, help="client connections per target")
    p.add_argument(
        "--client",
        choices=["wrk", "python"],
        default="wrk" if wrk.available() else "python",
        help="load generator: wrk (compiled; the default when installed) or bench/load.py's Python threads",
    )
    p.add_argument("--client-threads", type=int, default=1, help="wrk threads (one core is plenty for wrk)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="the targets are measured in turn, this many times each (noise then hits all of them alike)",
    )


def client_note(args: argparse.Namespace) -> None:
    """Say which load generator runs, and how to get wrk when it is missing."""
    from bench import wrk

    if args.client == "python":
        say(
            "client: bench/load.py (Python threads); it shares the cores with the servers and can be the limit. "
            + ("" if wrk.available() else wrk.INSTALL_HINT)
        )
    else:
        say(f"client: wrk ({wrk.available()}), {args.concurrency} connections, {args.client_threads} thread(s)")


def gunicorn_setup(args: argparse.Namespace) -> str:
    """The set-up in words, for the JSON: "2 workers, gthread x 4 threads"."""
    threads = f" x {args.threads} threads" if args.worker_class == "gthread" else ""
    return f"{args.workers} worker{'' if args.workers == 1 else 's'}, {args.worker_class}{threads}"


def start_gunicorn(
    stack: Stack, name: str, app: str, ready_path: str, env: dict[str, str], args: argparse.Namespace
) -> tuple[int, int]:
    """Serve `app` on a free port with the bench's gunicorn set-up; (port, master pid) once it answers.

    gthread by default because gunicorn's sync worker closes every connection after one response
    (gunicorn/workers/sync.py, force_close), so keep-alive clients would reconnect per request."""
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


def cpu_ms_per(before: float | None, after: float | None, count: int) -> float | None:
    """Milliseconds of the workers' CPU per request between two workers_cpu() readings."""
    if before is None or after is None or not count:
        return None
    return round((after - before) * 1000 / count, 2)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_target(
    port: int,
    master_pid: int,
    paths: list[str],
    args: argparse.Namespace,
    *,
    seconds: float | None = None,
    warmup: float | None = None,
) -> dict[str, Any]:
    """One measurement (`seconds`, default args.seconds, after `warmup`) with args.client, plus the gunicorn
    workers' CPU per request, warm-up included (the app's cost, whatever the client's), and the client's share of
    the machine's CPU during the run (`client_cpu_share`: near 1/cores per client thread, the client is the limit)."""
    seconds = args.seconds if seconds is None else seconds
    warmup = args.warmup if warmup is None else warmup
    cpu_before, client_before, wall_before = workers_cpu(master_pid), _children_cpu(), time.perf_counter()
    if args.client == "wrk":
        from bench import wrk

        warm = {"sent_with_warmup": 0}
        if warmup > 0:
            warm = wrk.measure(port, paths, connections=args.concurrency, threads=args.client_threads, seconds=warmup)
        result = wrk.measure(port, paths, connections=args.concurrency, threads=args.client_threads, seconds=seconds)
        result["sent_with_warmup"] += warm["sent_with_warmup"]
    else:
        result = _python_load(port, paths, args, seconds, warmup)
    wall, client = time.perf_counter() - wall_before, _children_cpu() - client_before
    result["client_cpu_share"] = round(client / (wall * (os.cpu_count() or 1)), 3) if wall > 0 else None
    result["server_cpu_ms_per_req"] = cpu_ms_per(cpu_before, workers_cpu(master_pid), result["sent_with_warmup"])
    return result


def _python_load(port: int, paths: list[str], args: argparse.Namespace, seconds: float, warmup: float) -> dict:
    """bench/load.py in a fresh process (terminated if we are interrupted)."""
    from bench import load  # (load imports this module)

    ctx = multiprocessing.get_context("spawn")
    answers = ctx.Queue()
    proc = ctx.Process(
        target=load.run_in_child,
        daemon=True,
        args=(answers, "127.0.0.1", port, paths, args.concurrency, warmup, seconds),
    )
    proc.start()
    try:
        result: dict[str, Any] = answers.get(timeout=warmup + seconds + 60)
        proc.join(timeout=10)
    except queue.Empty:
        raise RuntimeError(f"the load process gave no answer (exit code {proc.exitcode})") from None
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join()
    if "failed" in result:
        raise RuntimeError(f"load process failed: {result['failed']}")
    result["client"] = "python"
    return result


def run_interleaved(
    targets: dict[str, tuple[tuple[int, int], list[str]]], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Every target measured in turn, args.rounds times (the order rotating each round), each time for
    args.seconds / args.rounds after its warm-up (the first round only): a burst of noise on the machine then
    hits every target alike, and the ratios between them hold. One combined row per target."""
    from bench import wrk

    keys = list(targets)
    rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    share = args.seconds / max(1, args.rounds)
    for n in range(max(1, args.rounds)):
        order = keys[n % len(keys) :] + keys[: n % len(keys)]
        for key in order:
            (port, pid), paths = targets[key]
            rounds[key].append(run_target(port, pid, paths, args, seconds=share, warmup=args.warmup if n == 0 else 0))
        say(f"round {n + 1}/{args.rounds}: " + ", ".join(f"{k} {rounds[k][-1]['rps']:.0f}/s" for k in keys))
    out = {}
    for key, measured in rounds.items():
        combined = wrk.combine(measured)
        cpu = [r["server_cpu_ms_per_req"] for r in measured if r["server_cpu_ms_per_req"] is not None]
        combined["server_cpu_ms_per_req"] = round(sum(cpu) / len(cpu), 2) if cpu else None
        out[key] = combined
    return out


# -- the run ----------------------------------------------------------------------------------------------------
def run(stack: Stack, work: Callable[[], bool | None], *, also_stop: Sequence[Callable[[], None]] = ()) -> int:
    """The exit status of `work()` (1 when it returns False, else 0; 130 when interrupted), after stopping what
    `also_stop` names and everything the stack started: also on Ctrl-C or SIGTERM."""
    watch = Stopwatch()
    main_pid = os.getpid()

    def on_sigterm(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:  # a forked child (bench/events.py's processes) just ends, as it would have
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return 1 if work() is False else 0
    except KeyboardInterrupt:
        say("interrupted; stopping")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        for stop in also_stop:
            stop()
        stack.stop()
        say(f"stopped everything; {watch.seconds:.0f}s in all")
