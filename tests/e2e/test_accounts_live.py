"""Accounts over real HTTP with real commits: races for one e-mail address or one refresh token,
and a verification mail that travels through a real RQ worker."""

import email
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from email import policy

import psycopg
import pytest
from redis import Redis

from shop.devstack import ROOT
from tests.conftest import LiveServer, config_for

PASSWORD = "correct horse battery"


@pytest.fixture
def live(committed_db, tmp_path):
    from shop import create_app

    Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    app = create_app(config_for(committed_db, MAIL_DIR=str(tmp_path / "mail")))
    with LiveServer(app) as server:
        server.database_url = committed_db
        yield server


def call(url, body, method="POST"):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def all_at_once(n, fn):
    """Run fn() in n threads released together; return their results."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        barrier.wait()
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_simultaneous_sign_ups_for_one_address_make_one_account(live):
    results = all_at_once(
        12, lambda: call(f"{live.url}/api/v1/auth/register", {"email": "race@example.com", "password": PASSWORD})
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 11, results
    with psycopg.connect(live.database_url) as conn:
        assert (
            conn.execute("SELECT count(*) FROM user_account WHERE lower(email) = 'race@example.com'").fetchone()[0] == 1
        )


def test_a_refresh_token_spent_by_many_at_once_yields_exactly_one_new_pair(live):
    call(f"{live.url}/api/v1/auth/register", {"email": "twin@example.com", "password": PASSWORD})
    _, pair = call(f"{live.url}/api/v1/auth/token", {"email": "twin@example.com", "password": PASSWORD})
    results = all_at_once(12, lambda: call(f"{live.url}/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]}))
    winners = [body for status, body in results if status == 200]
    assert len(winners) == 1 and sorted(s for s, _ in results).count(401) == 11
    # The copies count as reuse (API.md): the whole log-in is revoked, the winner's pair included.
    status, _ = call(f"{live.url}/api/v1/auth/refresh", {"refresh_token": winners[0]["refresh_token"]})
    assert status == 401


def test_verification_mail_goes_through_the_worker_and_its_link_verifies(live, tmp_path):
    status, user = call(f"{live.url}/api/v1/auth/register", {"email": "mail@example.com", "password": PASSWORD})
    assert status == 201
    env = {**os.environ, "DATABASE_URL": live.database_url, "MAIL_DIR": str(tmp_path / "mail")}
    done = subprocess.run(
        [sys.executable, "worker.py", "--burst", "mail"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [path] = list((tmp_path / "mail").glob("*.eml"))
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert msg["To"] == "mail@example.com"
    link = next(w for w in msg.get_body(("plain",)).get_content().split() if "/account/verify/" in w)
    assert link.startswith(live.url)
    with urllib.request.urlopen(link, timeout=30) as resp:  # follows the redirect to the log-in page
        assert resp.status == 200
    with psycopg.connect(live.database_url) as conn:
        verified = conn.execute("SELECT email_verified_at FROM user_account WHERE id = %s", (user["id"],)).fetchone()[0]
    assert verified is not None
