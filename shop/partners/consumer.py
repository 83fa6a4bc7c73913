"""Consumer group "webhooks": every domain event becomes a delivery for each enabled endpoint subscribed to its
type. The deliveries are written in the transaction that claims the event (shop.consumers.handle), so a
redelivered event makes none twice; the HTTP requests are jobs after that commit."""
from __future__ import annotations

from shop.consumers import consumer
from shop.events import TYPES
from shop.partners import services


@consumer("webhooks", types=set(TYPES), description="partner webhooks: a delivery per subscribed endpoint")
def make_deliveries(envelope: dict) -> None:
    services.record_deliveries(envelope)
