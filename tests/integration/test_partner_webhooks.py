"""Partner webhooks, the admin API and the SSRF guard: endpoints registered, listed, changed and deleted by admins
only; bad input 422 in the contract's shape; URLs reaching loopback, private, link-local or metadata addresses
refused at registration and at sending (after redirects and DNS changes too).

`Receiver` is the partner: a threaded local HTTP server that verifies every request's signature with the
`standardwebhooks` package and can answer 500, stall past the shop's timeout, redirect, or be closed."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook

from shop.events import TYPES
from tests.fakes.serving import ServedInThread
from tests.integration.test_permissions import ROLES, token_for, world  # noqa: F401 - fixture

A = "/api/v1/admin/webhooks"


class Receiver:
    """A partner's endpoint on 127.0.0.1. `answers` is a list of what to do with the next requests, in turn
    (an int status, ("sleep", seconds), ("redirect", url)); then `default`. `received` holds the requests whose
    signature verified; `bad` those whose did not."""

    def __init__(self, port: int = 0):
        self.secret: str | None = None
        self.answers: list = []
        self.default = 204
        self.received: list[dict] = []
        self.bad: list[str] = []
        self.hits = 0
        self.lock = threading.Lock()
        self.port = port
        self._served = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.hits += 1
                    answer = receiver.answers.pop(0) if receiver.answers else receiver.default
                if isinstance(answer, tuple) and answer[0] == "sleep":  # past the sender's timeout: it gave up
                    time.sleep(answer[1])
                    self.close_connection = True
                    return
                if isinstance(answer, tuple) and answer[0] == "redirect":
                    self.send_response(307)
                    self.send_header("Location", answer[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    envelope = Webhook(receiver.secret).verify(body, dict(self.headers))
                except Exception as exc:  # noqa: BLE001 - recorded for the test to see
                    with receiver.lock:
                        receiver.bad.append(f"{type(exc).__name__}: {exc}")
                    answer = 400
                else:
                    with receiver.lock:
                        receiver.received.append(
                            {
                                "envelope": envelope,
                                "headers": dict(self.headers),
                                "body": body.decode(),
                                "status": answer,
                            }
                        )
                reply = json.dumps({"answer": answer, "padding": "x" * 5000}).encode()
                self.send_response(answer)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        return Handler

    def open(self) -> Receiver:
        """Listen (again, on the same port once it had one): refused connections end."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._served = ServedInThread(server).__enter__()
        return self

    def close(self) -> None:
        """Stop listening: connections to the port are refused until open() again."""
        if self._served is not None:
            self._served.__exit__(None, None, None)
            self._served = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def delivered(self, event_type: str | None = None) -> list[dict]:
        return [
            r
            for r in self.received
            if 200 <= r["status"] < 300 and (event_type is None or r["envelope"]["type"] == event_type)
        ]


def call(client, method, path, user, body=None):
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return getattr(client, method)(path, headers={"Authorization": f"Bearer {token_for(user)}"}, **kwargs)


@pytest.fixture
def private_ok(app, monkeypatch):
    """WEBHOOK_ALLOW_PRIVATE=1: the local receiver may be reached (tests that deliver)."""
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE", True)


@pytest.fixture
def private_refused(app, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE", False)


def resolving(monkeypatch, names: dict):
    """The OS resolver answering `names` ({host: [ip, ...] or a callable giving them}); other names as usual.
    Patched because getaddrinfo is the operating system's, not the shop's code."""
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host in names:
            ips = names[host]() if callable(names[host]) else names[host]
            return [
                (
                    socket.AF_INET6 if ":" in ip else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (ip, port or 0) if ":" not in ip else (ip, port or 0, 0, 0),
                )
                for ip in ips
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


# -- the API: shapes, roles, input ---------------------------------------------------------------
def test_an_admin_registers_an_endpoint_and_sees_its_secret_only_once(client, world, private_ok):
    admin = world["staff"]["admin"]
    made = call(
        client, "post", A, admin, {"url": "http://127.0.0.1:9/hooks", "events": ["order.placed"], "description": "ERP"}
    )
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    body = made.get_json()
    assert list(body)[:4] == ["id", "url", "events", "secret"]
    assert body["url"] == "http://127.0.0.1:9/hooks" and body["events"] == ["order.placed"]
    assert body["secret"].startswith("whsec_") and len(body["secret"]) >= 6 + 32
    Webhook(body["secret"])  # a secret the Standard Webhooks libraries accept
    listed = call(client, "get", A, admin).get_json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == body["id"]
    assert listed["items"][0]["description"] == "ERP" and listed["items"][0]["enabled"] is True
    one = call(client, "get", f"{A}/{body['id']}", admin).get_json()
    assert body["secret"] not in json.dumps(listed) + json.dumps(one)
    from shop.extensions import db
    from shop.partners.models import WebhookEndpoint

    assert body["secret"] not in db.session.get(WebhookEndpoint, body["id"]).secret_encrypted  # kept encrypted


@pytest.mark.parametrize("role", [r for r in ROLES if r != "admin"])
def test_only_admins_reach_the_webhook_api(client, world, role, private_ok):
    admin, other = world["staff"]["admin"], world["staff"][role]
    endpoint = call(client, "post", A, admin, {"url": "http://127.0.0.1:9/h", "events": ["order.placed"]}).get_json()
    for method, path, body in [
        ("post", A, {"url": "http://127.0.0.1:9/x", "events": ["order.placed"]}),
        ("get", A, None),
        ("patch", f"{A}/{endpoint['id']}", {"description": "mine"}),
        ("delete", f"{A}/{endpoint['id']}", None),
        ("get", f"{A}/{endpoint['id']}/deliveries", None),
        ("post", f"{A}/{endpoint['id']}/test", None),
        ("post", f"{A}/{endpoint['id']}/deliveries/1/retry", None),
    ]:
        resp = call(client, method, path, other, body)
        assert resp.status_code == 403, (method, path)
        assert resp.get_json()["error"]["code"] == "forbidden"
    assert client.get(A).status_code == 401
    assert call(client, "get", A, admin).get_json()["items"][0]["description"] == ""


@pytest.mark.parametrize(
    "body,fields",
    [
        ({"events": ["order.placed"]}, {"url"}),
        ({"url": "http://127.0.0.1:9/h" + "x" * 2000, "events": ["order.placed"]}, {"url"}),
        ({"url": "http://127.0.0.1:9/h", "events": []}, {"events"}),
        ({"url": "http://127.0.0.1:9/h", "events": ["order.placed", "order.eaten"]}, {"events"}),
        ({"url": "http://127.0.0.1:9/h", "events": "order.placed"}, {"events"}),
        ({"url": "http://127.0.0.1:9/h", "events": ["order.placed"], "description": "d" * 201}, {"description"}),
        ({"url": 5, "events": [1], "description": 7}, {"url", "events", "description"}),
        ({"url": "http://127.0.0.1:9/h", "events": ["order.placed"], "secret": "whsec_mine"}, {"secret"}),
    ],
)
def test_bad_input_is_422_naming_each_field_and_nothing_is_written(client, world, private_ok, body, fields):
    admin = world["staff"]["admin"]
    resp = call(client, "post", A, admin, body)
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["code"] == "validation_failed" and set(error["details"]["fields"]) == fields
    assert call(client, "get", A, admin).get_json()["total"] == 0


def test_patch_changes_what_it_names_and_delete_removes(client, world, private_ok):
    admin = world["staff"]["admin"]
    made = call(client, "post", A, admin, {"url": "http://127.0.0.1:9/h", "events": ["order.placed"]}).get_json()
    path = f"{A}/{made['id']}"
    changed = call(client, "patch", path, admin, {"events": ["order.shipped", "order.placed"], "enabled": False})
    assert changed.status_code == 200
    body = changed.get_json()
    assert body["events"] == ["order.placed", "order.shipped"] and body["enabled"] is False
    assert body["disabled_reason"] == "Disabled by an admin." and body["url"] == made["url"]
    assert call(client, "post", f"{path}/test", admin).status_code == 409  # disabled: nothing is sent
    back = call(client, "patch", path, admin, {"enabled": True}).get_json()
    assert back["enabled"] is True and back["disabled_reason"] is None and back["disabled_at"] is None
    assert call(client, "patch", path, admin, {"enabled": "yes"}).status_code == 422
    assert call(client, "patch", path, admin, {"events": []}).status_code == 422
    assert call(client, "delete", path, admin).status_code == 204
    assert call(client, "get", path, admin).status_code == 404
    assert call(client, "patch", path, admin, {"description": "x"}).status_code == 404
    assert call(client, "post", f"{path}/test", admin).status_code == 404


def test_every_event_type_can_be_subscribed(client, world, private_ok):
    resp = call(client, "post", A, world["staff"]["admin"], {"url": "http://127.0.0.1:9/h", "events": list(TYPES)})
    assert resp.status_code == 201 and resp.get_json()["events"] == list(TYPES)


# -- the SSRF guard at registration ---------------------------------------------------------------
@pytest.mark.parametrize(
    "url,why",
    [
        ("http://127.0.0.1/hooks", "loopback"),
        ("http://localhost:8080/hooks", "loopback"),
        ("http://[::1]/hooks", "loopback"),
        ("http://2130706433/hooks", "loopback"),  # 127.0.0.1 written as a number
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://10.0.0.7/hooks", "private"),
        ("http://192.168.1.20/hooks", "private"),
        ("http://172.16.5.4/hooks", "private"),
        ("http://100.64.0.9/hooks", "carrier-grade NAT"),
        ("http://[fe80::1]/hooks", "link-local"),
        ("http://[fc00::1]/hooks", "private"),
        ("http://[::ffff:10.0.0.1]/hooks", "private"),
        ("http://[2002:a00:1::]/hooks", "private"),  # 6to4 around 10.0.0.1
        ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/hooks", "private"),  # Teredo around 10.0.0.1
        ("http://192.0.0.8/hooks", "reserved"),  # IETF protocol assignments (Python 3.11.7 calls it global)
        ("http://0.0.0.0/hooks", "unspecified"),
        ("http://224.0.0.1/hooks", "multicast"),
        ("ftp://example.com/hooks", "Only http:// and https://"),
        ("https://user:pw@example.com/hooks", "user name or password"),
        ("https://no-such-host.invalid/hooks", "cannot be resolved"),
    ],
)
def test_registration_refuses_urls_that_reach_inside(client, world, private_refused, url, why):
    resp = call(client, "post", A, world["staff"]["admin"], {"url": url, "events": ["order.placed"]})
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["code"] == "url_not_allowed" and why in error["message"]
    assert error["details"]["fields"]["url"] == error["message"]


def test_a_name_resolving_to_a_private_address_is_refused_and_a_public_one_taken(
    client, world, private_refused, monkeypatch
):
    resolving(
        monkeypatch,
        {
            "erp.partner.example": ["10.20.30.40"],
            "shop.partner.example": ["93.184.215.14"],
            "mixed.partner.example": ["93.184.215.14", "192.168.0.4"],
        },
    )
    admin = world["staff"]["admin"]
    refused = call(client, "post", A, admin, {"url": "https://erp.partner.example/h", "events": ["order.placed"]})
    assert refused.status_code == 422
    assert refused.get_json()["error"]["message"].startswith("erp.partner.example (10.20.30.40) is a private address")
    mixed = call(client, "post", A, admin, {"url": "https://mixed.partner.example/h", "events": ["order.placed"]})
    assert mixed.status_code == 422 and "192.168.0.4" in mixed.get_json()["error"]["message"]
    taken = call(client, "post", A, admin, {"url": "https://shop.partner.example/h", "events": ["order.placed"]})
    assert taken.status_code == 201
    moved = call(client, "patch", f"{A}/{taken.get_json()['id']}", admin, {"url": "http://169.254.169.254/"})
    assert moved.status_code == 422 and moved.get_json()["error"]["code"] == "url_not_allowed"


def test_allow_private_lets_loopback_through_but_never_the_metadata_service(client, world, private_ok):
    admin = world["staff"]["admin"]
    assert (
        call(client, "post", A, admin, {"url": "http://127.0.0.1:9/h", "events": ["order.placed"]}).status_code == 201
    )
    metadata = call(client, "post", A, admin, {"url": "http://169.254.169.254/", "events": ["order.placed"]})
    assert metadata.status_code == 422 and "metadata" in metadata.get_json()["error"]["message"]
