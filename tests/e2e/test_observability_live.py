"""A purchase as the operator sees it: in a real Prometheus, in traces across processes, and in the logs.

The shop runs as production runs it: gunicorn with two workers (deploy/gunicorn.conf.py) and PROMETHEUS_MULTIPROC_DIR,
the RQ worker, the outbox relay and the event consumers as processes of their own, JSON logs, traces exported over
OTLP/HTTP to a receiver in the test (tests/fakes/otlp.py). Debian's `prometheus` scrapes the shop every second; the
test asks its HTTP API, as a dashboard would, for the request and order counters after a real purchase: a shopper
signs up, logs in, buys on the API, approves the payment on the test gateway's page, the gateway's webhook confirms
the order and the mail job sends the confirmation.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import stream_topic_for, wait_until
from tests.e2e.conftest import running_worker
from tests.e2e.test_checkout_recovery import ADDRESS, Browser, call, free_port, hidden, seed
from tests.fakes.otlp import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
EMAIL = "zoe.observed@example.org"
PASSWORD = "correct-horse-battery-9"

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None and os.environ.get("SHOP_REQUIRE_PROMETHEUS") != "1",
    reason="Debian's prometheus is not installed (.ci/run installs it: apt-get install prometheus)",
)


@contextlib.contextmanager
def prometheus_scraping(target_port: int, tmp_path: Path, port: int):
    """Debian's Prometheus on `port`, scraping 127.0.0.1:`target_port`/metrics every second; yields its URL."""
    assert PROMETHEUS, "prometheus is not installed (apt-get install prometheus)"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: shop\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
    )
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/-/ready", proc, log), 60, "Prometheus to be ready")
        yield url
    finally:
        stop(proc)


def answers(url: str, proc: subprocess.Popen, log: Path) -> bool:
    """Whether `url` answers 200 yet; the process's log if it died instead."""
    assert proc.poll() is None, log.read_text()[-3000:]
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen, seconds: float = 30) -> None:
    """SIGTERM, then SIGKILL after `seconds`."""
    proc.terminate()
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def promql(url: str, query: str) -> float | None:
    """The sum of an instant query's samples, as Prometheus's HTTP API answers it; None when it has none."""
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", timeout=10) as r:
        answer = json.load(r)
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    return sum(float(sample["value"][1]) for sample in result) if result else None


@contextlib.contextmanager
def gunicorn(env: dict, log: Path):
    """The shop under gunicorn (deploy/gunicorn.conf.py, two workers) on a free port; yields its URL once it answers."""
    port = int(env["GUNICORN_BIND"].rpartition(":")[2])
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/healthz", proc, log), 60, "gunicorn to answer")
        yield url
    finally:
        stop(proc)


def manager(database_url: str) -> tuple[str, str]:
    """A manager's e-mail and password (the Operations page is theirs and admins')."""
    from shop import create_app
    from shop.extensions import db
    from tests.conftest import config_for
    from tests.factories import make_user

    app = create_app(config_for(database_url))
    with app.app_context():
        make_user("ops.manager@example.com", role="manager", password="manager-password-1")
        db.session.commit()
        db.engine.dispose()
    return "ops.manager@example.com", "manager-password-1"


def json_lines(path: Path) -> list[dict]:
    """The JSON log lines of a process (gunicorn's own start-up lines are text: skipped)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_a_purchase_shows_in_prometheus_in_one_trace_across_processes_and_in_json_logs(committed_db, tmp_path):
    sku = seed(committed_db)
    staff = manager(committed_db)
    port, prometheus_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    mail_dir = tmp_path / "mail"
    with OtlpReceiver() as otlp:
        settings = {
            "DATABASE_URL": committed_db,
            "PUBLIC_BASE_URL": url,
            "MAIL_DIR": str(mail_dir),
            "EVENT_STREAM_TOPIC": stream_topic_for(committed_db),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export every 0.2 s, not every 5 s
            "LOG_FORMAT": "json",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_URL": f"http://127.0.0.1:{prometheus_port}",  # the Operations page's last hour
        }
        env = {**os.environ, **settings}
        web_log = tmp_path / "web.log"
        with (
            gunicorn(env, web_log),
            running_worker(committed_db, mail_dir, url, tmp_path / "worker.log", env=settings) as worker,
            prometheus_scraping(port, tmp_path, prometheus_port) as prom,
        ):
            # -- the purchase: sign up, log in, cart, checkout, approve on the gateway's page
            status, user = call(url, "/api/v1/auth/register", {"email": EMAIL, "password": PASSWORD, "name": "Zoe"})
            assert status == 201, user
            status, tokens = call(url, "/api/v1/auth/token", {"email": EMAIL, "password": PASSWORD})
            assert status == 200, tokens
            bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
            status, cart = call(url, "/api/v1/carts", {}, bearer)
            assert status == 201, cart
            status, body = call(url, f"/api/v1/carts/{cart['id']}/items", {"sku": sku, "quantity": 1}, bearer)
            assert status == 201, body
            request_id = f"obs-{uuid.uuid4().hex[:12]}"
            status, placed = call(
                url,
                "/api/v1/checkout",
                {"cart_id": cart["id"], "email": EMAIL, "shipping_address": ADDRESS},
                {**bearer, "Idempotency-Key": str(uuid.uuid4()), "X-Request-ID": request_id},
            )
            assert status == 201, placed
            order_id = placed["order"]["id"]
            browser = Browser()
            pay_url = placed["payment"]["redirect_url"]
            page = browser.get(pay_url)
            answer, _ = browser.post(pay_url, {**hidden(page, "csrf_token"), "decision": "approve"})
            assert answer == 303

            def confirmed():
                req = urllib.request.Request(f"{url}/api/v1/orders/{order_id}", headers=bearer)
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return json.load(resp)["status"] == "confirmed"

            wait_until(confirmed, 60, "the webhook to confirm the order")
            wait_until(lambda: mail_dir.exists() and any(mail_dir.iterdir()), 60, "the confirmation mail")

            # -- Prometheus, as a dashboard asks it
            def counted():
                return (
                    promql(prom, "sum(shop_orders_placed_total)") == 1
                    and promql(prom, 'sum(shop_payments_total{outcome="succeeded"})') == 1
                    and promql(prom, 'sum(shop_http_requests_total{route="/api/v1/checkout",status="2xx"})') == 1
                    and (promql(prom, 'sum(shop_jobs_total{outcome="succeeded"})') or 0) >= 2
                )

            wait_until(counted, 60, "Prometheus to have scraped the purchase", every=0.5)
            assert promql(prom, "sum(shop_carts_created_total)") == 1
            assert promql(prom, "sum(shop_checkouts_started_total)") == 1
            assert promql(prom, 'sum(shop_webhooks_received_total{outcome="processed"})') == 1
            assert promql(prom, 'sum(shop_http_requests_total{status="5xx"})') in (None, 0)
            assert promql(prom, 'shop_ready{job="shop"}') == 1
            # Every request the shopper sent is counted once, whichever of the two gunicorn workers answered it (each
            # request is a new connection; multiprocess mode adds up every worker's figures in one scrape).
            sent = 'shop_http_requests_total{route=~"/api/v1/auth/register|/api/v1/auth/token|/api/v1/carts.*|/api/v1/checkout"}'
            assert promql(prom, f"sum({sent})") == 5
            p95 = promql(  # over the one checkout so far (a rate() needs two of them in its window)
                prom,
                'histogram_quantile(0.95, sum by (le) (shop_http_request_duration_seconds_bucket{route="/api/v1/checkout"}))',
            )
            assert p95 is not None and 0 < p95 < 10

            # -- the back-office Operations page reads the same figures from that Prometheus
            office = Browser()
            login = office.get(f"{url}/admin/login")
            status, _ = office.post(
                f"{url}/admin/login", {**hidden(login, "csrf_token"), "email": staff[0], "password": staff[1]}
            )
            assert status == 302
            page = office.get(f"{url}/admin/operations/")
            assert f"last hour, from Prometheus at {prom}" in page
            assert "did not answer" not in page
            slowest = page.split("Slowest routes")[-1]
            assert "/api/v1/orders/&lt;int:order_id&gt;" in slowest  # polled over many scrapes: a rate to rank

            # -- one trace from the checkout request to the mail job, across three processes
            def described():
                return "\n".join(
                    f"{s.trace_id[:8]} {s.parent_id[:4] or '----'} {s.service} {s.name}"
                    for s in otlp.spans()
                    if s.kind != 3 and "GET /api/v1/orders" not in s.name  # client spans (SQL, Redis, HTTP) aside
                )

            checkout = wait_until(
                lambda: next((s for s in otlp.spans() if s.name == "POST /api/v1/checkout"), None), 30, "checkout"
            )
            assert checkout.parent_id == "" and checkout.service == "shop-web"  # the request's span starts the trace

            def in_checkout_trace(name):
                return next((s for s in otlp.spans() if s.trace_id == checkout.trace_id and s.name == name), None)

            mail = wait_until(
                lambda: in_checkout_trace("job shop.notifications.jobs.send_notification"), 30, "the mail job's span"
            )
            assert mail.service == "shop-worker", described()
            settled = in_checkout_trace("payment.succeeded")
            assert settled is not None and settled.service == "shop-web", described()  # the webhook's work
            confirmed_event = in_checkout_trace("event order.confirmed")
            assert confirmed_event is not None and confirmed_event.service == "shop-events", described()
            webhook = next(s for s in otlp.spans() if s.name == "POST /webhooks/stripe")
            assert settled.links == [webhook.trace_id]  # the webhook's own request, linked
            trace = [s for s in otlp.spans() if s.trace_id == checkout.trace_id]
            assert any(s.name.startswith(("SELECT", "INSERT", "UPDATE")) for s in trace)  # SQLAlchemy's spans
            assert any(s.name in ("EVALSHA", "SET", "GET", "MGET") or "ZCOUNT" in s.name for s in trace)  # Redis
            worker.terminate()

    # -- the logs: JSON lines with the ids, and nothing personal or secret in any process's log
    lines = json_lines(web_log)
    access = [line for line in lines if line.get("logger") == "shop.access" and line.get("route") == "/api/v1/checkout"]
    assert len(access) == 1, access
    assert access[0]["request_id"] == request_id
    assert access[0]["status"] == 201
    assert access[0]["user_id"] == str(user["id"])
    assert access[0]["trace_id"] == checkout.trace_id
    assert access[0]["duration_ms"] > 0 and access[0]["method"] == "POST"
    assert {"time", "level", "logger", "message"} <= set(access[0])
    logs = [web_log, *tmp_path.glob("worker*.log")]
    assert len(logs) == 4
    text = "\n".join(path.read_text(errors="replace") for path in logs)
    for secret in (
        EMAIL,
        PASSWORD,
        tokens["access_token"],
        tokens["refresh_token"],
        os.environ["SECRET_KEY"],
        placed["payment"].get("client_secret") or "no client secret",
        pay_url.rpartition("/")[2] if len(pay_url.rpartition("/")[2]) > 12 else "no token in the pay url",
    ):
        assert secret not in text, f"{secret[:6]}... is in the logs"
    assert re.search(r"z\*\*\*@example\.org", text) or EMAIL not in text
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                json.loads(line)  # every JSON line is whole
    time.sleep(0)  # (nothing left running: the processes ended with their blocks)
