"""Fixed-window counters in Redis, shared by every web process (log-in throttling, code guessing)."""
from __future__ import annotations

from dataclasses import dataclass

from shop.extensions import redis_ext


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
