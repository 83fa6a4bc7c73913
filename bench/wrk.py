"""The HTTP load generator of the benches: wrk (a compiled, event-driven client), so the client is not what limits
the figures. A Python client on the same two cores measured a bare one-query Flask endpoint at 976 req/s where wrk
measures about 3,000: the instrument had set the ceiling.

`measure()` runs wrk with a fixed number of keep-alive connections and threads over a list of paths (a Lua script
sends them in turn and prints its summary as JSON), and records wrk's own CPU time: `client_cpu_share` is the share
of the machine's cores the client used during the window. Near 1/cores or more per thread, the client is saturated
and the row's requests/s says more about the client than about the server.

wrk is Debian's (and Ubuntu's) `wrk` package: `sudo apt-get install wrk`; Homebrew: `brew install wrk`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

INSTALL_HINT = "wrk is not installed: `sudo apt-get install wrk` (Debian, Ubuntu) or `brew install wrk` (macOS)"

# Paths in turn (each wrk thread keeps its own counter); the summary as one JSON line on stdout.
LUA = """
local paths = {%(paths)s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "bytes": %%d, "connect": %%d, "read": %%d, "write": %%d, ' ..
    '"status": %%d, "timeout": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d, "max_us": %%d, "mean_us": %%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
"""


def available() -> str | None:
    """The path of the wrk binary, or None."""
    return shutil.which("wrk")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(port: int, paths: list[str], *, connections: int, threads: int, seconds: float) -> dict[str, Any]:
    """One wrk run against 127.0.0.1:`port`: requests/s, latency percentiles, errors and the client's CPU share.
    Requests answered with a status other than 2xx or 3xx count as errors (wrk's `status`), as do socket errors."""
    binary = available()
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    quoted = ", ".join(json.dumps(p) for p in paths)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % {"paths": quoted})
    try:
        threads = max(1, min(threads, connections))
        argv = [binary, "-t", str(threads), "-c", str(connections), "-d", f"{max(round(seconds), 1)}s", "--latency"]
        argv += ["-s", script.name, f"http://127.0.0.1:{port}{paths[0]}"]
        cpu_before, wall_before = _children_cpu(), time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        wall, cpu = time.perf_counter() - wall_before, _children_cpu() - cpu_before
    finally:
        Path(script.name).unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    line = next((x for x in done.stdout.splitlines() if x.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {done.stdout[-500:]}")
    s = json.loads(line)
    window = s["duration_us"] / 1e6
    errors = {k: s[k] for k in ("connect", "read", "write", "status", "timeout") if s[k]}
    ok = s["requests"] - s["status"]
    return {
        "client": "wrk",
        "requests": ok,
        "seconds": round(window, 3),
        "rps": round(ok / window, 1) if window > 0 else 0.0,
        "p50_ms": s["p50_us"] / 1000,
        "p95_ms": s["p95_us"] / 1000,
        "p99_ms": s["p99_us"] / 1000,
        "mean_ms": round(s["mean_us"] / 1000, 3),
        "max_ms": s["max_us"] / 1000,
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "connections": connections,
        "threads": threads,
        "sent_with_warmup": s["requests"],
        "client_cpu_s": round(cpu, 3),
        "client_cpu_share": round(cpu / (wall * (os.cpu_count() or 1)), 3) if wall > 0 else None,
    }


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Several interleaved rounds of one target as one row: requests/s over the summed windows; latency
    percentiles as the request-weighted mean of the rounds' (an approximation: wrk keeps its histogram to
    itself); errors, requests and client CPU summed."""
    total = sum(r["requests"] for r in rounds) or 1
    window = sum(r["seconds"] for r in rounds)
    errors: dict[str, int] = {}
    for r in rounds:
        for kind, n in r["errors_by_kind"].items():
            errors[kind] = errors.get(kind, 0) + n
    out = dict(rounds[-1])
    out.update(
        requests=sum(r["requests"] for r in rounds),
        seconds=round(window, 3),
        rps=round(sum(r["requests"] for r in rounds) / window, 1) if window else 0.0,
        errors=sum(errors.values()),
        errors_by_kind=errors,
        sent_with_warmup=sum(r["sent_with_warmup"] for r in rounds),
        rounds=len(rounds),
        client_cpu_s=round(sum(r.get("client_cpu_s") or 0 for r in rounds), 3),
    )
    for key in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"):
        out[key] = round(sum((r[key] or 0) * r["requests"] for r in rounds) / total, 3)
    out["max_ms"] = max(r["max_ms"] or 0 for r in rounds)
    shares = [r["client_cpu_share"] for r in rounds if r["client_cpu_share"] is not None]
    out["client_cpu_share"] = round(sum(shares) / len(shares), 3) if shares else None
    return out
