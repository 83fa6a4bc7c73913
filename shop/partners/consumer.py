"""Consumer group "webhooks": every domain event becomes a delivery for each enabled endpoint subscribed to its
type. The deliveries are written in the transaction that claims the event (shop.consumers.handle), so a
redelivered event makes none twice; the HTTP requests go once that transaction committed (send_due)."""

from __future__ import annotations

from shop.consumers import consumer
from shop.events import TYPES
from shop.partners import services


def send_due() -> None:
    """After a batch committed: send what is due now (the new deliveries), in parallel, outside any transaction.
    One scan per batch instead of a job per delivery; a consumer that dies before it leaves the deliveries to the
    every-minute scan (shop.schedule)."""
    from shop.partners.attempts import deliver_due

    deliver_due()


@consumer(
    "webhooks", types=set(TYPES), description="partner webhooks: a delivery per subscribed endpoint", then=send_due
)
def make_deliveries(envelope: dict) -> None:
    services.record_deliveries(envelope)
