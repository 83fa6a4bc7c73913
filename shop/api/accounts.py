"""/api/v1/auth and /api/v1/me: registration, tokens, the user and their address book."""

from __future__ import annotations

from flask import g

from shop.accounts import services, tokens
from shop.accounts.models import User
from shop.api import bp
from shop.api.auth import json_body, login_required
from shop.errors import ValidationError
from shop.extensions import db


def _user_json(user: User) -> dict:
    return {"id": user.id, "email": user.email, "name": user.name}


def _string(data: dict, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValidationError({key: "is required"})
    return value


@bp.post("/v1/auth/register")
def register():
    data = json_body()
    user = services.register(data.get("email"), data.get("password"), data.get("name") or "")
    return _user_json(user), 201


@bp.post("/v1/auth/token")
def token():
    data = json_body()
    user = services.authenticate(_string(data, "email"), _string(data, "password"))
    return tokens.issue_pair(user)


@bp.post("/v1/auth/refresh")
def refresh():
    data = json_body()
    return tokens.rotate(_string(data, "refresh_token"), lambda uid: db.session.get(User, uid))


@bp.post("/v1/auth/logout")
def logout():
    data = json_body()
    tokens.logout(_string(data, "refresh_token"))
    return "", 204


@bp.get("/v1/me")
@login_required
def me():
    return {
        **_user_json(g.api_user),
        "roles": [g.api_user.role] if g.api_user.role else [],
        "email_verified": g.api_user.email_verified_at is not None,
    }


@bp.get("/v1/me/addresses")
@login_required
def addresses():
    items = [a.as_dict() for a in g.api_user.addresses]
    return {"items": items, "page": 1, "per_page": len(items), "total": len(items)}


@bp.post("/v1/me/addresses")
@login_required
def add_address():
    address = services.add_address(g.api_user, json_body())
    return address.as_dict(), 201
