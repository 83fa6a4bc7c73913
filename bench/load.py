"""The load generator of bench/catalog.py and bench/search.py, run in a process of its own (never inside gunicorn;
bench/harness.py's run_target() starts it).

`measure()` opens `concurrency` keep-alive HTTP/1.1 connections (one `http.client.HTTPConnection`
per client thread), each sending its next GET as soon as the previous answer is read: a closed
loop, so the offered load adapts to the server and the figures are throughput at that concurrency.
The paths are shared out round-robin. The first `warmup` seconds are not recorded; then, for
`seconds`, every request started in the window is timed from sending to the last byte of the body.
Only a 200 counts as a success; any other status or a socket error is an error, listed by kind.
A connection the server closes (`Connection: close`) is reopened and counted, so the number of
connections shows whether keep-alive held.
"""

from __future__ import annotations

import http.client
import itertools
import signal
import threading
import time
from collections import Counter

from bench.harness import milliseconds, percentiles

HEADERS = {"Accept": "*/*", "Accept-Encoding": "identity", "User-Agent": "shop-bench"}


class _CountingConnection(http.client.HTTPConnection):
    """An HTTPConnection that counts how often it (re)connects."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.connects = 0

    def connect(self):
        self.connects += 1
        super().connect()


def _client(host, port, paths, tickets, record_from, stop_at, out):
    conn = _CountingConnection(host, port, timeout=30)
    latencies, errors = [], Counter()
    sent = 0
    while True:
        started = time.perf_counter()
        if started >= stop_at:
            break
        path = paths[next(tickets) % len(paths)]  # one shared round-robin (next() is atomic under the GIL)
        sent += 1
        try:
            conn.request("GET", path, headers=HEADERS)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            status = type(exc).__name__
        elapsed = time.perf_counter() - started
        if started < record_from:
            continue
        if status == 200:
            latencies.append(elapsed)
        else:
            errors[f"HTTP {status}" if isinstance(status, int) else status] += 1
    conn.close()
    out.append((latencies, errors, conn.connects, sent, time.perf_counter()))


def measure(host: str, port: int, paths: list[str], *, concurrency: int, warmup: float, seconds: float) -> dict:
    """Drive the server as described above; return the figures as a plain dict."""
    start = time.perf_counter()
    record_from, stop_at = start + warmup, start + warmup + seconds
    out: list = []
    tickets = itertools.count()
    threads = [
        threading.Thread(target=_client, daemon=True, args=(host, port, paths, tickets, record_from, stop_at, out))
        for n in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = milliseconds(x for lat, *_ in out for x in lat)
    errors = sum((e for _, e, *_ in out), Counter())
    window = max(end for *_, end in out) - record_from  # includes the last in-flight requests
    return {
        "requests": len(ms),
        "seconds": round(window, 3),
        "rps": round(len(ms) / window, 1) if window > 0 else 0.0,
        **percentiles(ms),
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else None,
        "max_ms": ms[-1] if ms else None,
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "connections": sum(o[2] for o in out),
        "sent_with_warmup": sum(o[3] for o in out),
    }


def run_in_child(queue, host, port, paths, concurrency, warmup, seconds) -> None:
    """Entry point of the load process: Ctrl-C is the parent's to handle, it terminates this one."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        queue.put(measure(host, port, paths, concurrency=concurrency, warmup=warmup, seconds=seconds))
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        queue.put({"failed": f"{type(exc).__name__}: {exc}"})
