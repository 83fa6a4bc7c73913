"""The cart and checkout in a real browser (Chromium via Playwright), at 1280 and 390 px, on one live shop for the
module whose first product is in a 20% flash sale.

The cart shows the sale price as the line's price ("was …, save …") with the product's picture and a labelled
discount-code input; checkout chooses the country by name from a <select> ("United Kingdom" -> GB: the state
select goes away, UK VAT follows on the review); axe finds nothing serious on the cart, details and review pages.
Screenshots land in var/screenshots/cart-checkout-*.png.
"""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from tests.conftest import live_seeded_shop
from tests.e2e.conftest import fits, new_context, shot

pytestmark = pytest.mark.browser

WIDTHS = (1280, 390)
SALE_PERCENT = 20


def _money(amount: int) -> str:
    return f"${amount / 100:,.2f}"


@pytest.fixture(scope="module")
def shop(browser):
    """A live shop over its own database: 6 demo products, the first in stock 20% off in an automatic flash sale."""

    def sale():
        from sqlalchemy import select

        from shop.catalog.models import Product, Variant
        from shop.extensions import db
        from shop.promotions.models import Promotion

        first = db.session.scalar(
            select(Product)
            .join(Variant)
            .where(Product.status == "active", Variant.on_hand > 0)
            .order_by(Product.id)
            .limit(1)
        )
        db.session.add(
            Promotion(
                name="Flash sale",
                kind="percent",
                value=SALE_PERCENT,
                automatic=True,
                applies_to={"products": [first.id]},
            )
        )
        db.session.commit()
        sale.slug = first.slug

    with live_seeded_shop(6, prefix="shop_cc", setup=sale) as live:
        live.sale_slug = sale.slug
        yield live


def _variant(shop, sku: str) -> dict:
    with urllib.request.urlopen(f"{shop.url}/api/v1/products/{shop.sale_slug}", timeout=10) as resp:  # noqa: S310
        product = json.load(resp)
    return next(v for v in product["variants"] if v["sku"] == sku)


@pytest.mark.parametrize("width", WIDTHS)
def test_sale_price_thumbnail_coupon_and_country_select(browser, shop, axe, width):
    from playwright.sync_api import expect

    context = new_context(browser, width)
    page = context.new_page()
    try:
        # The product page: add the default variant (its price is the sale price).
        page.goto(f"{shop.url}/p/{shop.sale_slug}")
        page.get_by_role("button", name="Add to cart").click()

        # The cart: the sale price is the line's price, with what it was; a picture; a labelled code input.
        expect(page).to_have_url(f"{shop.url}/cart")
        line = page.get_by_test_id("cart-line")
        expect(line).to_have_count(1)
        variant = _variant(shop, line.get_attribute("data-sku"))
        regular = variant["price"]["amount"]
        sale = regular - regular * SALE_PERCENT // 100
        expect(line.get_by_test_id("cart-unit-price")).to_contain_text(_money(sale))
        expect(line.get_by_test_id("cart-sale-note")).to_have_text(
            f"was {_money(regular)}, save {_money(regular - sale)}"
        )
        expect(page.get_by_test_id("cart-subtotal")).to_have_text(_money(sale))
        expect(page.get_by_test_id("cart-discount-line")).to_have_count(0)
        thumb = line.locator("img.cart-thumb")
        expect(thumb).to_be_visible()
        assert thumb.get_attribute("alt") and thumb.get_attribute("width") == "64"
        assert thumb.evaluate("img => img.complete && img.naturalWidth > 0")
        code = page.get_by_label("Discount code")
        expect(code).to_be_visible()
        box = code.bounding_box()
        assert box["height"] >= 40  # sized like the other inputs, not a bare browser default
        fits(page)
        shot(page, f"cart-checkout-cart-{width}.png")
        assert axe(page) == []

        # Details: the country is a select by name; the state select is for the US only.
        page.get_by_test_id("checkout").click()
        expect(page).to_have_url(f"{shop.url}/checkout")
        country = page.get_by_label("Country", exact=True)
        expect(country).to_have_value("US")
        expect(page.get_by_label("State (US addresses)")).to_be_visible()
        page.get_by_label("E-mail address").fill("kim@example.com")
        page.get_by_label("Full name").fill("Kim Lee")
        page.get_by_label("Address line 1").fill("9 Elm Road")
        page.get_by_label("City").fill("Leeds")
        page.get_by_label("Postal code").fill("LS1 1AA")
        country.select_option(label="United Kingdom")
        expect(country).to_have_value("GB")
        expect(page.get_by_label("State (US addresses)")).to_be_hidden()
        expect(page.get_by_label(re.compile(r"^County, province or region"))).to_be_visible()
        fits(page)
        shot(page, f"cart-checkout-details-{width}.png")
        assert axe(page) == []
        page.get_by_role("button", name="Review your order").click()

        # Review: the same sale price; UK VAT (20%) on it; the address names the country.
        expect(page).to_have_url(f"{shop.url}/checkout/review")
        expect(page.get_by_test_id("review-unit-price")).to_contain_text(_money(sale))
        expect(page.get_by_test_id("review-subtotal")).to_have_text(_money(sale))
        expect(page.get_by_test_id("review-tax")).to_have_text(_money((sale * 2000 + 5000) // 10000))
        expect(page.get_by_test_id("review-address")).to_contain_text("United Kingdom")
        fits(page)
        shot(page, f"cart-checkout-review-{width}.png")
        assert axe(page) == []
    finally:
        context.close()
