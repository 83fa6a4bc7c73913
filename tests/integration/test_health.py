"""Liveness and readiness, with every dependency up and with Redis gone."""

from shop import create_app
from tests.conftest import config_for


def test_healthz_and_readyz_report_each_dependency(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    resp = client.get("/readyz")
    assert resp.status_code == 200
    checks = resp.get_json()["checks"]
    assert set(checks) == {"database", "redis", "search"}
    assert all(c["ok"] for c in checks.values()), checks


def test_readyz_is_503_when_redis_is_unreachable():
    app = create_app(config_for(REDIS_URL="redis://127.0.0.1:1/0"))
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"]["ok"] is False and body["checks"]["database"]["ok"] is True


def test_an_unreachable_database_answers_503_in_the_contract_shape_without_internals():
    """A failing database is the kind of fault a client can meet: 503 (try again) in the error shape, nothing
    leaked (tests/integration/test_outages.py has the rest of the outage behaviour)."""
    app = create_app(config_for("postgresql://postgres@127.0.0.1:1/nothing"))
    resp = app.test_client().get("/api/v1/products", headers={"X-Request-ID": "req-1"})
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    err = resp.get_json()["error"]
    assert err["code"] == "service_unavailable" and err["details"] == {"request_id": "req-1"}
    assert "psycopg" not in resp.get_data(as_text=True)
    page = app.test_client().get("/c/anything")
    assert page.status_code == 503 and "We're having trouble" in page.get_data(as_text=True)
