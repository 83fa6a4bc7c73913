"""Jobs without a fork per job: `.venv/bin/python bench/jobs.py` (run by `make bench`).

What is measured
    The same RQ jobs drained by `python worker.py --burst QUEUE` (the non-forking worker, the default: each job
    in the worker's own process) and by `python worker.py --burst --fork QUEUE` (RQ's forking worker: a
    work-horse process per job), the worker.py that `make run` and production run:
      no-op   os.getpid() on the `default` queue: what the worker itself costs per job
      mail    the shop's real mail job (shop.notifications.jobs.send_notification, order.confirmed) on `mail`:
              templates rendered, the sent_notification row claimed and marked sent in PostgreSQL (two
              commits), the mail posted by SendGrid's SDK to the fake SendGrid of tests/fakes/sendgrid.py,
              in this process (SendGrid itself is never called)
    jobs/s  the jobs over the time from the first job's start to the last one's end (RQ's started_at and
            ended_at), so the worker's start-up (create_app, registration) is left out; every job must have
            finished, and every mail must have reached the fake. The rounds alternate the two workers, so noise
            on the machine hits both alike; a row adds up its rounds (jobs over seconds).
    CPU     the CPU time of the worker process and its work-horses per job, less what a worker that finds nothing
            to do spends starting up and exiting (the jobs' share of PostgreSQL's and Redis's CPU is not in it):
            less at the mercy of other work on the machine than jobs/s, which a busy box drags toward the ratio of
            the two workers' round trips.
    Goal (issue 15, item 6): the non-forking worker at least 10x the forking worker's jobs/s.

How
    PostgreSQL and Redis (bench/harness.py, under var/bench/jobs, fsync off; BENCH_DATABASE_URL and
    BENCH_REDIS_URL to use running ones) in a database of its own (shop_bench_jobs), `flask db upgrade`; each
    round's jobs are enqueued in one pipeline before its worker starts. The workers' logs go to var/bench/jobs.
    A table on stdout, the figures as JSON and a PNG chart in bench/results/.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402 - needs the repository root on sys.path
from bench.harness import ROOT, say  # noqa: E402

DATABASE = "shop_bench_jobs"
VAR = harness.VAR / "jobs"
KINDS = {"noop": "default", "mail": "mail"}  # kind of job -> the queue it runs on
WORKERS = ("fork", "simple")
GOAL = 10.0  # the non-forking worker's jobs/s over the forking one's
PAYLOAD = {"lines": [], "link": "https://shop.example/orders/1", "total": "$10.00"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=2000, help="jobs of each kind per round for the non-forking worker")
    p.add_argument(
        "--fork-jobs", type=int, default=200, help="jobs of each kind per round for the forking worker (it is slow)"
    )
    p.add_argument("--rounds", type=int, default=2, help="rounds per worker and kind, alternating the workers")
    p.add_argument("--kinds", default=",".join(KINDS), help="which jobs to measure: noop, mail")
    args = p.parse_args(argv)
    kinds = args.kinds.split(",")
    if unknown := set(kinds) - set(KINDS):
        p.error(f"unknown kind(s): {', '.join(sorted(unknown))}")
    if min(args.jobs, args.fork_jobs, args.rounds) < 1:
        p.error("--jobs, --fork-jobs and --rounds must be at least 1")
    args.kinds = kinds
    return args


# -- one round ----------------------------------------------------------------------------------------------------
def enqueue(redis, kind: str, n: int, tag: str) -> list[str]:
    """n jobs of `kind` on its queue, in one pipeline; their ids."""
    from rq import Queue

    queue = Queue(KINDS[kind], connection=redis)
    if kind == "noop":
        data = [Queue.prepare_data("os.getpid") for _ in range(n)]
    else:
        data = [
            Queue.prepare_data(
                "shop.notifications.jobs.send_notification",
                args=("order.confirmed", f"bench{i}@example.com", {**PAYLOAD, "number": f"{tag}-{i}"}),
                kwargs={"key": f"bench:{tag}:{i}"},
            )
            for i in range(n)
        ]
    with redis.pipeline() as pipe:
        jobs = queue.enqueue_many(data, pipeline=pipe)
        pipe.execute()
    return [job.id for job in jobs]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain(env: dict[str, str], kind: str, worker: str, tag: str) -> tuple[float, float]:
    """Run worker.py --burst on the kind's queue until it is empty: (wall time, CPU seconds of the worker and its
    work-horses), start-up included."""
    argv = [sys.executable, "worker.py", "--burst", *(["--fork"] if worker == "fork" else []), KINDS[kind]]
    log = VAR / f"worker-{kind}-{worker}-{tag}.log"
    watch, cpu = harness.Stopwatch(), _children_cpu()
    with open(log, "wb") as out:
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv[1:])} exited with {done.returncode}; see {log}")
    return watch.seconds, _children_cpu() - cpu


def start_up_cpu(env: dict[str, str], worker: str) -> float:
    """The CPU seconds of a worker.py --burst that finds nothing to do (start-up and exit), the least of two."""
    return min(drain(env, "noop", worker, f"empty-{n}")[1] for n in range(2))


def measure(redis, env: dict[str, str], fake, kind: str, worker: str, n: int, idle_cpu: float) -> dict[str, Any]:
    """One round: n jobs enqueued, drained by one worker; jobs/s between the first start and the last end, and the
    worker's CPU (its work-horses' included) beyond what it spends starting up and exiting (`idle_cpu`)."""
    from rq.job import Job, JobStatus

    tag = f"{worker}-{secrets.token_hex(3)}"
    sent_before = len(fake.messages)
    ids = enqueue(redis, kind, n, tag)
    wall, cpu = drain(env, kind, worker, tag)
    jobs = Job.fetch_many(ids, connection=redis)
    unfinished = [
        i
        for i, job in zip(ids, jobs, strict=True)
        if job is None or job.get_status(refresh=False) != JobStatus.FINISHED
    ]
    if unfinished:
        raise RuntimeError(f"{len(unfinished)} of {n} {kind} jobs did not finish (first: {unfinished[0]})")
    if kind == "mail" and len(fake.messages) - sent_before != n:
        raise RuntimeError(f"{n} mail jobs finished but the fake SendGrid got {len(fake.messages) - sent_before}")
    first = min(job.started_at for job in jobs if job and job.started_at)
    last = max(job.ended_at for job in jobs if job and job.ended_at)
    seconds = (last - first).total_seconds()
    return {
        "kind": kind,
        "worker": worker,
        "jobs": n,
        "seconds": round(seconds, 3),
        "wall_s": round(wall, 2),
        "cpu_s": round(max(0.0, cpu - idle_cpu), 3),
    }


# -- reporting ----------------------------------------------------------------------------------------------------
def combine(rounds: list[dict[str, Any]], kinds: list[str]) -> list[dict[str, Any]]:
    """One row per kind and worker: its rounds' jobs over their seconds; the ratio over the forking worker."""
    rows = []
    for kind in kinds:
        by_worker = {}
        for worker in WORKERS:
            mine = [r for r in rounds if r["kind"] == kind and r["worker"] == worker]
            jobs, seconds, cpu = (sum(r[k] for r in mine) for k in ("jobs", "seconds", "cpu_s"))
            by_worker[worker] = {
                "kind": kind,
                "worker": worker,
                "jobs": jobs,
                "seconds": round(seconds, 3),
                "jobs_per_s": round(jobs / seconds, 1) if seconds > 0 else None,
                "ms_per_job": round(seconds * 1000 / jobs, 2) if jobs else None,
                "cpu_ms_per_job": round(cpu * 1000 / jobs, 2) if jobs else None,
                "rounds_jobs_per_s": [round(r["jobs"] / r["seconds"], 1) for r in mine if r["seconds"] > 0],
            }
        fork, simple = by_worker["fork"]["jobs_per_s"], by_worker["simple"]["jobs_per_s"]
        fork_cpu = by_worker["fork"]["cpu_ms_per_job"]
        for row in by_worker.values():
            row["x_fork"] = round(row["jobs_per_s"] / fork, 1) if fork and row["jobs_per_s"] else None
            row["cpu_x_fork"] = (
                round(fork_cpu / row["cpu_ms_per_job"], 1) if fork_cpu and row["cpu_ms_per_job"] else None
            )
        rows += [by_worker["fork"], by_worker["simple"]]
        by_worker["simple"]["goal_met"] = bool(fork and simple and simple >= GOAL * fork)
    return rows


def report(rows: list[dict[str, Any]]) -> list[str]:
    names = {"fork": "forking (--fork)", "simple": "non-forking"}
    columns = [
        ("job", "<6"),
        ("worker", "<17"),
        ("jobs", ">6"),
        ("jobs/s", ">8"),
        ("ms/job", ">7"),
        ("x fork", ">7"),
        ("CPU ms/job", ">10"),
        ("x less CPU", ">10"),
    ]
    lines = harness.table(
        columns,
        (
            [
                r["kind"],
                names[r["worker"]],
                r["jobs"],
                harness.fig(r["jobs_per_s"]),
                harness.fig(r["ms_per_job"], ".2f"),
                harness.fig(r["x_fork"]),
                harness.fig(r["cpu_ms_per_job"], ".2f"),
                harness.fig(r["cpu_x_fork"]),
            ]
            for r in rows
        ),
    )
    for r in rows:
        if r["worker"] == "simple":
            lines.append(
                f"goal: {r['kind']} jobs on the non-forking worker >= {GOAL:g}x the forking worker's jobs/s: "
                f"{harness.fig(r['x_fork'])}x ({'met' if r['goal_met'] else 'NOT met'})"
            )
    return lines


def bench(args: argparse.Namespace, stack) -> bool:
    from redis import Redis
    from redis import utils as redis_utils

    from tests.fakes.sendgrid import FakeSendGrid

    VAR.mkdir(parents=True, exist_ok=True)
    with FakeSendGrid() as fake:
        env = harness.shop_env(
            stack,
            SHOP_VAR_DIR=str(VAR),
            MAIL_BACKEND="sendgrid",
            SENDGRID_API_KEY=fake.api_key,
            SENDGRID_API_HOST=fake.url,
        )
        harness.flask_cli(env, "db", "upgrade")
        redis = Redis.from_url(env["REDIS_URL"])
        setup = {
            **harness.machine(),
            "jobs": args.jobs,
            "fork_jobs": args.fork_jobs,
            "rounds": args.rounds,
            "hiredis": redis_utils.HIREDIS_AVAILABLE,
        }
        harness.say_setup(setup)
        idle_cpu = {worker: start_up_cpu(env, worker) for worker in WORKERS}
        say(
            "start-up and exit of a worker with nothing to do: "
            + ", ".join(f"{w} {c:.2f} s CPU" for w, c in idle_cpu.items())
        )
        rounds = []
        for n in range(args.rounds):
            order = WORKERS if n % 2 == 0 else WORKERS[::-1]
            for kind in args.kinds:
                for worker in order:
                    jobs = args.fork_jobs if worker == "fork" else args.jobs
                    result = measure(redis, env, fake, kind, worker, jobs, idle_cpu[worker])
                    rounds.append(result)
                    say(
                        f"round {n + 1}/{args.rounds}: {kind} x {result['jobs']} on the {worker} worker: "
                        f"{result['jobs'] / result['seconds']:.1f} jobs/s, {result['cpu_s'] * 1000 / jobs:.2f} ms CPU a job "
                        f"({result['wall_s']:.1f} s with start-up)"
                    )
        rows = combine(rounds, args.kinds)
    print(f"\nRQ jobs drained by worker.py --burst, {os.cpu_count()} cores (start-up excluded)")
    print("\n".join(report(rows)), flush=True)
    harness.write_results("jobs", {"setup": setup, "rows": rows, "rounds": rounds})
    chart(rows, args, setup)
    return True


def chart(rows: list[dict[str, Any]], args: argparse.Namespace, setup: dict[str, Any]) -> None:
    """Jobs/s of both workers per kind of job, the goal drawn at 10x the forking one; CPU per job beside."""
    names = {"fork": "forking (--fork)", "simple": "non-forking"}
    by = {(r["kind"], r["worker"]): r for r in rows}
    panels: list[harness.Bars | harness.Line] = []
    for kind in args.kinds:
        fork = by[(kind, "fork")]["jobs_per_s"]
        panels.append(
            harness.Bars(
                f"{kind} jobs",
                "jobs/s",
                [names[w] for w in WORKERS],
                {"jobs/s": [by[(kind, w)]["jobs_per_s"] for w in WORKERS]},
                refs=[harness.Ref(f"goal: {GOAL:g}x forking", GOAL * fork if fork else None, goal=True)],
                fmt="{:,.1f}",
            )
        )
    panels.append(
        harness.Bars(
            "CPU per job (the worker and its work-horses)",
            "ms",
            list(args.kinds),
            {names[w]: [by[(kind, w)]["cpu_ms_per_job"] for kind in args.kinds] for w in WORKERS},
            fmt="{:,.2f}",
        )
    )
    harness.write_chart(
        "jobs",
        "RQ jobs drained by worker.py --burst: each job in the worker's process, or a work-horse per job (--fork)",
        panels,
        setup=setup,
        note=f"{args.jobs:,} jobs a round for the non-forking worker, {args.fork_jobs:,} for the forking one, "
        f"{args.rounds} round(s), start-up left out; mail: the shop's mail job against a fake SendGrid.",
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    stack = harness.make_stack(DATABASE, var=VAR, search=False)
    return harness.run(stack, lambda: bench(args, stack))


if __name__ == "__main__":
    sys.exit(main())
