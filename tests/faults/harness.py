"""The pieces of the fault suite: a shop run as real processes on a private stack, shoppers, a
readiness watcher, the drain, and the invariants checked in SQL afterwards.

Nothing of the shop is imported into this process except `shop.devstack` (to start and restart
servers): the shop runs as it does in production (gunicorn, `worker.py`, `python -m shop.schedule`)
and is observed from outside, over HTTP, SQL, Redis and its mail directory, as an operator would.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from email.parser import BytesHeaderParser
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import psycopg
import requests

from shop.devstack import ROOT, Stack, _pick_port

TAKEN = ("confirmed", "processing", "shipped", "delivered", "returned", "refunded")  # stock left the shelf
ADDRESS = {
    "name": "Fault Shopper",
    "line1": "1 Crash Street",
    "city": "Springfield",
    "postal_code": "12345",
    "country": "US",
}
POOL_SKUS = 10  # variants the shoppers buy, each stocked with POOL_STOCK units
POOL_STOCK = 400
SEARCH_WORDS = ["shirt", "jacket", "shoe", "bag", "hat", "blue", "cotton", "sale"]


def knob(name: str, default: float) -> float:
    """A duration or count from the environment (see tests/faults/__init__.py)."""
    return float(os.environ.get(name, default))


def _port(url: str) -> int:
    return urlsplit(url).port


# -- the shop ---------------------------------------------------------------------------------------
SERVERS = ("postgres", "redis", "typesense")


def _hidden_suite_servers(start):
    """Stack.start() uses the servers the environment names (the suite's own, under pytest): hide those
    names while it runs, so the drills get servers no other test touches."""
    names = ("DATABASE_URL", "REDIS_URL", "TYPESENSE_URL", "TYPESENSE_API_KEY")
    saved = {k: os.environ.pop(k) for k in names if k in os.environ}
    try:
        return start()
    finally:
        os.environ.update(saved)


def _with_database(url: str, name: str) -> str:
    return f"{url.rpartition('/')[0]}/{name}"


def _stop(procs: list[tuple[str, subprocess.Popen]], timeout: float = 20) -> None:
    """Stop processes all at once (SIGINT for PostgreSQL's fast shutdown, SIGTERM for the rest), then wait
    for each, killing what outlives `timeout`."""
    for name, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if name == "postgres" else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for _, proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Servers:
    """The PostgreSQL, Redis and Typesense of a private stack, started once and shared by the drills,
    with a template database: migrated, seeded with the demo catalogue and its pool stocked. A drill's
    shop gets a database copied from the template (CREATE DATABASE ... TEMPLATE), an emptied Redis and a
    rebuilt search index, so it starts as a fresh stack would, without the seconds a fresh stack costs."""

    TEMPLATE = "shop_template"

    def __init__(self, var: Path):
        self.var = Path(var)
        self.stack = Stack(
            self.var / "stack", ports={"postgres": 0, "redis": 0, "typesense": 0}, durable=True, quiet=True
        )
        self.urls: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self.skus: list[str] = []
        self.initial_stock: dict[int, int] = {}
        self.databases = 0

    def start(self) -> None:
        self.var.mkdir(parents=True, exist_ok=True)
        self.urls = _hidden_suite_servers(self.stack.start)
        self.ports = {
            "postgres": _port(self.urls["DATABASE_URL"]),
            "redis": _port(self.urls["REDIS_URL"]),
            "typesense": _port(self.urls["TYPESENSE_URL"]),
        }
        self.stack.ports.update(self.ports)  # a restarted server comes back where its clients look
        self.admin_sql(f'CREATE DATABASE "{self.TEMPLATE}"')
        env = shop_env(
            {**self.urls, "DATABASE_URL": _with_database(self.urls["DATABASE_URL"], self.TEMPLATE)},
            self.var,
            "http://127.0.0.1:1",
        )
        run_flask(env, "db", "upgrade")
        run_flask(env, "seed", "demo", "--products", "20")
        self.skus, self.initial_stock = _stock_pool(env["DATABASE_URL"])
        # The seed's search jobs: each drill's `flask search reindex` does their work.
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute(
                "UPDATE outbox_job SET dispatched_at = now(), done_at = now() WHERE done_at IS NULL "
                "AND queue = 'search'"
            )

    def ensure_up(self) -> None:
        """Start again a server a previous drill left down (its drill failed before restarting it)."""
        for name in SERVERS:
            if [p for n, p in self.stack.procs if n == name][-1].poll() is not None:
                getattr(self.stack, f"_start_{name}")()

    def admin_sql(self, statement: str) -> None:
        with psycopg.connect(_with_database(self.urls["DATABASE_URL"], "postgres"), autocommit=True) as conn:
            conn.execute(statement)

    def new_database(self) -> str:
        """A copy of the template; its URL."""
        self.databases += 1
        name = f"shop_drill_{self.databases}"
        self.admin_sql(f'CREATE DATABASE "{name}" TEMPLATE "{self.TEMPLATE}"')
        # The copy's pages carry WAL positions after the last checkpoint, so its sequences would hand out
        # numbers without logging them, and a crash (the postgres drill) would hand them out again: a
        # checkpoint makes the next nextval() log as it would in a database made the usual way.
        self.admin_sql("CHECKPOINT")
        return _with_database(self.urls["DATABASE_URL"], name)

    def stop(self) -> None:
        _stop(self.stack.procs[::-1])
        self.stack.procs.clear()


def shop_env(urls: dict, var: Path, base: str, **extra: str) -> dict[str, str]:
    """The environment the shop's processes run in: this one without the suite's own settings, plus the
    stack's URLs and production-like settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "SENDGRID_", "SMTP_", "TEST_", "RATE_", "HOLD_"))
    }
    env.update(urls)
    env.update(
        {
            "SHOP_ENV": "development",
            "SECRET_KEY": secrets.token_hex(32),
            "PAYMENT_PROVIDER": "test",
            "ABUSE_LIMITS": "off",
            "PUBLIC_BASE_URL": base,
            "MAIL_BACKEND": "file",
            "MAIL_DIR": str(var / "mail"),
            # A mail whose worker was killed mid-send is sent by a retry once its claim is 20 s old (300 s by
            # default): the drill's drain waits minutes, not the five of production's setting.
            "MAIL_CLAIM_STALE_SECONDS": "20",
            "SHOP_VAR_DIR": str(var / "var"),
            "PYTHONUNBUFFERED": "1",
            "FLASK_APP": "wsgi",
            **extra,
        }
    )
    return env


def run_flask(env: dict, *argv: str, wait: bool = True):
    """`flask <argv>` in the shop's environment: its output (or, without `wait`, the running process)."""
    cmd = [sys.executable, "-m", "flask", "--app", "wsgi", *argv]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"flask {' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def _stock_pool(database_url: str) -> tuple[list[str], dict[int, int]]:
    """Give a few variants plenty of stock, so checkouts are mostly accepted (the seed's counts are small)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT v.id, v.sku FROM variant v JOIN product p ON p.id = v.product_id "
            "WHERE p.status = 'active' ORDER BY v.id LIMIT %s",
            (POOL_SKUS,),
        ).fetchall()
        conn.execute(
            "UPDATE variant SET on_hand = %s, reserved = 0 WHERE id = ANY(%s)", (POOL_STOCK, [r[0] for r in rows])
        )
    return [sku for _, sku in rows], {vid: POOL_STOCK for vid, _ in rows}


class ShopUnderTest:
    """A shop's processes on a stack's servers, with ways to kill and restart each of them. The servers
    are `servers` (shared with other drills) or, without them, a private stack started and stopped here."""

    def __init__(
        self,
        var: Path,
        hold_seconds: int,
        servers: Servers | None = None,
        *,
        consumers: int = 1,
        env: dict | None = None,
    ):
        self.var = Path(var)
        self.consumers = consumers  # `worker.py events` processes (each runs every consumer group)
        self.extra_env = dict(env or {})
        self.logs = self.var / "logs"
        self.mail_dir = self.var / "mail"
        self.hold_seconds = hold_seconds
        self.own_servers = servers is None
        self.servers = servers if servers is not None else Servers(self.var)
        self.stack = self.servers.stack
        self.env: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self.initial_stock: dict[int, int] = {}
        self.skus: list[str] = []
        self.mine: list[subprocess.Popen] = []  # the shop's processes (not the servers)
        self.has_outbox = (ROOT / "shop" / "outbox.py").exists()

    # lifecycle
    def start(self) -> None:
        for path in (self.logs, self.mail_dir, self.var / "var"):
            path.mkdir(parents=True, exist_ok=True)
        if self.own_servers:
            self.servers.start()
        else:
            self.servers.ensure_up()
        self.ports = dict(self.servers.ports)
        self.skus, self.initial_stock = list(self.servers.skus), dict(self.servers.initial_stock)
        self.web_port = _pick_port(0)
        self.base = f"http://127.0.0.1:{self.web_port}"
        urls = {**self.servers.urls, "DATABASE_URL": self.servers.new_database()}
        self.env = shop_env(urls, self.var, self.base, RESERVATION_TTL_SECONDS=str(self.hold_seconds), **self.extra_env)
        self.redis().flushall()  # the last drill's jobs, heartbeats and locks
        reindex = run_flask(self.env, "search", "reindex", wait=False)  # while the processes start
        self.start_web()
        self.start_worker()
        if self.has_outbox:
            self.spawn("relay", [sys.executable, "worker.py", "relay"])
        for n in range(1, self.consumers + 1):  # the event stream's consumer groups, as `make run` starts them
            self.spawn(f"events-{n}", [sys.executable, "worker.py", "events"])
        self.spawn("scheduler", [sys.executable, "-m", "shop.schedule"])
        out, _ = reindex.communicate(timeout=300)
        if reindex.returncode:
            raise RuntimeError(f"flask search reindex failed ({reindex.returncode}):\n{out}")
        wait_until(lambda: self.get("/readyz").status_code == 200, 60, "the shop to answer /readyz with 200")

    def stop(self) -> None:
        """Stop the shop's processes (all at once), and the servers when they are this shop's own."""
        procs = [(n, p) for n, p in self.stack.procs if p in self.mine]
        _stop(procs[::-1])
        self.stack.procs[:] = [(n, p) for n, p in self.stack.procs if p not in self.mine]
        if self.own_servers:
            self.servers.stop()

    def flask(self, *argv: str) -> str:
        return run_flask(self.env, *argv)

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        proc = self.stack.spawn(name, argv, env={**self.env, **(env or {})}, log=self.logs / f"{name}.log", cwd=ROOT)
        self.mine.append(proc)
        return proc

    def start_web(self) -> None:
        self.spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "wsgi:app",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                "2",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--graceful-timeout",
                "5",
                "--timeout",
                "60",
                "--log-level",
                "warning",
            ],
        )

    def start_worker(self) -> None:
        """A worker per queue, as `make run` starts them (mail never waits behind search work)."""
        from shop.extensions import QUEUE_NAMES

        for queue in QUEUE_NAMES:
            self.spawn(f"worker-{queue}", [sys.executable, "worker.py", queue])

    def proc(self, name: str) -> subprocess.Popen:
        return [p for n, p in self.stack.procs if n == name][-1]

    def get(self, path: str, timeout: float = 5.0):
        return requests.get(self.base + path, timeout=timeout)

    # faults
    def kill_server(self, name: str, sig=signal.SIGKILL) -> None:
        """Signal one server of the stack and wait until it and its children are gone."""
        proc = self.proc(name)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(sig)
        proc.wait(30)
        psutil.wait_procs(children, timeout=30)  # PostgreSQL's backends leave when their postmaster dies

    def restart_server(self, name: str) -> None:
        """Start that one server again on its port and data (Stack's own start for that service)."""
        getattr(self.stack, f"_start_{name}")()

    def kill_worker(self, busy_with=("default", "mail"), wait: float = 10) -> str | None:
        """SIGKILL every worker's whole process group (the worker, its job process, its RQ scheduler),
        as soon as one of `busy_with` has a job running (or after `wait` s); the queue caught mid-job."""
        from rq import Queue
        from rq.registry import StartedJobRegistry

        from shop.extensions import QUEUE_NAMES

        conn, caught = self.redis(), None
        deadline = time.monotonic() + wait
        while caught is None and time.monotonic() < deadline:
            caught = next((q for q in busy_with if StartedJobRegistry(queue=Queue(q, connection=conn)).count), None)
            time.sleep(0.01)
        for queue in QUEUE_NAMES:
            proc = self.proc(f"worker-{queue}")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        return caught

    def kill_web_workers(self) -> int:
        """SIGKILL every gunicorn worker (the master starts new ones), so whatever they were serving
        is cut off mid-way; how many."""
        workers = psutil.Process(self.proc("web").pid).children()
        for victim in workers:
            victim.send_signal(signal.SIGKILL)
        return len(workers)

    # observation
    def sql(self, query: str, params=()) -> list[tuple]:
        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True, connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()

    def redis(self):
        from redis import Redis

        return Redis.from_url(self.env["REDIS_URL"], socket_timeout=5, socket_connect_timeout=5)


def wait_until(predicate, seconds: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - not yet
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what} (last error: {last!r})")


# -- shoppers ---------------------------------------------------------------------------------------
class Shoppers:
    """N threads, each looping a shopper's visit: cart, 1-2 SKUs, checkout (one Idempotency-Key,
    retried as a real client would), pay on the test gateway (90 % approve), sometimes cancel.

    Records every answer (to find 500s) and every checkout with its key, body and outcome."""

    RETRY_STATUSES = (500, 502, 503, 504)  # a client tries again on any server error (same key for checkout)

    def __init__(self, base: str, skus: list[str], threads: int, attempts: int = 12):
        self.base, self.skus, self.threads, self.attempts = base, skus, threads, attempts
        # (t, what, status or exception, error code, Retry-After header)
        self.answers: list[tuple[float, str, object, str | None, str | None]] = []
        self.checkouts: list[dict] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.workers: list[threading.Thread] = []
        # A fault can ask to strike while a checkout is in flight: arm(), then wait on checkout_sent.
        self.armed, self.checkout_sent = threading.Event(), threading.Event()

    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, args=(random.Random(i),), daemon=True, name=f"shopper-{i}")
            t.start()
            self.workers.append(t)

    def stop(self, timeout: float = 120) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self.workers:
            t.join(max(0.1, deadline - time.monotonic()))

    def next_checkout(self, timeout: float = 20) -> bool:
        """Wait until a shopper sends its next checkout (True), or `timeout` passes (False)."""
        self.checkout_sent.clear()
        self.armed.set()
        try:
            return self.checkout_sent.wait(timeout)
        finally:
            self.armed.clear()

    def _note(self, what: str, status, resp=None) -> None:
        code = None
        if resp is not None and resp.status_code >= 400:
            try:
                code = resp.json().get("error", {}).get("code")
            except ValueError:
                code = None
        retry_after = resp.headers.get("Retry-After") if resp is not None else None
        with self.lock:
            self.answers.append((time.time(), what, status, code, retry_after))

    def call(self, session, what: str, method: str, url: str, *, retry_on=(), **kw):
        """One request, retried on connection errors, 5xx and `retry_on` statuses (bounded), as a
        client would; the last response, or None if every try failed to connect."""
        resp = None
        for attempt in range(self.attempts):
            try:
                resp = session.request(
                    method, url if url.startswith("http") else self.base + url, timeout=30, allow_redirects=False, **kw
                )
            except requests.RequestException as exc:
                self._note(what, type(exc).__name__)
                resp = None
            else:
                self._note(what, resp.status_code, resp)
                if resp.status_code not in self.RETRY_STATUSES and resp.status_code not in retry_on:
                    return resp
                if resp.status_code == 409 and _code(resp) != "request_in_progress":
                    return resp
            time.sleep(min(1.0 + attempt * 0.5, 4.0))
        return resp

    def _loop(self, rnd: random.Random) -> None:
        while not self.stopping.is_set():
            try:
                self.visit(rnd)
            except Exception as exc:  # noqa: BLE001 - a shopper's bug must not end the load silently
                self._note("shopper-crash", repr(exc))
            time.sleep(rnd.uniform(1.0, 2.5))  # a shopper thinks between visits

    def visit(self, rnd: random.Random) -> None:
        s = requests.Session()
        if rnd.random() < 0.5:  # browse first, as most visits do (search answers from PostgreSQL without Typesense)
            self.call(s, "search", "GET", "/api/v1/search", params={"q": rnd.choice(SEARCH_WORDS)})
        else:
            self.call(s, "products", "GET", "/api/v1/products", params={"page": rnd.randint(1, 2)})
        resp = self.call(s, "cart", "POST", "/api/v1/carts", json={})
        if resp is None or resp.status_code != 201:
            return
        cart = resp.json()
        headers = {"X-Cart-Token": cart["token"]}
        for sku in rnd.sample(self.skus, rnd.choice((1, 2))):
            resp = self.call(
                s,
                "add",
                "POST",
                f"/api/v1/carts/{cart['id']}/items",
                headers=headers,
                json={"sku": sku, "quantity": rnd.choice((1, 1, 2))},
            )
            if resp is None or resp.status_code != 201:
                return
        body = {
            "cart_id": cart["id"],
            "email": f"shopper{rnd.randrange(10**6)}@example.com",
            "shipping_address": ADDRESS,
        }
        record = {
            "key": str(uuid.uuid4()),
            "cart_id": cart["id"],
            "cart_token": cart["token"],
            "body": body,
            "status": None,
            "code": None,
            "order_id": None,
            "decision": None,
            "paid": False,
            "cancelled": False,
        }
        with self.lock:
            self.checkouts.append(record)
        if self.armed.is_set():
            self.checkout_sent.set()
        resp = self.call(
            s,
            "checkout",
            "POST",
            "/api/v1/checkout",
            json=body,
            headers={**headers, "Idempotency-Key": record["key"]},
            retry_on=(409,),
        )
        if resp is None:
            return
        record["status"], record["code"] = resp.status_code, _code(resp)
        if resp.status_code != 201:
            return
        placed = resp.json()
        record.update(
            order_id=placed["order"]["id"],
            number=placed["order"]["number"],
            access_token=placed["order"].get("access_token"),
            payment_id=placed["payment"]["id"],
        )
        record["decision"] = "approve" if rnd.random() < 0.9 else "decline"
        record["paid"] = self.pay(s, placed["payment"]["redirect_url"], record["decision"])
        if record["paid"] and record["decision"] == "approve" and rnd.random() < 0.15:
            record["cancelled"] = self.cancel_when_confirmed(s, record)

    def pay(self, s, url: str, decision: str) -> bool:
        """Open the test gateway's page and press a button; True once the shop accepted the decision.
        (Each call already retries outages; a few more rounds cover a page whose form was refused.)"""
        for _ in range(3):
            page = self.call(s, "pay-page", "GET", url)
            token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text) if page is not None else None
            if page is None or page.status_code != 200 or token is None:
                time.sleep(1)
                continue
            resp = self.call(s, "pay", "POST", url, data={"csrf_token": token.group(1), "decision": decision})
            if resp is not None and resp.status_code in (302, 303):
                return True
            time.sleep(1)
        return False

    def cancel_when_confirmed(self, s, record: dict) -> bool:
        headers = {"X-Order-Token": record["access_token"]}
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            resp = self.call(s, "order", "GET", f"/api/v1/orders/{record['order_id']}", headers=headers)
            if resp is not None and resp.status_code == 200 and resp.json()["status"] == "confirmed":
                done = self.call(
                    s, "cancel", "POST", f"/api/v1/orders/{record['order_id']}/cancel", headers=headers, json={}
                )
                return done is not None and done.status_code == 200
            time.sleep(0.5)
        return False

    # summaries
    def statuses(self) -> Counter:
        return Counter(a[2] for a in self.answers)

    def server_errors(self, allowed=(503,)) -> Counter:
        """(what, status, code) of every 5xx other than `allowed`, counted."""
        return Counter(
            (what, status, code)
            for _, what, status, code, _ in self.answers
            if isinstance(status, int) and status >= 500 and status not in allowed
        )

    def unhelpful_503s(self) -> Counter:
        """(what, code, Retry-After) of 503s without Retry-After, or from the API without an error code."""
        pages = ("pay-page", "pay")  # HTML: no JSON error body expected
        return Counter(
            (what, code, retry_after)
            for _, what, status, code, retry_after in self.answers
            if status == 503 and (not retry_after or (code is None and what not in pages))
        )


def _code(resp) -> str | None:
    try:
        return resp.json().get("error", {}).get("code") if resp.status_code >= 400 else None
    except ValueError:
        return None


# -- readiness --------------------------------------------------------------------------------------
class ReadyWatcher:
    """Polls /readyz and /readyz?deep=1 every second from 127.0.0.1 (which sees the details)."""

    def __init__(self, base: str):
        self.base = base
        self.readings: list[tuple[float, str, object, dict]] = []  # (t, path, status or error, body)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="readyz")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)

    def read(self, path: str) -> tuple[object, dict]:
        try:
            resp = requests.get(self.base + path, timeout=5)
            try:
                return resp.status_code, resp.json()
            except ValueError:
                return resp.status_code, {}
        except requests.RequestException as exc:
            return type(exc).__name__, {}

    def _loop(self) -> None:
        while not self.stopping.is_set():
            for path in ("/readyz", "/readyz?deep=1"):
                status, body = self.read(path)
                self.readings.append((time.time(), path, status, body))
            self.stopping.wait(1.0)

    def between(self, path: str, start: float, end: float) -> list[tuple[object, dict]]:
        return [(s, b) for t, p, s, b in self.readings if p == path and start <= t <= end]


# -- drain ------------------------------------------------------------------------------------------
def backlog(shop: ShopUnderTest) -> dict:
    """What is still to do: RQ jobs queued, running or waiting for a retry, outbox rows not
    dispatched, orders pending with a live hold. Empty when the shop has settled."""
    from rq import Queue
    from rq.registry import DeferredJobRegistry, ScheduledJobRegistry, StartedJobRegistry

    left: dict = {}
    try:
        conn = shop.redis()
        for q in Queue.all(connection=conn):
            for what, n in (
                ("queued", q.count),
                ("started", StartedJobRegistry(queue=q).count),
                ("scheduled", ScheduledJobRegistry(queue=q).count),
                ("deferred", DeferredJobRegistry(queue=q).count),
            ):
                if n:
                    left[f"{q.name}.{what}"] = n
    except Exception as exc:  # noqa: BLE001
        left["redis"] = repr(exc)
    try:
        [(live,)] = shop.sql(
            'SELECT count(DISTINCT o.id) FROM "order" o JOIN reservation r ON r.order_id = o.id '
            "WHERE o.status = 'pending' AND r.status = 'active' AND r.expires_at > now()"
        )
        if live:
            left["pending orders with a live hold"] = live
        left.update(outbox_backlog(shop))
    except Exception as exc:  # noqa: BLE001
        left["postgres"] = repr(exc)
    try:
        left.update(stream_backlog(shop))
    except Exception as exc:  # noqa: BLE001
        left["stream"] = repr(exc)
    return left


STREAM = "shop.events"  # EVENT_STREAM_TOPIC's default: the Redis stream the relay publishes to


def stream_backlog(shop: ShopUnderTest) -> dict:
    """Per consumer group, events delivered and not acknowledged ("pending") or not delivered yet ("lag")."""
    conn = shop.redis()
    if not conn.exists(STREAM):
        return {}
    left = {}
    for group in conn.xinfo_groups(STREAM):
        name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
        for what in ("pending", "lag"):
            if group.get(what):  # lag is None when Redis cannot tell (after trimming): pending still counts
                left[f"events {name} {what}"] = group[what]
    return left


def outbox_backlog(shop: ShopUnderTest) -> dict:
    """Outbox rows not yet handed to RQ, and rows handed over whose job has not succeeded yet (a job lost
    from Redis is found and handed over again by the relay, so the drain waits for that too)."""
    if not shop.has_outbox:
        return {}
    left = {}
    [(waiting, unfinished)] = shop.sql(
        "SELECT count(*) FILTER (WHERE dispatched_at IS NULL), count(*) FILTER "
        "(WHERE dispatched_at IS NOT NULL AND done_at IS NULL) FROM outbox_job"
    )
    if waiting:
        left["outbox not dispatched"] = waiting
    if unfinished:
        left["outbox dispatched, not done"] = unfinished
    return left


def drain(shop: ShopUnderTest, seconds: float, trace: list | None = None) -> tuple[dict, float]:
    """Wait (bounded) until backlog() is empty; what was left (empty when settled) and the wait.
    `trace` gets (seconds waited, backlog) every 10 s, to tell what the wait was for."""
    started = time.monotonic()
    left, noted = backlog(shop), -10.0
    while left and time.monotonic() - started < seconds:
        if trace is not None and time.monotonic() - noted >= 10:
            noted = time.monotonic()
            trace.append((round(noted - started), left))
        time.sleep(2)
        left = backlog(shop)
    return left, time.monotonic() - started


def failed_jobs(shop: ShopUnderTest) -> list[str]:
    """Jobs in RQ's failed registries (out of retries): 'queue: function: last line of the error'."""
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    out = []
    try:
        conn = shop.redis()
        for q in Queue.all(connection=conn):
            for job_id in FailedJobRegistry(queue=q).get_job_ids():
                job = Job.fetch(job_id, connection=conn)
                exc = (job.exc_info or "").strip().splitlines()
                out.append(f"{q.name}: {job.func_name}: {exc[-1] if exc else '?'}")
    except Exception as exc:  # noqa: BLE001
        out.append(f"(could not read failed jobs: {exc!r})")
    return out


# -- invariants -------------------------------------------------------------------------------------
def check_stock(shop: ShopUnderTest) -> list[str]:
    """on_hand = initial - units of orders that took stock; reserved = units held by active reservations;
    no active hold on an order that is not pending; every order that took stock consumed its holds."""
    problems = []
    rows = shop.sql(
        "SELECT v.id, v.sku, v.on_hand, v.reserved, "
        " (SELECT coalesce(sum(r.quantity), 0)::bigint FROM reservation r "
        "   WHERE r.variant_id = v.id AND r.status = 'active'),"
        ' (SELECT coalesce(sum(l.quantity), 0)::bigint FROM order_line l JOIN "order" o ON o.id = l.order_id '
        "   WHERE l.variant_id = v.id AND o.status = ANY(%s)) "
        "FROM variant v WHERE v.id = ANY(%s) ORDER BY v.id",
        (list(TAKEN), list(shop.initial_stock)),
    )
    for vid, sku, on_hand, reserved, held, sold in rows:
        expected = shop.initial_stock[vid] - sold
        if on_hand != expected:
            problems.append(
                f"stock: {sku} has on_hand {on_hand}, expected {expected} "
                f"({shop.initial_stock[vid]} initial - {sold} sold)"
            )
        if reserved != held:
            problems.append(f"stock: {sku} has reserved {reserved} but active holds total {held}")
    stray = shop.sql(
        'SELECT DISTINCT o.id, o.status FROM reservation r JOIN "order" o ON o.id = r.order_id '
        "WHERE r.status = 'active' AND o.status <> 'pending' ORDER BY o.id"
    )
    _report(problems, stray, "stock: {n} orders hold stock though not pending (order, status)")
    unconsumed = shop.sql(
        'SELECT o.id, o.status FROM "order" o WHERE o.status = ANY(%s) AND '
        " (SELECT coalesce(sum(quantity), 0)::bigint FROM reservation "
        "   WHERE order_id = o.id AND status = 'consumed') <> "
        " (SELECT coalesce(sum(quantity), 0)::bigint FROM order_line WHERE order_id = o.id)",
        (list(TAKEN),),
    )
    _report(problems, unconsumed, "stock: {n} paid orders whose holds were not consumed (order, status)")
    return problems


def check_payments(shop: ShopUnderTest, load: Shoppers) -> list[str]:
    """Every approved payment succeeded, its order confirmed exactly once or (cancelled) refunded in
    full exactly once; nothing refunded twice; no payment left `creating`."""
    problems = []
    creating = shop.sql("SELECT id, order_id FROM payment WHERE status = 'creating' ORDER BY id")
    _report(problems, creating, "payments: {n} stuck in 'creating' (payment, order)")
    rows = shop.sql(
        "SELECT p.id, p.order_id, o.status, p.amount, p.refunded_amount, "
        " (SELECT count(*) FROM order_event e WHERE e.order_id = o.id AND e.to_status = 'confirmed'), "
        " (SELECT coalesce(sum(amount), 0)::bigint FROM refund r "
        "   WHERE r.payment_id = p.id AND r.status = 'succeeded'), "
        " (SELECT count(*) FROM refund r WHERE r.payment_id = p.id AND r.status = 'succeeded'), "
        " (SELECT count(*) FROM refund r WHERE r.payment_id = p.id AND r.status = 'pending') "
        "FROM payment p JOIN \"order\" o ON o.id = p.order_id WHERE p.status = 'succeeded' ORDER BY p.id"
    )
    unrefunded, doubled, pending_refunds, unconfirmed, twice = [], [], [], [], []
    for pid, oid, status, amount, refunded, confirmations, refunded_ok, refunds_ok, refunds_pending in rows:
        if refunded_ok > amount or refunds_ok > 1 or refunded > amount:
            doubled.append((pid, amount, refunded_ok, refunds_ok))
        if refunds_pending:
            pending_refunds.append(pid)
        if status == "cancelled":
            if refunded_ok < amount:
                unrefunded.append((pid, oid, amount, refunded_ok))
        elif status in TAKEN:
            if confirmations != 1:
                twice.append((oid, confirmations))
        else:
            unconfirmed.append((pid, oid, status))
    _report(
        problems,
        unrefunded,
        "payments: {n} paid orders cancelled but not fully refunded (payment, order, amount, refunded)",
    )
    _report(
        problems,
        doubled,
        "payments: {n} payments refunded more than once or beyond their amount (payment, amount, refunded, refunds)",
    )
    _report(problems, pending_refunds, "payments: {n} refunds still pending (payment)")
    _report(
        problems,
        unconfirmed,
        "payments: {n} succeeded payments whose order is neither confirmed nor cancelled (payment, order, status)",
    )
    _report(problems, twice, "payments: {n} orders confirmed a number of times other than once (order, confirmations)")
    approved = [c["payment_id"] for c in load.checkouts if c["paid"] and c["decision"] == "approve"]
    _report(
        problems,
        _not_in_status(shop, "payment", approved, "succeeded"),
        f"payments: {{n}} of {len(approved)} approved payments never succeeded (payment, status)",
    )
    _report(
        problems,
        _not_in_status(shop, "order", [c["order_id"] for c in load.checkouts if c["cancelled"]], "cancelled"),
        "orders: {n} orders cancelled with 200 are not cancelled",
    )
    return problems


def _report(problems: list[str], found: list, what: str) -> None:
    """Add `what` (its {n} the count) with the first ten of `found`, when there are any."""
    if found:
        problems.append(f"{what.format(n=len(found))}: {found[:10]}")


def _not_in_status(shop: ShopUnderTest, table: str, ids: list[int], wanted: str) -> list[tuple]:
    """(id, status) of the rows of `table` among `ids` whose status is not `wanted`."""
    status_of = dict(shop.sql(f'SELECT id, status FROM "{table}" WHERE id = ANY(%s)', (ids,))) if ids else {}
    return [(i, status_of.get(i)) for i in ids if status_of.get(i) != wanted]


def check_recoverable(shop: ShopUnderTest, load: Shoppers) -> list[str]:
    """A retry with the same key and body returns the same order: for every 201 the client saw, and
    for every order placed whose answer the client never got."""
    problems = []
    s = requests.Session()

    def retry(c):
        try:
            resp = s.post(
                shop.base + "/api/v1/checkout",
                json=c["body"],
                timeout=30,
                headers={"X-Cart-Token": c["cart_token"], "Idempotency-Key": c["key"]},
            )
        except requests.RequestException as exc:
            return type(exc).__name__, None, None
        order = resp.json().get("order", {}) if resp.status_code == 201 else {}
        return resp.status_code, _code(resp), order.get("id")

    answered = [c for c in load.checkouts if c["status"] == 201]
    wrong = []
    for c in answered:
        status, code, order_id = retry(c)
        if (status, order_id) != (201, c["order_id"]):
            wrong.append((c["order_id"], status, code, order_id))
    if wrong:
        problems.append(
            f"recovery: {len(wrong)} of {len(answered)} orders answered 201 did not come back with "
            f"their key (order, status, code, order returned): {wrong[:10]}"
        )
    unanswered = {c["cart_id"]: c for c in load.checkouts if c["status"] != 201}
    if unanswered:
        placed = shop.sql(
            'SELECT id, cart_id, status FROM "order" WHERE cart_id = ANY(%s) ORDER BY id', (list(unanswered),)
        )
        lost = []
        for order_id, cart_id, status in placed:
            got = retry(unanswered[cart_id])
            if got[0] != 201 or got[2] != order_id:
                lost.append((order_id, status, unanswered[cart_id]["status"], got[:2]))
        if lost:
            problems.append(
                f"recovery: {len(lost)} orders placed whose answer was lost cannot be recovered with "
                f"their key (order, order status, client's last answer, retry's answer): {lost[:10]}"
            )
    return problems


def mail_subjects(shop: ShopUnderTest) -> Counter:
    parser = BytesHeaderParser()
    subjects = Counter()
    for path in shop.mail_dir.glob("*.eml"):
        with open(path, "rb") as fh:
            subjects[parser.parse(fh)["Subject"]] += 1
    return subjects


def check_mail(shop: ShopUnderTest) -> list[str]:
    """One confirmation per order ever confirmed, none for others; one refund mail per refund."""
    problems = []
    subjects = mail_subjects(shop)
    orders = shop.sql(
        "SELECT o.number, "
        " EXISTS (SELECT 1 FROM order_event e WHERE e.order_id = o.id AND e.to_status = 'confirmed'), "
        " (SELECT count(*) FROM refund r JOIN payment p ON p.id = r.payment_id "
        "   WHERE p.order_id = o.id AND r.status = 'succeeded') FROM \"order\" o"
    )
    missing, doubled, stray, refund_off = [], [], [], []
    for number, confirmed, refunds in orders:
        n = subjects.get(f"Order {number} is confirmed", 0)
        if confirmed and n == 0:
            missing.append(number)
        elif n > 1:
            doubled.append((number, n))
        elif not confirmed and n:
            stray.append(number)
        r = subjects.get(f"Your refund for order {number}", 0)
        if r != refunds:
            refund_off.append((number, refunds, r))
    confirmed_count = sum(1 for o in orders if o[1])
    _report(problems, missing, f"mail: {{n}} of {confirmed_count} confirmed orders got no confirmation mail")
    _report(problems, doubled, "mail: {n} orders got their confirmation more than once (order, mails)")
    _report(problems, stray, "mail: {n} orders never confirmed got a confirmation mail")
    _report(problems, refund_off, "mail: {n} orders' refund mails do not match their refunds (order, refunds, mails)")
    _report(
        problems,
        shop.sql("SELECT event, object_key FROM sent_notification WHERE status <> 'sent'"),
        "mail: {n} notifications claimed and never marked sent (event, key)",
    )
    return problems


def check_search(shop: ShopUnderTest) -> list[str]:
    """Every product's document in Typesense says what PostgreSQL says now (stock, popularity, ...)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.faults.probe", "search"],
        env=shop.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode:
        return [f"search: the probe failed ({done.returncode}): {done.stderr[-1500:]}"]
    stale = json.loads(done.stdout.strip().splitlines()[-1])
    if stale:
        return [
            f"search: {len(stale)} products differ between PostgreSQL and Typesense "
            f"(product: field database/typesense): {dict(list(stale.items())[:8])}"
        ]
    return []
