"""The storefront in a real browser: Debian's Chromium driven by Playwright's sync API.

Scenario: home page -> category from the header nav -> a product whose variants differ in price or
availability -> pick another option and see the price/stock follow, with and without JavaScript.
Also: a missing product answers with the friendly 404 page, and no page scrolls sideways on a phone.

Screenshots land in var/screenshots/ as a side effect (for people to look at, not compared).
Skips when Chromium is not installed; never runs `playwright install`.
"""

from __future__ import annotations

import json
import urllib.request
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import SHOTS, TIMEOUT_MS

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CATEGORY = ("men", "Men")  # slug, label in the header nav


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    yield pg
    context.close()


# ------------------------------------------------------------------------------------------ helpers


def _api(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our own live server
        return json.load(resp)


def _money(m: dict) -> str:
    """The storefront's format for a Money object: {"amount": 1999, "currency": "USD"} -> "$19.99"."""
    if m["currency"] == "USD":
        return f"${Decimal(m['amount']).scaleb(-2):,.2f}"
    from shop.money import format_money  # other currencies: trust the app's formatter

    return format_money(m["amount"], m["currency"])


def _stock(available: int) -> str:
    if available == 0:
        return "Sold out"
    if available <= 5:
        return f"Only {available} left"
    return f"In stock ({available} available)"


def _shown(v: dict) -> tuple[str, str]:
    return _money(v["price"]), _stock(v["available"])


def _variant(product: dict, options: dict) -> dict | None:
    return next((v for v in product["variants"] if v["options"] == options), None)


def _default_variant(product: dict) -> dict:
    """What the product page selects when no option is in the URL: the first variant in stock."""
    return next((v for v in product["variants"] if v["available"] > 0), product["variants"][0])


def _switches(product: dict, current: dict):
    """(option name, other value, target variant) for every one-click change from `current` options
    that changes what the page shows, best first: a price change, then sold-out vs in stock."""
    here = _variant(product, current)
    found = []
    for option in product["options"]:
        for value in option["values"]:
            if value == current.get(option["name"]):
                continue
            target = _variant(product, {**current, option["name"]: value})
            if target is None or _shown(target) == _shown(here):
                continue
            score = (target["price"] != here["price"]) * 2 + ((target["available"] == 0) != (here["available"] == 0))
            found.append((score, option["name"], value, target))
    found.sort(key=lambda t: -t[0])
    return [(name, value, target) for _, name, value, target in found]


@pytest.fixture(scope="module")
def product_choice(seeded_shop):
    """A product of the category whose variants differ in price or availability, with one option
    click from its default variant that changes the price and/or the stock text."""
    listing = _api(f"{seeded_shop.url}/api/v1/products?category={CATEGORY[0]}&per_page=100")
    assert listing["items"], "the demo catalogue has no products in the category"
    fallback = None
    for item in listing["items"]:
        product = _api(f"{seeded_shop.url}/api/v1/products/{item['slug']}")
        variants = product["variants"]
        if len({(v["price"]["amount"], v["available"]) for v in variants}) < 2:
            continue
        switches = _switches(product, _default_variant(product)["options"])
        if not switches:
            continue
        name, value, target = switches[0]
        differs_in_price = target["price"] != _default_variant(product)["price"]
        if differs_in_price or target["available"] == 0 or _default_variant(product)["available"] == 0:
            return product, name, value  # the most telling kind of change
        fallback = fallback or (product, name, value)
    assert fallback, "no product in the category has variants that differ in price or availability"
    return fallback


def _checked_options(page) -> dict:
    return page.eval_on_selector_all(
        "#variant-picker input[type=radio]:checked", "els => Object.fromEntries(els.map(e => [e.name, e.value]))"
    )


def _option_label(page, name: str, value: str):
    """The <label> of the radio for option `name` = `value` in the variant picker."""
    form = page.locator("form#variant-picker")
    radio = form.locator(f"input[type=radio][name={json.dumps(name)}][value={json.dumps(value)}]")
    assert radio.count() == 1, f"no radio for {name}={value!r}"
    return form.locator(f"label[for={json.dumps(radio.get_attribute('id'))}]")


def _full_page_screenshot(page, path: Path) -> None:
    """Scroll through first so lazy images below the fold are in the picture too."""
    height = page.evaluate("document.documentElement.scrollHeight")
    for y in range(0, height, 600):
        page.evaluate(f"window.scrollTo(0, {y})")
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=path, full_page=True)


def _assert_shows(page, variant: dict) -> None:
    from playwright.sync_api import expect

    price, stock = _shown(variant)
    expect(page.get_by_test_id("price")).to_have_text(price)
    expect(page.get_by_test_id("stock")).to_have_text(stock)


# -------------------------------------------------------------------------------------------- tests


def test_variant_picker_updates_price_and_stock_with_javascript(browser, seeded_shop, page, product_choice):
    from playwright.sync_api import expect

    product, option, value = product_choice

    page.goto(seeded_shop.url + "/")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    page.screenshot(path=SHOTS / "e2e-01-home.png", full_page=True)

    page.get_by_role("navigation", name="Categories").get_by_role("link", name=CATEGORY[1], exact=True).click()
    expect(page).to_have_url(f"{seeded_shop.url}/c/{CATEGORY[0]}")
    expect(page.get_by_role("heading", level=1)).to_have_text(CATEGORY[1])

    # The listing is sorted like the API's default ("newest"); follow "Next" if the product is further on.
    card = page.locator(f".product-grid a[href='/p/{product['slug']}']")
    for _ in range(20):
        if card.count():
            break
        page.get_by_role("link", name="Next").click()
    page.screenshot(path=SHOTS / "e2e-02-listing.png", full_page=True)
    card.first.click()
    expect(page).to_have_url(f"{seeded_shop.url}/p/{product['slug']}")
    expect(page.get_by_role("heading", level=1)).to_have_text(product["name"])

    # The page opens on the default variant, and says so.
    current = _checked_options(page)
    assert current == _default_variant(product)["options"]
    _assert_shows(page, _variant(product, current))
    # With JavaScript the picker updates in place, so the submit button is hidden.
    expect(page.get_by_role("button", name="Show price and availability")).to_be_hidden()

    target = _variant(product, {**current, option: value})
    assert _shown(target) != _shown(_variant(product, current)), "the chosen click would change nothing"
    _option_label(page, option, value).click()

    _assert_shows(page, target)
    expect(page.locator(f"#variant-picker .chosen[data-option={json.dumps(option)}]")).to_have_text(value)
    expect(page.locator("#variant-sku")).to_have_text(target["sku"])
    # The address now names the choice, so a reload or a shared link shows the same variant.
    query = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
    assert query == target["options"]
    page.screenshot(path=SHOTS / "e2e-03-product-js.png", full_page=True)

    page.reload()
    _assert_shows(page, target)


def test_variant_picker_works_without_javascript(browser, seeded_shop, product_choice):
    from playwright.sync_api import expect

    product, option, value = product_choice
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(f"{seeded_shop.url}/p/{product['slug']}")
        current = _checked_options(page)
        assert current == _default_variant(product)["options"]
        _assert_shows(page, _variant(product, current))
        target = _variant(product, {**current, option: value})

        _option_label(page, option, value).click()
        # Without JavaScript nothing changes until the form is sent.
        _assert_shows(page, _variant(product, current))
        button = page.get_by_role("button", name="Show price and availability")
        expect(button).to_be_visible()
        with page.expect_navigation():
            button.click()

        assert urlsplit(page.url).path == f"/p/{product['slug']}"
        assert {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()} == target["options"]
        _assert_shows(page, target)
        assert _checked_options(page) == target["options"]
        expect(page.locator("#variant-sku")).to_have_text(target["sku"])
        page.screenshot(path=SHOTS / "e2e-04-product-nojs.png", full_page=True)
    finally:
        context.close()


def test_missing_product_shows_friendly_404(browser, seeded_shop, page):
    from playwright.sync_api import expect

    response = page.goto(f"{seeded_shop.url}/p/no-such-product-e2e")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_contain_text("find that page")
    expect(page.get_by_role("link", name="Back to the shop")).to_be_visible()
    expect(page.get_by_role("navigation", name="Categories")).to_be_visible()
    page.screenshot(path=SHOTS / "e2e-05-404.png", full_page=True)


@pytest.mark.parametrize("width", [1280, 390])
def test_pages_fit_the_viewport(browser, seeded_shop, product_choice, width):
    """Review screenshots of the main pages at desktop and phone widths; none may scroll sideways."""
    product, _, _ = product_choice
    pages = {
        "home": "/",
        "listing-filtered": f"/c/{CATEGORY[0]}?in_stock=1&max_price=60&sort=price",
        "product": f"/p/{product['slug']}",
        "404": "/p/no-such-product-e2e",
    }
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        overflowing = {}
        for name, path in pages.items():
            page.goto(seeded_shop.url + path)
            _full_page_screenshot(page, SHOTS / f"{name}-{width}.png")
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            if scroll_width > width:
                overflowing[name] = scroll_width
        assert not overflowing, f"pages wider than the {width}px viewport: {overflowing}"
    finally:
        context.close()
