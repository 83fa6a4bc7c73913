"""The browser for the e2e tests: Debian's Chromium driven by Playwright, one per test module.

Skips, saying why, where Chromium is missing; fails instead when SHOP_REQUIRE_BROWSER is set
(CI installs Chromium, so a skip there would hide a failure).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import stream_topic_for

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "var" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


def chromium_path() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module. Request it first, so a skip costs nothing."""
    path = chromium_path()
    if path is None:
        if os.environ.get("SHOP_REQUIRE_BROWSER"):
            pytest.fail("SHOP_REQUIRE_BROWSER is set but Chromium is missing")
        pytest.skip(
            "Chromium not found (neither /usr/bin/chromium nor `chromium` on PATH); "
            "install Debian's chromium package to run the browser tests"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def running_worker(database_url: str, mail_dir, public_url: str, log_path, env: dict | None = None):
    """The shop's background processes as production runs them, on that database and mail directory (links in its
    mails at `public_url`): worker.py (the RQ worker), `worker.py relay` (the outbox relay: jobs and events) and
    `worker.py events` (the event consumers: order mails, search sync ...). `env` adds settings (the Stripe ones,
    say). Their output goes to `log_path` (the relay's and the consumers' beside it, with -relay/-events in the
    name). Yields the RQ worker's process; all are stopped (terminated, then killed) on leaving."""
    log_path = Path(log_path)
    environ = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MAIL_DIR": str(mail_dir),
        "PUBLIC_BASE_URL": public_url,
        "EVENT_STREAM_TOPIC": stream_topic_for(database_url),
        **(env or {}),
    }
    procs = []
    try:
        for args, path in (
            ([], log_path),
            (["relay"], log_path.with_name(f"{log_path.stem}-relay.log")),
            (["events"], log_path.with_name(f"{log_path.stem}-events.log")),
        ):
            with open(path, "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "worker.py", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=environ
                )
            proc.log_path = path
            procs.append(proc)
        yield procs[0]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def new_context(browser, width: int = 1280, **kwargs):
    """A browser context `width` px wide (a phone's 844 px tall below 500 px, else 900) with the suite's timeout."""
    kwargs.setdefault("viewport", {"width": width, "height": 900 if width > 500 else 844})
    context = browser.new_context(**kwargs)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def shot(page, name: str) -> None:
    """A full-page screenshot from the top (a scrolled page would show its sticky header mid-way)."""
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=SHOTS / name, full_page=True)


def fits(page, name: str = "the page") -> None:
    """The page does not scroll sideways at its viewport's width."""
    width = page.viewport_size["width"]
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{name} is {scroll_width}px wide in a {width}px viewport"


AXE_JS = ROOT / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's script (installed from npm by `make install`)."""
    if not AXE_JS.exists():
        if os.environ.get("SHOP_REQUIRE_BROWSER"):
            pytest.fail(f"SHOP_REQUIRE_BROWSER is set but axe-core is missing at {AXE_JS} (run `make install`)")
        pytest.skip("axe-core not installed (needs npm; `make install` puts it in .venv/node)")
    return AXE_JS.read_text()


@pytest.fixture
def axe(axe_source):
    """axe(page) runs axe-core in the page and returns its serious and critical violations as
    readable strings ("rule: help (selector, ...)"), so `assert axe(page) == []` shows what is wrong."""

    def run(page, *, exclude: list[str] | None = None) -> list[str]:
        if not page.evaluate("() => typeof window.axe !== 'undefined'"):
            # Evaluated through the DevTools protocol, so the shop's Content-Security-Policy (which blocks
            # inline scripts) does not stop it and the page is checked under its real headers.
            page.evaluate(axe_source)
        context = {"exclude": [[sel] for sel in (exclude or [])]} if exclude else None
        result = page.evaluate(
            "async (ctx) => await window.axe.run(ctx || document, {resultTypes: ['violations']})", context
        )
        found = []
        for v in result["violations"]:
            if v.get("impact") in SERIOUS:
                targets = ", ".join(" ".join(n["target"]) for n in v["nodes"][:5])
                found.append(f"{v['id']} ({v['impact']}): {v['help']} [{targets}]")
        return found

    return run
