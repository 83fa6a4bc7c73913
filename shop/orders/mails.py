"""Consumer group "order-mails": the shopper's mail for each status move of an order, sent from its order.* event.

The state machine (services.move) publishes order.confirmed, order.shipped, order.delivered and order.refunded in the
transaction that moves the order; this group turns each into the mail of the same name. The mail shows the order as
it stands when the event is applied (lines, totals, tracking, the note staff wrote when shipping) under the status
the event announced. notify() records the mail job in the group's own transaction (an outbox row), and a mail is
sent once per (mail, order number) whatever redelivers the event (shop.notifications).

A partial refund also publishes order.refunded (the order keeps its status): that mail names the refund's amount
and is recorded by payments with the refund itself, one per refund, so this group leaves such events alone. An event
older than MAX_AGE is not mailed at all: after a longer outage of the consumers, or when the group first starts over a
stream holding months of events, the past is not mailed again.
"""

from __future__ import annotations

from shop.consumers import consumer
from shop.extensions import db
from shop.orders import states
from shop.orders.models import Order

MAX_AGE = 3 * 24 * 3600  # seconds

# event type -> the mail of the same name, and the status the order has after that move
MAILED = {
    "order.confirmed": states.CONFIRMED,
    "order.shipped": states.SHIPPED,
    "order.delivered": states.DELIVERED,
    "order.refunded": states.REFUNDED,
}


@consumer("order-mails", types=set(MAILED), max_age=MAX_AGE)
def order_status_mail(envelope: dict) -> None:
    """Mail the shopper that their order was confirmed, shipped, delivered or refunded in full."""
    from shop.notifications import notify
    from shop.orders.services import mail_payload

    data = envelope["data"]
    if data.get("status") != MAILED[envelope["type"]]:  # a partial refund: payments mails it with its amount
        return
    order = db.session.get(Order, data["order_id"])
    if order is None or not order.email:
        return
    # Shown under the status this mail announces, though the order may have moved on since.
    notify(envelope["type"], order.email, mail_payload(order, status=data["status"]))
