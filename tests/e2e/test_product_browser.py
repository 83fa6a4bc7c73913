"""Product pages and the site's frame in a real browser, at 1280 and 390 px wide.

One live shop (the demo catalogue, its pictures tagged with the colour they show) and one Chromium for
the module: the gallery switches picture on a thumbnail (click and keyboard) and on a colour choice and
opens the large picture; the header's cart count appears after adding to the cart; the favicon loads
and no request of a page load answers 404; home, listing and product pages pass axe.
Screenshots: var/screenshots/product-*.png.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import live_seeded_shop
from tests.e2e.conftest import SHOTS, TIMEOUT_MS

pytestmark = pytest.mark.browser
WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def shop(browser):
    with live_seeded_shop(12, prefix="shop_pp") as live:
        with live.app.app_context():
            from shop.catalog.models import Product
            from shop.extensions import db

            # A product with three pictures the demo seed tagged with their colours, in stock, with an in-stock neighbour in its category.
            products = list(db.session.scalars(db.select(Product).order_by(Product.id)))
            in_stock = [p for p in products if any(v.on_hand > 0 for v in p.variants)]
            product, other = next(
                (p, o)
                for p in in_stock
                for o in in_stock
                if len(p.images) >= 3
                and all(i.option_value for i in p.images)
                and o.id != p.id
                and o.category_id == p.category_id
            )
            live.slug, live.other_slug, live.category = product.slug, other.slug, product.category.slug
            live.pictures = [(i.path, i.option_value) for i in product.images]
        yield live


def _page(browser, width):
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.missing = []
    page.on("response", lambda r: page.missing.append(r.url) if r.status == 404 else None)
    return context, page


def _main_src(page) -> str:
    return page.get_attribute("#gallery-image", "src")


@pytest.mark.parametrize("width", WIDTHS)
def test_product_page_gallery_cart_count_and_accessibility(browser, shop, axe, width):
    context, page = _page(browser, width)
    try:
        # Home and a listing: no 404 in the page load (the icon included), no serious axe finding.
        page.goto(f"{shop.url}/")
        icon = page.get_attribute("link[rel=icon]", "href")
        assert page.request.get(f"{shop.url}{icon}").status == 200
        assert axe(page) == []
        page.screenshot(path=SHOTS / f"product-home-{width}.png", full_page=True)
        page.goto(f"{shop.url}/c/{shop.category}")
        assert axe(page) == []
        page.screenshot(path=SHOTS / f"product-listing-{width}.png", full_page=True)

        page.goto(f"{shop.url}/p/{shop.slug}")
        (first, _), (second, _), (third, _) = shop.pictures[:3]
        assert _main_src(page).endswith(first)
        # A thumbnail click shows its picture; Enter on a focused thumbnail does too.
        page.locator(".gallery-thumbs .thumb").nth(1).click()
        assert _main_src(page).endswith(second)
        assert page.get_attribute(".gallery-thumbs .thumb >> nth=1", "aria-current") == "true"
        page.locator(".gallery-thumbs .thumb").nth(2).focus()
        page.keyboard.press("Enter")
        assert _main_src(page).endswith(third)
        # Choosing a colour (one not chosen yet) shows that colour's picture.
        checked = page.eval_on_selector("#variant-picker input[name=colour]:checked", "el => el.value")
        path, colour = next((p, c) for p, c in shop.pictures[:2] if c != checked)
        radio = page.locator(f"#variant-picker input[name=colour][value={json.dumps(colour)}]")
        page.locator(f"label[for={json.dumps(radio.get_attribute('id'))}]").click()
        assert _main_src(page).endswith(path)
        # The main picture opens large in a dialog; Escape closes it.
        page.click("#gallery-zoom")
        assert page.locator("#zoom-dialog").is_visible()
        assert page.get_attribute("#zoom-image", "src").endswith(path)
        assert axe(page) == []
        page.screenshot(path=SHOTS / f"product-zoom-{width}.png")
        page.keyboard.press("Escape")
        assert not page.locator("#zoom-dialog").is_visible()
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=SHOTS / f"product-page-{width}.png", full_page=True)

        # The cart count: none yet, then "1" after adding (the page itself is publicly cached).
        assert page.locator(".cart-count").is_hidden()
        page.goto(f"{shop.url}/p/{shop.slug}")  # the default choice: a variant in stock
        page.click("#add-button")
        page.wait_for_url(re.compile(r"/cart"))
        page.goto(f"{shop.url}/p/{shop.other_slug}")
        badge = page.locator(".cart-count")
        badge.wait_for(state="visible")
        assert badge.inner_text() == "1"
        assert page.get_attribute("#cart-link", "aria-label") == "Cart, 1 item"
        # "You may also like" arrives (fetched apart from the cached page); the product itself is not in it.
        related = page.locator("#related .card")
        related.first.wait_for()
        assert 1 <= related.count() <= 4 and page.locator(f"#related a[href='/p/{shop.other_slug}']").count() == 0
        # Recently viewed (kept in this browser): the product seen before is offered here.
        recent = page.locator("#recently-viewed")
        assert recent.is_visible() and recent.locator(f"a[href='/p/{shop.slug}']").count() == 1
        assert axe(page) == []
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=SHOTS / f"product-related-{width}.png", full_page=True)
        width_now = page.evaluate("document.documentElement.scrollWidth")
        assert width_now <= width, f"the product page is {width_now}px wide in a {width}px window"
        assert page.missing == [], f"404s during page loads: {page.missing}"
    finally:
        context.close()
