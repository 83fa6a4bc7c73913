"""Payment rules: starting a payment, applying provider events exactly once, refunds.

Lock order, everywhere: the order row, then the payment row, then variants by id. Provider calls
happen between transactions, never inside one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from shop import clock, events
from shop.afterwards import after_commit
from shop.errors import Conflict, Unavailable, ValidationError
from shop.extensions import db
from shop.inventory import services as inventory
from shop.money import format_money
from shop.notifications import notify
from shop.orders import services as orders
from shop.orders import states
from shop.orders.models import Order, OrderEvent, OrderLine
from shop.payments.gateways import CHECKOUT_SESSION_SECONDS, CheckoutRequest, PaymentRef, RefundRef, Session, gateway
from shop.payments.models import Dispute, Payment, PaymentStatus, Refund, RefundLine, RefundStatus
from shop.telemetry import metrics, tracing

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Row, Select

log = logging.getLogger(__name__)


class PaymentErrorCode(StrEnum):
    UNAVAILABLE = "payment_unavailable"
    NOT_PAYABLE = "not_payable"
    HOLD_EXPIRED = "hold_expired"
    PROCESSING = "payment_processing"
    DISPUTED = "payment_disputed"
    NOTHING_TO_REFUND = "nothing_to_refund"
    REFUND_PENDING = "refund_pending"
    REFUND_REFUSED = "refund_refused"


class PaymentUnavailable(Unavailable):
    def __init__(
        self, message: str = "The payment provider cannot be reached right now. Your cart is kept; please try again."
    ) -> None:
        super().__init__(PaymentErrorCode.UNAVAILABLE, message, retry_after=30)


class PaymentDisputed(Conflict):
    def __init__(self) -> None:
        super().__init__(
            PaymentErrorCode.DISPUTED,
            "This payment is disputed: Stripe does not allow refunds until the dispute closes.",
        )


class RefundRefused(Conflict):
    def __init__(self, message: str) -> None:
        super().__init__(PaymentErrorCode.REFUND_REFUSED, message)


class PaymentAnswer(TypedDict):
    """What the client needs to pay an attempt: `client_secret` for Stripe.js (a PaymentIntent) or `redirect_url`
    (Stripe's hosted page, the test gateway's page); neither when the provider was not asked (nothing to pay on)."""

    id: int
    provider: str
    client_secret: NotRequired[str | None]
    redirect_url: NotRequired[str | None]


Prepared = tuple[PaymentRef, CheckoutRequest | None]


def prepare(payment: Payment) -> Prepared:
    """What start() sends the provider, read from the (flushed) payment in the transaction that made it: plain values,
    so reading the row later does not reopen a transaction. May fix a hosted page's expiry on the payment."""
    hosted = _checkout_request(payment) if payment.flow == "checkout" else None
    return PaymentRef.of(payment), hosted


def start(payment_id: int, cancel_on_failure: bool = True, prepared: Prepared | None = None) -> PaymentAnswer:
    """Open the payment with the provider (outside any transaction) and record its id. `prepared`: prepare(payment),
    when the caller made the payment in the transaction it has just committed (saves reading it again).

    If the provider fails, the order is cancelled (its stock released) and PaymentUnavailable raised;
    a second attempt (pay_again) keeps the order and its hold instead (`cancel_on_failure=False`)."""
    gw = gateway()
    ref, hosted = prepared if prepared is not None else prepare(db.session.get_one(Payment, payment_id))
    db.session.commit()  # nothing of ours stays open while we wait for the provider
    try:
        started = gw.start(ref, hosted)
    except Exception as exc:  # noqa: BLE001 - any provider failure has the same remedy for the order
        level = logging.ERROR if _is_our_mistake(exc) else logging.WARNING
        log.log(level, "starting payment %s failed: %r", payment_id, exc)
        order = orders.lock(ref.order_id)
        locked = lock_payment(payment_id)
        # not started meanwhile by another copy (checkout retry, stuck sweep)
        if locked.status == PaymentStatus.CREATING:
            locked.status, locked.failure_reason = PaymentStatus.FAILED, f"could not start: {type(exc).__name__}"[:255]
            _publish_payment("payment.failed", locked)
            if order.status == states.PENDING and cancel_on_failure:
                orders.move(order, states.CANCELLED, "system", "The payment could not be started")
        db.session.commit()
        raise PaymentUnavailable() from None
    order = orders.lock(ref.order_id)
    payment = lock_payment(payment_id)
    if payment.status == PaymentStatus.CREATING:  # another copy may have started it first: keep the id it recorded
        payment.provider_id, payment.status = started.provider_id, PaymentStatus.REQUIRES_PAYMENT
        payment.checkout_session_id = started.checkout_session_id
    # A page made while the order was cancelled (its hold ended meanwhile): nobody may pay on it. None when there is no
    # page, or it is the one this pending order's attempt records.
    orphan = started.checkout_session_id
    if order.status == states.PENDING and payment.checkout_session_id == orphan:
        orphan = None
    answer: PaymentAnswer = {
        "id": payment.id,
        "provider": payment.provider,
        "client_secret": started.client_secret,
        "redirect_url": None if orphan is not None else started.redirect_url,
    }
    db.session.commit()
    if orphan is not None:
        try:
            gw.expire_session(orphan)
        except Exception as exc:  # noqa: BLE001 - its own expiry closes it; a payment on it would be refunded
            log.warning("closing checkout session %s of a closed order failed: %r", orphan, exc)
    return answer


LIVE = (PaymentStatus.CREATING, PaymentStatus.REQUIRES_PAYMENT)  # attempts that may still be paid


def _publish_payment(type_: str, payment: Payment) -> None:
    """payment.succeeded / payment.failed, in the transaction that records it (no personal or card data)."""
    data: dict[str, Any] = {
        "payment_id": payment.id,
        "order_id": payment.order_id,
        "amount": payment.amount,
        "currency": payment.currency,
        "provider": payment.provider,
        "flow": payment.flow,
        "status": payment.status,
    }
    if type_ == "payment.failed":
        data["reason"] = payment.failure_reason
    events.publish(type_, "payment", payment.id, data)
    metrics.count_after_commit(metrics.PAYMENTS.labels("succeeded" if type_ == "payment.succeeded" else "failed"))


def _publish_refund(payment: Payment, record: Refund) -> None:
    """refund.succeeded, in the transaction that records the provider's success."""
    events.publish(
        "refund.succeeded",
        "refund",
        record.id,
        {
            "refund_id": record.id,
            "payment_id": payment.id,
            "order_id": payment.order_id,
            "amount": record.amount,
            "currency": payment.currency,
        },
    )
    metrics.count_after_commit(metrics.REFUNDS)


@events.order_refunded_total.connect
def _refunded_total(order_id: int, **_: Any) -> int:
    """The refunded amount in an order event's snapshot: what its payments gave back or are giving back."""
    return int(
        db.session.scalar(
            select(func.coalesce(func.sum(Payment.refunded_amount), 0)).where(  # numeric: int it
                Payment.order_id == order_id
            )
        )
        or 0
    )


def _line_name(line: OrderLine) -> str:
    options = ", ".join(str(v) for v in (line.options or {}).values())
    return f"{line.name} ({options})" if options else line.name


def _checkout_request(payment: Payment) -> CheckoutRequest:
    """The order as Stripe's hosted page shows it. The session's expiry is fixed on the payment the first time, so a
    retried start (same idempotency key) sends the very same parameters."""
    from shop import pricing
    from shop.security import external_url

    order = db.session.get_one(Order, payment.order_id)
    now = clock.now()
    expires = payment.checkout_expires_at
    expires = expires.replace(tzinfo=UTC) if expires is not None and expires.tzinfo is None else expires
    if expires is None or expires < now + timedelta(minutes=30):
        # First start, or a restart (stuck sweep) so late that Stripe would refuse this expiry: a new one, which
        # also makes a new idempotency key (a first call that never reached Stripe left nothing to replay).
        expires = payment.checkout_expires_at = now + timedelta(seconds=CHECKOUT_SESSION_SECONDS)
    label = pricing.SHIPPING_METHODS.get(order.shipping_method, (order.shipping_method or "Shipping",))[0]
    # Neither address carries the order's key: whoever holds them sees no order that is not theirs.
    success = external_url("storefront.stripe_return", order_id=order.id, result="paid")
    return CheckoutRequest(
        number=order.number,
        email=order.email,
        lines=tuple((_line_name(line), line.unit_price, line.quantity) for line in order.lines),
        shipping=order.shipping,
        shipping_label=label,
        discount=order.discount,
        tax=order.tax,
        success_url=success + "&session_id={CHECKOUT_SESSION_ID}",
        cancel_url=external_url("storefront.stripe_return", order_id=order.id, result="back"),
        expires_at=int(expires.timestamp()),
    )


def latest(order_id: int) -> Payment | None:
    """The order's most recent payment attempt."""
    return db.session.scalar(select(Payment).where(Payment.order_id == order_id).order_by(Payment.id.desc()).limit(1))


def pay_again(order_id: int, hosted: bool = False, _round: int = 0) -> PaymentAnswer:
    """A new payment attempt for the same pending order and the same stock hold: after a declined card, say.

    Under the order's row lock: an order that is no longer pending, or whose hold has run out, is refused
    (409); an attempt still live (not declined, or its decline not reported yet) is answered again rather
    than doubled, so two presses at once make one new attempt. The provider is called after the commit;
    if it fails, the order and its hold stay as they are (503, try again)."""

    order = orders.lock(order_id)
    if order.status != states.PENDING:
        db.session.commit()
        raise Conflict(
            PaymentErrorCode.NOT_PAYABLE,
            f"This order is {order.status}: there is nothing left to pay.",
            {"status": order.status},
        )
    expires = orders.hold_expires_at(order.id)
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if expires is None or expires <= clock.now():
        db.session.commit()
        raise Conflict(
            PaymentErrorCode.HOLD_EXPIRED,
            "The items of this order are no longer held for you. Please add them to your cart and check out again.",
        )
    if db.session.scalar(
        select(Payment.id).where(Payment.order_id == order.id, Payment.status == PaymentStatus.PROCESSING)
    ):
        db.session.commit()
        raise Conflict(
            PaymentErrorCode.PROCESSING,
            "A bank payment for this order is on its way; we confirm the order when the bank does.",
        )
    flow = "checkout" if hosted and gateway().name == "stripe" else "intent"
    live = db.session.scalar(
        select(Payment)
        .where(Payment.order_id == order.id, Payment.status.in_(LIVE), Payment.flow == flow)
        .order_by(Payment.id.desc())
        .limit(1)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if live is not None and live.status == PaymentStatus.REQUIRES_PAYMENT:
        if live.flow == "checkout":
            answer = open_session_answer(live.id)  # commits; None once that page can no longer be paid on
            if answer is not None:
                return answer
            if _round >= 1:  # Stripe keeps answering a page that is neither open nor closed: try again later
                raise PaymentUnavailable()
            return pay_again(order_id, hosted, _round + 1)  # that page is closed now: decided again, under the lock
        return payment_answer(live)  # commits before asking the provider for its page again
    if live is None:
        live = Payment(
            order_id=order.id, provider=gateway().name, amount=order.total, currency=order.currency, flow=flow
        )
        db.session.add(live)
        db.session.add(
            OrderEvent(
                order_id=order.id,
                from_status=order.status,
                to_status=order.status,
                actor="customer",
                note="New payment attempt",
            )
        )
    db.session.flush()
    payment_id = live.id
    db.session.commit()
    return start(payment_id, cancel_on_failure=False)


def payment_answer(payment: Payment) -> PaymentAnswer:
    """What the client needs to pay a payment already started: the provider is asked again with the
    payment's own idempotency key (Stripe returns the same PaymentIntent; the test gateway the same page)."""
    if payment.flow == "checkout" and payment.status == PaymentStatus.REQUIRES_PAYMENT:
        page = open_session_answer(payment.id)  # that same page while it is open
        return page if page is not None else {"id": payment.id, "provider": payment.provider}
    ref = PaymentRef.of(payment)
    answer: PaymentAnswer = {"id": payment.id, "provider": payment.provider}
    started = payment.status == PaymentStatus.REQUIRES_PAYMENT
    db.session.commit()  # no transaction stays open during the provider call
    if started:
        try:
            again = gateway().start(ref)
        except Exception:  # noqa: BLE001 - the payment is fine; only its client secret could not be fetched
            raise PaymentUnavailable(
                "The payment provider cannot be reached right now. Your order is placed; please try again in a moment."
            ) from None
        answer.update({"client_secret": again.client_secret, "redirect_url": again.redirect_url})
    return answer


def lock_payment(payment_id: int) -> Payment:
    """The payment row, locked (FOR UPDATE, after its order's lock) and re-read under the lock:
    populate_existing replaces a copy this session may already hold, so a waiter never acts on stale amounts.
    Callers name a payment they have read: it exists (it goes only with its order, whose lock they hold)."""
    return db.session.get_one(Payment, payment_id, with_for_update=True, populate_existing=True)


def _is_refusal(exc: Exception) -> bool:
    """The provider answered no (4xx): retrying the same request will not help."""
    import stripe

    return isinstance(exc, (stripe.InvalidRequestError, stripe.CardError))


def _is_our_mistake(exc: Exception) -> bool:
    """Misconfiguration an operator must fix (a wrong key), logged as an error, not a blip."""
    import stripe

    return isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError, stripe.InvalidRequestError))


def _payment_for_intent(intent_id: str, metadata: dict[str, Any] | None = None) -> tuple[Order, Payment] | None:
    """The payment of a PaymentIntent, its order locked first. A hosted Checkout payment learns its intent's id from
    the first event that names it: found then by the payment id the shop put in the intent's metadata (events are
    signed, so the metadata is the shop's own)."""
    found = db.session.execute(select(Payment.id, Payment.order_id).where(Payment.provider_id == intent_id)).first()
    if found is None:
        found = _by_metadata(metadata, Payment.provider_id.is_(None))
    if found is None or not intent_id:
        return None
    order = orders.lock(found.order_id)
    payment = lock_payment(found.id)
    if payment.provider_id is None:
        payment.provider_id = intent_id
    elif payment.provider_id != intent_id:  # taken meanwhile by another intent: not this one's payment
        return None
    return order, payment


def _by_metadata(metadata: dict[str, Any] | None, unrecorded: ColumnElement[bool]) -> Row[int, int] | None:
    """(payment id, order id) of a Checkout payment named by an event's metadata whose id it has not recorded yet.
    The payment id, order id and order number must all match: one Stripe account may serve several shops (staging
    beside production), whose events all reach every endpoint, and their row ids repeat; the number is random."""
    metadata = metadata or {}
    ids = (str(metadata.get("payment_id", "")), str(metadata.get("order_id", "")))
    if not all(i.isdigit() and len(i) < 19 for i in ids) or not metadata.get("order_number"):
        return None
    return db.session.execute(
        select(Payment.id, Payment.order_id)
        .join(Order, Order.id == Payment.order_id)
        .where(
            Payment.id == int(ids[0]),
            Payment.order_id == int(ids[1]),
            Order.number == str(metadata["order_number"]),
            Payment.flow == "checkout",
            unrecorded,
        )
    ).first()


def _session_payment(obj: dict[str, Any]) -> tuple[Session, Order, Payment] | None:
    """The session an event (or a read from Stripe) carries, with its payment and order (locked), or None."""
    session = Session.of(obj)
    found = _payment_for_session(session)
    return None if found is None else (session, *found)


def _payment_for_session(session: Session) -> tuple[Order, Payment] | None:
    """The payment of a Checkout Session (by its id, else by the payment id in its metadata), order locked first."""
    found = db.session.execute(
        select(Payment.id, Payment.order_id).where(Payment.checkout_session_id == session.id)
    ).first()
    if found is None:
        found = _by_metadata(session.metadata, Payment.checkout_session_id.is_(None))
    if found is None:
        return None
    order = orders.lock(found.order_id)
    payment = lock_payment(found.id)
    if payment.checkout_session_id is None:  # its start died before recording the session: record it now
        payment.checkout_session_id = session.id
    if session.payment_intent and payment.provider_id is None:
        payment.provider_id = session.payment_intent
    return order, payment


def on_succeeded(intent: dict[str, Any]) -> str:
    """payment_intent.succeeded: confirm the order and turn its reservation into a hard decrement, once.

    A payment that succeeds after its order was cancelled (the reservation expired first) is
    refunded in full and the order stays cancelled: stock that was released may already be sold."""
    found = _payment_for_intent(intent["id"], intent.get("metadata"))
    if found is None:
        return "ignored: unknown payment"
    order, payment = found
    return _succeeded(order, payment, intent.get("amount"))


def _succeeded(order: Order, payment: Payment, amount: int | None) -> str:
    """The money of `payment` arrived (`amount`, as the provider reports it): confirm its order, once. What follows
    (order.confirmed, its mail) joins the trace of the checkout that created the payment."""
    with tracing.resumed(payment.trace_parent, "payment.succeeded", {"shop.order_id": order.id}):
        return _settle(order, payment, amount)


def _settle(order: Order, payment: Payment, amount: int | None) -> str:
    if payment.status == PaymentStatus.SUCCEEDED:
        return "no effect: already succeeded"
    if amount is not None and int(amount) != payment.amount:
        # Money moved, but not the order's total: never confirm on it; give it back.
        payment.status, payment.failure_reason = PaymentStatus.SUCCEEDED, "amount mismatch: refunded"
        _publish_payment("payment.succeeded", payment)  # the money arrived; refund.succeeded follows
        if order.status == states.PENDING:
            orders.move(order, states.CANCELLED, payment.provider, "Paid amount did not match the order")
        refund_after_commit(
            order.id, reason="Paid amount did not match the order", actor="system", payment_id=payment.id
        )
        return "refunding: amount mismatch"
    paid_before = db.session.scalar(
        select(Payment.id)
        .where(Payment.order_id == order.id, Payment.id != payment.id, Payment.status == PaymentStatus.SUCCEEDED)
        .limit(1)
    )
    if paid_before is not None:
        # Another attempt (an earlier declined one paid after all, beside "Pay again") already paid this order:
        # this money is given back, whatever the order's status.
        payment.status = PaymentStatus.SUCCEEDED
        payment.failure_reason = "order already paid by another attempt: refunded"
        _publish_payment("payment.succeeded", payment)
        db.session.add(
            OrderEvent(
                order_id=order.id,
                from_status=order.status,
                to_status=order.status,
                actor=payment.provider,
                note="A second payment arrived; refunded",
            )
        )
        refund_after_commit(order.id, reason="The order was already paid", actor="system", payment_id=payment.id)
        return "refunding: order already paid"
    payment.status, payment.failure_reason = PaymentStatus.SUCCEEDED, None
    _publish_payment("payment.succeeded", payment)
    if order.status == states.PENDING:
        inventory.consume(order.id)
        orders.move(order, states.CONFIRMED, payment.provider, "Payment received")
        return "confirmed"
    if order.status == states.CANCELLED:
        db.session.add(
            OrderEvent(
                order_id=order.id,
                from_status=order.status,
                to_status=order.status,
                actor=payment.provider,
                note="Payment arrived after cancellation; refunded",
            )
        )
        refund_after_commit(
            order.id, reason="Payment arrived after the order was cancelled", actor="system", payment_id=payment.id
        )
        return "refunding: order was cancelled"
    return f"no effect: order is {order.status}"


def on_failed(intent: dict[str, Any]) -> str:
    """payment_intent.payment_failed: record it unless the payment already succeeded (events can be late)."""
    found = _payment_for_intent(intent["id"], intent.get("metadata"))
    if found is None:
        return "ignored: unknown payment"
    _, payment = found
    if payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.PROCESSING):
        return f"no effect: already {payment.status}"
    error = (intent.get("last_payment_error") or {}).get("message") or "declined"
    if payment.flow == "checkout" and payment.status == PaymentStatus.REQUIRES_PAYMENT:
        # Stripe's page stays open after a declined card: the shopper may try another card on it (or come back and
        # press "Pay now", which opens the same page). The attempt stays payable; the decline is kept for staff.
        payment.failure_reason = str(error)[:255]
        _publish_payment("payment.failed", payment)  # status stays requires_payment: another card may pay
        return "recorded decline (page still open)"
    # Also when the test gateway marked it failed as the shopper pressed "decline": this is the provider's report.
    payment.status, payment.failure_reason = PaymentStatus.FAILED, str(error)[:255]
    _publish_payment("payment.failed", payment)
    return "recorded failure"


# -- hosted Checkout Sessions ------------------------------------------------------------------------------------
def on_checkout_completed(obj: dict[str, Any]) -> str:
    """checkout.session.completed: paid -> as payment_intent.succeeded; unpaid -> a bank payment the shopper
    submitted in time, whose result comes days later: the order keeps its hold (ASYNC_PAYMENT_HOLD_SECONDS)."""
    from flask import current_app

    found = _session_payment(obj)
    if found is None:
        return "ignored: unknown session"
    session, order, payment = found
    if session.payment_status in ("paid", "no_payment_required"):
        return _succeeded(order, payment, session.amount_total)
    if payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.PROCESSING):
        return f"no effect: already {payment.status}"
    payment.status, payment.failure_reason = PaymentStatus.PROCESSING, None
    db.session.add(
        OrderEvent(
            order_id=order.id,
            from_status=order.status,
            to_status=order.status,
            actor=payment.provider,
            note="Bank payment submitted; waiting for the bank",
        )
    )
    if order.status == states.PENDING:
        inventory.extend_hold(order.id, current_app.config["ASYNC_PAYMENT_HOLD_SECONDS"])
        return "processing: hold kept for the bank"
    return f"processing: order is {order.status}"  # should it arrive, _succeeded refunds it


def on_async_succeeded(obj: dict[str, Any]) -> str:
    """checkout.session.async_payment_succeeded: the bank paid."""
    found = _session_payment(obj)
    if found is None:
        return "ignored: unknown session"
    session, order, payment = found
    return _succeeded(order, payment, session.amount_total)


def on_async_failed(obj: dict[str, Any]) -> str:
    """checkout.session.async_payment_failed: the bank refused; the order is cancelled and its stock freed."""
    found = _session_payment(obj)
    if found is None:
        return "ignored: unknown session"
    session, order, payment = found
    if payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED):
        return f"no effect: already {payment.status}"
    payment.status, payment.failure_reason = PaymentStatus.FAILED, "The bank payment failed"
    _publish_payment("payment.failed", payment)
    if order.status == states.PENDING:
        orders.move(order, states.CANCELLED, payment.provider, "The bank payment failed")
        return "cancelled: bank payment failed"
    return "recorded failure"


def on_session_expired(obj: dict[str, Any]) -> str:
    """checkout.session.expired: nobody can pay on that page any more. Its attempt is closed; the order is
    cancelled only if its hold has run out and no other attempt can still pay it (the shop expires sessions itself
    when a hold ends; this finishes that if the cancelling copy died in between)."""
    found = _session_payment(obj)
    if found is None:
        return "ignored: unknown session"
    session, order, payment = found
    if payment.status not in LIVE:
        return f"no effect: payment {payment.status}"
    payment.status, payment.failure_reason = PaymentStatus.CANCELLED, "The payment page expired"
    if order.status != states.PENDING:
        return "closed attempt"
    expires = orders.hold_expires_at(order.id)
    if expires is not None and expires.replace(tzinfo=expires.tzinfo or UTC) > clock.now():
        return "closed attempt: hold still running"
    other = db.session.scalar(
        select(Payment.id)
        .where(
            Payment.order_id == order.id,
            Payment.id != payment.id,
            Payment.status.in_(LIVE + (PaymentStatus.PROCESSING,)),
        )
        .limit(1)
    )
    if other is None:
        orders.move(order, states.CANCELLED, "system", "Payment not received before the reservation expired")
        return "cancelled: expired"
    return "closed attempt"


def apply_session(session: Session) -> str:
    """A session read from Stripe's API (trusted like a signed event): apply it as its webhook would. Commits."""
    handler = {"complete": on_checkout_completed, "expired": on_session_expired}.get(session.status)
    outcome = handler(session.__dict__) if handler else "open"
    db.session.commit()
    return outcome


def open_session_answer(payment_id: int) -> PaymentAnswer | None:
    """ "Pay now" on an attempt with a hosted page: that same page while it can still be paid on (no second order,
    no second hold, no second page to pay twice on); None once it cannot (expired, or completed meanwhile: applied)."""
    payment = db.session.get_one(Payment, payment_id)
    session_id = payment.checkout_session_id
    answer: PaymentAnswer = {"id": payment.id, "provider": payment.provider}
    db.session.commit()  # no transaction open during the provider call
    try:
        if session_id is None:  # started by the test gateway (PAYMENT_PROVIDER changed meanwhile): no page to read
            raise LookupError(f"payment {payment_id} has no checkout session")
        session = gateway().session(session_id)
    except Exception as exc:  # noqa: BLE001
        log.warning("reading checkout session %s failed: %r", session_id, exc)
        raise PaymentUnavailable(
            "The payment provider cannot be reached right now. Your order is placed and its "
            "items are held; please try again in a moment."
        ) from None
    if session.status == "open":
        return {**answer, "client_secret": None, "redirect_url": session.url}
    apply_session(session)
    return None


def sync_checkout(order_id: int, session_id: str) -> str:
    """The shopper is back from Stripe's page: ask Stripe for the session and apply it as its webhook would (the
    webhook may be late, or not configured yet). Best effort: never raises. Returns checkout_state()."""
    payment = db.session.scalar(
        select(Payment).where(Payment.order_id == order_id, Payment.checkout_session_id == session_id)
    )
    if payment is not None and payment.status in LIVE and gateway().name == "stripe":
        db.session.commit()
        try:
            apply_session(gateway().session(session_id))
        except Exception as exc:  # noqa: BLE001 - the webhook will do it; the page says "confirming"
            db.session.rollback()
            log.warning("reading checkout session %s failed: %r", session_id, exc)
    return checkout_state(order_id)


def checkout_state(order_id: int) -> str:
    """What the shopper back from paying should be told: confirmed, cancelled, processing (a bank payment on its
    way), declined (the last attempt failed) or waiting (the payment's outcome has not reached the shop yet)."""
    order = db.session.get(Order, order_id, populate_existing=True)
    if order is None:
        return "waiting"
    if order.status == states.CANCELLED:
        return "cancelled"
    if order.status != states.PENDING:
        return "confirmed"
    attempt = latest(order_id)
    if attempt is not None and attempt.status == PaymentStatus.PROCESSING:
        return "processing"
    if attempt is not None and attempt.status == PaymentStatus.FAILED:
        return "declined"
    return "waiting"


def close_sessions(order_id: int) -> bool:
    """Before a pending order whose hold ran out is cancelled: expire its open Checkout Sessions at Stripe first, so
    nobody pays for stock that is about to be released. True when the order may be cancelled now. False when a
    session turned out paid or a bank payment was submitted (applied now: confirmed, or hold kept), or Stripe cannot
    be asked while the session could still be paid on (tried again at the next sweep; once the session's own expiry
    has passed, Stripe can take no payment on it and the order is cancelled)."""
    rows = db.session.execute(
        select(Payment.id, Payment.checkout_session_id, Payment.checkout_expires_at).where(
            Payment.order_id == order_id,
            Payment.flow == "checkout",
            Payment.status.in_(LIVE),
            Payment.checkout_session_id.isnot(None),
        )
    ).all()
    db.session.commit()
    if not rows:
        return True
    gw = gateway()
    now = clock.now()
    for payment_id, session_id, expires_at in rows:
        assert session_id is not None  # the query asks for payments with a session
        try:
            try:
                session = gw.expire_session(session_id)
            except Exception as exc:  # noqa: BLE001
                if not _is_refusal(exc):
                    raise
                session = gw.session(session_id)  # no longer open: paid, submitted, or expired already
        except Exception as exc:  # noqa: BLE001
            closed = expires_at is not None and expires_at.replace(tzinfo=expires_at.tzinfo or UTC) <= now
            log.warning(
                "expiring checkout session %s failed (%s): %r",
                session_id,
                "its own expiry has passed" if closed else "order kept until the next sweep",
                exc,
            )
            if closed:
                continue
            return False
        if session.status == "complete":
            apply_session(session)
            return False
        orders.lock(order_id)
        payment = lock_payment(payment_id)
        if payment.status in LIVE:
            payment.status, payment.failure_reason = PaymentStatus.CANCELLED, "The payment page expired"
        db.session.commit()
    return True


def on_refunded(charge: dict[str, Any]) -> str:
    """charge.refunded: keep the refunded total in step with the provider's (never lower it)."""
    found = _payment_for_intent(charge.get("payment_intent") or "")
    if found is None:
        return "ignored: unknown payment"
    order, payment = found
    amount = int(charge.get("amount_refunded") or 0)
    if amount <= payment.refunded_amount:
        return "no effect: already recorded"
    if db.session.scalar(
        select(Refund.id).where(Refund.payment_id == payment.id, Refund.status == RefundStatus.FAILED)
    ):
        # Events come in any order: this total may predate a refund of ours that failed since (the money went back
        # to the charge). Refunds the shop makes are counted as they are made; this one is not trusted.
        log.warning("charge.refunded for payment %s ignored: a refund of it failed, the total may be stale", payment.id)
        return "no effect: total may predate a failed refund"
    payment.refunded_amount = min(amount, payment.amount)
    if order.status == states.RETURNED and payment.refunded_amount >= payment.amount and standing(payment):
        orders.move(order, states.REFUNDED, payment.provider, "Refunded at the provider")
    else:  # a partial refund (or one made in Stripe's dashboard): the order's refunded total rose
        orders.publish_event(order, "order.refunded")
    return "recorded refund"


def refundable(payment: Payment) -> int:
    """What can still be given back: captured, minus refunds (also those still on their way), minus what the bank
    took back in a lost dispute."""
    if payment.status != PaymentStatus.SUCCEEDED:
        return 0
    return max(payment.amount - payment.refunded_amount - (payment.charged_back or 0), 0)


def open_dispute(order_id: int, payment_id: int | None = None, blocking: bool = False) -> Dispute | None:
    """The order's (or one payment's) open dispute. `blocking`: only a chargeback, during which Stripe refuses
    refunds; an inquiry (warning_*) may be settled by refunding."""
    which = select(Dispute).where(Dispute.order_id == order_id, Dispute.closed_at.is_(None))
    if payment_id is not None:
        which = which.where(Dispute.payment_id == payment_id)
    if blocking:
        which = which.where(Dispute.status.notlike("warning%"))
    return db.session.scalar(which.order_by(Dispute.id).limit(1))


def refunded_units(order_id: int) -> dict[int, int]:
    """{order line id: units already refunded by line} (refunds that failed do not count)."""
    from sqlalchemy import func

    rows = db.session.execute(
        select(RefundLine.order_line_id, func.sum(RefundLine.quantity))
        .join(Refund, Refund.id == RefundLine.refund_id)
        .join(Payment, Payment.id == Refund.payment_id)
        .where(Payment.order_id == order_id, Refund.status != RefundStatus.FAILED)
        .group_by(RefundLine.order_line_id)
    ).all()
    return {line_id: int(units) for line_id, units in rows}


def _check_lines(order: Order, lines: Any, done: dict[int, int]) -> dict[int, int]:
    """{order line id: quantity} checked against the order and what was refunded by line before (422 otherwise)."""

    if not isinstance(lines, dict) or not lines:
        raise ValidationError({"lines": "name at least one line of this order and a quantity"})
    by_id = {line.id: line for line in order.lines}
    problems: dict[str, str] = {}
    clean: dict[int, int] = {}
    for raw_id, raw_qty in lines.items():
        line_id = int(raw_id) if str(raw_id).isdigit() else None
        if line_id not in by_id:
            problems[str(raw_id)] = "is not a line of this order"
            continue
        if isinstance(raw_qty, bool) or not isinstance(raw_qty, int):
            problems[str(raw_id)] = "quantity must be a whole number"
            continue
        if raw_qty == 0:
            continue
        left = by_id[line_id].quantity - done.get(line_id, 0)
        if raw_qty < 0 or raw_qty > left:
            problems[str(raw_id)] = f"quantity must be between 0 and {left} (units not refunded yet)"
            continue
        clean[line_id] = raw_qty
    if problems:
        raise ValidationError({f"lines.{k}": v for k, v in problems.items()})
    if not clean:
        raise ValidationError({"lines": "name at least one unit to refund"})
    return clean


def _paid_for_goods(order: Order) -> int:
    """What the shopper paid for the goods: the total without shipping (the discount and the tax are in it)."""
    return order.total - order.shipping


def line_refund_amount(order: Order, lines: dict[int, int], done: dict[int, int] | None = None) -> int:
    """The refund of these units: their share of what was paid for goods (unit price times units, with the order's
    discount and tax prorated, rounded down); the last units of the order take the rounding remainder, so refunding
    every unit by line gives back exactly what the goods cost. Shipping is not included."""
    by_id = {line.id: line for line in order.lines}
    paid = _paid_for_goods(order)
    if order.subtotal <= 0 or paid <= 0:
        return 0
    done = refunded_units(order.id) if done is None else done
    everything = all(done.get(i, 0) + lines.get(i, 0) >= line.quantity for i, line in by_id.items())
    if everything:
        from sqlalchemy import func

        before = db.session.scalar(
            select(func.coalesce(func.sum(RefundLine.amount), 0))
            .join(Refund, Refund.id == RefundLine.refund_id)
            .join(Payment, Payment.id == Refund.payment_id)
            .where(Payment.order_id == order.id, Refund.status != RefundStatus.FAILED)
        )
        return max(paid - int(before or 0), 0)  # (coalesce: never None)
    gross = sum(by_id[i].unit_price * qty for i, qty in lines.items())
    return gross * paid // order.subtotal


def _line_amounts(order: Order, lines: dict[int, int], amount: int) -> dict[int, int]:
    """`amount` split over the lines refunded, in proportion to their price (the last takes the remainder)."""
    by_id = {line.id: line for line in order.lines}
    gross = {i: by_id[i].unit_price * qty for i, qty in lines.items()}
    out: dict[int, int] = {}
    total, given = sum(gross.values()) or 1, 0
    ids = sorted(lines)
    for i in ids[:-1]:
        out[i] = amount * gross[i] // total
        given += out[i]
    out[ids[-1]] = amount - given
    return out


def standing(payment: Payment) -> bool:
    """A payment that pays for its order: not one being given back whole (a second payment of an order already
    paid, or one of the wrong amount), which keeps its reason in failure_reason."""
    return payment.failure_reason is None


def _refund_source(order_id: int, payment_id: int | None) -> Select[Payment]:
    """The succeeded payment a refund comes out of: `payment_id`, or the order's standing payment with the most
    left to refund (a payment being given back whole is never picked for a cancellation or a staff refund)."""
    which = select(Payment).where(Payment.order_id == order_id, Payment.status == PaymentStatus.SUCCEEDED)
    if payment_id is not None:
        which = which.where(Payment.id == payment_id)
    else:
        which = which.where(Payment.failure_reason.is_(None))
    return which.order_by((Payment.amount - Payment.refunded_amount).desc(), Payment.id).limit(1)


def refund(
    order_id: int,
    amount: int | None,
    reason: str,
    actor: str,
    payment_id: int | None = None,
    lines: dict[int, int] | None = None,
) -> Refund:
    """Refund part or all of an order's payment (see _refund_source): `amount`, or by line (`lines` = {order line
    id: units}; the amount is then line_refund_amount's unless a smaller `amount` is given). The amount is held
    first under the order's lock (so two refunds at once cannot exceed what was captured), the provider is called
    between transactions, then the result stored."""
    order = orders.lock(order_id)
    if lines is not None:
        done = refunded_units(order.id)
        lines = _check_lines(order, lines, done)
        owed = line_refund_amount(order, lines, done)
        if amount is not None and not 0 < amount <= owed:
            raise ValidationError(
                {"amount": f"must be between 1 and {owed} for these units"},
                f"A refund of these units must be between 1 and {owed}.",
            )
        amount = owed if amount is None else amount
    # Re-read under the lock (populate_existing): refund_remaining_job has loaded this payment unlocked in the
    # same transaction, and a stale refunded_amount would let two refunds pass the check below.
    payment = db.session.scalar(
        _refund_source(order.id, payment_id).with_for_update().execution_options(populate_existing=True)
    )
    available = refundable(payment) if payment else 0
    amount = available if amount is None else amount
    if payment is not None and open_dispute(order.id, payment.id, blocking=True) is not None:
        raise PaymentDisputed()
    if not payment or available <= 0:
        raise Conflict(PaymentErrorCode.NOTHING_TO_REFUND, "This order has no paid amount left to refund.")
    if lines is not None:
        amount = min(amount, available)  # the goods' share, within what is left of the payment
    if db.session.scalar(
        select(Refund.id).where(Refund.payment_id == payment.id, Refund.status == RefundStatus.PENDING)
    ):
        raise Conflict(
            PaymentErrorCode.REFUND_PENDING,
            "A refund of this order is still waiting for the provider; it is retried automatically.",
        )
    if amount <= 0 or amount > available:
        raise ValidationError(
            {"amount": f"must be between 1 and {available}"}, f"The refund must be between 1 and {available}."
        )
    record = Refund(payment_id=payment.id, amount=amount, reason=reason, actor=actor, status=RefundStatus.PENDING)
    payment.refunded_amount += amount
    db.session.add(record)
    if lines is not None:
        for line_id, part in _line_amounts(order, lines, amount).items():
            record.lines.append(RefundLine(order_line_id=line_id, quantity=lines[line_id], amount=part))
    db.session.commit()
    return send_refund(record.id)


def send_refund(refund_id: int) -> Refund:
    """Ask the provider for a pending refund and store the answer.

    The same refund row always carries the same idempotency key, so asking again after a timeout
    (the provider may have refunded already) never pays twice. Only a clear refusal gives the
    held amount back; any other failure leaves the refund pending for retry_pending_refunds()."""
    record = db.session.get_one(Refund, refund_id)
    payment = db.session.get_one(Payment, record.payment_id)
    payment_ref, refund_ref = PaymentRef.of(payment), RefundRef.of(record)
    order_id, amount = payment.order_id, record.amount
    db.session.commit()  # no transaction stays open during the provider call
    try:
        result = gateway().refund(payment_ref, refund_ref)
    except Exception as exc:  # noqa: BLE001
        log.log(logging.ERROR if _is_our_mistake(exc) else logging.WARNING, "refund %s failed: %r", refund_id, exc)
        if not _is_refusal(exc):
            raise PaymentUnavailable(
                "The payment provider cannot be reached right now. The refund is recorded "
                "as pending and will be retried automatically."
            ) from None
        orders.lock(order_id)
        payment = lock_payment(payment_ref.id)
        record = db.session.get_one(Refund, refund_id, populate_existing=True)
        record.status = RefundStatus.FAILED
        payment.refunded_amount -= amount
        db.session.commit()
        raise RefundRefused(
            f"The payment provider refused the refund: {getattr(exc, 'user_message', None) or exc}"[:300]
        ) from None
    order = orders.lock(order_id)
    record = db.session.get_one(Refund, refund_id, populate_existing=True)
    if record.status != RefundStatus.PENDING:  # settled meanwhile by a concurrent retry
        db.session.commit()
        return record
    record.provider_refund_id = result.provider_refund_id
    payment = db.session.get_one(Payment, payment_ref.id, populate_existing=True)
    if result.status in ("failed", "canceled"):  # refused after all: the amount is refundable again
        record.status = RefundStatus.FAILED
        payment.refunded_amount -= amount
        db.session.commit()
        raise RefundRefused("The payment provider could not make this refund.")
    # Stripe's "pending" (a bank that takes days): in progress; charge.refund.updated settles it.
    record.status = RefundStatus.SUCCEEDED if result.status == "succeeded" else RefundStatus.PROCESSING
    if record.status == RefundStatus.SUCCEEDED:
        _publish_refund(payment, record)
    _announce_refund(order, payment, record)
    db.session.commit()
    return record


def _announce_refund(order: Order, payment: Payment, record: Refund) -> None:
    """A refund the provider accepted: a returned order refunded in full becomes `refunded` (its mail says so), else
    the shopper is mailed about this refund. Run by whichever comes first: the answer to the shop's own request, or
    the provider's event (the request may have timed out)."""
    if order.status == states.RETURNED and payment.refunded_amount >= payment.amount and standing(payment):
        orders.move(order, states.REFUNDED, record.actor, record.reason)  # publishes order.refunded
    else:
        # A partial refund also publishes order.refunded: its snapshot's `refunded` is the new total.
        orders.publish_event(order, "order.refunded")
        notify(
            "order.refunded",
            order.email,
            {**orders.mail_payload(order), "refund": format_money(record.amount, order.currency)},
            key=f"refund:{record.id}",
        )  # one mail per refund, however many partial refunds


def retry_pending_refunds(older_than_seconds: int = 120) -> int:
    """Scheduled: ask again for refunds left pending by a timeout or an outage."""
    from datetime import timedelta

    cutoff = clock.now() - timedelta(seconds=older_than_seconds)
    ids = db.session.scalars(
        select(Refund.id)
        .where(Refund.status == RefundStatus.PENDING, Refund.created_at < cutoff)
        .order_by(Refund.id)
        .limit(100)
    ).all()
    db.session.commit()
    done = 0
    for refund_id in ids:
        try:
            send_refund(refund_id)
            done += 1
        except (PaymentUnavailable, RefundRefused):
            pass  # still unreachable (stays pending) or refused (now failed); the log says which
    return done


def refund_after_commit(order_id: int, reason: str, actor: str, payment_id: int | None = None) -> None:
    """Refund what is left of an order's payment (or of payment `payment_id`), in a job after this transaction
    commits."""
    from rq import Retry

    extra = {"payment_id": payment_id} if payment_id is not None else {}
    after_commit(
        "default",
        refund_remaining_job,
        order_id,
        reason,
        actor,
        retry=Retry(max=5, interval=[30, 60, 300, 900, 3600]),
        **extra,
    )


def refund_remaining_job(order_id: int, reason: str, actor: str, payment_id: int | None = None) -> str:
    """RQ job (default queue): idempotent, as a refund of nothing left does nothing."""
    payment = db.session.scalar(_refund_source(order_id, payment_id))
    if payment is None or refundable(payment) <= 0:
        return "nothing to refund"
    try:
        refund(order_id, None, reason, actor, payment_id=payment.id)
    except PaymentDisputed:
        db.session.rollback()  # made when the dispute closes (on_dispute_closed), not by retrying for weeks
        return "waiting for the dispute to close"
    return "refunded"


# -- refund statuses and disputes reported by the provider -------------------------------------------------------
def on_refund_updated(obj: dict[str, Any]) -> str:
    """charge.refund.updated (refund.updated, refund.failed): a refund in progress settled. Found by its id, or by
    the refund id the shop put in its metadata (the event can beat the shop's own record of the answer)."""
    found = db.session.execute(
        select(Refund.id, Payment.order_id)
        .join(Payment, Payment.id == Refund.payment_id)
        .where(Refund.provider_refund_id == str(obj.get("id")))
    ).first()
    ours = str((obj.get("metadata") or {}).get("refund_id", ""))
    if found is None and ours.isdigit():
        found = db.session.execute(
            select(Refund.id, Payment.order_id)
            .join(Payment, Payment.id == Refund.payment_id)
            .where(Refund.id == int(ours), Refund.provider_refund_id.is_(None))
        ).first()
    if found is None:
        return "ignored: not a refund the shop made"  # one made in the Stripe dashboard: charge.refunded counts it
    order = orders.lock(found.order_id)
    record = db.session.get_one(Refund, found.id, with_for_update=True, populate_existing=True)
    payment = lock_payment(record.payment_id)
    record.provider_refund_id = record.provider_refund_id or str(obj.get("id"))
    status, before = obj.get("status"), record.status
    if record.status == RefundStatus.FAILED or (record.status == RefundStatus.SUCCEEDED and status != "failed"):
        return f"no effect: refund already {record.status}"
    if status in ("succeeded", "pending", "requires_action") and before == RefundStatus.PENDING:
        # The shop's own request has not recorded Stripe's answer (it timed out, or is still on its way): this
        # event settles the refund; the late answer then finds it settled and does nothing.
        record.status = RefundStatus.SUCCEEDED if status == "succeeded" else RefundStatus.PROCESSING
        if record.status == RefundStatus.SUCCEEDED:
            _publish_refund(payment, record)
        _announce_refund(order, payment, record)
        return f"refund {record.status}"
    if status == "succeeded":
        record.status = RefundStatus.SUCCEEDED
        _publish_refund(payment, record)
        return "refund succeeded"
    if status in ("failed", "canceled"):
        record.status = RefundStatus.FAILED
        payment.refunded_amount = max(payment.refunded_amount - record.amount, 0)
        db.session.add(
            OrderEvent(
                order_id=order.id,
                from_status=order.status,
                to_status=order.status,
                actor=payment.provider,
                note=f"Refund of {format_money(record.amount, payment.currency)} "
                f"failed at the provider; it can be made again",
            )
        )
        # it was announced: the order's refunded total went down again
        if before in (RefundStatus.PROCESSING, RefundStatus.SUCCEEDED):
            orders.publish_event(order, "order.refunded")
        return "refund failed: amount refundable again"
    record.status = RefundStatus.PROCESSING
    return "refund in progress"


DISPUTE_OUTCOMES = ("won", "lost", "warning_closed")


class DisputeFields(TypedDict):
    amount: int
    currency: str
    reason: str
    status: str
    evidence_due_by: datetime | None


def _dispute_fields(obj: dict[str, Any]) -> DisputeFields:
    due = (obj.get("evidence_details") or {}).get("due_by")
    return {
        "amount": int(obj.get("amount") or 0),
        "currency": str(obj.get("currency") or "").upper()[:3],
        "reason": str(obj.get("reason") or "")[:100],
        "status": str(obj.get("status") or "")[:40],
        "evidence_due_by": datetime.fromtimestamp(int(due), UTC) if due else None,
    }


def on_dispute_created(obj: dict[str, Any]) -> str:
    """charge.dispute.created: the order is flagged disputed (support, managers and admins see it) and every active
    manager is mailed, once per dispute."""
    from shop.accounts.models import User
    from shop.security import external_url

    found = _payment_for_intent(str(obj.get("payment_intent") or ""))
    if found is None:
        return "ignored: unknown payment"
    order, payment = found
    made = db.session.execute(
        insert(Dispute)
        .values(payment_id=payment.id, order_id=order.id, provider_dispute_id=str(obj["id"]), **_dispute_fields(obj))
        .on_conflict_do_nothing(constraint="uq_dispute_provider_dispute_id")
        .returning(Dispute.id)
    ).scalar()
    if made is None:
        return "no effect: dispute known"
    fields = _dispute_fields(obj)
    amount = format_money(fields["amount"], fields["currency"] or payment.currency)
    reason = fields["reason"].replace("_", " ") or "not given"
    # No order event: the order's history is shown to the shopper; the dispute row is the staff's record.
    due = fields["evidence_due_by"]
    managers = db.session.scalars(
        select(User).where(User.role == "manager", User.is_active_account.is_(True)).order_by(User.id)
    ).all()
    for manager in managers:
        notify(
            "payment.dispute_opened",
            manager.email,
            {
                "name": manager.name,
                "number": order.number,
                "amount": amount,
                "reason": reason,
                "evidence_due_by": f"{due:%d %B %Y}" if due else "",
                "link": external_url("orders.order_page", order_id=order.id),
            },
            key=f"dispute:{made}:user:{manager.id}",
        )
    return "recorded dispute"


def on_dispute_closed(obj: dict[str, Any]) -> str:
    """charge.dispute.closed: the outcome is kept; a lost dispute's amount is no longer refundable (the bank took it
    back). Also when the closing event arrives before the opening one."""
    found = _payment_for_intent(str(obj.get("payment_intent") or ""))
    if found is None:
        return "ignored: unknown payment"
    order, payment = found
    fields = _dispute_fields(obj)
    db.session.execute(
        insert(Dispute)
        .values(payment_id=payment.id, order_id=order.id, provider_dispute_id=str(obj["id"]), **fields)
        .on_conflict_do_nothing(constraint="uq_dispute_provider_dispute_id")
    )
    dispute = db.session.scalar(
        select(Dispute)
        .where(Dispute.provider_dispute_id == str(obj["id"]))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert dispute is not None  # inserted above, or there already
    if dispute.closed_at is not None:
        return "no effect: dispute already closed"
    dispute.status = fields["status"]
    dispute.outcome = fields["status"] if fields["status"] in DISPUTE_OUTCOMES else fields["status"][:20]
    dispute.closed_at = clock.now()
    if dispute.outcome == "lost":
        payment.charged_back = (payment.charged_back or 0) + dispute.amount
    if (order.status == states.CANCELLED or not standing(payment)) and refundable(payment) > 0:
        # A refund the dispute held up (the order was cancelled, or this payment is one to give back): made now.
        refund_after_commit(order.id, reason="Refund held up by a dispute", actor="system", payment_id=payment.id)
    return f"dispute closed: {dispute.outcome}"


# Every event the shop acts on: the Stripe dashboard's webhook endpoint must send these (`flask payments check`
# compares). Others are stored and marked ignored.
HANDLERS = {
    "payment_intent.succeeded": on_succeeded,
    "payment_intent.payment_failed": on_failed,
    "charge.refunded": on_refunded,
    "charge.refund.updated": on_refund_updated,
    "checkout.session.completed": on_checkout_completed,
    "checkout.session.async_payment_succeeded": on_async_succeeded,
    "checkout.session.async_payment_failed": on_async_failed,
    "checkout.session.expired": on_session_expired,
    "charge.dispute.created": on_dispute_created,
    "charge.dispute.closed": on_dispute_closed,
}


@events.order_cancelled.connect
def _refund_when_cancelled(order: Order, *, was_paid: bool, actor: str, note: str, **_: Any) -> None:
    """A cancelled order that was paid: its money goes back, in a job after the commit."""
    if was_paid:
        refund_after_commit(order.id, reason=note, actor=actor)


@events.order_cancelling.connect
def _close_pages_before_cancel(order_id: int, **_: Any) -> bool:
    """An unpaid order about to be cancelled: its Stripe pages are closed first (close_sessions)."""
    return close_sessions(order_id)
