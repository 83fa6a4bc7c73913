"""Outages answer 503 `service_unavailable` with Retry-After, never 500, and the shop recovers by itself.

The shop talks to the real PostgreSQL and Redis of the suite through a pass-through (tests/fakes/netcut.py)
that a test cuts, as a crashed server or a lost network would, and restores.
"""

import os
import uuid

import pytest

from tests.conftest import config_for
from tests.factories import make_category, make_product, make_user
from tests.fakes.netcut import NetCut

PASSWORD = "correct horse battery"
ADDRESS = {"name": "Ann Buyer", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}


@pytest.fixture
def shop(committed_db):
    """An app whose PostgreSQL and Redis can be cut; yields (app, client, pg cut, redis cut, seeded facts)."""
    from urllib.parse import urlsplit

    from redis import Redis

    from shop import create_app
    from shop.extensions import db

    pg_url, redis_url = urlsplit(committed_db), urlsplit(os.environ["REDIS_URL"])
    pg, rd = NetCut(pg_url.hostname, pg_url.port), NetCut(redis_url.hostname, redis_url.port)
    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    app = create_app(
        config_for(pg.url_for(committed_db), REDIS_URL=rd.url_for(os.environ["REDIS_URL"]), CACHE_ENABLED=True)
    )
    with app.app_context():
        product = make_product(make_category("Tops", slug="tops"), "Plain Tee", slug="plain-tee", sizes=("M",), stock=5)
        user = make_user("ann@example.com", password=PASSWORD)
        db.session.commit()
        facts = {"sku": product.variants[0].sku, "email": user.email}
    try:
        yield app, app.test_client(), pg, rd, facts
    finally:
        pg.cut()
        rd.cut()
        with app.app_context():
            db.engine.dispose()


def csrf_token(client) -> str:
    return client.get("/csrf-token").get_json()["csrf_token"]


def assert_unavailable(resp, *, html=False):
    assert resp.status_code == 503, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert 1 <= int(resp.headers["Retry-After"]) <= 30
    if html:
        assert "We're having trouble, please try again in a moment" in resp.get_data(as_text=True)
    else:
        body = resp.get_json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["code"] == "service_unavailable"


def api_calls(client, facts, cart):
    """Representative API requests: (name, response)."""
    headers = {"X-Cart-Token": cart["token"], "Idempotency-Key": str(uuid.uuid4())}
    return [
        ("catalogue", client.get("/api/v1/products")),
        ("cart create", client.post("/api/v1/carts", json={})),
        (
            "checkout",
            client.post(
                "/api/v1/checkout",
                headers=headers,
                json={"cart_id": cart["id"], "email": "ann@example.com", "shipping_address": ADDRESS},
            ),
        ),
        ("login", client.post("/api/v1/auth/token", json={"email": facts["email"], "password": PASSWORD})),
    ]


def test_postgresql_outage_answers_503_on_api_and_pages_then_recovers(shop):
    app, client, pg, _, facts = shop
    cart = client.post("/api/v1/carts", json={}).get_json()
    assert (
        client.post(
            f"/api/v1/carts/{cart['id']}/items", headers={"X-Cart-Token": cart["token"]}, json={"sku": facts["sku"]}
        ).status_code
        == 201
    )
    assert client.post(
        "/cart/items", data={"csrf_token": csrf_token(client), "sku": facts["sku"], "quantity": "1"}
    ).status_code in (302, 303)  # a storefront cart, so the cart page needs the database
    token = csrf_token(client)

    pg.cut()
    for name, resp in api_calls(client, facts, cart):
        assert_unavailable(resp), name
    assert_unavailable(client.get("/"), html=True)
    assert_unavailable(client.get("/cart"), html=True)
    assert_unavailable(
        client.post("/account/login", data={"csrf_token": token, "email": facts["email"], "password": PASSWORD}),
        html=True,
    )

    pg.restore()
    assert client.get("/api/v1/products").status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/cart").status_code == 200
    assert client.post("/api/v1/auth/token", json={"email": facts["email"], "password": PASSWORD}).status_code == 200
    placed = client.post(
        "/api/v1/checkout",
        headers={"X-Cart-Token": cart["token"], "Idempotency-Key": "k" * 12},
        json={"cart_id": cart["id"], "email": "ann@example.com", "shipping_address": ADDRESS},
    )
    assert placed.status_code == 201, placed.get_json()


def test_redis_outage_stops_only_what_needs_redis(shop):
    app, client, _, rd, facts = shop
    login = client.post("/api/v1/auth/token", json={"email": facts["email"], "password": PASSWORD}).get_json()
    bearer = {"Authorization": f"Bearer {login['access_token']}"}
    token = csrf_token(client)

    rd.cut()
    # What steps aside when Redis is down keeps working: the catalogue cache, carts (rate limits fail open).
    assert client.get("/api/v1/products").status_code == 200
    assert client.get("/").status_code == 200
    cart = client.post("/api/v1/carts", json={})
    assert cart.status_code == 201
    # Log-in (throttle counters and token state live in Redis) answers 503, not 500.
    assert_unavailable(client.post("/api/v1/auth/token", json={"email": facts["email"], "password": PASSWORD}))
    assert_unavailable(client.get("/api/v1/me", headers=bearer))
    page = client.post("/account/login", data={"csrf_token": token, "email": facts["email"], "password": PASSWORD})
    assert_unavailable(page, html=True)

    rd.restore()
    assert client.get("/api/v1/me", headers=bearer).status_code == 200
    assert client.post("/api/v1/auth/token", json={"email": facts["email"], "password": PASSWORD}).status_code == 200


def test_a_connection_the_server_ends_is_503_but_a_failing_statement_is_still_a_500(committed_db):
    """PostgreSQL ending a connection (a restart: 57P01 admin shutdown) is an outage; a cancelled statement is
    an OperationalError too, but a bug, logged and answered 500."""
    from sqlalchemy import text

    from shop import create_app
    from shop.extensions import db

    app = create_app(config_for(committed_db))

    @app.get("/api/v1/_test_terminated")
    def _terminated():
        db.session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    @app.get("/api/v1/_test_slow")
    def _slow():
        db.session.execute(text("SET LOCAL statement_timeout = 10"))
        db.session.execute(text("SELECT pg_sleep(1)"))

    assert_unavailable(app.test_client().get("/api/v1/_test_terminated"))
    resp = app.test_client().get("/api/v1/_test_slow")
    assert resp.status_code == 500 and resp.get_json()["error"]["code"] == "internal_error"
    assert "Retry-After" not in resp.headers
    with app.app_context():
        db.engine.dispose()


def test_an_answer_made_before_the_database_died_is_not_turned_into_a_500(committed_db):
    """PostgreSQL dies after the view answered, while the request still holds its connection: the teardown's
    rollback fails, and the shopper still gets the answer (seen as a 500 on the pay page in the fault drills)."""
    import psycopg
    from sqlalchemy import text

    from shop import create_app
    from shop.extensions import db

    app = create_app(config_for(committed_db))

    @app.get("/api/v1/_test_dies_after")
    def _dies_after():
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()  # a transaction is open
        with psycopg.connect(committed_db, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return {"ok": True}

    client = app.test_client()
    resp = client.get("/api/v1/_test_dies_after")
    assert resp.status_code == 200 and resp.get_json() == {"ok": True}
    assert client.get("/api/v1/products").status_code == 200  # the next request gets a fresh connection
    with app.app_context():
        db.engine.dispose()
