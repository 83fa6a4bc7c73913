"""Shopper accounts in the storefront: forms with CSRF, sessions, verification, resets, addresses."""

import re
import time

import pytest
from itsdangerous import TimestampSigner
from rq import Queue

from tests.conftest import local_path
from tests.factories import make_user

PASSWORD = "correct horse battery"


@pytest.fixture
def web(client, redis_client):
    return client


def token_of(html: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def form_post(client, path, data, *, page=None):
    """Post a form the way a browser does: with the CSRF token of the page it came from."""
    html = client.get(page or path).get_data(as_text=True)
    return client.post(path, data={"csrf_token": token_of(html), **data})


def queued_mail(redis_client, event):
    """The (to, payload) of every `event` mail waiting on the RQ mail queue."""
    jobs = Queue("mail", connection=redis_client).jobs
    return [(job.args[1], job.args[2]) for job in jobs if job.args[0] == event]


def log_in(client, email, password=PASSWORD):
    return form_post(client, "/account/login", {"email": email, "password": password})


def test_sign_up_logs_in_and_queues_a_verification_mail(web, redis_client, db_session):
    resp = form_post(
        web, "/account/signup", {"name": "Kim", "email": "kim@example.com", "password": PASSWORD, "confirm": PASSWORD}
    )
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/account")
    page = web.get("/account")
    assert page.status_code == 200 and "kim@example.com" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "private, no-store"
    [(to, payload)] = queued_mail(redis_client, "account.verify_email")
    assert to == "kim@example.com" and "/account/verify/" in payload["link"]


def test_sign_up_errors_are_shown_next_to_the_fields(web, db_session):
    make_user("taken@example.com")
    resp = form_post(web, "/account/signup", {"email": "taken@example.com", "password": "short", "confirm": "other"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "Use at least 10 characters." in html and 'aria-invalid="true"' in html
    resp = form_post(web, "/account/signup", {"email": "TAKEN@example.com", "password": PASSWORD, "confirm": PASSWORD})
    assert resp.status_code == 422 and "An account with this address exists" in resp.get_data(as_text=True)


def test_forms_without_a_csrf_token_are_refused(web, db_session):
    make_user("lee@example.com")
    resp = web.post("/account/login", data={"email": "lee@example.com", "password": PASSWORD})
    assert resp.status_code == 400 and "This form has expired" in resp.get_data(as_text=True)
    assert web.get("/account").status_code == 302  # still logged out
    log_in(web, "lee@example.com")
    assert web.post("/account/logout").status_code == 400  # a forged log-out does nothing
    assert web.get("/account").status_code == 200


def test_log_in_and_out(web, db_session):
    make_user("mo@example.com")
    assert log_in(web, "mo@example.com", "wrong password!").status_code == 401
    resp = log_in(web, "mo@example.com")
    assert resp.status_code == 302
    assert web.get("/account").status_code == 200
    assert form_post(web, "/account/logout", {}, page="/account").status_code == 302
    assert web.get("/account").status_code == 302


def test_log_in_never_redirects_off_site(web, db_session):
    make_user("ned@example.com")
    html = web.get("/account/login").get_data(as_text=True)
    resp = web.post(
        "/account/login?next=//evil.example/steal",
        data={"csrf_token": token_of(html), "email": "ned@example.com", "password": PASSWORD},
    )
    assert resp.headers["Location"] == "/account"


def test_log_in_page_is_throttled(web, app, db_session):
    make_user("ola@example.com")
    for _ in range(app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]):
        log_in(web, "ola@example.com", "wrong password!")
    resp = log_in(web, "ola@example.com")
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0
    assert "Too many failed attempts" in resp.get_data(as_text=True)


def test_password_change_ends_every_other_session(app, web, db_session):
    make_user("pat@example.com")
    other_device = app.test_client()
    log_in(web, "pat@example.com")
    log_in(other_device, "pat@example.com")
    assert other_device.get("/account").status_code == 200
    html = web.get("/account").get_data(as_text=True)
    resp = web.post(
        "/account/password",
        data={
            "csrf_token": token_of(html),
            "pw-current_password": PASSWORD,
            "pw-password": "a whole new password",
            "pw-confirm": "a whole new password",
        },
    )
    assert resp.status_code == 302
    assert web.get("/account").status_code == 200  # this session carries on
    assert other_device.get("/account").status_code == 302  # the other one is logged out


def test_email_verification_link_works_once(web, redis_client, db_session):
    from shop.accounts.models import User

    form_post(web, "/account/signup", {"email": "quin@example.com", "password": PASSWORD, "confirm": PASSWORD})
    [(_, payload)] = queued_mail(redis_client, "account.verify_email")
    path = local_path(payload["link"])
    assert web.get(path).status_code == 302
    assert db_session.query(User).filter_by(email="quin@example.com").one().email_verified_at is not None
    again = web.get(path)
    assert again.status_code == 400 and "already used" in again.get_data(as_text=True)
    assert web.get(path[:-3] + "xyz").status_code == 400


def _reset_link(web, redis_client, email, *, age_seconds=0, monkeypatch=None):
    if age_seconds:
        monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - age_seconds)
    form_post(web, "/account/reset", {"email": email})
    if age_seconds:
        monkeypatch.undo()
    [(to, payload)] = queued_mail(redis_client, "account.password_reset")[-1:]
    assert to == email
    return local_path(payload["link"])


def test_password_reset_works_once(web, redis_client, db_session):
    make_user("rae@example.com")
    path = _reset_link(web, redis_client, "rae@example.com")
    assert web.get(path).status_code == 200
    html = web.get(path).get_data(as_text=True)
    resp = web.post(
        path, data={"csrf_token": token_of(html), "password": "my new password!", "confirm": "my new password!"}
    )
    assert resp.status_code == 302
    assert log_in(web, "rae@example.com", "my new password!").status_code == 302
    used = web.get(path)
    assert used.status_code == 400 and "already used" in used.get_data(as_text=True)


def test_password_reset_link_expires(web, app, redis_client, db_session, monkeypatch):
    make_user("sam@example.com")
    path = _reset_link(
        web, redis_client, "sam@example.com", age_seconds=app.config["RESET_TOKEN_MAX_AGE"] + 5, monkeypatch=monkeypatch
    )
    resp = web.get(path)
    assert resp.status_code == 400 and "expired" in resp.get_data(as_text=True)


def test_reset_request_does_not_reveal_accounts(web, redis_client, db_session):
    known = form_post(web, "/account/reset", {"email": "nobody@example.com"})
    assert known.status_code == 200 and "If an account exists" in known.get_data(as_text=True)
    assert queued_mail(redis_client, "account.password_reset") == []


def test_address_book_pages(web, db_session):
    make_user("tia@example.com")
    log_in(web, "tia@example.com")
    html = web.get("/account").get_data(as_text=True)
    bad = web.post("/account/addresses", data={"csrf_token": token_of(html), "addr-name": "Tia", "addr-country": "X"})
    assert bad.status_code == 422 and 'aria-invalid="true"' in bad.get_data(as_text=True)
    ok = web.post(
        "/account/addresses",
        data={
            "csrf_token": token_of(html),
            "addr-name": "Tia Ray",
            "addr-line1": "9 Elm Road",
            "addr-city": "Leeds",
            "addr-postal_code": "LS1 1AA",
            "addr-country": "gb",
        },
    )
    assert ok.status_code == 302
    page = web.get("/account").get_data(as_text=True)
    assert "9 Elm Road" in page and "GB" in page
    address_id = re.search(r"/account/addresses/(\d+)/delete", page).group(1)
    web.post(f"/account/addresses/{address_id}/delete", data={"csrf_token": token_of(page)})
    assert "9 Elm Road" not in web.get("/account").get_data(as_text=True)


def test_someone_elses_address_cannot_be_deleted(app, web, db_session):
    from shop.accounts.models import Address

    owner = make_user("uma@example.com")
    db_session.add(Address(user_id=owner.id, name="Uma", line1="1 A St", city="X", postal_code="1", country="US"))
    db_session.flush()
    address = owner.addresses[0]
    make_user("vic@example.com")
    log_in(web, "vic@example.com")
    html = web.get("/account").get_data(as_text=True)
    web.post(f"/account/addresses/{address.id}/delete", data={"csrf_token": token_of(html)})
    assert db_session.get(Address, address.id) is not None


def test_catalogue_pages_stay_public_and_showing_a_message_makes_them_private(web, db_session):
    make_user("wyn@example.com")
    assert web.get("/").headers["Cache-Control"].startswith("public")
    log_in(web, "wyn@example.com")
    form_post(web, "/account/logout", {}, page="/account")  # flashes "You are logged out."
    home = web.get("/")
    assert "You are logged out." in home.get_data(as_text=True)
    assert home.headers["Cache-Control"] == "private, no-store"
    assert web.get("/").headers["Cache-Control"].startswith("public")
