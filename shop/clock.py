"""The shop's one clock: the time now, aware, in UTC. Code that compares times asks clock.now() (never
datetime.now() or utcnow()), so every rule reads the same clock and a test moves time for all of them in one place
(monkeypatch shop.clock.now). The database's own now() stays the truth for rows it stamps."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
