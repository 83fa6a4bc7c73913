"""A manager's morning in a real browser (Chromium via Playwright), on one live shop for the module:

(a) the dashboard gives the true number of variants running low, and the low-stock page says when
    it shows only part of them;
(b) a product's variants are generated from an option matrix (sizes x colours) with a price typed as
    "$59.00", and the stock form then names the SKU it edits;
(c) a shopper sorts search results by price (the sort menu keeps the query), Escape in the header
    search closes the suggestions and keeps the text, and the search page passes axe at 1280 and 390 px.

Screenshots land in var/screenshots/journey-*.png for people to look at.
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests.conftest import LiveServer, _fresh_database
from tests.e2e.conftest import new_context
from tests.e2e.test_backoffice_browser import PASSWORD, choose, menu, overflow, shot, staff_login

pytestmark = pytest.mark.browser

PRODUCT = "Harbour Wool Coat E2E"
WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def shop(browser):
    """A live shop over a database of its own: 40 demo products, indexed under an alias of the module's
    own, plus a manager; a few variants are made empty so several are low."""
    from sqlalchemy import select, update

    from shop.accounts.services import create_staff
    from shop.catalog.models import Variant
    from shop.catalog.seed import seed_demo
    from shop.extensions import db
    from shop.search import jobs

    with _fresh_database("shop_j", TYPESENSE_COLLECTION=f"test_{uuid.uuid4().hex[:10]}") as (_url, app):
        with app.app_context():
            seed_demo(40, echo=lambda *a, **k: None)
            ids = db.session.scalars(select(Variant.id).order_by(Variant.id).limit(60)).all()
            db.session.execute(update(Variant).where(Variant.id.in_(ids[::3])).values(on_hand=0))
            create_staff("manager@example.com", "manager", PASSWORD, "Mina Manager")
            db.session.commit()
            jobs.reindex()
        with LiveServer(app) as live:
            live.app = app
            yield live
        with app.app_context():
            jobs.drop_all()
            db.engine.dispose()


def _low_count(shop) -> int:
    from shop.extensions import db
    from shop.inventory.services import low_stock

    with shop.app.app_context():
        n = len(low_stock(limit=1_000_000))
        db.session.remove()
        return n


def test_manager_sees_the_true_low_stock_count_and_generates_variants(browser, shop):
    from playwright.sync_api import expect

    from shop.catalog.models import Product
    from shop.extensions import db

    expected = _low_count(shop)
    assert expected > 10  # more than the dashboard's short list
    context = new_context(browser)
    page = context.new_page()
    try:
        staff_login(page, shop.url, "manager@example.com")
        expect(page.get_by_test_id("low-stock-count")).to_have_text(f"{expected:,}")
        expect(page.get_by_role("heading", name=re.compile(r"Running low"))).to_contain_text(
            f"the 10 emptiest of {expected:,}"
        )
        shot(page, "journey-01-dashboard-1280.png")
        page.get_by_role("link", name="See the low-stock list").click()
        expect(page.get_by_test_id("low-stock-total")).to_have_text(f"{expected:,} variants running low.")

        # Catalogue -> Products -> Create, with the variant matrix generated from the options.
        menu(page, "Catalogue", "Products")
        page.get_by_role("link", name="Create", exact=True).click()
        form = page.locator("form.admin-form")
        form.get_by_label("Name").first.fill(PRODUCT)
        form.get_by_label("Slug").fill("harbour-wool-coat-e2e")
        choose(page, "category", "T-shirts")
        form.get_by_label("Status").select_option(label="Active (for sale)")
        form.get_by_label("Options", exact=True).fill("size: S, M, L\ncolour: Black, Navy")
        form.get_by_label("Make a variant for each combination").check()
        form.get_by_label("Price of each generated variant").fill("$59.00")
        form.get_by_label("SKU prefix").fill("HWC")
        form.get_by_label("Stock on hand of each generated variant").fill("10")
        shot(page, "journey-02-product-form-1280.png")
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.locator(".alert-success").first).to_contain_text("Generated 6 variants")
        with shop.app.app_context():
            product = db.session.scalar(db.select(Product).where(Product.name == PRODUCT))
            got = sorted((v.sku, v.price_amount, v.on_hand) for v in product.variants)
            variant_id = min(v.id for v in product.variants if v.sku == "HWC-M-NAVY")
            db.session.remove()
        assert got == sorted((f"HWC-{s}-{c}", 5900, 10) for s in "SML" for c in ("BLACK", "NAVY"))
        assert (product.price_min, product.price_max) == (5900, 5900)

        # A typo in the price is a form error, not a crash; the form keeps what was typed.
        page.goto(shop.url + "/admin/products/new/")
        form = page.locator("form.admin-form")
        form.get_by_label("Name").first.fill("Broken Price E2E")
        form.get_by_label("Options", exact=True).fill("size: S")
        form.get_by_label("Make a variant for each combination").check()
        form.get_by_label("Price of each generated variant").fill("abc")
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.locator("form.admin-form")).to_contain_text("Enter a price like 19.99 (not a number)")
        expect(form.get_by_label("Name").first).to_have_value("Broken Price E2E")

        # The stock form names what it edits.
        page.goto(shop.url + f"/admin/stock/edit/?id={variant_id}")
        expect(page.get_by_test_id("stock-edit-title")).to_contain_text(PRODUCT)
        expect(page.get_by_test_id("stock-edit-title")).to_contain_text("SKU HWC-M-NAVY")
        expect(page.get_by_test_id("on-hand-now")).to_have_text("10")
        shot(page, "journey-03-stock-edit-1280.png")
    finally:
        context.close()
    phone = new_context(browser, 390)
    page = phone.new_page()
    try:
        staff_login(page, shop.url, "manager@example.com")
        shot(page, "journey-04-dashboard-390.png")
        assert overflow(page) <= 0
        page.goto(shop.url + "/admin/products/new/")
        shot(page, "journey-05-product-form-390.png")
        assert overflow(page) <= 0
    finally:
        phone.close()


def _prices(page) -> list[float]:
    texts = page.locator(".product-grid .card-price").all_inner_texts()
    return [float(re.search(r"\$([\d,]+\.\d{2})", t).group(1).replace(",", "")) for t in texts]


def test_shopper_sorts_search_results_by_price(browser, shop, axe):
    from playwright.sync_api import expect

    for width in WIDTHS:
        context = new_context(browser, width)
        page = context.new_page()
        try:
            page.goto(shop.url + "/search?q=cotton")
            expect(page.locator("#results-heading")).to_contain_text("product")
            assert page.locator("[data-testid=search-engine]").count() == 0  # Typesense answered
            if page.locator("#filters-panel[open]").count() == 0:
                page.locator("#filters-panel > summary").click()  # phones: the panel starts folded
            expect(page.get_by_test_id("category-facet")).to_be_visible()
            page.get_by_label("Sort by").select_option(label="Price: low to high")
            expect(page).to_have_url(re.compile(r"[?&]sort=price(&|$)"))
            assert "q=cotton" in page.url
            expect(page.get_by_label("Search products").last).to_have_value("cotton")
            prices = _prices(page)
            assert len(prices) > 1 and prices == sorted(prices)
            assert axe(page) == [], width
            shot(page, f"journey-06-search-by-price-{width}.png")
            assert overflow(page) <= 0
            if width != WIDTHS[0]:
                continue
            page.get_by_label("Sort by").select_option(label="Price: high to low")
            expect(page).to_have_url(re.compile(r"[?&]sort=-price(&|$)"))
            assert _prices(page) == sorted(_prices(page), reverse=True)
        finally:
            context.close()


def test_escape_in_the_header_search_keeps_the_query(browser, shop):
    from playwright.sync_api import expect

    context = new_context(browser)
    page = context.new_page()
    try:
        page.goto(shop.url + "/")
        box = page.locator("#site-search-q")
        box.click()
        box.press_sequentially("cott", delay=30)
        suggestions = page.locator("#suggestions-0")
        expect(suggestions).to_be_visible()
        shot(page, "journey-07-suggestions-1280.png")
        box.press("Escape")
        expect(suggestions).to_be_hidden()
        expect(box).to_have_value("cott")  # before: Escape emptied the box
        expect(box).to_have_attribute("aria-expanded", "false")
        box.press("Escape")  # a second Escape (list already closed) keeps it too
        expect(box).to_have_value("cott")
        box.press("Enter")
        expect(page).to_have_url(re.compile(r"/search\?q=cott"))
    finally:
        context.close()
