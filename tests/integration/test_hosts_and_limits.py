"""Issue #9 items 3, 5 and 6: absolute URLs only at PUBLIC_BASE_URL and other Host headers refused,
bounded request bodies and JSON depth, and the security headers on every kind of page."""

import json
import logging
import os
import socket
import uuid

import pytest
from rq import Queue

from tests.conftest import LiveServer, config_for, local_path
from tests.factories import make_category, make_product, make_user
from tests.integration.test_storefront_accounts import queued_mail, token_of

HOSTILE = {"Host": "evil.example:8080"}
ADDRESS = {
    "name": "Ann Buyer",
    "line1": "1 Main St",
    "city": "Springfield",
    "region": "CA",
    "postal_code": "12345",
    "country": "US",
}


def send(client, path, body, **headers):
    return client.post(
        path,
        data=body if isinstance(body, (bytes, str)) else json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def hostile(client) -> dict:
    """A hostile Host header, with the session cookie a browser tricked into sending it would carry."""
    cookie = client.get_cookie("session")
    if cookie:
        client.set_cookie("session", cookie.value, domain="evil.example")
    return dict(HOSTILE)


@pytest.fixture
def any_host(app, monkeypatch):
    """As if TRUSTED_HOSTS=* (a proxy that checks hosts itself): links must still be at PUBLIC_BASE_URL."""
    monkeypatch.setitem(app.config, "TRUSTED_HOSTS", None)


@pytest.fixture
def manager(db_session, redis_client):
    from shop.accounts.tokens import issue_pair

    user = make_user("boss@example.com", role="manager")
    return {"Authorization": f"Bearer {issue_pair(user)['access_token']}"}


# -- item 3: Host-header poisoning -------------------------------------------------------------------------------
def test_a_reset_request_with_a_hostile_host_is_refused_and_mails_nothing(client, redis_client, db_session):
    make_user("victim@example.com")
    token = token_of(client.get("/account/reset").get_data(as_text=True))
    resp = client.post(
        "/account/reset", data={"csrf_token": token, "email": "victim@example.com"}, headers=hostile(client)
    )
    assert resp.status_code == 400 and "evil.example" not in resp.get_data(as_text=True)
    assert queued_mail(redis_client, "account.password_reset") == []
    api = send(client, "/api/v1/auth/token", {"email": "victim@example.com", "password": "x"}, **HOSTILE)
    assert api.status_code == 400 and api.get_json()["error"]["code"] == "untrusted_host"


def test_health_probes_answer_whatever_the_host(client, db_session):
    assert client.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200
    assert client.get("/api/v1/categories", headers={"Host": "10.1.2.3:8000"}).status_code == 400


def test_reset_links_point_at_public_base_url_whatever_host_was_used(app, client, redis_client, db_session, any_host):
    make_user("victim@example.com")
    token = token_of(client.get("/account/reset").get_data(as_text=True))
    resp = client.post(
        "/account/reset", data={"csrf_token": token, "email": "victim@example.com"}, headers=hostile(client)
    )
    assert resp.status_code == 200
    [(_, payload)] = queued_mail(redis_client, "account.password_reset")
    assert payload["link"].startswith(app.config["PUBLIC_BASE_URL"] + "/account/reset/")


def test_signed_upload_urls_are_at_public_base_url(app, client, manager, any_host):
    body = {"filename": "shirt.png", "content_type": "image/png"}
    for headers in ({}, HOSTILE):
        signed = send(client, "/api/v1/admin/uploads", body, **manager, **headers).get_json()
        assert signed["upload_url"].startswith(app.config["PUBLIC_BASE_URL"] + "/media/upload/"), signed


def test_the_test_gateway_delivers_its_webhook_to_public_base_url_only(app, client, redis_client, db_session, any_host):
    tee = make_product(
        make_category("Tees", slug="tees"),
        "Tee",
        slug="tee",
        sizes=("M",),
        colours=("Red",),
        price=2000,
        stock={("M", "Red"): 5},
    )
    cart = send(client, "/api/v1/carts", {}).get_json()
    token = {"X-Cart-Token": cart["token"]}
    send(client, f"/api/v1/carts/{cart['id']}/items", {"sku": tee.variants[0].sku, "quantity": 1}, **token)
    placed = send(
        client,
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": "ann@example.com", "shipping_address": ADDRESS},
        **token,
        **{"Idempotency-Key": str(uuid.uuid4())},
        **HOSTILE,
    )
    pay_url = placed.get_json()["payment"]["redirect_url"]
    assert pay_url.startswith(app.config["PUBLIC_BASE_URL"] + "/pay/test/")
    page = client.get(local_path(pay_url))
    resp = client.post(
        local_path(pay_url),
        headers=hostile(client),
        data={"csrf_token": token_of(page.get_data(as_text=True)), "decision": "approve"},
    )
    assert resp.status_code in (302, 303)
    [job] = Queue("default", connection=redis_client).jobs
    assert job.args[0] == app.config["PUBLIC_BASE_URL"] + "/webhooks/stripe"


def test_trusted_hosts_default_to_public_base_url_and_loopback_outside_production():
    from config import from_environment

    dev = from_environment({"PUBLIC_BASE_URL": "https://shop.example.com"})
    assert set(dev["TRUSTED_HOSTS"]) == {"shop.example.com", "localhost", "127.0.0.1"}
    prod = from_environment(
        {
            "PUBLIC_BASE_URL": "https://shop.example.com/",
            "SHOP_ENV": "production",
            "TRUSTED_HOSTS": "www.shop.example.com",
        }
    )
    assert prod["TRUSTED_HOSTS"] == ["www.shop.example.com", "shop.example.com"]
    assert prod["PUBLIC_BASE_URL"] == "https://shop.example.com"


# -- item 5: unbounded input --------------------------------------------------------------------------------------
DEEP = "[" * 600 + "]" * 600


@pytest.mark.parametrize(
    "path",
    ["/api/v1/auth/register", "/api/v1/auth/token", "/api/v1/auth/refresh", "/api/v1/checkout", "/api/v1/auth/logout"],
)
def test_deeply_nested_json_is_a_short_400_not_a_500(client, redis_client, db_session, caplog, path):
    body = '{"email": "a@example.com", "password": "x", "refresh_token": "x", "cart_id": ' + DEEP + "}"
    with caplog.at_level(logging.INFO):
        resp = send(client, path, body, **{"Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert resp.get_json()["error"]["code"] == "malformed_request"
    assert sum(len(r.getMessage().splitlines()) + (50 if r.exc_info else 0) for r in caplog.records) < 20


def test_deep_json_in_admin_writes_is_refused_too(client, manager):
    resp = send(client, "/api/v1/admin/products", '{"name": ' + DEEP + "}", **manager)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "malformed_request"


def test_json_within_the_depth_limit_and_brackets_inside_strings_are_fine(client, redis_client, db_session):
    nested = {"x": 1}
    for _ in range(14):  # 29 levels of objects and arrays
        nested = {"x": [nested]}
    body = {"email": "depth@example.com", "password": "correct horse battery", "name": "[{" * 50, "extra": nested}
    resp = send(client, "/api/v1/auth/register", body)
    assert resp.status_code == 201, resp.get_json()


@pytest.fixture(scope="module")
def live():
    """The app over HTTP (these requests write nothing)."""
    from shop import create_app

    with LiveServer(create_app(config_for())) as server:
        yield server


def raw_request(url: str, head: str, body: bytes = b"", timeout=10) -> tuple[int, dict, bytes]:
    """Send `head` (request line and headers) and `body` over a socket; the status, headers and body."""
    host, port = url.split("://")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header_blob, _, content = data.partition(b"\r\n\r\n")
    lines = header_blob.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, content


def test_a_body_over_the_limit_is_413_before_it_is_read(live):
    # Five megabytes are announced but never sent: only an answer without reading them returns in time.
    head = (
        "POST /api/v1/auth/register HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
        f"Content-Length: {5 * 1024 * 1024}\n"
    )
    status, headers, content = raw_request(live.url, head, b'{"email": ', timeout=10)
    assert status == 413 and json.loads(content)["error"]["code"] == "payload_too_large"


def test_a_storefront_form_over_the_limit_gets_a_friendly_413_page(client, db_session):
    resp = client.post("/account/login", data={"email": "x" * (2 * 1024 * 1024)})
    assert resp.status_code == 413 and resp.mimetype == "text/html"


def test_a_five_megabyte_image_still_uploads_to_the_local_upload_url(app, client, manager, monkeypatch, tmp_path):
    from PIL import Image

    monkeypatch.setitem(app.config, "UPLOAD_DIR", str(tmp_path / "uploads"))
    side = 1400  # random pixels do not compress: about 5.6 MB as PNG
    buf = __import__("io").BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, "PNG", compress_level=0)
    png = buf.getvalue()
    assert 5 * 1024 * 1024 < len(png) < app.config["UPLOAD_MAX_BYTES"]
    signed = send(
        client,
        "/api/v1/admin/uploads",
        {"filename": "big.png", "content_type": "image/png", "size": len(png)},
        **manager,
    ).get_json()
    put = client.put(local_path(signed["upload_url"]), data=png, headers=signed["headers"])
    assert put.status_code == 201, put.get_data(as_text=True)[:300]


# -- item 6: security headers -------------------------------------------------------------------------------------
def assert_protected(resp):
    h = resp.headers
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] in ("same-origin", "no-referrer", "strict-origin-when-cross-origin")


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/cart",
        "/account/login",
        "/admin/login",
        "/api/docs",
        "/api/v1/categories",
        "/api/v1/nothing-here",
        "/healthz",
    ],
)
def test_every_kind_of_page_carries_the_security_headers(client, db_session, path):
    resp = client.get(path)
    assert_protected(resp)
    if resp.mimetype == "text/html":
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self' 'nonce-" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "Strict-Transport-Security" not in resp.headers  # not outside production


def test_production_adds_hsts(db_session):
    from shop import create_app

    app = create_app(config_for(ENV_NAME="production"))
    resp = app.test_client().get("/healthz")
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_the_server_banner_names_no_versions(live):
    status, headers, _ = raw_request(live.url, "GET /healthz HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n")
    assert status == 200 and "werkzeug" not in headers.get("server", "").lower()
    assert "python" not in headers.get("server", "").lower()
    assert headers["x-frame-options"] == "DENY"
