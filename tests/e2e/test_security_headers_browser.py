"""The Content-Security-Policy in a real browser (issue #9 item 6): the main storefront pages, the
back-office and the API docs load in Chromium with zero CSP violations, and their JavaScript still works
(variant picker, search suggestions, Flask-Admin's filters and inline lists, Swagger UI)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import live_seeded_shop
from tests.e2e.conftest import SHOTS, TIMEOUT_MS
from tests.e2e.test_purchase_browser import _pick, _purchase_choice

PASSWORD = "correct horse battery"
ADMIN_PAGES = [
    "/admin/orders/",
    "/admin/products/?flt0_0=1",
    "/admin/categories/",
    "/admin/categories/new/",
    "/admin/images/new/",
    "/admin/stock/",
    "/admin/low-stock/",
    "/admin/customers/",
    "/admin/promotions/",
    "/admin/promotion-report/",
    "/admin/webhook-events/",
    "/admin/audit/",
    "/admin/jobs/",
    "/admin/promotions/new/",
]
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + location.pathname
                    + (e.sample ? " (" + e.sample + ")" : ""));
});
"""


@pytest.fixture(scope="module")
def shop(browser, tmp_path_factory):
    """A live server over a committed database with the demo catalogue and a manager."""
    from shop.accounts.services import create_staff

    def manager():
        create_staff("manager@example.com", "manager", PASSWORD, "Mina Manager")

    with live_seeded_shop(20, "shop_csp", manager, UPLOAD_DIR=str(tmp_path_factory.mktemp("uploads"))) as live:
        yield live


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(RECORD_VIOLATIONS)  # runs before the page's own scripts, outside its CSP
    pg = context.new_page()
    pg.console_messages = []
    pg.on("console", lambda msg: pg.console_messages.append(msg.text))
    yield pg
    context.close()


def violations(page) -> list[str]:
    """What the CSP blocked on this page (events) and what Chromium said about it (console)."""
    events = page.evaluate("window.__csp || []")
    console = [m for m in page.console_messages if "Content Security Policy" in m]
    return events + console


def assert_clean(page) -> None:
    found = violations(page)
    assert found == [], "\n".join(found)


def test_storefront_pages_run_their_scripts_under_the_csp(page, shop):
    from playwright.sync_api import expect

    product, target = _purchase_choice(shop)
    page.goto(shop.url + "/")
    expect(page.get_by_role("heading", level=1).first).to_be_visible()
    page.locator("#site-search-q").fill(product["name"][:4])  # search.js: suggestions as you type
    expect(page.locator("[role=listbox] [role=option]").first).to_be_visible()
    assert_clean(page)

    page.goto(f"{shop.url}/p/{product['slug']}")
    _pick(page, target["options"])  # variant-picker.js: the SKU and the form follow the choice
    expect(page.locator("#variant-sku")).to_have_text(target["sku"])
    page.screenshot(path=str(SHOTS / "csp-01-product.png"))
    page.get_by_role("button", name="Add to cart").click()
    expect(page).to_have_url(f"{shop.url}/cart")
    page.get_by_role("link", name="Checkout", exact=True).click()
    expect(page).to_have_url(f"{shop.url}/checkout")
    assert_clean(page)
    page.goto(f"{shop.url}/c/men?sort=price")
    page.locator("#sort").select_option("name")  # listing.js submits the sort menu (no inline onchange)
    expect(page).to_have_url(re.compile(r"sort=name"))
    assert_clean(page)

    # And the policy does its job: markup injected into a page cannot run script.
    page.evaluate("""document.body.insertAdjacentHTML("beforeend", '<img src="/x.png" onerror="window.pwned=1">')""")
    page.wait_for_function("window.__csp.length > 0")
    assert page.evaluate("window.pwned") is None and "script-src-attr" in violations(page)[0]


def test_back_office_and_api_docs_pass_the_csp(page, shop):
    from playwright.sync_api import expect

    resp = page.goto(shop.url + "/admin/login")
    assert "frame-ancestors 'none'" in resp.headers.get("content-security-policy", "")  # no clickjacking
    page.get_by_label("E-mail address").fill("manager@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.screenshot(path=str(SHOTS / "csp-02-admin-dashboard.png"))
    assert_clean(page)

    page.goto(shop.url + "/admin/products/")
    page.get_by_role("link", name="Add Filter").click()  # Flask-Admin's filter menu (inline handlers by hash)
    page.locator("a.filter").first.click()
    expect(page.locator(".filters tr, #filter-table tr, table.filters tr").first).to_be_visible()
    page.goto(shop.url + "/admin/products/new/")
    page.locator("a[id$='-button']").first.click()  # "Add Variant": faForm.addInlineField
    expect(page.locator(".inline-field").first).to_be_visible()
    assert_clean(page)

    for path in ADMIN_PAGES:  # every screen a manager opens, with its widgets (select2, date pickers)
        page.goto(shop.url + path)
        page.wait_for_load_state("networkidle")
    page.locator("input[data-role=datetimepicker], input.datetimepicker, input[name=starts_at]").first.click()
    assert_clean(page)

    page.goto(shop.url + "/api/docs")
    expect(page.locator("#swagger-ui .swagger-ui").first).to_be_visible()  # Swagger UI rendered ...
    assert page.evaluate("typeof window.ui") == "object"  # ... started by the page's nonce'd inline script
    # ... and it read the OpenAPI 3.1 document: its operations are listed, no "Unable to render this definition"
    expect(page.locator(".opblock-summary-path", has_text="/v1/checkout").first).to_be_visible()
    assert page.locator(".opblock").count() >= 40
    assert "Unable to render" not in page.inner_text("#swagger-ui")
    page.screenshot(path=str(SHOTS / "csp-03-api-docs.png"))
    assert_clean(page)
