"""Partner webhook jobs: one delivery now (queued after the commit that made it or asked for it), and the
every-minute scan of due retries (shop.schedule)."""

from __future__ import annotations


def attempt_delivery(delivery_id: int) -> str | None:
    """Attempt one delivery if it is still due; a delivery another worker holds is left to it."""
    from shop.partners.attempts import attempt

    return attempt(delivery_id)


def deliver_due() -> int:
    """Every minute: attempt every due delivery, and disable endpoints failing for three days."""
    from shop.partners.attempts import deliver_due as scan

    return scan()
