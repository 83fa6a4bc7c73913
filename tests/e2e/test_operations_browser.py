"""The operations page in a real browser (Debian's Chromium driven by Playwright): a manager woken by an alert logs in,
opens Operations from the menu and reads every section, with something in each to read: a job whose retries ran
out, a failed provider event, a 503 the shop answered. At a phone's 390 px the page does not scroll sideways (its
tables scroll inside their own box), and axe-core finds nothing serious at either width.

Screenshots land in var/screenshots/ (admin-operations-*.png). Skips when Chromium is not installed."""

from __future__ import annotations

import re

import pytest

from tests.conftest import LiveServer, config_for
from tests.e2e.conftest import fits, new_context, shot
from tests.e2e.test_backoffice_browser import PASSWORD, staff_login

pytestmark = pytest.mark.browser

SECTIONS = (
    "At a glance",
    "Queues and failed jobs",
    "Recent 5xx answers",
    "Webhook failures",
    "Search engine",
    "Slowest routes",
)


def explode(what: str) -> None:
    """A job that always fails, run by a real RQ worker in the fixture."""
    raise RuntimeError(f"the {what} export could not reach the warehouse API (connection refused)")


@pytest.fixture
def shop(browser, committed_db, redis_client):
    from rq import Queue, SimpleWorker

    from shop import create_app
    from shop.accounts.services import create_staff
    from shop.extensions import db
    from shop.payments.models import WebhookEvent

    app = create_app(config_for(committed_db))
    with app.app_context():
        create_staff("manager@example.com", "manager", PASSWORD, "Mina Manager")
        db.session.add(
            WebhookEvent(
                provider="stripe",
                event_id="evt_1QxOpsBrowserFailed",
                type="charge.refund.updated",
                payload={},
                status="failed",
                attempts=4,
                last_error="LookupError: no refund re_3QxOps for payment pi_3QxOps\nTraceback (most recent call last): ...",
            )
        )
        db.session.commit()
    queue = Queue("default", connection=redis_client)
    queue.enqueue(explode, "stock")
    SimpleWorker([queue], connection=redis_client).work(burst=True)
    # A real 503: the same shop without its database answers the product list.
    broken = create_app(config_for("postgresql://postgres@127.0.0.1:1/nothing"))
    with broken.test_client().get("/api/v1/products") as resp:
        assert resp.status_code == 503
    with LiveServer(app) as live:
        live.app = app
        yield live
    with app.app_context():
        db.engine.dispose()


def open_operations(page) -> None:
    """Follow Operations in the back-office menu (behind the menu button on narrow screens)."""
    page.wait_for_load_state("load")  # the stylesheets decide whether the menu button shows
    toggler = page.locator(".navbar-toggler")
    if toggler.is_visible():
        toggler.click()
    page.locator("#admin-navbar-collapse").get_by_role("link", name="Operations", exact=True).click()


@pytest.mark.parametrize("width", (1280, 390))
def test_a_manager_opens_operations_from_the_menu_and_reads_every_section(browser, shop, axe, width):
    from playwright.sync_api import expect

    context = new_context(browser, width)
    try:
        page = context.new_page()
        staff_login(page, shop.url, "manager@example.com")
        open_operations(page)
        expect(page).to_have_url(shop.url + "/admin/operations/")
        expect(page.get_by_role("heading", level=1)).to_have_text("Operations")
        for name in SECTIONS:
            expect(page.get_by_role("heading", level=2, name=name)).to_be_visible()

        jobs = page.locator("#ops-failed-jobs")
        expect(jobs).to_contain_text("the stock export could not reach the warehouse API")
        expect(page.locator("#ops-queue-counts tr[data-queue='default'] td").last).to_have_text("1")
        events = page.locator("#ops-provider-events")
        expect(events).to_contain_text("charge.refund.updated")
        expect(events).to_contain_text("LookupError: no refund re_3QxOps")
        expect(page.locator("#ops-5xx")).to_contain_text("/api/v1/products")
        expect(page.locator("#ops-search-state")).to_contain_text("answering")
        expect(page.locator("#ops-slow-routes tbody tr").first).to_be_visible()
        # Requeueing and retrying are the admins': the manager is told whom to ask, not sent to a 403.
        expect(page.get_by_text("an admin's page: ask one").first).to_be_visible()
        expect(page.get_by_role("link", name="Background jobs")).to_have_count(0)

        # The summary's links lead to their sections.
        page.get_by_test_id("ops-summary").get_by_role("link", name="Webhook failures").click()
        expect(page).to_have_url(re.compile(r"#ops-webhooks$"))

        fits(page, f"the operations page at {width} px")
        found = axe(page)
        assert found == [], "\n".join(found)
        shot(page, f"admin-operations-{width}.png")
    finally:
        context.close()
