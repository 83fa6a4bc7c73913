"""Errors reach Sentry (through the official sentry-sdk, to a local ingest endpoint) without personal data.

The app runs in a process of its own: the SDK is set up once per process, and the suite's processes must not
report to an endpoint that is gone after this test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fakes.sentry import FakeSentry

ROOT = Path(__file__).resolve().parents[2]
EMAIL = "zoe.sentry@example.org"
KEY = "sk_test_51Hsentrytestkey"
COOKIE = "session-cookie-secret-value"
TOKEN = "access-token-abcdefghijklmnop"

SCRIPT = f"""
import sentry_sdk
from shop import create_app

app = create_app()

@app.get("/boom")
def boom():
    raise RuntimeError("charging {EMAIL} failed with key {KEY}")

client = app.test_client()
client.set_cookie("session", "{COOKIE}")
resp = client.get("/boom?email={EMAIL}", headers={{"Authorization": "Bearer {TOKEN}", "User-Agent": "probe/1"}})
assert resp.status_code == 500, resp.status_code
sentry_sdk.flush(10)
"""


def test_an_unhandled_error_reaches_sentry_scrubbed_of_personal_data_and_secrets():
    with FakeSentry() as sentry:
        env = {**os.environ, "SENTRY_DSN": sentry.dsn, "SENTRY_ENVIRONMENT": "ci"}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        events = sentry.events()
        raw = b"".join(sentry.bodies).decode()
    crashes = [e for e in events if e.get("exception")]
    assert crashes, raw[:2000]
    crash = crashes[0]
    assert crash["exception"]["values"][-1]["type"] == "RuntimeError"
    assert "z***@example.org" in crash["exception"]["values"][-1]["value"]
    assert crash["environment"] == "ci"
    assert crash["request"]["url"].endswith("/boom")  # no query string
    assert crash["request"]["headers"] == {"User-Agent": "probe/1"}
    for secret in (EMAIL, KEY, COOKIE, TOKEN):
        assert secret not in raw, f"{secret} reached Sentry"


def test_without_a_dsn_nothing_is_sent():
    from shop import create_app
    from tests.conftest import config_for

    app = create_app(config_for())
    assert not app.config["SENTRY_DSN"]
    import sentry_sdk

    assert not sentry_sdk.is_initialized()
