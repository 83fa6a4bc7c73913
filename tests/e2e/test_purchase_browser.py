"""A guest buys something in a real browser, end to end, on real servers.

Debian's Chromium (through Playwright) on a live server over a committed database with the demo
catalogue, and a real RQ worker (worker.py) in the background: product page -> pick a variant ->
add to cart -> cart -> checkout details -> review -> place the order -> the built-in test gateway ->
Approve -> the order page turns "Confirmed" (the gateway's signed event travels through the job
queue to the webhook) and the confirmation e-mail lands in the mail directory.
Also: adding to the cart works without JavaScript, and the buying pages fit a phone's screen.

Screenshots land in var/screenshots/purchase-*.png (for people to look at, not compared).
Skips when Chromium is not installed; never runs `playwright install`.
"""

from __future__ import annotations

import email
import json
import os
import re
import time
import urllib.request
from email import policy
from pathlib import Path

import pytest
from redis import Redis

from tests.conftest import LiveServer, config_for
from tests.e2e.conftest import fits, new_context, running_worker, shot

pytestmark = pytest.mark.browser

CONFIRM_WITHIN_S = 20
ADDRESS = {
    "Full name": "Grace Hopper",
    "Address line 1": "12 Compiler Street",
    "City": "Arlington",
    "Postal code": "22201",
}
CHOICES = {"Country": "United States", "State (US addresses)": "Virginia"}  # <select>s, chosen by name


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def shop(browser, committed_db, tmp_path):
    """The live shop over its own committed database with 30 demo products; mail goes to files."""
    from shop import create_app
    from shop.catalog.seed import seed_demo

    Redis.from_url(os.environ["REDIS_URL"]).flushdb()  # no jobs left over from another test
    mail_dir = tmp_path / "mail"
    app = create_app(config_for(committed_db, MAIL_DIR=str(mail_dir)))
    with app.app_context():
        seed_demo(30, echo=lambda *a, **k: None)
    with LiveServer(app) as live:
        live.database_url, live.mail_dir, live.tmp = committed_db, mail_dir, tmp_path
        yield live


@pytest.fixture
def worker(shop):
    """worker.py, the real RQ worker, on the shop's database and mail directory."""
    with running_worker(shop.database_url, shop.mail_dir, shop.url, shop.tmp / "worker.log") as proc:
        yield proc


def _api(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our own live server
        return json.load(resp)


def _default_variant(product: dict) -> dict:
    """What the product page selects when no option is in the URL: the first variant in stock."""
    return next((v for v in product["variants"] if v["available"] > 0), product["variants"][0])


def _products(shop) -> list[dict]:
    listing = _api(f"{shop.url}/api/v1/products?per_page=100")
    return [_api(f"{shop.url}/api/v1/products/{item['slug']}") for item in listing["items"]]


def _purchase_choice(shop) -> tuple[dict, dict]:
    """A product with another variant than the default one that has at least 2 in stock."""
    for product in _products(shop):
        default = _default_variant(product)
        for v in product["variants"]:
            if v is not default and v["available"] >= 2:
                return product, v
    pytest.fail("no demo product has a second variant with 2 or more in stock")


def _option_label(page, name: str, value: str):
    form = page.locator("form#variant-picker")
    radio = form.locator(f"input[type=radio][name={json.dumps(name)}][value={json.dumps(value)}]")
    return form.locator(f"label[for={json.dumps(radio.get_attribute('id'))}]")


def _pick(page, options: dict) -> None:
    checked = page.eval_on_selector_all(
        "#variant-picker input[type=radio]:checked", "els => Object.fromEntries(els.map(e => [e.name, e.value]))"
    )
    for name, value in options.items():
        if checked.get(name) != value:
            _option_label(page, name, value).click()


def _mails(mail_dir: Path, event: str) -> list[Path]:
    return sorted(mail_dir.glob(f"*-{event}-*.eml")) if mail_dir.exists() else []


# -------------------------------------------------------------------------------------------- tests


def test_a_guest_buys_a_product_and_the_order_is_confirmed(browser, shop, worker):
    from playwright.sync_api import expect

    product, target = _purchase_choice(shop)
    context = new_context(browser)
    page = context.new_page()
    try:
        # The product page: pick the variant; the add-to-cart form follows the picker.
        page.goto(f"{shop.url}/p/{product['slug']}")
        expect(page.get_by_role("heading", level=1)).to_have_text(product["name"])
        sold_out = next((v for v in product["variants"] if v["available"] == 0), None)
        if sold_out is not None:  # a sold-out choice disables the button, and says so
            _pick(page, sold_out["options"])
            expect(page.get_by_test_id("add-to-cart")).to_be_disabled()
            expect(page.get_by_test_id("add-to-cart")).to_have_text("Sold out")
            expect(page.locator("#add-note")).to_be_visible()
            shot(page, "purchase-00-sold-out.png")
        _pick(page, target["options"])
        expect(page.locator("#variant-sku")).to_have_text(target["sku"])
        expect(page.locator("#add-sku")).to_have_value(target["sku"])
        button = page.get_by_role("button", name="Add to cart")
        expect(button).to_be_enabled()
        page.get_by_label("Quantity").fill("2")
        shot(page, "purchase-01-product.png")
        button.click()

        # The cart.
        expect(page).to_have_url(f"{shop.url}/cart")
        expect(page.locator(".flash-success")).to_contain_text(f"Added 2 × {product['name']}")
        lines = page.get_by_test_id("cart-line")
        expect(lines).to_have_count(1)
        expect(lines.first).to_have_attribute("data-sku", target["sku"])
        unit = target["price"]["amount"]
        expect(page.get_by_test_id("cart-subtotal")).to_have_text(f"${unit * 2 / 100:,.2f}")
        expect(page.get_by_role("link", name=re.compile(r"^Cart(, \d+ items?)?$"))).to_have_attribute(
            "aria-current", "page"
        )
        shot(page, "purchase-02-cart.png")
        page.get_by_role("link", name="Checkout", exact=True).click()

        # Checkout details.
        expect(page).to_have_url(f"{shop.url}/checkout")
        page.get_by_label("E-mail address").fill("grace@example.com")
        for label, value in ADDRESS.items():
            page.get_by_label(label, exact=True).fill(value)
        for label, value in CHOICES.items():
            page.get_by_label(label, exact=True).select_option(label=value)
        page.get_by_label(re.compile(r"^Express")).check()
        shot(page, "purchase-03-checkout.png")
        page.get_by_role("button", name="Review your order").click()

        # Review: the server's figures.
        expect(page).to_have_url(f"{shop.url}/checkout/review")
        expect(page.get_by_role("heading", level=1)).to_have_text("Review your order")
        goods, express = unit * 2, 1995
        total = goods + express  # Virginia: no tax in the default table
        expect(page.get_by_test_id("review-shipping")).to_have_text("$19.95")
        expect(page.get_by_test_id("review-total")).to_have_text(f"${total / 100:,.2f}")
        expect(page.get_by_text("Grace Hopper")).to_be_visible()
        shot(page, "purchase-04-review.png")
        page.get_by_role("button", name="Place order and pay").click()

        # The built-in test gateway.
        expect(page).to_have_url(re.compile(re.escape(shop.url) + r"/pay/test/\d+\?t="))
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Pay ${total / 100:,.2f}")
        shot(page, "purchase-05-pay.png")
        page.get_by_role("button", name="Approve payment").click()

        # The order page refreshes itself until the worker has delivered the event to the webhook.
        expect(page).to_have_url(re.compile(re.escape(shop.url) + r"/orders/\d+"))
        order_id = int(re.search(r"/orders/(\d+)", page.url).group(1))
        try:
            expect(page.get_by_test_id("order-status")).to_have_text("Confirmed", timeout=CONFIRM_WITHIN_S * 1000)
        except AssertionError:
            shot(page, "purchase-06-not-confirmed.png")
            raise AssertionError(
                f"the order did not become Confirmed within {CONFIRM_WITHIN_S}s; worker log:\n"
                + worker.log_path.read_text(errors="replace")[-4000:]
            ) from None
        expect(page.get_by_test_id("order-total")).to_have_text(f"${total / 100:,.2f}")
        shot(page, "purchase-06-confirmed.png")
        number = page.get_by_role("heading", level=1).inner_text().removeprefix("Order ").strip()

        # The confirmation e-mail, sent by the worker after the commit.
        deadline = time.monotonic() + CONFIRM_WITHIN_S
        while not _mails(shop.mail_dir, "order.confirmed") and time.monotonic() < deadline:
            time.sleep(0.25)
        mails = _mails(shop.mail_dir, "order.confirmed")
        assert mails, (
            "no confirmation e-mail in the mail directory; worker log:\n"
            + worker.log_path.read_text(errors="replace")[-4000:]
        )
        message = email.message_from_bytes(mails[0].read_bytes(), policy=policy.default)
        assert message["To"] == "grace@example.com"
        assert number in message["Subject"] or number in message.get_body(("plain",)).get_content()

        # The cart is empty again, and the order is in the guest's browser session.
        page.goto(f"{shop.url}/cart")
        expect(page.get_by_test_id("cart-empty")).to_be_visible()
        page.goto(f"{shop.url}/orders/{order_id}")
        expect(page.get_by_test_id("order-status")).to_have_text("Confirmed")
    finally:
        context.close()


def test_adding_to_the_cart_works_without_javascript(browser, shop):
    from playwright.sync_api import expect

    product, target = _purchase_choice(shop)
    context = new_context(browser, java_script_enabled=False)
    try:
        page = context.new_page()
        query = "&".join(f"{k}={v}" for k, v in target["options"].items())
        page.goto(f"{shop.url}/p/{product['slug']}?{query}")
        expect(page.locator("#add-sku")).to_have_value(target["sku"])
        page.get_by_role("button", name="Add to cart").click()
        # The cached product page holds no visitor's CSRF token: a private page asks to confirm.
        expect(page.get_by_role("heading", level=1)).to_have_text("Add to your cart?")
        expect(page.get_by_text(f"1 × {product['name']}")).to_be_visible()
        shot(page, "purchase-nojs-confirm.png")
        page.get_by_role("button", name="Add to cart").click()
        expect(page).to_have_url(f"{shop.url}/cart")
        expect(page.get_by_test_id("cart-line")).to_have_count(1)
        expect(page.get_by_test_id("cart-line").first).to_have_attribute("data-sku", target["sku"])
        # Changing the quantity and removing work as plain forms too.
        page.get_by_label(re.compile(r"^Quantity of ")).fill("2")
        page.get_by_role("button", name=re.compile(r"^Update")).click()
        expect(page.locator(".flash-success")).to_contain_text("Updated: 2 ×")
        page.get_by_role("button", name=re.compile(r"^Remove")).click()
        expect(page.get_by_test_id("cart-empty")).to_be_visible()
    finally:
        context.close()


def test_buying_pages_fit_a_phone(browser, shop):
    """Screenshots of the cart, checkout and review at phone width; none may scroll sideways."""
    from playwright.sync_api import expect

    product, target = _purchase_choice(shop)
    context = new_context(browser, viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.goto(f"{shop.url}/p/{product['slug']}")
        _pick(page, target["options"])
        fits(page, "the product page")
        page.get_by_role("button", name="Add to cart").click()
        expect(page).to_have_url(f"{shop.url}/cart")
        shot(page, "purchase-cart-390.png")
        fits(page, "the cart")
        page.get_by_role("link", name="Checkout", exact=True).click()
        page.get_by_role("button", name="Review your order").click()  # empty: the errors show
        expect(page.locator(".field-error").first).to_be_visible()
        shot(page, "purchase-checkout-errors-390.png")
        fits(page, "the checkout form")
        page.get_by_label("E-mail address").fill("phone@example.com")
        for label, value in ADDRESS.items():
            page.get_by_label(label, exact=True).fill(value)
        for label, value in CHOICES.items():
            page.get_by_label(label, exact=True).select_option(label=value)
        page.get_by_role("button", name="Review your order").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Review your order")
        shot(page, "purchase-review-390.png")
        fits(page, "the review page")
    finally:
        context.close()
