"""GET /metrics as an operator's Prometheus reads it, who may read it, and what the logs may never hold.

The purchase seen end to end by a real Prometheus, traces across processes and the logs of a whole purchase are in
tests/e2e/test_observability_live.py; here the app answers in-process."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shop import create_app
from shop.telemetry.logs import Context, redact
from tests.conftest import config_for
from tests.factories import make_category, make_product


def scrape(client, **kwargs) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one /metrics answer."""
    with client.get("/metrics", **kwargs) as resp:
        assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["Content-Type"].startswith("text/plain; version=")  # the Prometheus text format
    out = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_request_is_counted_under_its_route_template_and_status_class(client, db_session):
    product = make_product(make_category("Tops", slug="tops"), "Tank", slug="tank")
    db_session.flush()
    before = scrape(client)
    for path, status in (
        (f"/api/v1/products/{product.slug}", 200),
        ("/api/v1/products/no-such-thing", 404),
        ("/no/such/page", 404),
    ):
        with client.get(path) as resp:  # counted when the server closes the answer, as a WSGI server does
            assert resp.status_code == status
    after = scrape(client)
    route = "/api/v1/products/<slug>"
    got = {
        status: value(after, "shop_http_requests_total", route=route, method="GET", status=status)
        - value(before, "shop_http_requests_total", route=route, method="GET", status=status)
        for status in ("2xx", "4xx")
    }
    assert got == {"2xx": 1, "4xx": 1}
    # Paths no route matched share one label (a scanner's random paths cannot grow the series without bound).
    unmatched = dict(route="(unmatched)", method="GET", status="4xx")
    assert (
        value(after, "shop_http_requests_total", **unmatched) - value(before, "shop_http_requests_total", **unmatched)
        == 1
    )
    count = dict(route=route, method="GET")
    assert (
        value(after, "shop_http_request_duration_seconds_count", **count)
        - value(before, "shop_http_request_duration_seconds_count", **count)
        == 2
    )
    # The two product reads ran SQL, counted per request.
    assert value(after, "shop_db_queries_per_request_sum") > value(before, "shop_db_queries_per_request_sum")


def test_the_scrape_reads_queues_outbox_readiness_and_stock_holds(client):
    samples = scrape(client)
    for queue in ("default", "mail", "search"):
        for state in ("queued", "started", "scheduled", "failed"):
            assert ("shop_queue_jobs", (("queue", queue), ("state", state))) in samples
    assert ("shop_outbox_backlog", (("kind", "job"),)) in samples
    assert value(samples, "shop_ready") == 1
    assert value(samples, "shop_dependency_up", dependency="database") == 1
    assert ("shop_reservations_active", ()) in samples
    assert value(samples, "shop_uploads_disk_size_bytes") > 0
    assert all(v == 0 for (name, _), v in samples.items() if name == "shop_scrape_errors"), samples


def test_metrics_are_refused_to_other_addresses_unless_they_bring_the_token():
    app = create_app(config_for(METRICS_TOKEN="scrape-secret-1234"))
    outsider = {"REMOTE_ADDR": "203.0.113.9"}
    resp = app.test_client().get("/metrics", environ_base=outsider)
    assert resp.status_code == 403
    assert resp.get_json()["error"]["code"] == "forbidden"
    wrong = app.test_client().get("/metrics", environ_base=outsider, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    ok = app.test_client().get(
        "/metrics", environ_base=outsider, headers={"Authorization": "Bearer scrape-secret-1234"}
    )
    assert ok.status_code == 200 and b"shop_http_requests_total" in ok.data


def test_metrics_off_means_no_endpoint():
    app = create_app(config_for(METRICS_ENABLED=False))
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


def test_a_scrape_during_a_redis_outage_still_answers_with_what_it_can_read():
    app = create_app(config_for(REDIS_URL="redis://127.0.0.1:1/0"))
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    assert 'shop_scrape_errors{source="queues"} 1.0' in text
    assert 'shop_scrape_errors{source="outbox"} 0.0' in text
    assert "shop_ready 0.0" in text


@pytest.mark.parametrize(
    "raw, leaked",
    [
        ("order mail sent to ann.buyer@example.com", "ann.buyer@example.com"),
        ("stripe key sk_test_51Habcdefghijkl rejected", "sk_test_51Habcdefghijkl"),
        ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"),
        ("card 4242 4242 4242 4242 declined", "4242 4242 4242 4242"),
        ("login with password=hunter2hunter2", "hunter2hunter2"),
        ('{"refresh_token": "rt-abcdef123456"}', "rt-abcdef123456"),
    ],
)
def test_redaction_removes_personal_data_and_secrets(raw, leaked):
    cleaned = redact(raw)
    assert leaked not in cleaned, cleaned
    if "@" in raw:
        assert "a***@example.com" in cleaned  # enough to tell addresses apart in an incident, not to mail them


def test_a_json_log_line_carries_the_request_its_route_and_no_address(app, caplog):
    from shop.telemetry.logs import _RESERVED, JsonLines

    formatter = JsonLines(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        reserved_attrs=[*_RESERVED, "span_id"],
    )
    record = logging.LogRecord(
        "shop.test", logging.WARNING, __file__, 1, "mail to %s failed", ("zoe@example.org",), None
    )
    with app.test_request_context("/api/v1/products/tank", headers={"X-Request-ID": "req-42"}):
        app.preprocess_request()
        Context().filter(record)
    line = json.loads(formatter.format(record))
    assert line["message"] == "mail to z***@example.org failed"
    assert line["level"] == "WARNING" and line["logger"] == "shop.test"
    assert line["request_id"] == "req-42"
    assert line["route"] == "/api/v1/products/<slug>"
    assert line["user_id"] == "guest"
    assert "time" in line and "trace_id" in line


def test_requests_answered_at_once_by_many_threads_are_each_counted_exactly_once():
    """200 requests from 8 threads at once on a threaded server: the counter and the histogram grow by exactly 200."""
    import threading
    import urllib.request

    from tests.conftest import live_seeded_shop

    def scraped(url: str) -> dict:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    with live_seeded_shop(3) as live:
        labels = dict(route="/healthz", method="GET", status="2xx")
        before = scraped(live.url)
        failures = []

        def hammer():
            for _ in range(25):
                try:
                    with urllib.request.urlopen(f"{live.url}/healthz", timeout=10) as resp:
                        resp.read()
                except OSError as exc:  # pragma: no cover - reported below
                    failures.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = scraped(live.url)
    assert failures == []
    assert (
        value(after, "shop_http_requests_total", **labels) - value(before, "shop_http_requests_total", **labels) == 200
    )
    count = dict(route="/healthz", method="GET")
    grown = value(after, "shop_http_request_duration_seconds_count", **count) - value(
        before, "shop_http_request_duration_seconds_count", **count
    )
    assert grown == 200


def test_the_development_servers_access_lines_lose_query_strings_and_tokens_in_paths():
    from shop.telemetry.logs import TEXT_FORMAT, TextLines

    token = "IjEyMyI.ZabcdEFGhijklmnop-qrstuv"
    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '%s - - "%s" %s -',
        ("127.0.0.1", f"GET /account/reset/{token}?email=a@b.co HTTP/1.1", "200"),
        None,
    )
    line = TextLines(TEXT_FORMAT).format(record)
    assert token not in line and "a@b.co" not in line
    assert "GET /account/reset/[redacted] HTTP/1.1" in line
    assert record.getMessage().count(token) == 1  # the record itself is untouched for other handlers
