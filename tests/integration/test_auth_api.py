"""API authentication as API.md says: registration, tokens, rotation, reuse detection, revocation,
throttling, and every way a token can be tampered with."""

import base64
import json
import time

import jwt
import pytest

from tests.factories import make_user

PASSWORD = "correct horse battery"


@pytest.fixture
def api(client, redis_client):
    return client


def post(client, path, body, **headers):
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def login(client, email, password=PASSWORD):
    resp = post(client, "/api/v1/auth/token", {"email": email, "password": password})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def error_code(resp):
    return resp.get_json()["error"]["code"]


# -- registration -------------------------------------------------------------------------------
def test_register_creates_an_account_and_mails_a_verification_link(api, db_session):
    from shop.accounts.models import User

    resp = post(api, "/api/v1/auth/register", {"email": " Ann@Example.COM ", "password": PASSWORD, "name": "Ann"})
    assert resp.status_code == 201
    body = resp.get_json()
    assert body == {"id": body["id"], "email": "ann@example.com", "name": "Ann"}
    user = db_session.get(User, body["id"])
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert user.email_verified_at is None


@pytest.mark.parametrize(
    "body,field",
    [
        ({"email": "ann@example.com", "password": "too short"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "", "password": PASSWORD}, "email"),
        ({"email": 42, "password": PASSWORD}, "email"),
        ({"email": "ann@example.com", "password": None}, "password"),
        ({"email": "ann@example.com", "password": PASSWORD, "name": ["x"]}, "name"),
    ],
)
def test_register_refuses_bad_fields_with_422_and_writes_nothing(api, db_session, body, field):
    from sqlalchemy import func, select

    from shop.accounts.models import User

    resp = post(api, "/api/v1/auth/register", body)
    assert resp.status_code == 422
    assert field in resp.get_json()["error"]["details"]["fields"]
    assert db_session.scalar(select(func.count()).select_from(User)) == 0


def test_register_with_a_taken_email_is_409_whatever_the_case(api, db_session):
    make_user("ann@example.com")
    resp = post(api, "/api/v1/auth/register", {"email": "ANN@example.com", "password": PASSWORD})
    assert resp.status_code == 409 and error_code(resp) == "email_taken"


@pytest.mark.parametrize(
    "raw,ctype",
    [
        ("not json", "application/json"),
        ("[1, 2]", "application/json"),
        ("email=a", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_bodies_are_400(api, raw, ctype):
    resp = api.post("/api/v1/auth/register", data=raw, content_type=ctype)
    assert resp.status_code == 400 and error_code(resp) == "malformed_body"


# -- tokens -------------------------------------------------------------------------------------
def test_token_pair_and_me(api, db_session):
    user = make_user("bo@example.com")
    pair = login(api, "BO@example.com")
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    me = api.get("/api/v1/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    assert me.get_json()["id"] == user.id and me.get_json()["roles"] == []
    access = jwt.decode(pair["access_token"], options={"verify_signature": False})
    refresh = jwt.decode(pair["refresh_token"], options={"verify_signature": False})
    assert access["exp"] - access["iat"] == 15 * 60
    assert refresh["exp"] - refresh["iat"] == 30 * 24 * 3600


def test_wrong_password_and_unknown_account_are_the_same_401(api, db_session):
    make_user("bo@example.com")
    wrong = post(api, "/api/v1/auth/token", {"email": "bo@example.com", "password": "wrong password!"})
    unknown = post(api, "/api/v1/auth/token", {"email": "nobody@example.com", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json()


def test_me_without_a_token_is_401(api):
    resp = api.get("/api/v1/me")
    assert resp.status_code == 401 and error_code(resp) == "not_authenticated"


def test_refresh_rotates_and_a_spent_token_revokes_the_whole_login(api, db_session):
    make_user("cy@example.com")
    first = login(api, "cy@example.com")
    second = post(api, "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second = second.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert api.get("/api/v1/me", headers=bearer(second["access_token"])).status_code == 200
    # The first refresh token comes back: someone has a copy. Everything of this log-in dies.
    reuse = post(api, "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    assert post(api, "/api/v1/auth/refresh", {"refresh_token": second["refresh_token"]}).status_code == 401
    assert api.get("/api/v1/me", headers=bearer(second["access_token"])).status_code == 401
    # Another log-in of the same person is untouched.
    other = login(api, "cy@example.com")
    assert api.get("/api/v1/me", headers=bearer(other["access_token"])).status_code == 200


def test_logout_ends_that_login(api, db_session):
    make_user("di@example.com")
    pair = login(api, "di@example.com")
    assert post(api, "/api/v1/auth/logout", {"refresh_token": pair["refresh_token"]}).status_code == 204
    assert post(api, "/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]}).status_code == 401
    assert api.get("/api/v1/me", headers=bearer(pair["access_token"])).status_code == 401


def test_password_change_revokes_every_token(api, db_session):
    from shop.accounts.services import change_password

    user = make_user("ed@example.com")
    a, b = login(api, "ed@example.com"), login(api, "ed@example.com")
    change_password(user, PASSWORD, "a brand new passphrase")
    for pair in (a, b):
        assert api.get("/api/v1/me", headers=bearer(pair["access_token"])).status_code == 401
        assert post(api, "/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]}).status_code == 401
    assert login(api, "ed@example.com", "a brand new passphrase")["access_token"]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "case",
    [
        "bad_signature",
        "alg_none",
        "other_key",
        "refresh_as_access",
        "expired",
        "garbage",
        "missing_claims",
        "wrong_scheme",
        "hs512_same_key",
    ],
)
def test_tampered_tokens_get_401(api, app, db_session, case):
    user = make_user("fi@example.com")
    pair = login(api, "fi@example.com")
    access = pair["access_token"]
    claims = jwt.decode(access, options={"verify_signature": False})
    with app.app_context():
        from shop.accounts.tokens import _key

        key = _key()
    header = {"Authorization": f"Bearer {access}"}
    if case == "bad_signature":
        head, body, sig = access.split(".")
        header = bearer(f"{head}.{body}.{sig[:-4]}AAAA")
    elif case == "alg_none":
        header = bearer(f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.")
    elif case == "other_key":
        header = bearer(jwt.encode(claims, "a different secret that is long enough!!", algorithm="HS256"))
    elif case == "refresh_as_access":
        header = bearer(pair["refresh_token"])
    elif case == "expired":
        header = bearer(
            jwt.encode({**claims, "iat": int(time.time()) - 3600, "exp": int(time.time()) - 60}, key, algorithm="HS256")
        )
    elif case == "garbage":
        header = bearer("definitely.not.a-token")
    elif case == "missing_claims":
        header = bearer(
            jwt.encode({"sub": str(user.id), "typ": "access", "exp": int(time.time()) + 60}, key, algorithm="HS256")
        )
    elif case == "wrong_scheme":
        header = {"Authorization": f"Token {access}"}
    elif case == "hs512_same_key":
        header = bearer(jwt.encode(claims, key * 2, algorithm="HS512"))
    resp = api.get("/api/v1/me", headers=header)
    assert resp.status_code == 401, resp.get_json()
    assert error_code(resp) == "invalid_token"
    # And the untouched token still works: the refusal was about the tampering.
    assert api.get("/api/v1/me", headers=bearer(access)).status_code == 200


def test_an_access_token_cannot_refresh(api, db_session):
    make_user("gu@example.com")
    pair = login(api, "gu@example.com")
    assert post(api, "/api/v1/auth/refresh", {"refresh_token": pair["access_token"]}).status_code == 401


# -- throttling ---------------------------------------------------------------------------------
def test_login_is_throttled_per_account(api, app, db_session):
    make_user("ha@example.com")
    limit = app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]
    for _ in range(limit):
        assert (
            post(api, "/api/v1/auth/token", {"email": "ha@example.com", "password": "wrong-guess-1"}).status_code == 401
        )
    blocked = post(api, "/api/v1/auth/token", {"email": "ha@example.com", "password": PASSWORD})
    assert blocked.status_code == 429 and error_code(blocked) == "rate_limited"
    assert 0 < int(blocked.headers["Retry-After"]) <= app.config["LOGIN_THROTTLE_WINDOW_SECONDS"]
    # like every rate-limited answer (API.md), with the RateLimit-* headers
    assert blocked.headers["RateLimit-Limit"] == str(limit) and blocked.headers["RateLimit-Remaining"] == "0"
    assert blocked.headers["RateLimit-Reset"] == blocked.headers["Retry-After"]
    # Other accounts from elsewhere are not locked out by it.
    make_user("other@example.com")
    assert post(
        api,
        "/api/v1/auth/token",
        {"email": "other@example.com", "password": PASSWORD},
    ).status_code in (200, 429)


def test_login_is_throttled_per_ip(api, app, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "LOGIN_MAX_FAILURES_PER_IP", 3)
    make_user("iv@example.com")
    for i in range(3):
        post(api, "/api/v1/auth/token", {"email": f"guess{i}@example.com", "password": "wrong-guess-1"})
    blocked = post(api, "/api/v1/auth/token", {"email": "iv@example.com", "password": PASSWORD})
    assert blocked.status_code == 429
    from_elsewhere = api.post(
        "/api/v1/auth/token",
        data=json.dumps({"email": "iv@example.com", "password": PASSWORD}),
        content_type="application/json",
        environ_base={"REMOTE_ADDR": "10.9.8.7"},
    )
    assert from_elsewhere.status_code == 200


# -- address book -------------------------------------------------------------------------------
def test_address_book(api, db_session):
    make_user("jo@example.com")
    pair = login(api, "jo@example.com")
    h = bearer(pair["access_token"])
    created = post(
        api,
        "/api/v1/me/addresses",
        {"name": "Jo", "line1": "1 Main St", "city": "Town", "postal_code": "12345", "country": "gb", "phone": "+44 1"},
        **h,
    )
    assert created.status_code == 201 and created.get_json()["country"] == "GB"
    bad = post(api, "/api/v1/me/addresses", {"name": "Jo", "line1": "", "country": "Britain"}, **h)
    assert bad.status_code == 422
    assert {"line1", "city", "postal_code", "country"} <= set(bad.get_json()["error"]["details"]["fields"])
    listing = api.get("/api/v1/me/addresses", headers=h).get_json()
    assert listing["total"] == 1 and listing["items"][0]["line1"] == "1 Main St"
    assert api.get("/api/v1/me/addresses").status_code == 401
