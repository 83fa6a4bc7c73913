"""Issue 9, items 2 and 8: nothing is signed with a known key, refresh-token families belong to their
user, and a browser session ends for good at log-out, at deactivation and at the staff time limits."""

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid

import jwt
import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from shop.devstack import ROOT, _pick_port
from tests.factories import make_user
from tests.integration.test_auth_api import bearer, login, post
from tests.integration.test_permissions import as_user, csrf_token
from tests.integration.test_storefront_accounts import PASSWORD, form_post, log_in, token_of

PUBLISHED_KEY = "dev-only-secret-change-me"  # what config.py used to fall back to


def forged_access_token(user, family: str) -> str:
    """An access token for `user`, signed the way the shop signs them, with the published key."""
    key = hmac.new(PUBLISHED_KEY.encode(), b"shop.api-tokens.v1", hashlib.sha256).digest()
    now = int(time.time())
    return jwt.encode(
        {
            "sub": str(user.id),
            "fam": family,
            "ver": user.credentials_version,
            "iat": now,
            "typ": "access",
            "jti": uuid.uuid4().hex,
            "exp": now + 600,
        },
        key,
        algorithm="HS256",
    )


def forged_session_cookie(user) -> str:
    """A Flask session cookie logging `user` in, signed with the published key."""
    forger = Flask("forger")
    forger.secret_key = PUBLISHED_KEY
    now = int(time.time())
    return (
        SecureCookieSessionInterface()
        .get_signing_serializer(forger)
        .dumps({"_user_id": user.get_id(), "_fresh": True, "login_at": now, "seen_at": now})
    )


@pytest.fixture
def dev_app(app, db_session, redis_client, tmp_path, monkeypatch):
    """The app as `flask run` builds it in development with no SECRET_KEY set."""
    from config import get_config
    from shop import create_app

    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("SHOP_VAR_DIR", str(tmp_path / "var"))
    dev = create_app(type("DevelopmentUnderTest", (get_config("development"),), {"CACHE_ENABLED": False}))
    dev.test_client_class = app.test_client_class
    return dev


def admin_log_in(client, email, password=PASSWORD):
    html = client.get("/admin/login").get_data(as_text=True)
    return client.post("/admin/login", data={"csrf_token": token_of(html), "email": email, "password": password})


def admin_log_out(client):
    return client.post("/admin/logout", data={"csrf_token": csrf_token(client)})


def sent_to_admin_login(resp) -> bool:
    return resp.status_code == 302 and "/admin/login" in resp.headers["Location"]


def copy_of(client, app, name=None):
    """Another browser holding a copy of `client`'s cookie `name` (the session cookie by default)."""
    name = name or app.config["SESSION_COOKIE_NAME"]
    thief = app.test_client()
    thief.set_cookie(name, client.get_cookie(name).value)
    return thief


# -- item 2: no known key ---------------------------------------------------------------------------
def test_a_token_forged_with_the_published_key_does_not_open_the_admin_api(dev_app, db_session):
    admin = make_user("boss@example.com", role="admin")
    mallory = make_user("mallory@example.com")
    client = dev_app.test_client()
    own = login(client, mallory.email)  # a real log-in gives her a live family to name
    family = jwt.decode(own["access_token"], options={"verify_signature": False})["fam"]
    resp = client.get(f"/api/v1/admin/customers/{mallory.id}", headers=bearer(forged_access_token(admin, family)))
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_token"


def test_a_session_cookie_forged_with_the_published_key_does_not_open_the_back_office(dev_app, db_session):
    admin = make_user("boss@example.com", role="admin")
    attacker = dev_app.test_client()
    attacker.set_cookie(dev_app.config["SESSION_COOKIE_NAME"], forged_session_cookie(admin))
    assert sent_to_admin_login(attacker.get("/admin/staff/"))
    # The development key is real: the admin's own log-in works.
    boss = dev_app.test_client()
    assert admin_log_in(boss, admin.email).status_code == 302
    assert boss.get("/admin/staff/").status_code == 200


def test_a_payment_event_signed_with_the_published_key_is_refused(dev_app, db_session):
    secret = "whsec_test_" + hmac.new(PUBLISHED_KEY.encode(), b"shop.test-gateway.webhook", hashlib.sha256).hexdigest()
    payload = json.dumps(
        {
            "id": "evt_forged",
            "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_forged", "metadata": {"order_id": "1"}}},
        }
    )
    stamp = int(time.time())
    signature = hmac.new(secret.encode(), f"{stamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    resp = dev_app.test_client().post(
        "/webhooks/stripe",
        data=payload,
        content_type="application/json",
        headers={"Stripe-Signature": f"t={stamp},v1={signature}"},
    )
    assert resp.status_code == 400 and resp_code(resp) == "invalid_signature"


def test_a_development_shop_with_a_generated_key_answers_only_this_machine(dev_app, db_session):
    client = dev_app.test_client()
    assert client.get("/healthz").status_code == 200
    remote = client.get("/healthz", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 403 and resp_code(remote) == "secret_key_required"


def resp_code(resp) -> str:
    return resp.get_json()["error"]["code"]


def test_make_run_on_a_public_address_without_a_secret_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SHOP_ENV", "TYPESENSE_API_KEY")}
    # Services "provided" at closed ports: whatever happens, no server is started by this test.
    env.update(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/none",
        REDIS_URL="redis://127.0.0.1:1/0",
        TYPESENSE_URL="http://127.0.0.1:1",
    )
    var_dir = tmp_path / "var"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shop.devstack",
            "run",
            "--var",
            str(var_dir),
            "--host",
            "0.0.0.0",
            "--port",
            str(_pick_port(0)),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "without SECRET_KEY" in done.stderr and "Traceback" not in done.stderr
    assert not (var_dir / "secret_key").exists()


# -- item 2: refresh-token families belong to their user ----------------------------------------------
def _resigned(app, token: str, **changes) -> str:
    """`token` with some claims changed, signed with the app's own key (as a leaked key would allow)."""
    from shop.accounts import tokens

    with app.app_context():
        claims = jwt.decode(token, options={"verify_signature": False})
        return tokens._encode({**claims, **changes})


def test_an_access_token_naming_another_users_login_is_refused(app, client, redis_client, db_session):
    victim, mallory = make_user("vic@example.com"), make_user("mal@example.com")
    pair = login(client, victim.email)
    forged = _resigned(app, pair["access_token"], sub=str(mallory.id), ver=mallory.credentials_version)
    resp = client.get("/api/v1/me", headers=bearer(forged))
    assert resp.status_code == 401 and resp_code(resp) == "invalid_token"
    assert client.get("/api/v1/me", headers=bearer(pair["access_token"])).status_code == 200


def test_a_refresh_token_naming_another_users_login_is_refused(app, client, redis_client, db_session):
    victim, mallory = make_user("vic@example.com"), make_user("mal@example.com")
    pair = login(client, victim.email)
    forged = _resigned(app, pair["refresh_token"], sub=str(mallory.id), ver=mallory.credentials_version)
    resp = post(client, "/api/v1/auth/refresh", {"refresh_token": forged})
    assert resp.status_code == 401 and resp_code(resp) == "invalid_token"
    # The victim's log-in is untouched by the attempt.
    assert post(client, "/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]}).status_code == 200


# -- item 8: log-out ends every copy -----------------------------------------------------------------
def test_a_copied_storefront_session_stops_at_log_out(app, client, redis_client, db_session):
    make_user("sam@example.com")
    log_in(client, "sam@example.com")
    thief = copy_of(client, app)
    assert thief.get("/account").status_code == 200
    assert form_post(client, "/account/logout", {}, page="/account").status_code == 302
    resp = thief.get("/account")
    assert resp.status_code == 302 and "/account/login" in resp.headers["Location"]


def test_a_copied_remember_me_cookie_stops_at_log_out(app, client, redis_client, db_session):
    make_user("rem@example.com")
    form_post(client, "/account/login", {"email": "rem@example.com", "password": PASSWORD, "remember": "y"})
    name = app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
    assert copy_of(client, app, name).get("/account").status_code == 200  # remember-me works on its own
    thief = copy_of(client, app, name)
    form_post(client, "/account/logout", {}, page="/account")
    resp = thief.get("/account")
    assert resp.status_code == 302 and "/account/login" in resp.headers["Location"]


def test_a_copied_back_office_session_stops_at_log_out(app, client, redis_client, db_session):
    make_user("clerk@example.com", role="support")
    assert admin_log_in(client, "clerk@example.com").status_code == 302
    thief = copy_of(client, app)
    assert thief.get("/admin/").status_code == 200
    assert admin_log_out(client).status_code == 302
    assert sent_to_admin_login(thief.get("/admin/"))
    assert sent_to_admin_login(client.get("/admin/"))


def test_deactivating_staff_ends_their_sessions_even_after_reactivation(app, client, redis_client, db_session):
    admin = make_user("root@example.com", role="admin")
    clerk = make_user("clerk@example.com", role="support")
    assert admin_log_in(client, clerk.email).status_code == 302
    assert client.get("/admin/").status_code == 200
    boss = as_user(app, admin)
    form = {"email": clerk.email, "name": "Clerk", "role": "support", "new_password": ""}
    resp = boss.post(f"/admin/staff/edit/?id={clerk.id}", data={"csrf_token": csrf_token(boss), **form})  # unticked
    assert resp.status_code == 302
    assert sent_to_admin_login(client.get("/admin/"))
    resp = boss.post(
        f"/admin/staff/edit/?id={clerk.id}", data={"csrf_token": csrf_token(boss), **form, "is_active_account": "y"}
    )
    assert resp.status_code == 302
    assert sent_to_admin_login(client.get("/admin/"))  # the old cookie stays dead
    assert admin_log_in(client, clerk.email).status_code == 302 and client.get("/admin/").status_code == 200


# -- item 8: staff session limits --------------------------------------------------------------------
def _staff_browser(client):
    make_user("clerk@example.com", role="support")
    assert admin_log_in(client, "clerk@example.com").status_code == 302
    assert client.get("/admin/").status_code == 200
    return client


def test_a_staff_session_ends_at_its_absolute_limit(app, client, redis_client, db_session):
    browser = _staff_browser(client)
    now = int(time.time())
    with browser.session_transaction() as session:  # logged in 12 hours ago, busy ever since
        session["login_at"] = now - app.config.get("STAFF_SESSION_HOURS", 12) * 3600 - 5
        session["seen_at"] = now - 10
    assert sent_to_admin_login(browser.get("/admin/"))


def test_a_staff_session_ends_when_idle_too_long(app, client, redis_client, db_session):
    browser = _staff_browser(client)
    now = int(time.time())
    with browser.session_transaction() as session:
        session["login_at"] = now - 600
        session["seen_at"] = now - 2 * 60  # still within the idle limit: the session carries on
    assert browser.get("/admin/").status_code == 200
    with browser.session_transaction() as session:
        assert session["seen_at"] >= now  # and the request moved the idle clock
        session["seen_at"] = now - app.config.get("STAFF_IDLE_MINUTES", 60) * 60 - 5
    assert sent_to_admin_login(browser.get("/admin/"))
