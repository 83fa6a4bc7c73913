"""The back-office in a real browser: Debian's Chromium driven by Playwright's sync API.

(a) A manager logs in at /admin/login, creates a product with two variants through Catalogue ->
    Products -> Create (inline "Add Variant" forms), uploads a real PNG through Catalogue -> Images
    -> Create (the pre-signed upload widget), and a shopper then sees the product, the chosen
    variant's price and the image on the storefront.
(b) A warehouse user cannot reach the product form (403, no menu entry) but can reach stock levels.
(c) Review screenshots of the account pages and the back-office at desktop and phone widths; the
    pages must not scroll sideways, every field must have a label and errors must be tied to inputs.

Screenshots land in var/screenshots/ (admin-*.png, account-*.png), for people to look at.
Skips when Chromium is not installed (fails instead when SHOP_REQUIRE_BROWSER is set).
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from tests.conftest import LiveServer, config_for
from tests.e2e.conftest import SHOTS, new_context
from tests.images import pixels, tiny_png

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
PRODUCT = "Harbour Linen Tee E2E"
SLUG = "harbour-linen-tee-e2e"
VARIANTS = [  # sku, options text, price as typed, stock on hand
    ("HLT-E2E-S", "size=S", "24.00", "7"),
    ("HLT-E2E-M", "size=M", "26.50", "3"),
]
ALT = "A harbour-blue linen tee, folded"
WIDTHS = (1280, 390)


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def shop(browser, committed_db, tmp_path):
    """A live server over a fresh committed database with the demo categories and one staff member
    per role used here. Uploads go to a directory of the test's own."""
    from shop import create_app
    from shop.accounts.services import create_staff
    from shop.catalog.seed import seed_demo
    from shop.extensions import db

    app = create_app(config_for(committed_db, UPLOAD_DIR=str(tmp_path / "uploads")))
    with app.app_context():
        seed_demo(20, echo=lambda *a, **k: None)
        create_staff("manager@example.com", "manager", PASSWORD, "Mina Manager")
        create_staff("warehouse@example.com", "warehouse", PASSWORD, "Wes Warehouse")
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


# ------------------------------------------------------------------------------------------ helpers


def _money(typed: str) -> str:
    return f"${Decimal(typed):,.2f}"


def staff_login(page, base_url: str, email: str, password: str = PASSWORD) -> None:
    from playwright.sync_api import expect

    page.goto(base_url + "/admin/login")
    expect(page.get_by_role("heading", name="Staff log-in")).to_be_visible()
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(base_url + "/admin/")


def menu(page, category: str, item: str) -> None:
    """Open a Flask-Admin top-menu dropdown and follow one of its entries."""
    nav = page.locator("#admin-navbar-collapse")
    toggler = page.locator(".navbar-toggler")
    # Its stylesheets first: before they apply, the hamburger shows on every width (a loaded machine took it for a
    # narrow screen, then waited for a button the styles had hidden again).
    page.wait_for_load_state("load")
    if toggler.is_visible():  # narrow screens: the menu is collapsed behind the hamburger
        toggler.click()
    nav.get_by_role("link", name=category).click()
    nav.get_by_role("link", name=item, exact=True).click()


def shot(page, name: str) -> None:
    """A full-page screenshot, taken from the top of the page (a sticky header is drawn where it
    belongs) with nothing focused. Chromium's full-page capture restores the scroll position only at
    the next focus change, so a click right after it could press the mouse on one element and release
    it on another, which is no click at all; with focus cleared first, that click changes nothing."""
    page.evaluate("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    page.screenshot(path=SHOTS / name, full_page=True)


def choose(page, select_id: str, text: str) -> None:
    """Pick an entry of a Flask-Admin relation field (a select2 3.5 widget over a hidden <select>) the
    way a person does: open it, type part of the entry, click the match."""
    from playwright.sync_api import expect

    page.locator(f"#s2id_{select_id} a.select2-choice").click()
    page.locator(".select2-drop-active input.select2-input").fill(text)
    page.locator(
        ".select2-drop-active .select2-result-selectable", has_text=re.compile(rf"^\s*{re.escape(text)}\s*$", re.I)
    ).first.click()
    expect(page.locator(f"select#{select_id}")).not_to_have_value("")
    expect(page.locator(f"select#{select_id}")).not_to_have_value("__None")


def unlabelled_fields(page) -> list[str]:
    """Visible form controls without an accessible name (a <label>, aria-label, aria-labelledby or title)."""
    return page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(el => !['hidden', 'submit', 'button', 'reset', 'image'].includes(el.type))
        .filter(el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden')
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !el.getAttribute('aria-labelledby') && !el.getAttribute('title'))
        .map(el => el.outerHTML.slice(0, 120))""")


def duplicate_ids(page) -> list[str]:
    """Ids used twice (labels and aria-describedby could point at the wrong element). Hidden inputs
    aside: Flask-Admin's per-row delete forms repeat theirs, and nothing refers to them."""
    return page.evaluate("""() => { const seen = {}, dup = new Set();
        document.querySelectorAll('[id]:not(input[type=hidden])').forEach(el => {
            if (seen[el.id]) dup.add(el.id);
            seen[el.id] = 1;
        });
        return [...dup]; }""")


def overflow(page) -> int:
    """How many pixels the page is wider than the viewport (0: no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


# -------------------------------------------------------------------------------------------- tests


def test_manager_creates_product_with_variants_and_image_then_shopper_sees_it(browser, shop, page, tmp_path):
    from playwright.sync_api import expect

    from shop.catalog.models import Product
    from shop.extensions import db

    base = shop.url
    staff_login(page, base, "manager@example.com")
    shot(page, "admin-walk-01-dashboard.png")

    # --- Catalogue -> Products -> Create
    menu(page, "Catalogue", "Products")
    expect(page).to_have_url(re.compile(re.escape(base + "/admin/products/")))
    page.get_by_role("link", name="Create", exact=True).click()
    expect(page).to_have_url(re.compile(re.escape(base + "/admin/products/new/")))
    form = page.locator("form.admin-form")
    form.get_by_label("Name").first.fill(PRODUCT)
    # The slug's hint says "Leave empty to make one from the name", but the browser refuses an empty
    # slug (see test_product_slug_may_be_left_empty), so type the one the name would give.
    form.get_by_label("Slug").fill(SLUG)
    choose(page, "category", "T-shirts")
    form.get_by_label("Status").select_option(label="Active (for sale)")
    form.get_by_label("Options").fill("size: S, M")  # before any variant: the product's own field

    add_variant = page.get_by_role("button", name="Add Variant")
    for i, (sku, options, price, stock) in enumerate(VARIANTS):
        add_variant.click()
        card = page.locator(f"#variants-{i}")
        expect(card).to_be_visible()
        card.get_by_label("SKU").fill(sku)
        card.get_by_label("Options").fill(options)
        card.get_by_label(re.compile(r"^Price")).fill(price)
        card.get_by_label("Stock on hand").fill(stock)
    shot(page, "admin-walk-02-product-form.png")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page).to_have_url(re.compile(re.escape(base + "/admin/products/")))
    expect(page.locator(".alert")).to_contain_text("successfully created")
    row = page.locator("table.model-list tbody tr", has_text=PRODUCT)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(_money(VARIANTS[0][2]))  # "From": the lowest variant price
    shot(page, "admin-walk-03-product-list.png")

    with shop.app.app_context():
        product = db.session.scalar(db.select(Product).where(Product.name == PRODUCT))
        assert product is not None and product.status == "active"
        assert [(o.name, o.values) for o in product.options] == [("size", ["S", "M"])]
        saved = {v.sku: (v.options, v.price_amount, v.on_hand) for v in product.variants}
        assert saved == {"HLT-E2E-S": ({"size": "S"}, 2400, 7), "HLT-E2E-M": ({"size": "M"}, 2650, 3)}
        assert product.slug == SLUG and product.category.slug == "men-t-shirts"
        slug = product.slug

    # --- Catalogue -> Images -> Create, with a real PNG through the pre-signed upload widget
    menu(page, "Catalogue", "Images")
    expect(page).to_have_url(re.compile(re.escape(base + "/admin/images/")))
    page.get_by_role("link", name="Create", exact=True).click()
    form = page.locator("form.admin-form")
    choose(page, "product", PRODUCT)
    png = tiny_png(12, 8, (31, 95, 91))
    png_file = tmp_path / "harbour-tee.png"
    png_file.write_bytes(png)
    page.get_by_label("Image file").set_input_files(png_file)
    status = page.locator(".upload-drop").get_by_role("status")
    expect(status).to_contain_text("Uploaded")
    path_value = form.locator("input#path").input_value()
    assert path_value.startswith("uploads/") and path_value.endswith(".png"), path_value
    form.get_by_label("Alt text").fill(ALT)
    shot(page, "admin-walk-04-image-form.png")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page).to_have_url(re.compile(re.escape(base + "/admin/images/")))
    expect(page.locator(".alert")).to_contain_text("successfully created")
    expect(page.locator("table.model-list tbody tr", has_text=ALT)).to_have_count(1)
    shot(page, "admin-walk-05-image-list.png")

    # --- As a shopper (a fresh browser context: no staff session)
    context = new_context(browser)
    try:
        shopper = context.new_page()
        response = shopper.goto(f"{base}/p/{slug}")
        assert response is not None and response.status == 200
        expect(shopper.get_by_role("heading", level=1)).to_have_text(PRODUCT)
        # The first variant in stock is selected: size S.
        expect(shopper.get_by_test_id("price")).to_have_text(_money(VARIANTS[0][2]))
        # Choose size M: its price follows.
        shopper.locator("form#variant-picker label", has_text=re.compile(r"^M")).click()
        expect(shopper.get_by_test_id("price")).to_have_text(_money(VARIANTS[1][2]))
        expect(shopper.locator("#variant-sku")).to_have_text(VARIANTS[1][0])
        expect(shopper.get_by_test_id("stock")).to_have_text("Only 3 left")

        img = shopper.get_by_role("img", name=ALT)
        expect(img).to_be_visible()
        shopper.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        src = img.get_attribute("src")
        fetched = context.request.get(src if src.startswith("http") else base + src)
        assert fetched.status == 200
        assert fetched.headers["content-type"] == "image/png"
        assert pixels(fetched.body()) == pixels(png)  # stored re-encoded (no hidden bytes), same picture
        shot(shopper, "admin-walk-06-storefront-product.png")
    finally:
        context.close()


def test_warehouse_user_cannot_reach_products_but_can_reach_stock(shop, page):
    from playwright.sync_api import expect

    base = shop.url
    staff_login(page, base, "warehouse@example.com")
    nav = page.locator("#admin-navbar-collapse")
    expect(nav.get_by_role("link", name="Stock", exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="Products")).to_have_count(0)
    expect(nav.get_by_role("link", name="Catalogue")).to_have_count(0)
    shot(page, "admin-warehouse-01-dashboard.png")

    for path in ("/admin/products/new/", "/admin/products/", "/admin/images/new/"):
        response = page.goto(base + path)
        assert response is not None and response.status == 403, (path, response and response.status)
    shot(page, "admin-warehouse-02-forbidden.png")

    page.get_by_role("link", name="Back to the back-office").click()  # the 403 page offers a way back
    expect(page).to_have_url(base + "/admin/")
    menu(page, "Stock", "Stock levels")
    expect(page).to_have_url(re.compile(re.escape(base + "/admin/stock/")))
    expect(page.locator("table.model-list tbody tr").first).to_be_visible()
    shot(page, "admin-warehouse-03-stock.png")


# -------------------------------------------------------- regressions of bugs the walk found


def test_product_slug_may_be_left_empty(shop, page):
    from playwright.sync_api import expect

    staff_login(page, shop.url, "manager@example.com")
    page.goto(shop.url + "/admin/products/new/")
    form = page.locator("form.admin-form")
    form.get_by_label("Name").first.fill("Slugless Tee E2E")
    choose(page, "category", "T-shirts")
    assert not form.get_by_label("Slug").evaluate("el => el.validity.valueMissing"), (
        "the browser refuses to send the form with an empty slug"
    )
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".alert")).to_contain_text("successfully created", timeout=3000)


def test_back_office_names_categories_and_products(shop, page):
    staff_login(page, shop.url, "manager@example.com")
    page.goto(shop.url + "/admin/products/new/")
    labels = page.locator("select#category option").all_inner_texts()
    assert "T-shirts" in labels, labels[:5]
    page.goto(shop.url + "/admin/products/")
    assert not page.locator("table.model-list tbody", has_text="<Category").count()


# ------------------------------------------------------------------------- review screenshots (task 2)


def _check_page(page, name: str, width: int, problems: dict) -> None:
    """Screenshot, then note sideways scrolling, unlabelled fields and duplicate ids."""
    shot(page, f"{name}-{width}.png")
    found = {}
    if (extra := overflow(page)) > 0:
        found["wider than the viewport by px"] = extra
    if unlabelled := unlabelled_fields(page):
        found["fields without a label"] = unlabelled
    if dups := duplicate_ids(page):
        found["duplicate ids"] = dups
    if found:
        problems[f"{name}-{width}"] = found


@pytest.mark.parametrize("width", WIDTHS)
def test_account_and_back_office_pages_review(browser, shop, width):
    """Sign-up, log-in (and a failed one), the account page with an address, the staff log-in, the
    dashboard and the product form, at desktop and phone widths: screenshots for people to look at,
    plus checks a screenshot cannot show (labels, errors tied to their inputs, sideways scrolling)."""
    from playwright.sync_api import expect

    base, problems = shop.url, {}
    email = f"shopper-{width}@example.com"
    context = new_context(browser, width)
    try:
        page = context.new_page()
        page.goto(base + "/account/signup")
        _check_page(page, "account-signup", width, problems)

        # A sign-up with differing passwords: the error is announced with the field it is about.
        page.get_by_label("Your name").fill("Sam Shopper")
        page.get_by_label("E-mail address").fill(email)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Repeat the password").fill(PASSWORD + "!")
        with page.expect_response(lambda r: r.request.method == "POST") as sent:
            page.get_by_role("button", name="Create account").click()
        assert sent.value.status == 422
        confirm = page.get_by_label("Repeat the password")
        expect(confirm).to_have_attribute("aria-invalid", "true")
        expect(confirm).to_have_accessible_description(re.compile("The passwords differ"))
        expect(confirm).to_be_focused()
        _check_page(page, "account-signup-error", width, problems)

        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Repeat the password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page).to_have_url(base + "/account")

        page.get_by_label("Full name").fill("Sam Shopper")
        page.get_by_label("Address line 1").fill("12 Harbour Street")
        page.get_by_label("City").fill("Portland")
        page.get_by_label("Country").select_option("US")
        page.get_by_label("State (US addresses)").select_option("OR")
        page.get_by_label("Postal code").fill("97201")
        page.get_by_label("Phone").fill("+1 503 555 0100")
        page.get_by_role("button", name="Save address").click()
        expect(page.locator(".flash-success")).to_contain_text("Address saved.")
        expect(page.locator(".address-list li")).to_have_count(1)
        _check_page(page, "account", width, problems)

        page.get_by_role("button", name="Log out").click()
        page.goto(base + "/account/login")
        _check_page(page, "account-login", width, problems)
        page.get_by_label("E-mail address").fill(email)
        page.get_by_label("Password", exact=True).fill("not the password at all")
        with page.expect_response(lambda r: r.request.method == "POST") as sent:
            page.get_by_role("button", name="Log in").click()
        assert sent.value.status == 401
        password = page.get_by_label("Password", exact=True)
        expect(password).to_have_attribute("aria-invalid", "true")
        expect(password).to_have_accessible_description(re.compile("not right"))
        expect(password).to_be_focused()  # the page starts at the field to fix
        _check_page(page, "account-login-error", width, problems)
    finally:
        context.close()

    context = new_context(browser, width)
    try:
        page = context.new_page()
        page.goto(base + "/admin/login")
        _check_page(page, "admin-login", width, problems)
        page.get_by_label("E-mail address").fill("manager@example.com")
        page.get_by_label("Password").fill("not the password at all")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("not right")
        expect(page.get_by_label("Password")).to_have_accessible_description(re.compile("not right"))
        _check_page(page, "admin-login-error", width, problems)

        staff_login(page, base, "manager@example.com")
        _check_page(page, "admin-dashboard", width, problems)
        page.goto(base + "/admin/products/")
        expect(page.get_by_role("searchbox").or_(page.get_by_label(re.compile("^Search by")))).to_be_visible()
        _check_page(page, "admin-products", width, problems)
        page.goto(base + "/admin/products/new/")
        page.get_by_role("button", name="Add Variant").click()
        variant = page.locator("#variants-0")
        # The copied inline form's labels and hints belong to its own inputs (admin-forms.js).
        expect(variant.get_by_label(re.compile("^Price"))).to_have_accessible_description("e.g. 19.99")
        expect(variant.get_by_label("Options")).to_have_attribute("id", "variants-0-options_text")
        expect(variant.get_by_role("button", name="Remove this variant")).to_be_visible()
        _check_page(page, "admin-product-form", width, problems)
    finally:
        context.close()
    assert not problems, problems
