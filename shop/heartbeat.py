"""Heartbeats: every long-running process (workers, the cron scheduler, the outbox relay) says it is alive.

    beat(redis, "relay")                                   # SET shop:heartbeat:relay <unix time> EX 30
    beat(redis, "worker:mail", instance="host:1234")       # ...and the instance in a per-role sorted set
    seen(redis, "relay")  ->  {"alive": 1, "last_seen_s": 3.2}

A role's key holds the time of its newest beat and expires TTL seconds after it, so a SIGKILLed process
disappears on its own, with nothing to clean up. Roles that run as several processes (one worker per
queue or more) also name their instance, so `/readyz?deep=1` can say how many are alive. A process beats
at least every TTL/2 seconds; `beat` never raises on a Redis outage, so a loop that beats keeps running
(the missing key is what reports the outage).
"""

from __future__ import annotations

import os
import socket
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

PREFIX = "shop:heartbeat:"
TTL = 30  # seconds a beat counts; processes beat at least every TTL/2
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
BACKOFF = (1, 30)  # first and longest wait between reconnection attempts, seconds


def key(role: str) -> str:
    """The role's key, e.g. shop:heartbeat:relay."""
    return PREFIX + role


def this_process() -> str:
    """An instance name for the calling process: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def beat(connection, role: str, *, instance: str | None = None, ttl: int = TTL) -> bool:
    """Record that `role` (and `instance` of it) is alive now; False when Redis could not take it.

    `connection` may be a pipeline: the commands are then only queued (and errors are the caller's).
    """
    now = time.time()
    pipe = connection if hasattr(connection, "command_stack") else connection.pipeline(transaction=False)
    pipe.set(key(role), repr(now), ex=ttl)
    if instance:
        instances = key(role) + ":instances"
        pipe.zadd(instances, {instance: now})
        pipe.zremrangebyscore(instances, "-inf", now - ttl)
        pipe.expire(instances, ttl)
    if pipe is connection:
        return True
    try:
        pipe.execute()
    except REDIS_DOWN:
        return False
    return True


def seen(connection, role: str, *, ttl: int = TTL) -> dict:
    """How many instances of `role` beat within `ttl` seconds, and how long ago the newest did.

    {"alive": 0, "last_seen_s": None} when none did. Redis errors propagate (the caller reports them).
    """
    now = time.time()
    pipe = connection.pipeline(transaction=False)
    pipe.get(key(role))
    pipe.zcount(key(role) + ":instances", now - ttl, "+inf")
    newest, instances = pipe.execute()
    if newest is None:
        return {"alive": 0, "last_seen_s": None}
    try:
        age = round(max(0.0, now - float(newest)), 1)
    except ValueError:  # written by something other than beat(): alive, age unknown
        age = None
    return {"alive": max(instances, 1), "last_seen_s": age}


def wait_for_redis(connection, log, stopping=lambda: False) -> bool:
    """Return True once Redis answers a PING (False if `stopping()` turned true first), retrying with
    exponential backoff; logs one line when Redis is away and one when it is back. What workers and the
    scheduler do before (re)starting RQ's loop."""
    delay = BACKOFF[0]
    logged = False
    while not stopping():
        try:
            connection.ping()
        except REDIS_DOWN as exc:
            if not logged:
                log.warning("Redis is unreachable (%s); retrying with backoff up to %ss", exc, BACKOFF[1])
                logged = True
            resume = time.monotonic() + delay
            while time.monotonic() < resume and not stopping():  # short naps: a stop request is heard
                time.sleep(0.5)
            delay = min(delay * 2, BACKOFF[1])
            continue
        if logged:
            log.warning("Redis answers again; resuming")
        return True
    return False
