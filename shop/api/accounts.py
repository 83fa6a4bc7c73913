"""/api/v1/auth and /api/v1/me: registration, tokens, the user and their address book."""

from __future__ import annotations

from flask import g

from shop.accounts import services, tokens
from shop.accounts.models import User
from shop.api import bp, schemas
from shop.api.auth import login_required
from shop.api.contract import operation, parse_body
from shop.extensions import db


def _user_json(user: User) -> dict:
    return {"id": user.id, "email": user.email, "name": user.name}


@bp.post("/v1/auth/register")
@operation(
    "Create a shopper account (a verification link is mailed)",
    tags=["accounts"],
    body=schemas.Registration,
    responses={
        201: schemas.User,
        409: "email_taken",
        422: "validation_failed: a weak password or a bad e-mail address",
        429: "rate_limited: too many sign-ups from this IP (Retry-After)",
    },
)
def register():
    body = parse_body(schemas.Registration)
    user = services.register(body.email, body.password, body.name or "")
    return _user_json(user), 201


@bp.post("/v1/auth/token")
@operation(
    "Log in: an access token (15 min) and a refresh token (30 days)",
    tags=["accounts"],
    body=schemas.Credentials,
    responses={
        200: schemas.TokenPair,
        401: "invalid_credentials",
        422: "validation_failed: email or password missing or not text",
        429: "rate_limited after repeated failures (Retry-After, RateLimit-* headers)",
    },
)
def token():
    body = parse_body(schemas.Credentials)
    return tokens.issue_pair(services.authenticate(body.email, body.password))


@bp.post("/v1/auth/refresh")
@operation(
    "Spend a refresh token for a new pair; a spent token presented again revokes the log-in",
    tags=["accounts"],
    body=schemas.RefreshToken,
    responses={
        200: schemas.TokenPair,
        401: "invalid_token: invalid, spent or revoked",
        422: "validation_failed: refresh_token missing or not text",
    },
)
def refresh():
    body = parse_body(schemas.RefreshToken)
    return tokens.rotate(body.refresh_token, lambda uid: db.session.get(User, uid))


@bp.post("/v1/auth/logout")
@operation(
    "End the log-in this refresh token belongs to",
    tags=["accounts"],
    body=schemas.RefreshToken,
    responses={
        204: None,
        401: "invalid_token",
        422: "validation_failed: refresh_token missing or not text",
    },
)
def logout():
    tokens.logout(parse_body(schemas.RefreshToken).refresh_token)
    return "", 204


@bp.get("/v1/me")
@operation("The authenticated user", tags=["accounts"], responses={200: schemas.Me})
@login_required
def me():
    return {
        **_user_json(g.api_user),
        "roles": [g.api_user.role] if g.api_user.role else [],
        "email_verified": g.api_user.email_verified_at is not None,
    }


@bp.get("/v1/me/addresses")
@operation("The user's address book", tags=["accounts"], responses={200: schemas.AddressPage})
@login_required
def addresses():
    items = [a.as_dict() for a in g.api_user.addresses]
    return {"items": items, "page": 1, "per_page": len(items), "total": len(items)}


@bp.post("/v1/me/addresses")
@operation(
    "Add an address",
    tags=["accounts"],
    body=schemas.AddressIn,
    responses={201: schemas.Address, 422: "validation_failed: field errors (details.fields)"},
)
@login_required
def add_address():
    address = services.add_address(g.api_user, parse_body(schemas.AddressIn).model_dump(exclude_unset=True))
    return address.as_dict(), 201
