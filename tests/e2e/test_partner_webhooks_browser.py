"""Partner webhooks in a real browser (Debian's Chromium driven by Playwright): an admin registers an endpoint,
copies the secret shown once, sends a test event that the partner's receiver verifies with `standardwebhooks`,
reads the delivery log, retries a delivery, disables and deletes the endpoint; a manager finds no way in.

Screenshots land in var/screenshots/ (admin-webhooks-*.png). Skips when Chromium is not installed."""

from __future__ import annotations

import pytest

from tests.conftest import LiveServer, config_for
from tests.e2e.conftest import new_context, shot
from tests.e2e.test_backoffice_browser import PASSWORD, staff_login
from tests.integration.test_partner_webhooks import Receiver

pytestmark = pytest.mark.browser


@pytest.fixture
def shop(browser, committed_db):
    from shop import create_app
    from shop.accounts.services import create_staff
    from shop.extensions import db

    app = create_app(config_for(committed_db, WEBHOOK_ALLOW_PRIVATE=True))
    with app.app_context():
        create_staff("admin@example.com", "admin", PASSWORD, "Ada Admin")
        create_staff("manager@example.com", "manager", PASSWORD, "Mina Manager")
    with LiveServer(app) as live:
        live.app = app
        yield live
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def page(browser):
    context = new_context(browser)
    pg = context.new_page()
    yield pg
    context.close()


def run_due_deliveries(app) -> int:
    """What the worker does (the attempt job queued after the click, or the every-minute scan)."""
    from shop.partners import attempts

    with app.app_context():
        return attempts.deliver_due()


def test_an_admin_registers_tests_reads_the_log_and_removes_an_endpoint(shop, page, axe):
    from playwright.sync_api import expect

    with Receiver() as receiver:
        staff_login(page, shop.url, "admin@example.com")
        page.locator("#admin-navbar-collapse").get_by_role("link", name="Partner webhooks").click()
        page.get_by_role("link", name="Register an endpoint").click()
        page.get_by_role("button", name="Register the endpoint").click()  # nothing filled in
        expect(page.locator("#url-error")).to_have_text("Enter the partner's https:// URL.")
        expect(page.get_by_text("Choose at least one event type.")).to_be_visible()
        page.get_by_label("Endpoint URL").fill(receiver.url)
        page.get_by_label("order.placed").check()
        page.get_by_label("order.shipped").check()
        page.get_by_label("Description (optional)").fill("Harbour ERP")
        assert axe(page) == []
        page.get_by_role("button", name="Register the endpoint").click()
        expect(page.get_by_role("heading", name="Copy the signing secret now")).to_be_visible()
        secret = page.get_by_label("Signing secret").input_value()
        assert secret.startswith("whsec_")
        receiver.secret = secret
        shot(page, "admin-webhooks-secret.png")
        page.get_by_role("link", name='Delivery log and "Send test event"').click()
        page.get_by_role("button", name="Send test event").click()
        expect(page.get_by_role("status").filter(has_text="A test event")).to_be_visible()
        assert run_due_deliveries(shop.app) == 1
        page.reload()
        row = page.locator("#webhook-deliveries tr[data-state='succeeded']")
        expect(row).to_contain_text("webhook.test")
        expect(row).to_contain_text("HTTP 204")
        [got] = receiver.delivered("webhook.test")
        assert got["envelope"]["data"]["endpoint_id"] and receiver.bad == []
        page.get_by_text("Attempts of delivery").click()
        expect(page.locator("tr[data-attempt]").first).to_contain_text("204")
        assert axe(page) == []
        shot(page, "admin-webhooks-log.png")
        page.get_by_role("button", name="Retry delivery").click()
        expect(page.get_by_role("status").filter(has_text="will be attempted again")).to_be_visible()
        assert run_due_deliveries(shop.app) == 1 and len(receiver.delivered("webhook.test")) == 2
        # The secret is never shown again.
        for path in ("", "/1/edit", "/1/deliveries"):
            page.goto(f"{shop.url}/admin/partner-webhooks{path}")
            assert secret not in page.content()
        page.goto(f"{shop.url}/admin/partner-webhooks/")
        page.get_by_role("link", name=f"Edit {receiver.url}").click()
        page.get_by_label("Enabled (send events to this endpoint)").uncheck()
        page.get_by_role("button", name="Save").click()
        listing = page.locator("#webhook-endpoints")
        expect(listing).to_contain_text("Disabled")
        expect(listing).to_contain_text("Harbour ERP")
        shot(page, "admin-webhooks-list.png")
        page.get_by_role("button", name=f"Delete {receiver.url}").click()
        expect(page.get_by_text("No endpoints yet.")).to_be_visible()


def test_a_manager_finds_no_way_to_partner_webhooks(shop, page):
    from playwright.sync_api import expect

    staff_login(page, shop.url, "manager@example.com")
    expect(page.locator("#admin-navbar-collapse").get_by_role("link", name="Partner webhooks")).to_have_count(0)
    response = page.goto(f"{shop.url}/admin/partner-webhooks/new")
    assert response.status == 403
