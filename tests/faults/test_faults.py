"""Faults lose nothing (issue 10): one server or process dies under a shopper load, and afterwards
every order, payment, refund, mail and search change is there exactly once, stock is exact, every
order can be recovered with its Idempotency-Key, /readyz told the operator, and clients saw 503
(never 500). One test per fault, each with a shop of its own: its own processes, database (a copy of a
migrated, seeded template), emptied Redis and rebuilt search index, on servers (PostgreSQL, Redis,
Typesense) the tests share, a private stack started once for them (FAULT_FRESH_STACK=1: a stack per
test instead). See tests/faults/__init__.py for the knobs and for skipping the suite with `-m "not faults"`.

Timeline of each test: start the shop (and, for the first, the servers); shoppers for FAULT_WARMUP s; the fault, struck where it hurts
(PostgreSQL, Redis and the web workers while a checkout is in flight, the workers while a payment or
mail job runs); the server stays down for FAULT_DOWN, FAULT_REDIS_DOWN or FAULT_WORKER_DOWN s, then
is started again on its port and data (gunicorn's master replaces its workers itself); shoppers for
FAULT_AFTER s more; stop the shoppers; wait (at most FAULT_DRAIN s) until no job is queued, running
or waiting for a retry, no outbox row is undispatched and no order is pending with a live hold;
then every invariant is checked and all that failed are reported together, with their numbers.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.harness import (
    ReadyWatcher,
    Shoppers,
    ShopUnderTest,
    backlog,
    check_mail,
    check_payments,
    check_recoverable,
    check_search,
    check_stock,
    drain,
    failed_jobs,
    knob,
    wait_until,
)

pytestmark = pytest.mark.faults

SHOPPERS = int(knob("FAULT_SHOPPERS", 3))
WARMUP, AFTER = knob("FAULT_WARMUP", 4), knob("FAULT_AFTER", 4)
DOWN, REDIS_DOWN = knob("FAULT_DOWN", 8), knob("FAULT_REDIS_DOWN", 20)
# How Redis stops: TERM (a clean stop: it writes its data out) or KILL (a crash: only what it persisted).
REDIS_SIGNAL = getattr(signal, "SIG" + os.environ.get("FAULT_REDIS_SIGNAL", "TERM").upper())
HOLD, DRAIN = int(knob("FAULT_HOLD_SECONDS", 20)), knob("FAULT_DRAIN", 150)


def _heartbeat_ttl() -> int:
    """How long a dead process may still look alive to /readyz?deep=1 (shop/heartbeat.py), 0 without it."""
    try:
        from shop.heartbeat import TTL
    except ImportError:
        return 0
    return TTL


# Workers stay down long enough for their heartbeats to run out, so the deep check can see it.
WORKER_DOWN = knob("FAULT_WORKER_DOWN", max(DOWN, _heartbeat_ttl() + 8))


def in_flight() -> float:
    """How far into a checkout a fault that waits for one strikes: anywhere from the key's claim to
    the payment's start (a checkout takes roughly 20-200 ms here)."""
    return random.uniform(0.01, 0.15)


def _server_down(name: str, sig, seconds: float, mid_checkout: bool = False):
    def inject(shop: ShopUnderTest, load: Shoppers) -> tuple[float, str]:
        caught = mid_checkout and load.next_checkout()
        time.sleep(in_flight() if caught else 0)
        shop.kill_server(name, sig)
        time.sleep(seconds)
        return time.time(), "during a checkout" if caught else ""  # the outage ends: the server starts again

    return inject


def _workers_down(shop: ShopUnderTest, load: Shoppers) -> tuple[float, str]:
    caught = shop.kill_worker()
    time.sleep(WORKER_DOWN)
    return time.time(), f"caught a {caught} job running" if caught else "no default/mail job was running"


def _web_workers_killed(shop: ShopUnderTest, load: Shoppers, rounds: int = 4) -> tuple[float, str]:
    """Every gunicorn worker killed, `rounds` times, each while a checkout is in flight."""
    caught = 0
    for _ in range(rounds):
        if load.next_checkout():
            caught += 1
            time.sleep(in_flight())
        shop.kill_web_workers()
        time.sleep(3)
    return time.time(), f"{caught} of {rounds} kills during a checkout"


def _restart(fault: str, shop: ShopUnderTest) -> None:
    if fault == "worker-kill":
        shop.start_worker()
    elif fault != "web-kill":
        shop.restart_server(fault.split("-")[0])


FAULTS = {
    # fault id: (inject -> (time the outage ended, what it caught), what /readyz must show during it)
    "postgres-kill": (_server_down("postgres", signal.SIGKILL, DOWN, mid_checkout=True), "503"),
    "redis-stop": (_server_down("redis", REDIS_SIGNAL, REDIS_DOWN, mid_checkout=True), "503"),
    "typesense-kill": (_server_down("typesense", signal.SIGKILL, DOWN), "search"),
    "worker-kill": (_workers_down, "deep-503"),
    "web-kill": (_web_workers_killed, None),
}


def check_readiness(watcher: ReadyWatcher, expect: str | None, start: float, end: float) -> list[str]:
    """The fault was visible on /readyz (or /readyz?deep=1) while it lasted; both are 200 afterwards."""
    problems = []
    plain = watcher.between("/readyz", start, end)
    deep = watcher.between("/readyz?deep=1", start, end)
    during = f"during the {end - start:.0f}s outage"
    if expect == "503" and not any(s == 503 for s, _ in plain):
        problems.append(f"readyz: never 503 {during}: {Counter(s for s, _ in plain)}")
    if expect == "search" and not any(b.get("checks", {}).get("search", {}).get("ok") is False for _, b in plain):
        problems.append(f"readyz: never reported search down {during} ({len(plain)} readings)")
    if expect in ("503", "deep-503") and not any(s == 503 for s, _ in deep):
        problems.append(
            f"readyz: /readyz?deep=1 never 503 {during}: {Counter(s for s, _ in deep)}; "
            f"checks it reports: {sorted((deep[-1][1].get('checks') or {}) if deep else [])}"
        )
    for path in ("/readyz", "/readyz?deep=1"):
        status, body = watcher.read(path)
        if status != 200:
            problems.append(f"readyz: {path} answers {status} after recovery: {body}")
    return problems


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_under_load_loses_nothing(fault, servers):
    inject, expect = FAULTS[fault]
    began = time.monotonic()
    var = Path(tempfile.mkdtemp(prefix=f"faults-{fault}-"))
    shop = ShopUnderTest(var, HOLD, servers)
    problems: list[str] = []
    try:
        shop.start()
        ready_at = time.monotonic()
        watcher, load = ReadyWatcher(shop.base), Shoppers(shop.base, shop.skus, SHOPPERS)
        watcher.start()
        load.start()
        time.sleep(WARMUP)
        fault_start = time.time()
        fault_end, caught = inject(shop, load)
        _restart(fault, shop)
        try:
            wait_until(lambda: shop.get("/readyz").status_code == 200, 90, "/readyz to answer 200 again")
        except AssertionError as exc:
            problems.append(f"recovery: {exc}")
        recovered = time.time() - fault_end
        time.sleep(AFTER)
        stopping = time.monotonic()
        load.stop()
        stopped = time.monotonic() - stopping
        trace: list = []
        left, waited = drain(shop, DRAIN, trace)
        watcher.stop()
        if left:
            problems.append(f"drain: after {waited:.0f}s still waiting for {left}")
        problems += check_readiness(watcher, expect, fault_start, fault_end)
        errors = load.server_errors()
        if errors:
            problems.append(
                f"clients saw {sum(errors.values())} answers 5xx other than 503 "
                f"((request, status, code): count): {dict(errors)}"
            )
        unhelpful = load.unhelpful_503s()
        if unhelpful:
            problems.append(
                f"clients saw {sum(unhelpful.values())} answers 503 without Retry-After or the error "
                f"shape ((request, code, Retry-After): count): {dict(unhelpful)}"
            )
        for check in (check_stock, check_mail, check_search):
            problems += check(shop)
        problems += check_payments(shop, load)
        problems += check_recoverable(shop, load)
        outcomes = Counter(
            c["status"] if c["status"] == 201 else f"{c['status']} {c['code'] or ''}".strip() for c in load.checkouts
        )
        print(
            f"\n[{fault}] {time.monotonic() - began:.0f}s in all (shop up in {ready_at - began:.0f}s, "
            f"outage {fault_end - fault_start:.0f}s {caught}, ready again {recovered:.0f}s after it, "
            f"shoppers stopped in {stopped:.0f}s, drained in "
            f"{waited:.0f}s: {trace}); answers {dict(load.statuses())}; checkouts {dict(outcomes)}; paid "
            f"{sum(c['paid'] for c in load.checkouts)} (declined "
            f"{sum(c['paid'] and c['decision'] == 'decline' for c in load.checkouts)}), cancelled "
            f"{sum(c['cancelled'] for c in load.checkouts)}; failed jobs {failed_jobs(shop)[:10]}; "
            f"backlog now {backlog(shop)}; logs in {shop.logs}",
            flush=True,
        )
    finally:
        shop.stop()
    assert not problems, f"{fault}: {len(problems)} invariants broken:\n" + "\n".join(problems)
    shutil.rmtree(var, ignore_errors=True)  # kept when something failed: the logs say why
