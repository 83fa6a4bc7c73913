"""Bearer authentication and permission checks for the API; JSON body parsing."""

from __future__ import annotations

from functools import wraps

from flask import g, request

from shop.accounts.models import User
from shop.accounts.permissions import Permission, has_permission
from shop.accounts.tokens import TokenError, authenticate_access
from shop.audit.services import track
from shop.errors import ApiError
from shop.extensions import db


def _load_user(user_id: int) -> User | None:
    return db.session.get(User, user_id)


def bearer_user() -> User | None:
    """The user of the request's bearer token, None without one, TokenError for a bad one."""
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("Send the token as `Authorization: Bearer <access_token>`.")
    user = authenticate_access(token.strip(), _load_user)
    g.api_user = user  # the logs' user_id (shop.telemetry.logs), on routes where logging in is optional too
    return user


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        user = bearer_user()
        if user is None:
            raise ApiError(
                401,
                "not_authenticated",
                "Log in first: send a bearer access token.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        g.api_user = user
        return view(*args, **kwargs)

    wrapper.__auth__ = "bearer"  # type: ignore[attr-defined]  # read by the OpenAPI document (security, 401)
    return wrapper


def permission_required(permission: Permission):
    """Staff with `permission` only (403 otherwise); their writes are audited."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapper(*args, **kwargs):
            if not has_permission(g.api_user, permission):
                raise ApiError(403, "forbidden", "Your role does not allow this.", {"permission": permission.value})
            track(g.api_user, "api")
            return view(*args, **kwargs)

        wrapper.__permissions__ = (permission,)  # type: ignore[attr-defined]  # the document's 403
        return wrapper

    return decorator


def json_body() -> dict:
    """The request's JSON object; 400 for a body that is not one."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_body", "The body must be a JSON object (Content-Type: application/json).")
    if _has_nul(data):
        raise ApiError(400, "malformed_body", "The body contains a NUL character.")
    return data


def _has_nul(value) -> bool:
    """PostgreSQL text cannot hold NUL: such input is refused at the door, not failed deep inside."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False
