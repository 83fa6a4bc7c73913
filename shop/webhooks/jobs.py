"""Webhook jobs: the periodic retry of provider events whose applying failed."""

from __future__ import annotations


def retry_failed_webhooks() -> int:
    from shop.webhooks.services import retry_failed

    return retry_failed()
