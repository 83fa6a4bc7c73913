"""API tokens: short-lived JWT access tokens and rotating refresh tokens with reuse detection.

Every log-in starts a *family*. The family and each live refresh token are keys in Redis, so every
web process agrees on what is revoked:

    auth:fam:<family>   -> user id      (deleted = the whole log-in is revoked; checked against `sub`)
    auth:rt:<jti>       -> family       (deleted when spent by a refresh or a logout)

A refresh spends its token in one atomic Lua step (GETDEL, check, store), which exactly one
caller can win. Presenting a spent token again is reuse: someone holds a copy, so the whole
family is revoked -- also when the copies arrive at the same moment. Access tokens carry
their family and the user's credentials version, so a revoked log-in or a password change stops
them at once, not only after 15 minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

import jwt
from flask import current_app

from shop.errors import NotAuthenticated
from shop.extensions import redis_ext

ALGORITHM = "HS256"


class TokenError(NotAuthenticated):
    def __init__(self, message: str = "The token is not valid."):
        super().__init__("invalid_token", message, challenge='Bearer error="invalid_token"')


def _key() -> bytes:
    """A 256-bit signing key derived from SECRET_KEY, distinct from the one that signs cookies."""
    secret = (current_app.config.get("JWT_SECRET_KEY") or current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, b"shop.api-tokens.v1", hashlib.sha256).digest()


def _encode(claims: dict) -> str:
    return jwt.encode(claims, _key(), algorithm=ALGORITHM)


def _mint(user, family: str) -> tuple[dict, str]:
    """Signed tokens for `user` in `family`; returns them and the refresh token's id (not yet stored)."""
    cfg = current_app.config
    now = int(time.time())
    refresh_jti = uuid.uuid4().hex
    common = {"sub": str(user.id), "fam": family, "ver": user.credentials_version, "iat": now}
    access = _encode({**common, "typ": "access", "jti": uuid.uuid4().hex, "exp": now + cfg["ACCESS_TOKEN_SECONDS"]})
    refresh = _encode({**common, "typ": "refresh", "jti": refresh_jti, "exp": now + cfg["REFRESH_TOKEN_SECONDS"]})
    return (
        {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": cfg["ACCESS_TOKEN_SECONDS"],
        },
        refresh_jti,
    )


# Spending a refresh token is one atomic step in Redis: check the family belongs to the token's user,
# take the old token, check the family is alive, store the new token. Copies racing each other cannot
# both win, and a loser's revocation cannot be undone by the winner re-creating the family.
_ROTATE = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[2] then return -2 end
local family = redis.call('GETDEL', KEYS[1])
if not family then
  redis.call('DEL', KEYS[2])
  return -1
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], family, 'EX', ARGV[1])
return 1
"""


def issue_pair(user) -> dict:
    """A new log-in: a new family with its first access and refresh tokens."""
    family = uuid.uuid4().hex
    pair, refresh_jti = _mint(user, family)
    ttl = current_app.config["REFRESH_TOKEN_SECONDS"]
    pipe = redis_ext.client.pipeline()
    pipe.set(f"auth:fam:{family}", user.id, ex=ttl)
    pipe.set(f"auth:rt:{refresh_jti}", family, ex=ttl)
    pipe.execute()
    return pair


def decode(token: str, expected_type: str) -> dict:
    """Verified claims of a token of `expected_type`; TokenError for anything else.

    Only HS256 is accepted, so `alg: none` and algorithm swaps fail signature checking.
    """
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise TokenError()
    try:
        claims = jwt.decode(
            token,
            _key(),
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub", "typ", "jti", "fam", "ver"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("The token has expired.") from None
    except jwt.InvalidTokenError:
        raise TokenError() from None
    if claims.get("typ") != expected_type:
        raise TokenError(f"An {expected_type} token is needed here.")
    return claims


def family_alive(family: str, user_id: str) -> bool:
    """The log-in `family` is not revoked and was started by `user_id` (a token naming another's family is not)."""
    owner = redis_ext.client.get(f"auth:fam:{family}")
    return owner is not None and (owner.decode() if isinstance(owner, bytes) else owner) == user_id


def revoke_family(family: str) -> None:
    redis_ext.client.delete(f"auth:fam:{family}")


def rotate(refresh_token: str, load_user) -> dict:
    """Spend a refresh token for a new pair in the same family; reuse revokes the family."""
    claims = decode(refresh_token, "refresh")
    family = claims["fam"]
    user = load_user(int(claims["sub"]))
    if user is None or not user.is_active or user.credentials_version != claims["ver"]:
        raise TokenError("This log-in has been revoked.")
    pair, new_jti = _mint(user, family)
    outcome = redis_ext.client.eval(
        _ROTATE,
        3,
        f"auth:rt:{claims['jti']}",
        f"auth:fam:{family}",
        f"auth:rt:{new_jti}",
        current_app.config["REFRESH_TOKEN_SECONDS"],
        claims["sub"],
    )
    if outcome == -2:  # another user's log-in: refuse without touching it
        raise TokenError()
    if outcome == -1:  # a spent (or revoked) token came back: treat the log-in as stolen
        raise TokenError("This refresh token was already used; the log-in has been revoked.")
    if outcome == 0:
        raise TokenError("This log-in has been revoked.")
    return pair


def logout(refresh_token: str) -> None:
    """End the log-in this refresh token belongs to (its access tokens stop working too)."""
    claims = decode(refresh_token, "refresh")
    redis_ext.client.delete(f"auth:rt:{claims['jti']}")
    revoke_family(claims["fam"])


def authenticate_access(token: str, load_user):
    """The user an access token speaks for, or TokenError."""
    claims = decode(token, "access")
    if not family_alive(claims["fam"], claims["sub"]):
        raise TokenError("This log-in has been revoked.")
    user = load_user(int(claims["sub"]))
    if user is None or not user.is_active or user.credentials_version != claims["ver"]:
        raise TokenError("This log-in has been revoked.")
    return user
