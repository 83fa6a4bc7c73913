"""A checkout whose answer was lost is recovered with the same Idempotency-Key; stuck payments are swept.

Issue 10 item 4. Real PostgreSQL with real commits; the lost answer is made the way it happens in
production: a web process (a real `flask run` child) is SIGKILLed while it waits for Stripe, after
its order committed. Stripe is the local fake the official SDK talks to (tests/fakes/stripe.py); the
"hung Stripe" is a port that accepts connections and never answers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from redis import Redis

from tests.conftest import LiveServer, config_for
from tests.e2e.test_accounts_live import all_at_once
from tests.e2e.test_buying_concurrency import post
from tests.fakes.stripe import FakeStripe

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = {
    "name": "Ann Buyer",
    "line1": "1 Main St",
    "city": "Springfield",
    "region": "IL",
    "postal_code": "12345",
    "country": "US",
}  # a US address names its state (the storefront asks for it: tax depends on it)
STRIPE_KEY = "sk_test_recovery"


def call(base_url: str, path: str, body: dict, headers=None):
    """POST JSON to a server at `base_url`: (status, body)."""
    return post(SimpleNamespace(url=base_url), path, body, headers)


def seed(database_url: str, stock: int = 5) -> str:
    """One product with `stock` units; returns its SKU."""
    from shop import create_app
    from shop.extensions import db
    from tests.factories import make_category, make_product

    app = create_app(config_for(database_url))
    with app.app_context():
        product = make_product(
            make_category("Sale", slug="sale"), "Hot Item", slug="hot-item", sizes=("M",), stock=stock
        )
        db.session.commit()
        sku = product.variants[0].sku
        db.engine.dispose()
    return sku


def cart_with(base_url: str, sku: str) -> dict:
    status, cart = call(base_url, "/api/v1/carts", {})
    assert status == 201, cart
    status, body = call(
        base_url, f"/api/v1/carts/{cart['id']}/items", {"sku": sku, "quantity": 1}, {"X-Cart-Token": cart["token"]}
    )
    assert status == 201, body
    return cart


def checkout(base_url: str, cart: dict, key: str):
    return call(
        base_url,
        "/api/v1/checkout",
        {"cart_id": cart["id"], "email": "ann@example.com", "shipping_address": ADDRESS},
        {"X-Cart-Token": cart["token"], "Idempotency-Key": key},
    )


def rows(database_url: str, sql: str, *args):
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, args).fetchall()


# ------------------------------------------------------------------ many copies of one checkout at once


def test_copies_of_one_checkout_sent_together_make_one_order_and_all_get_it(committed_db):
    """20 copies with one key at once: one order, one hold; every copy ends with the same 201."""
    sku = seed(committed_db)
    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    from shop import create_app
    from shop.extensions import db

    app = create_app(config_for(committed_db))
    with LiveServer(app) as server:
        cart, key = cart_with(server.url, sku), str(uuid.uuid4())

        def until_answered():
            deadline = time.monotonic() + 60
            while True:
                status, body = checkout(server.url, cart, key)
                if not (status == 409 and body["error"]["code"] == "request_in_progress"):
                    return status, body
                assert time.monotonic() < deadline, "still in progress after a minute"
                time.sleep(0.05)

        answers = all_at_once(20, until_answered)
    with app.app_context():
        db.engine.dispose()
    assert {status for status, _ in answers} == {201}, answers
    assert len({body["order"]["id"] for _, body in answers}) == 1
    assert len({body["payment"]["redirect_url"] for _, body in answers}) == 1
    assert rows(committed_db, 'SELECT count(*) FROM "order"') == [(1,)]
    assert rows(committed_db, "SELECT on_hand, reserved FROM variant") == [(5, 1)]


# ------------------------------------------------------------------ a web process killed mid-checkout


class HungPort:
    """A port that accepts connections and never answers: a provider that hangs. `wait_for_caller()`
    returns once someone is connected (and so waiting)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def wait_for_caller(self, timeout=30):
        deadline = time.monotonic() + timeout
        while not self.accepted:
            assert time.monotonic() < deadline, "nobody called the provider"
            time.sleep(0.02)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web_process(database_url: str, stripe_base: str, log: Path) -> tuple[subprocess.Popen, str]:
    """The shop served by a real `flask run` child process (Stripe mode), and its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SHOP_ENV": "test",
        "PAYMENT_PROVIDER": "stripe",
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": "whsec_x",
        "STRIPE_API_BASE": stripe_base,
        "PUBLIC_BASE_URL": url,
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "run", "--port", str(port), "--no-reload"],
        cwd=ROOT,
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2).close()
            return proc, url
        except OSError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


def killed_while(database_url: str, tmp_path: Path, prepare):
    """SIGKILL a web process while it waits for Stripe, after its order committed: `prepare(url)` readies a
    shopper on that process and returns the request that will be lost (the client never gets an answer)."""
    hung = HungPort()
    proc, url = web_process(database_url, hung.url, tmp_path / "web-killed.log")
    try:
        lose = prepare(url)
        lost = threading.Thread(target=lambda: pytest.raises(OSError, lose), daemon=True)
        lost.start()
        hung.wait_for_caller()  # the order is committed and the process waits for the provider
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        lost.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        hung.close()


def killed_mid_checkout(database_url: str, sku: str, tmp_path: Path) -> tuple[dict, str]:
    """An API checkout lost that way; returns its (cart, Idempotency-Key)."""
    sent = {}

    def prepare(url):
        sent.update(cart=cart_with(url, sku), key=str(uuid.uuid4()))
        return lambda: checkout(url, sent["cart"], sent["key"])

    killed_while(database_url, tmp_path, prepare)
    return sent["cart"], sent["key"]


def test_a_retry_after_the_web_process_died_gets_the_order_it_created(committed_db, tmp_path):
    sku = seed(committed_db)
    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    cart, key = killed_mid_checkout(committed_db, sku, tmp_path)
    ((order_id, status),) = rows(committed_db, 'SELECT id, status FROM "order"')
    assert status == "pending"
    assert rows(committed_db, "SELECT status FROM payment") == [("creating",)]

    with FakeStripe(STRIPE_KEY) as stripe_api:
        proc, url = web_process(committed_db, stripe_api.url, tmp_path / "web.log")
        try:
            started = time.monotonic()
            status, body = checkout(url, cart, key)  # at once: the dead process holds nothing any more
            assert time.monotonic() - started < 10
            assert status == 201, body
            assert body["order"]["id"] == order_id and body["order"]["status"] == "pending"
            assert body["payment"]["client_secret"], body  # the shopper can pay
            order_page = urllib.request.Request(
                f"{url}/api/v1/orders/{order_id}", headers={"X-Order-Token": body["order"]["access_token"]}
            )
            assert urllib.request.urlopen(order_page, timeout=10).status == 200  # the guest's token works
            assert checkout(url, cart, key) == (201, body)  # and it is the key's answer from now on
        finally:
            proc.kill()
            proc.wait(10)
        creates = stripe_api.calls("POST", "/v1/payment_intents")
        intents = list(stripe_api.intents)
    assert len(creates) == 1 and creates[0].idempotency_key.startswith("shop-payment-")
    assert rows(committed_db, 'SELECT count(*) FROM "order"') == [(1,)]
    assert rows(committed_db, "SELECT status, provider_id FROM payment") == [("requires_payment", intents[0])]
    assert rows(committed_db, "SELECT on_hand, reserved FROM variant") == [(5, 1)]


class Browser:
    """Cookies kept across servers (as a browser keeps them for 127.0.0.1), redirects not followed."""

    def __init__(self):
        import http.cookiejar

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect()
        )

    def get(self, url: str) -> str:
        with self.opener.open(url, timeout=30) as resp:
            return resp.read().decode()

    def post(self, url: str, form: dict) -> tuple[int, str]:
        """(status, Location) of a form post."""
        from urllib.error import HTTPError
        from urllib.parse import urlencode

        try:
            with self.opener.open(url, data=urlencode(form).encode(), timeout=30) as resp:
                return resp.status, resp.headers.get("Location", "")
        except HTTPError as err:  # a 3xx not followed
            return err.code, err.headers.get("Location", "")


def hidden(html: str, *names) -> dict:
    import re

    return {n: re.search(rf'name="{n}" type="hidden" value="([^"]+)"', html).group(1) for n in names}


def test_pressing_place_order_again_after_the_web_process_died_shows_the_order_it_created(committed_db, tmp_path):
    """The storefront's nonce claim recovers the same way: the review page sent again leads to the order."""
    sku = seed(committed_db)
    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    browser, form = Browser(), {}

    def prepare(url):
        token = json.loads(browser.get(f"{url}/csrf-token"))["csrf_token"]
        assert browser.post(f"{url}/cart/items", {"csrf_token": token, "sku": sku, "quantity": "1"})[0] == 303
        details = hidden(browser.get(f"{url}/checkout"), "csrf_token")
        assert (
            browser.post(
                f"{url}/checkout/review",
                {**details, "email": "ann@example.com", **ADDRESS, "shipping_method": "standard"},
            )[0]
            == 303
        )
        form.update(hidden(browser.get(f"{url}/checkout/review"), "csrf_token", "cart_id", "nonce"))
        return lambda: browser.post(f"{url}/checkout/place", form)

    killed_while(committed_db, tmp_path, prepare)
    ((order_id,),) = rows(committed_db, 'SELECT id FROM "order"')
    with FakeStripe(STRIPE_KEY) as stripe_api:
        proc, url = web_process(committed_db, stripe_api.url, tmp_path / "web.log")
        try:
            status, location = browser.post(f"{url}/checkout/place", form)  # the same page sent again
            # On to Stripe's hosted page for the order the dead process created (its payment finished starting).
            assert status == 303 and location.startswith(f"{stripe_api.url}/c/pay/cs_"), (status, location)
            assert "Pending" in browser.get(f"{url}/orders/{order_id}")  # the guest's key was kept in the session
        finally:
            proc.kill()
            proc.wait(10)
        assert len(stripe_api.calls("POST", "/v1/checkout/sessions")) == 1
    assert rows(committed_db, 'SELECT count(*) FROM "order"') == [(1,)]
    assert rows(committed_db, "SELECT status FROM payment") == [("requires_payment",)]


# ------------------------------------------------------------------ the stuck-payment sweep


@pytest.fixture
def stuck(committed_db, tmp_path):
    """A payment left `creating` by a killed web process; yields (database url, app in Stripe mode, fake)."""
    from shop import create_app
    from shop.extensions import db

    sku = seed(committed_db)
    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    killed_mid_checkout(committed_db, sku, tmp_path)
    with FakeStripe(STRIPE_KEY) as stripe_api:
        app = create_app(
            config_for(
                committed_db,
                PAYMENT_PROVIDER="stripe",
                STRIPE_SECRET_KEY=STRIPE_KEY,
                STRIPE_WEBHOOK_SECRET="whsec_x",
                STRIPE_API_BASE=stripe_api.url,
            )
        )
        yield committed_db, app, stripe_api
        with app.app_context():
            db.engine.dispose()


def sweep(app, **kwargs):
    from shop.payments.jobs import finish_stuck_payments

    with app.app_context():
        return finish_stuck_payments(**kwargs)


def test_the_sweep_starts_a_stuck_payment_once_even_when_two_run_at_once(stuck):
    database_url, app, stripe_api = stuck
    assert sweep(app) == {"started": 0, "failed": 0, "cancelled": 0}  # not stuck for long enough yet
    results = all_at_once(2, lambda: sweep(app, older_than_seconds=0))
    assert sorted(r["started"] for r in results) == [0, 1]
    creates = stripe_api.calls("POST", "/v1/payment_intents")
    assert len(creates) == 1
    assert rows(database_url, 'SELECT p.status, o.status FROM payment p JOIN "order" o ON o.id = p.order_id') == [
        ("requires_payment", "pending")
    ]
    assert rows(database_url, "SELECT on_hand, reserved FROM variant") == [(5, 1)]  # still held for the shopper


def test_the_sweep_cancels_the_order_and_releases_its_hold_when_the_payment_cannot_start(stuck):
    database_url, app, stripe_api = stuck
    stripe_api.stop()  # Stripe unreachable
    assert sweep(app, older_than_seconds=0) == {"started": 0, "failed": 1, "cancelled": 0}
    assert rows(database_url, 'SELECT p.status, o.status FROM payment p JOIN "order" o ON o.id = p.order_id') == [
        ("failed", "cancelled")
    ]
    assert rows(database_url, "SELECT on_hand, reserved FROM variant") == [(5, 0)]


def test_the_sweep_cancels_a_stuck_payment_whose_order_expired(stuck):
    from shop.orders.jobs import expire_reservations

    database_url, app, stripe_api = stuck
    from datetime import datetime, timedelta, timezone

    with app.app_context():  # the hold ran out while nobody was there to pay
        assert expire_reservations(now=datetime.now(UTC) + timedelta(days=1)) == 1
    assert sweep(app, older_than_seconds=0) == {"started": 0, "failed": 0, "cancelled": 1}
    assert stripe_api.calls("POST", "/v1/payment_intents") == []
    assert rows(database_url, 'SELECT p.status, o.status FROM payment p JOIN "order" o ON o.id = p.order_id') == [
        ("cancelled", "cancelled")
    ]
    assert rows(database_url, "SELECT on_hand, reserved FROM variant") == [(5, 0)]


def test_a_stuck_pay_again_attempt_that_cannot_start_keeps_the_order_and_its_hold(stuck):
    """Not the order's first attempt ("Pay again" after a decline): a provider still down leaves the order
    pending with its items held, so the shopper can press "Pay again" once more."""
    database_url, app, stripe_api = stuck
    with psycopg.connect(database_url) as conn:  # the first attempt was declined; a second one got stuck
        conn.execute("UPDATE payment SET status = 'failed', failure_reason = 'Your card was declined.'")
        conn.execute(
            "INSERT INTO payment (order_id, provider, amount, currency, status, refunded_amount, "
            "created_at, updated_at) SELECT order_id, provider, amount, currency, 'creating', 0, "
            "now() - interval '10 minutes', now() - interval '10 minutes' FROM payment"
        )
    stripe_api.stop()  # Stripe unreachable
    assert sweep(app, older_than_seconds=0) == {"started": 0, "failed": 1, "cancelled": 0}
    assert rows(
        database_url, 'SELECT p.status, o.status FROM payment p JOIN "order" o ON o.id = p.order_id ORDER BY p.id'
    ) == [("failed", "pending"), ("failed", "pending")]
    assert rows(database_url, "SELECT on_hand, reserved FROM variant") == [(5, 1)]  # still held for the shopper
