"""The served OpenAPI document against the running API, with schemathesis (property-based): for every operation,
generated requests (valid ones and broken ones) get no 5xx, no response that breaks its documented schema and no
status code the document does not list. Admin operations run with a staff token.

Bounded: SCHEMATHESIS_MAX_EXAMPLES (default 10) cases per operation and SCHEMATHESIS_MAX_TIME seconds in all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import live_seeded_shop

MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10")
MAX_TIME = os.environ.get("SCHEMATHESIS_MAX_TIME", "45")
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"


@pytest.fixture(scope="module")
def shop_with_staff():
    from shop.accounts.tokens import issue_pair
    from shop.extensions import db
    from tests.factories import make_user

    tokens = {}

    def staff():
        tokens["admin"] = issue_pair(make_user("fuzz-admin@example.com", role="admin"))["access_token"]
        db.session.commit()

    # The suite runs with abuse limits off (they have tests of their own); the fuzzer's token outlives the run.
    with live_seeded_shop(40, prefix="shop_fuzz", setup=staff, ACCESS_TOKEN_SECONDS=3600) as live:
        live.tokens = tokens
        yield live


def test_the_api_keeps_its_openapi_document(shop_with_staff, tmp_path: Path):
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is not installed (make install)"
    live = shop_with_staff
    run = subprocess.run(
        [
            st,
            "run",
            f"{live.url}/api/v1/openapi.json",
            "--url",
            f"{live.url}/api",
            "--checks",
            CHECKS,
            "--max-examples",
            MAX_EXAMPLES,
            "--max-time",
            MAX_TIME,
            "--seed",
            "20261203",
            "--header",
            f"Authorization: Bearer {live.tokens['admin']}",
            "--workers",
            "1",
            "--no-color",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--output-truncate",
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=int(MAX_TIME) + 180,
        cwd=tmp_path,
    )
    (Path(os.environ.get("SCHEMATHESIS_REPORT", tmp_path / "schemathesis.txt"))).write_text(run.stdout + run.stderr)
    failures = run.stdout[run.stdout.find("FAILURES") :] if "FAILURES" in run.stdout else run.stdout
    assert run.returncode == 0, failures[-20000:] + run.stderr[-3000:]
