"""The back-office operations page (admin/operations.py, shop/telemetry/operations.py): admins and managers only;
queues, recent 5xx, webhook failures, search and the slowest routes, each read for real; and every section explains
itself instead of failing when Redis, PostgreSQL or Prometheus does not answer."""

from __future__ import annotations

import html
import json
import re
import socket
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shop import create_app
from shop.payments.models import WebhookEvent
from tests.conftest import config_for
from tests.fakes.serving import ServedInThread
from tests.integration.test_permissions import as_user, world  # noqa: F401 - fixture

PAGE = "/admin/operations/"
HEADINGS = ("Queues and failed jobs", "Recent 5xx answers", "Webhook failures", "Search engine", "Slowest routes")
DEAD_DATABASE = "postgresql://postgres@127.0.0.1:1/nothing"
DEAD_REDIS = "redis://127.0.0.1:1/0"


def text(resp) -> str:
    """The page's HTML, entities decoded, whitespace runs as one space and none between tags."""
    assert resp.status_code == 200, (resp.status_code, resp.get_data(as_text=True)[:500])
    return re.sub(r">\s+<", "><", re.sub(r"\s+", " ", html.unescape(resp.get_data(as_text=True))))


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_with(app, *database, **settings):
    """Another app on the suite's servers (or `database`) with `settings`; its test client is the suite's kind."""
    other = create_app(config_for(*database, **settings))
    other.test_client_class = app.test_client_class
    return other


def five_xx_of(page: str, route: str) -> int:
    """The count in the recent 5xx table's row of `route` (0 without a row)."""
    table = re.search(r'<table[^>]*id="ops-5xx".*?</table>', page)
    if not table:
        return 0
    row = re.search(rf'<code class="ops-route">{re.escape(route)}</code></td><td>(\d+)</td>', table.group(0))
    return int(row.group(1)) if row else 0


# -- who may read it -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["admin", "manager"])
def test_admins_and_managers_see_every_section_of_the_operations_page(app, world, role):
    client = as_user(app, world["staff"][role])
    resp = client.get(PAGE)
    page = text(resp)
    for heading in HEADINGS:
        assert f">{heading}</h2>" in page, heading
    assert resp.headers["Cache-Control"] == "no-store"
    assert 'href="/admin/operations/"' in text(client.get("/admin/"))  # in the menu
    # The Jobs page is the admins': a manager is told to ask one instead of meeting a 403.
    assert ('href="/admin/jobs/"' in page) == (role == "admin")
    assert ("an admin's page: ask one" in page) == (role == "manager")


@pytest.mark.parametrize("role", ["warehouse", "support", "analyst"])
def test_warehouse_support_and_analysts_are_refused_the_operations_page(app, world, role):
    client = as_user(app, world["staff"][role])
    assert client.get(PAGE).status_code == 403
    assert "/admin/operations/" not in client.get("/admin/").get_data(as_text=True)


def test_the_page_asks_anonymous_visitors_to_log_in(app, world):
    resp = app.test_client().get(PAGE)
    assert resp.status_code == 302 and "/admin/login" in resp.headers["Location"]


# -- what it shows ---------------------------------------------------------------------------------------------------
def explode(what: str) -> None:
    """A job that always fails (run by a real RQ worker below)."""
    raise RuntimeError(f"the {what} job failed")


def test_a_job_whose_retries_ran_out_is_counted_and_listed_with_its_error(app, world, redis_client):
    from rq import Queue, Retry, SimpleWorker

    queue = Queue("mail", connection=redis_client)
    job = queue.enqueue(explode, "nightly", retry=Retry(max=1))
    for _ in range(2):  # the run and its one retry (due at once: no interval)
        SimpleWorker([queue], connection=redis_client).work(burst=True)
    assert queue.failed_job_registry.count == 1
    page = text(as_user(app, world["staff"]["manager"]).get(PAGE))
    assert '<tr data-queue="mail"><th scope="row">mail</th><td>0</td><td>0</td><td>0</td><td>1</td></tr>' in page
    row = re.search(rf'<tbody data-job="{job.id}">.*?</tbody>', page).group(0)
    assert "explode" in row and "RuntimeError: the nightly job failed" in row
    assert "1 failed job, 0 waiting." in page


def test_a_failed_provider_webhook_event_is_listed_with_its_type_and_the_first_line_of_its_error(
    app, world, db_session
):
    db_session.add(
        WebhookEvent(
            provider="stripe",
            event_id="evt_ops_failed_1",
            type="charge.dispute.created",
            payload={"id": "evt_ops_failed_1"},
            status="failed",
            attempts=3,
            last_error="LookupError: no payment for pi_123\nTraceback (most recent call last):\n  File ...",
        )
    )
    db_session.add(
        WebhookEvent(
            provider="stripe", event_id="evt_ops_fine", type="payment_intent.succeeded", payload={}, status="processed"
        )
    )
    db_session.flush()
    admin = as_user(app, world["staff"]["admin"])
    page = text(admin.get(PAGE))
    table = re.search(r'id="ops-provider-events".*?</table>', page).group(0)
    assert "charge.dispute.created" in table and "evt_ops_failed_1" in table
    assert "LookupError: no payment for pi_123" in table and "Traceback" not in table
    assert "evt_ops_fine" not in table
    assert "1 failed provider event," in page  # the summary line
    # Its hint links to Webhook events filtered to the failed ones, where they are retried.
    link = re.search(r'Retry each event on <a href="([^"]+)">Webhook events \(failed\)</a>', page).group(1)
    listed = text(admin.get(link))
    assert "evt_ops_failed_1" in listed and "evt_ops_fine" not in listed


@pytest.fixture
def a_503_answered():
    """A real 503: a shop whose PostgreSQL is unreachable answers its product list (before `world`, whose session
    would otherwise reach the suite's database for every app). Returns the route's 5xx count after it."""
    from prometheus_client import REGISTRY

    def counted() -> float:
        labels = {"route": FAILING_ROUTE, "method": "GET", "status": "5xx"}
        return REGISTRY.get_sample_value("shop_http_requests_total", labels) or 0.0

    before = counted()
    broken = create_app(config_for(DEAD_DATABASE))
    with broken.test_client().get(FAILING_ROUTE) as resp:  # counted when the answer is closed, as servers do
        assert resp.status_code == 503
    assert counted() == before + 1
    return int(counted())


FAILING_ROUTE = "/api/v1/products"


def test_a_5xx_the_shop_answered_shows_under_recent_5xx_with_its_route(app, a_503_answered, world):
    """The page of another app in the same process reads the counters that request went into."""
    page = text(as_user(app, world["staff"]["admin"]).get(PAGE))
    assert five_xx_of(page, FAILING_ROUTE) == a_503_answered
    assert "since this process started" in page and "set PROMETHEUS_URL for a last-hour window" in page
    assert re.search(r"Recent 5xx</a><span class=\"ops-flag ops-bad\">Needs a look</span> \d+ on \d+ route", page)
    # The same request is among the timed ones.
    slow = re.search(r'id="ops-slow-routes".*?</table>', page).group(0)
    assert f'<code class="ops-route">{FAILING_ROUTE}</code>' in slow


def test_a_partner_endpoint_that_failed_in_the_last_hour_is_counted(app, world, db_session, monkeypatch):
    from shop import consumers
    from shop.events import envelope
    from shop.partners import attempts, services

    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE", True)  # the dead endpoint is on this machine
    url = f"http://127.0.0.1:{closed_port()}/hooks"
    endpoint, _ = services.create_endpoint({"url": url, "events": ["order.placed"], "description": "ERP of Acme"})
    consumers.load_groups()
    assert consumers.handle("webhooks", envelope("order.placed", "order", 7, {"number": "A7"})) is True
    assert attempts.deliver_due() == 1  # refused: a failed attempt, retried later
    page = text(as_user(app, world["staff"]["manager"]).get(PAGE))
    row = re.search(rf'<tr data-endpoint="{endpoint.id}">.*?</tr>', page).group(0)
    assert url in row and "ERP of Acme" in row
    assert re.search(r"</td><td>1</td><td>0</td><td>failing since", row), row


def test_the_search_section_says_whether_typesense_answers_and_whether_the_fallback_is_on(app, world):
    page = text(as_user(app, world["staff"]["manager"]).get(PAGE))
    assert re.search(r"Typesense</dt><dd[^>]*>answering \(\d", page)
    assert "off: searches go to Typesense" in page
    # A shop whose Typesense is gone: its first search fails over to PostgreSQL and opens the breaker.
    from shop.search import services

    other = app_with(app, TYPESENSE_URL=f"http://127.0.0.1:{closed_port()}")
    try:
        assert other.test_client().get("/api/v1/search?q=tee").status_code == 200
        page = text(as_user(other, world["staff"]["manager"]).get(PAGE))
    finally:
        services.reset_breaker()
    assert re.search(r"Typesense</dt><dd[^>]*>not answering: ", page)
    assert re.search(r"on: searches and suggestions come from PostgreSQL for another \d+ s \(until", page)
    assert "Searches go to PostgreSQL (fallback)." in page


# -- sources that do not answer --------------------------------------------------------------------------------------
def test_with_prometheus_unreachable_the_page_answers_from_the_counters_and_says_prometheus_did_not(app, world):
    url = f"http://127.0.0.1:{closed_port()}"
    other = app_with(app, PROMETHEUS_URL=url)
    page = text(as_user(other, world["staff"]["manager"]).get(PAGE))
    assert f"Prometheus at {url} did not answer" in page
    assert "these figures are the shop's own counters instead" in page
    for heading in HEADINGS:
        assert f">{heading}</h2>" in page


def test_with_redis_unreachable_the_page_answers_and_says_the_queues_are_unknown(app, world):
    other = app_with(app, REDIS_URL=DEAD_REDIS)
    page = text(as_user(other, world["staff"]["admin"]).get(PAGE))
    assert "Redis did not answer" in page and "queue depths and failed jobs are unknown" in page
    assert "check Redis first" in page
    for heading in HEADINGS:
        assert f">{heading}</h2>" in page


def test_with_postgresql_redis_and_prometheus_all_away_every_section_explains_itself():
    """The page itself needs PostgreSQL to know who is asking; its figures do not: each says what is unknown."""
    from shop.telemetry import operations

    shop = create_app(
        config_for(DEAD_DATABASE, REDIS_URL=DEAD_REDIS, PROMETHEUS_URL=f"http://127.0.0.1:{closed_port()}")
    )
    snap = operations.snapshot(shop)
    assert not snap["queues"]["ok"] and "Redis did not answer" in snap["queues"]["problem"]
    for part in ("provider", "partner"):
        assert not snap["webhooks"][part]["ok"]
        assert snap["webhooks"][part]["problem"].startswith("PostgreSQL did not answer")
    assert "did not answer" in snap["source"]["problem"] and snap["source"]["kind"] == "counters"
    assert snap["errors"]["ok"] and snap["slow"]["ok"]  # this process's counters still answer
    assert set(snap["search"]) >= {"answering", "breaker_open"}


# -- Prometheus, when it answers -------------------------------------------------------------------------------------
class FakePrometheus(ServedInThread):
    """Prometheus's HTTP API as far as the page uses it: instant queries answered with fixed vectors."""

    def __init__(self):
        self.queries: list[str] = []
        fake = self

        def answer(query: str) -> dict[str, str]:
            if 'status="5xx"' in query:
                return {"/checkout": "7"}
            if "histogram_quantile" in query:
                return {"/checkout": "2.4", "/api/v1/search": "0.081"}
            if "_sum[1h]" in query:  # the average: sum / count
                return {"/checkout": "0.9", "/api/v1/search": "0.03"}
            return {"/checkout": "120", "/api/v1/search": "900"}  # requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parts.query)["query"][0] if parts.path == "/api/v1/query" else ""
                fake.queries.append(query)
                result = [{"metric": {"route": r}, "value": [1700000000, v]} for r, v in answer(query).items()]
                body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.url = f"http://127.0.0.1:{self.port}"


def test_with_prometheus_answering_the_page_shows_the_last_hour_from_it(app, world):
    with FakePrometheus() as prometheus:
        other = app_with(app, PROMETHEUS_URL=prometheus.url + "/")
        page = text(as_user(other, world["staff"]["manager"]).get(PAGE))
    assert f"last hour, from Prometheus at {prometheus.url}" in page
    assert "did not answer" not in page
    errors = re.search(r'id="ops-5xx".*?</table>', page).group(0)
    assert '<code class="ops-route">/checkout</code></td><td>7</td><td>120</td><td>5.8%</td>' in errors
    slow = re.findall(
        r'<tr><td><code class="ops-route">([^<]+)</code></td><td[^>]*>([^<]+)</td><td[^>]*>([^<]+)</td>',
        re.search(r'id="ops-slow-routes".*?</table>', page).group(0),
    )
    assert slow == [("/checkout", "2.40 s", "900 ms"), ("/api/v1/search", "81 ms", "30 ms")]
    assert any("histogram_quantile(0.95" in q and "[1h]" in q for q in prometheus.queries), prometheus.queries


# -- the estimate ----------------------------------------------------------------------------------------------------
def test_p95_from_cumulative_buckets_is_estimated_as_prometheus_does():
    from shop.telemetry.operations import quantile

    inf = float("inf")
    # 100 requests: 90 within 50 ms, 10 more within 100 ms. The 95th lies half-way through the 50-100 ms bucket.
    assert quantile(0.95, [(0.05, 90), (0.1, 100), (inf, 100)]) == (pytest.approx(0.075), False)
    # Beyond the largest finite bucket: that bucket's bound, flagged "more than".
    assert quantile(0.95, [(0.05, 1), (10.0, 2), (inf, 50)]) == (10.0, True)
    assert quantile(0.95, [(0.05, 0), (inf, 0)]) == (None, False)
