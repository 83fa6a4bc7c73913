import json, os
from pathlib import Path
import pytest
from test_browser import CHROMIUM_ARGS, ROOT
OUT = ROOT / "var" / "review"

def test_review(seeded_shop):
    from playwright.sync_api import sync_playwright
    OUT.mkdir(parents=True, exist_ok=True)
    pages = json.loads(os.environ.get("REVIEW_PAGES", "{}")) or {
        "home": "/", "listing": "/c/men?in_stock=1&max_price=60&sort=price",
        "product": "/p/soft-jersey-sweatshirt", "404": "/p/nope"}
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        for width in (1280, 390):
            ctx = b.new_context(viewport={"width": width, "height": 844 if width == 390 else 900})
            page = ctx.new_page()
            for name, path in pages.items():
                page.goto(seeded_shop.url + path)
                h = page.evaluate("document.documentElement.scrollHeight")
                for y in range(0, h, 400):
                    page.evaluate(f"window.scrollTo(0,{y})"); page.wait_for_timeout(30)
                page.evaluate("window.scrollTo(0,0)"); page.wait_for_load_state("networkidle")
                page.screenshot(path=OUT / f"{name}-{width}.png", full_page=True)
                h = page.evaluate("document.documentElement.scrollHeight")
                seg = 900 if width == 390 else 1000
                for i, y in enumerate(range(0, h, seg)):
                    page.screenshot(path=OUT / f"{name}-{width}-part{i}.png", full_page=True,
                                    clip={"x": 0, "y": y, "width": width, "height": min(seg, h - y)})
                print(name, width, "scrollWidth", page.evaluate("document.documentElement.scrollWidth"), "h", h)
            # focus styles
            page.goto(seeded_shop.url + pages["product"])
            for i in range(int(os.environ.get("TABS", "3"))):
                page.keyboard.press("Tab")
            page.screenshot(path=OUT / f"focus-{width}.png")
            print("focused:", page.evaluate("document.activeElement.outerHTML.slice(0,120)"))
            ctx.close()
        b.close()
