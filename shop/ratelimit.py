"""Fixed-window counters in Redis, shared by every web process (log-in throttling, code guessing, and
the request rates of config.py's RATE_* settings: sign-ups, resets, carts, checkouts)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app, has_request_context, request
from redis.exceptions import RedisError

from shop.errors import TooMany
from shop.extensions import redis_ext

log = logging.getLogger(__name__)


@dataclass
class Window:
    count: int
    retry_after: int  # seconds until the window resets


def _key(scope: str, subject: str) -> str:
    return f"rl:{scope}:{subject}"


def peek(scope: str, subject: str) -> Window:
    """The current count in this window without counting anything."""
    pipe = redis_ext.client.pipeline()
    pipe.get(_key(scope, subject))
    pipe.ttl(_key(scope, subject))
    count, ttl = pipe.execute()
    return Window(int(count or 0), max(int(ttl), 1) if count else 0)


def hit(scope: str, subject: str, window_seconds: int) -> Window:
    """Count one event; the window starts with the first event and lasts `window_seconds`."""
    key = _key(scope, subject)
    pipe = redis_ext.client.pipeline()  # MULTI/EXEC: the window and the count move together
    pipe.set(key, 0, ex=window_seconds, nx=True)  # (EXPIRE ... NX needs Redis 7; this works on 6.2)
    pipe.incr(key)
    pipe.ttl(key)
    _, count, ttl = pipe.execute()
    return Window(int(count), max(int(ttl), 1))


def clear(scope: str, subject: str) -> None:
    redis_ext.client.delete(_key(scope, subject))


def take_back(scope: str, subject: str) -> None:
    """Uncount one event (an attempt that turned out fine)."""
    key = _key(scope, subject)
    if redis_ext.client.decr(key) < 0:
        redis_ext.client.delete(key)


# -- request rates (config.py RATE_*: (count, seconds) or None for off) ----------------------------
class RateLimited(TooMany):
    """429 rate_limited with Retry-After and the RateLimit-* headers (API.md): the edge's table says so."""

    def __init__(self, limit: int, retry_after: int, message: str):
        super().__init__("rate_limited", message, {"retry_after": retry_after}, retry_after=retry_after, limit=limit)


def client_ip() -> str:
    """The request's client address (after PROXY_COUNT's ProxyFix); "local" outside a request."""
    return (request.remote_addr or "unknown") if has_request_context() else "local"


def enforce(
    setting: str, subject: str | None = None, message: str = "Too many requests of this kind; try again later."
) -> None:
    """Count one event against the rate in config[`setting`] for `subject` (default: the client IP);
    RateLimited past it. Nothing is counted when the setting is off."""
    rule = current_app.config.get(setting)
    if not rule:
        return
    limit, seconds = rule
    try:
        window = hit(setting.lower(), subject if subject is not None else client_ip(), seconds)
    except RedisError:  # fail open: a Redis outage must not stop shopping (the stock-hold limits are in PostgreSQL)
        log.warning("rate limit %s not counted: Redis is unavailable", setting)
        return
    if window.count > limit:
        raise RateLimited(limit, window.retry_after, message)


def wait_text(retry_after: int) -> str:
    """ "about 3 minutes" / "a few seconds": for the storefront's messages."""
    if retry_after < 60:
        return "a few seconds" if retry_after <= 10 else f"{retry_after} seconds"
    minutes = max(1, round(retry_after / 60))
    return f"about {minutes} minute{'s' if minutes != 1 else ''}"
