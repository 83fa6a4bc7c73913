"""A shopper pays by card through Stripe's hosted Checkout page, in Chromium, on real servers.

The shop runs in Stripe mode over a committed database; the official SDK talks to the local Stripe
(tests/fakes/stripe.py), which serves the hosted payment page the browser is sent to and signs and sends its
webhooks back to the live shop; the real RQ worker (worker.py) sends the mails. Walks: approve -> confirmed page and
mail; decline -> back to the shop with the items held -> "Pay now" -> the same Stripe page -> one order; abandon ->
the hold ends, the session is expired at Stripe, the order cancelled and the stock back; a dispute -> the order shows
as disputed in the back-office.

Screenshots land in var/screenshots/stripe-*.png. Skips when Chromium is not installed.
"""

from __future__ import annotations

import os
import re
import time
from types import SimpleNamespace

import pytest
from redis import Redis

from tests.conftest import LiveServer, config_for
from tests.e2e.conftest import fits, new_context, running_worker, shot
from tests.e2e.test_backoffice_browser import staff_login
from tests.e2e.test_stripe_checkout import expire_holds, sql, stock
from tests.fakes.stripe import FakeStripe

pytestmark = pytest.mark.browser

SECRET_KEY, WEBHOOK_SECRET, PASSWORD = "sk_test_browser", "whsec_browser", "correct horse battery staple"
PRICE, STOCK = 4200, 5
WAIT_MS = 20_000


@pytest.fixture
def shop(browser, committed_db, tmp_path):
    from shop import create_app
    from shop.accounts.services import create_staff
    from shop.extensions import db
    from tests.factories import make_category, make_product

    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    settings = {"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    mail_dir = tmp_path / "mail"
    with FakeStripe(secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET) as fake:
        app = create_app(config_for(committed_db, STRIPE_API_BASE=fake.url, MAIL_DIR=str(mail_dir), **settings))
        with app.app_context():
            product = make_product(
                make_category(), name="Merino Jumper", sizes=("M",), colours=("Navy",), price=PRICE, stock=STOCK
            )
            slug, variant_id = product.slug, product.variants[0].id
            db.session.commit()
            create_staff("support@example.com", "support", PASSWORD, "Sam Support")
            create_staff("manager@example.com", "manager", PASSWORD, "Mina Manager")
        with LiveServer(app) as live:
            fake.webhook_url = f"{live.url}/webhooks/stripe"
            env = {**settings, "STRIPE_API_BASE": fake.url}
            with running_worker(committed_db, mail_dir, live.url, tmp_path / "worker.log", env=env) as worker:
                yield SimpleNamespace(
                    url=live.url,
                    app=app,
                    fake=fake,
                    db=committed_db,
                    slug=slug,
                    variant_id=variant_id,
                    mail_dir=mail_dir,
                    worker=worker,
                )
            fake.wait_delivered(10)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def page(browser):
    context = new_context(browser)
    yield context.new_page()
    context.close()


@pytest.fixture
def phone(browser):
    """A page 390 px wide, as a phone's."""
    context = new_context(browser, 390)
    yield context.new_page()
    context.close()


def buy_until_stripe(page, shop, name: str, width_note: str = "") -> str:
    """Product -> cart -> checkout details -> review -> "Place order and pay": returns the Stripe session id."""
    from playwright.sync_api import expect

    page.goto(f"{shop.url}/p/{shop.slug}")
    page.get_by_role("button", name="Add to cart").click()
    expect(page).to_have_url(f"{shop.url}/cart")
    page.get_by_role("link", name="Checkout", exact=True).click()
    page.get_by_label("E-mail address").fill("grace@example.com")
    for label, value in {
        "Full name": "Grace Hopper",
        "Address line 1": "12 Compiler Street",
        "City": "Arlington",
        "Postal code": "22201",
    }.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Country", exact=True).select_option(label="United States")
    page.get_by_label("State (US addresses)", exact=True).select_option(label="Virginia")
    page.get_by_role("button", name="Review your order").click()
    expect(page).to_have_url(f"{shop.url}/checkout/review")
    page.get_by_role("button", name="Place order and pay").click()
    expect(page).to_have_url(re.compile(re.escape(shop.fake.url) + r"/c/pay/cs_"))
    expect(page.get_by_text("Merino Jumper")).to_be_visible()
    shot(page, f"stripe-{name}-01-stripe-page{width_note}.png")
    return re.search(r"/c/pay/(cs_[A-Za-z0-9_]+)", page.url).group(1)


def mails(shop, event: str) -> list:
    return sorted(shop.mail_dir.glob(f"*-{event}-*.eml")) if shop.mail_dir.exists() else []


def wait_mail(shop, event: str, timeout: float = 20) -> list:
    deadline = time.monotonic() + timeout
    while not mails(shop, event) and time.monotonic() < deadline:
        time.sleep(0.25)
    found = mails(shop, event)
    assert found, f"no {event} mail; worker log:\n" + shop.worker.log_path.read_text(errors="replace")[-3000:]
    return found


def test_a_shopper_pays_by_card_on_stripes_page_and_the_order_is_confirmed(phone, shop):
    from playwright.sync_api import expect

    page = phone
    session_id = buy_until_stripe(page, shop, "approve")
    shop.fake.delivery_delay = 1.5  # the shopper is back before the webhook
    page.get_by_role("button", name="Pay", exact=True).click()
    expect(page).to_have_url(re.compile(re.escape(shop.url) + r"/(checkout/return|orders)/"))
    shot(page, "stripe-approve-02-back.png")
    fits(page, "the page after paying")
    # The confirming page refreshes itself (or the shop already asked Stripe): the order turns Confirmed.
    expect(page.get_by_test_id("order-status")).to_have_text("Confirmed", timeout=WAIT_MS)
    shot(page, "stripe-approve-03-confirmed.png")
    number = page.get_by_role("heading", level=1).inner_text().removeprefix("Order ").strip()
    mail = wait_mail(shop, "order.confirmed")
    assert number in mail[0].read_text(errors="replace")
    assert sql(shop, "SELECT status, checkout_session_id FROM payment") == [("succeeded", session_id)]
    assert stock(shop) == (STOCK - 1, 0)


def test_a_declined_card_then_pay_now_on_the_same_page_makes_one_order(page, shop):
    from playwright.sync_api import expect

    session_id = buy_until_stripe(page, shop, "decline")
    page.get_by_role("button", name="Pay (card declined)").click()
    expect(page.get_by_role("alert")).to_contain_text("Your card was declined")
    shot(page, "stripe-decline-02-declined.png")
    page.get_by_role("link", name="← Back").click()
    # Back at the shop: nothing charged, the items still held, one button to pay.
    expect(page).to_have_url(re.compile(re.escape(shop.url) + r"/orders/\d+"))
    expect(page.get_by_test_id("order-pay")).to_be_visible()
    shot(page, "stripe-decline-03-back-at-shop.png")
    assert stock(shop) == (STOCK, 1)
    page.get_by_role("button", name=re.compile("^Pay (now|again)$")).click()
    expect(page).to_have_url(re.compile(re.escape(shop.fake.url) + rf"/c/pay/{session_id}"))
    page.get_by_role("button", name="Pay", exact=True).click()
    expect(page.get_by_test_id("order-status")).to_have_text("Confirmed", timeout=WAIT_MS)
    assert sql(shop, 'SELECT count(*) FROM "order"') == [(1,)]
    assert len(shop.fake.calls("POST", "/v1/checkout/sessions")) == 1
    assert stock(shop) == (STOCK - 1, 0)


def test_an_abandoned_payment_expires_the_session_at_stripe_and_frees_the_stock(page, shop):
    from playwright.sync_api import expect

    session_id = buy_until_stripe(page, shop, "abandon")
    page.get_by_role("link", name="← Back").click()
    expect(page.get_by_test_id("order-pay")).to_be_visible()
    assert stock(shop) == (STOCK, 1)
    assert expire_holds(shop) == 1  # the hold's 15 minutes have passed
    assert shop.fake.calls("POST", f"/v1/checkout/sessions/{session_id}/expire")
    shop.fake.wait_delivered(10)
    page.reload()
    expect(page.get_by_test_id("order-status")).to_have_text("Cancelled")
    shot(page, "stripe-abandon-02-cancelled.png")
    assert stock(shop) == (STOCK, 0)
    page.go_back()  # to Stripe's page, too late: nothing can be paid there any more
    page.goto(f"{shop.fake.url}/c/pay/{session_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(re.compile("expired", re.I))


def test_a_dispute_shows_on_the_order_in_the_back_office(page, shop):
    from playwright.sync_api import expect

    session_id = buy_until_stripe(page, shop, "dispute")
    page.get_by_role("button", name="Pay", exact=True).click()
    expect(page.get_by_test_id("order-status")).to_have_text("Confirmed", timeout=WAIT_MS)
    order_id = int(re.search(r"/orders/(\d+)", page.url).group(1))
    intent = sql(shop, "SELECT provider_id FROM payment WHERE checkout_session_id = %s", session_id)[0][0]
    shop.fake.dispute(intent, reason="fraudulent")
    shop.fake.wait_delivered(10)
    wait_mail(shop, "payment.dispute_opened")
    staff_login(page, shop.url, "support@example.com", PASSWORD)
    page.goto(f"{shop.url}/admin/orders/{order_id}")
    flag = page.get_by_test_id("dispute-open")
    expect(flag).to_be_visible()
    expect(flag).to_contain_text("Fraudulent")
    total = sql(shop, 'SELECT total FROM "order" WHERE id = %s', order_id)[0][0]
    expect(flag).to_contain_text(f"${total / 100:,.2f}")
    shot(page, "stripe-dispute-02-back-office.png")
