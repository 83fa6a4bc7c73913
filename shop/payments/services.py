"""Payment rules: starting a payment, applying provider events exactly once, refunds.

Lock order, everywhere: the order row, then the payment row, then variants by id. Provider calls
happen between transactions, never inside one.
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from shop.afterwards import after_commit
from shop.errors import ApiError
from shop.extensions import db
from shop.inventory import services as inventory
from shop.notifications import notify
from shop.orders import services as orders
from shop.orders import states
from shop.money import format_money
from shop.orders.models import Order, OrderEvent
from shop.payments.gateways import PaymentRef, RefundRef, gateway
from shop.payments.models import Payment, Refund

log = logging.getLogger(__name__)


class PaymentUnavailable(ApiError):
    def __init__(self, message: str = "The payment provider cannot be reached right now. Your cart is kept; "
                                      "please try again."):
        super().__init__(503, "payment_unavailable", message, headers={"Retry-After": "30"})


def start(payment_id: int, cancel_on_failure: bool = True) -> dict:
    """Open the payment with the provider (outside any transaction) and record its id.

    If the provider fails, the order is cancelled (its stock released) and PaymentUnavailable raised;
    a second attempt (pay_again) keeps the order and its hold instead (`cancel_on_failure=False`)."""
    payment = db.session.get(Payment, payment_id)
    gw = gateway()
    ref = PaymentRef.of(payment)  # plain values: reading the row later would reopen a transaction
    db.session.commit()  # nothing of ours stays open while we wait for the provider
    try:
        started = gw.start(ref)
    except Exception as exc:  # noqa: BLE001 - any provider failure has the same remedy for the order
        level = logging.ERROR if _is_our_mistake(exc) else logging.WARNING
        log.log(level, "starting payment %s failed: %r", payment_id, exc)
        order = orders.lock(ref.order_id)
        locked = lock_payment(payment_id)
        if locked.status == "creating":  # not started meanwhile by another copy (checkout retry, stuck sweep)
            locked.status, locked.failure_reason = "failed", f"could not start: {type(exc).__name__}"[:255]
            if order.status == states.PENDING and cancel_on_failure:
                orders.move(order, states.CANCELLED, "system", "The payment could not be started")
        db.session.commit()
        raise PaymentUnavailable() from None
    payment = lock_payment(payment_id)
    if payment.status == "creating":  # another copy may have started it first: keep the id it recorded
        payment.provider_id, payment.status = started.provider_id, "requires_payment"
    db.session.commit()
    return {"id": payment.id, "provider": payment.provider, "client_secret": started.client_secret,
            "redirect_url": started.redirect_url}


LIVE = ("creating", "requires_payment")  # attempts that may still be paid


def latest(order_id: int) -> Payment | None:
    """The order's most recent payment attempt."""
    return db.session.scalar(select(Payment).where(Payment.order_id == order_id).order_by(Payment.id.desc()).limit(1))


def pay_again(order_id: int) -> dict:
    """A new payment attempt for the same pending order and the same stock hold: after a declined card, say.

    Under the order's row lock: an order that is no longer pending, or whose hold has run out, is refused
    (409); an attempt still live (not declined, or its decline not reported yet) is answered again rather
    than doubled, so two presses at once make one new attempt. The provider is called after the commit;
    if it fails, the order and its hold stay as they are (503, try again)."""
    from datetime import datetime, timezone

    order = orders.lock(order_id)
    if order.status != states.PENDING:
        db.session.commit()
        raise ApiError(409, "not_payable", f"This order is {order.status}: there is nothing left to pay.",
                       {"status": order.status})
    expires = orders.hold_expires_at(order.id)
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=timezone.utc)
    if expires is None or expires <= datetime.now(timezone.utc):
        db.session.commit()
        raise ApiError(409, "hold_expired", "The items of this order are no longer held for you. Please add them "
                                            "to your cart and check out again.")
    live = db.session.scalar(select(Payment).where(Payment.order_id == order.id, Payment.status.in_(LIVE))
                             .order_by(Payment.id.desc()).limit(1).with_for_update()
                             .execution_options(populate_existing=True))
    if live is not None and live.status == "requires_payment":
        from shop.checkout.services import payment_answer

        return payment_answer(live)  # commits before asking the provider for its page again
    if live is None:
        live = Payment(order_id=order.id, provider=gateway().name, amount=order.total, currency=order.currency)
        db.session.add(live)
        db.session.add(OrderEvent(order_id=order.id, from_status=order.status, to_status=order.status,
                                  actor="customer", note="New payment attempt"))
    db.session.flush()
    payment_id = live.id
    db.session.commit()
    return start(payment_id, cancel_on_failure=False)


def lock_payment(payment_id: int) -> Payment | None:
    """The payment row, locked (FOR UPDATE, after its order's lock) and re-read under the lock:
    populate_existing replaces a copy this session may already hold, so a waiter never acts on stale amounts."""
    return db.session.get(Payment, payment_id, with_for_update=True, populate_existing=True)


def _is_refusal(exc: Exception) -> bool:
    """The provider answered no (4xx): retrying the same request will not help."""
    import stripe

    return isinstance(exc, (stripe.InvalidRequestError, stripe.CardError))


def _is_our_mistake(exc: Exception) -> bool:
    """Misconfiguration an operator must fix (a wrong key), logged as an error, not a blip."""
    import stripe

    return isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError, stripe.InvalidRequestError))


def _payment_for_intent(intent_id: str) -> tuple[Order, Payment] | None:
    found = db.session.execute(select(Payment.id, Payment.order_id).where(Payment.provider_id == intent_id)).first()
    if found is None:
        return None
    order = orders.lock(found.order_id)
    return order, lock_payment(found.id)


def on_succeeded(intent: dict) -> str:
    """payment_intent.succeeded: confirm the order and turn its reservation into a hard decrement, once.

    A payment that succeeds after its order was cancelled (the reservation expired first) is
    refunded in full and the order stays cancelled: stock that was released may already be sold."""
    found = _payment_for_intent(intent["id"])
    if found is None:
        return "ignored: unknown payment"
    order, payment = found
    if payment.status == "succeeded":
        return "no effect: already succeeded"
    if intent.get("amount") is not None and int(intent["amount"]) != payment.amount:
        # Money moved, but not the order's total: never confirm on it; give it back.
        payment.status, payment.failure_reason = "succeeded", "amount mismatch: refunded"
        if order.status == states.PENDING:
            orders.move(order, states.CANCELLED, payment.provider, "Paid amount did not match the order")
        refund_after_commit(order.id, reason="Paid amount did not match the order", actor="system",
                            payment_id=payment.id)
        return "refunding: amount mismatch"
    paid_before = db.session.scalar(select(Payment.id).where(Payment.order_id == order.id, Payment.id != payment.id,
                                                             Payment.status == "succeeded").limit(1))
    if paid_before is not None:
        # Another attempt (an earlier declined one paid after all, beside "Pay again") already paid this order:
        # this money is given back, whatever the order's status.
        payment.status, payment.failure_reason = "succeeded", "order already paid by another attempt: refunded"
        db.session.add(OrderEvent(order_id=order.id, from_status=order.status, to_status=order.status,
                                  actor=payment.provider, note="A second payment arrived; refunded"))
        refund_after_commit(order.id, reason="The order was already paid", actor="system", payment_id=payment.id)
        return "refunding: order already paid"
    payment.status, payment.failure_reason = "succeeded", None
    if order.status == states.PENDING:
        inventory.consume(order.id)
        orders.move(order, states.CONFIRMED, payment.provider, "Payment received")
        return "confirmed"
    if order.status == states.CANCELLED:
        db.session.add(OrderEvent(order_id=order.id, from_status=order.status, to_status=order.status,
                                         actor=payment.provider, note="Payment arrived after cancellation; refunded"))
        refund_after_commit(order.id, reason="Payment arrived after the order was cancelled", actor="system",
                            payment_id=payment.id)
        return "refunding: order was cancelled"
    return f"no effect: order is {order.status}"


def on_failed(intent: dict) -> str:
    """payment_intent.payment_failed: record it unless the payment already succeeded (events can be late)."""
    found = _payment_for_intent(intent["id"])
    if found is None:
        return "ignored: unknown payment"
    _, payment = found
    if payment.status == "succeeded":
        return "no effect: already succeeded"
    error = (intent.get("last_payment_error") or {}).get("message") or "declined"
    payment.status, payment.failure_reason = "failed", str(error)[:255]
    return "recorded failure"


def on_refunded(charge: dict) -> str:
    """charge.refunded: keep the refunded total in step with the provider's (never lower it)."""
    found = _payment_for_intent(charge.get("payment_intent") or "")
    if found is None:
        return "ignored: unknown payment"
    order, payment = found
    amount = int(charge.get("amount_refunded") or 0)
    if amount <= payment.refunded_amount:
        return "no effect: already recorded"
    payment.refunded_amount = min(amount, payment.amount)
    if order.status == states.RETURNED and payment.refunded_amount >= payment.amount and standing(payment):
        orders.move(order, states.REFUNDED, payment.provider, "Refunded at the provider")
    return "recorded refund"


def refundable(payment: Payment) -> int:
    return payment.amount - payment.refunded_amount if payment.status == "succeeded" else 0


def standing(payment: Payment) -> bool:
    """A payment that pays for its order: not one being given back whole (a second payment of an order already
    paid, or one of the wrong amount), which keeps its reason in failure_reason."""
    return payment.failure_reason is None


def _refund_source(order_id: int, payment_id: int | None):
    """The succeeded payment a refund comes out of: `payment_id`, or the order's standing payment with the most
    left to refund (a payment being given back whole is never picked for a cancellation or a staff refund)."""
    which = select(Payment).where(Payment.order_id == order_id, Payment.status == "succeeded")
    if payment_id is not None:
        which = which.where(Payment.id == payment_id)
    else:
        which = which.where(Payment.failure_reason.is_(None))
    return which.order_by((Payment.amount - Payment.refunded_amount).desc(), Payment.id).limit(1)


def refund(order_id: int, amount: int | None, reason: str, actor: str, payment_id: int | None = None) -> Refund:
    """Refund part or all of an order's payment (see _refund_source). The amount is held
    first (so two refunds at once cannot exceed the payment), the provider is called between transactions,
    then the result stored."""
    order = orders.lock(order_id)
    # Re-read under the lock (populate_existing): refund_remaining_job has loaded this payment unlocked in the
    # same transaction, and a stale refunded_amount would let two refunds pass the check below.
    payment = db.session.scalar(_refund_source(order.id, payment_id).with_for_update()
                                .execution_options(populate_existing=True))
    available = refundable(payment) if payment else 0
    amount = available if amount is None else amount
    if not payment or available <= 0:
        raise ApiError(409, "nothing_to_refund", "This order has no paid amount left to refund.")
    if db.session.scalar(select(Refund.id).where(Refund.payment_id == payment.id, Refund.status == "pending")):
        raise ApiError(409, "refund_pending", "A refund of this order is still waiting for the provider; "
                                              "it is retried automatically.")
    if amount <= 0 or amount > available:
        raise ApiError(422, "validation_failed", f"The refund must be between 1 and {available}.",
                       {"fields": {"amount": f"must be between 1 and {available}"}})
    record = Refund(payment_id=payment.id, amount=amount, reason=reason, actor=actor, status="pending")
    payment.refunded_amount += amount
    db.session.add(record)
    db.session.commit()
    return send_refund(record.id)


def send_refund(refund_id: int) -> Refund:
    """Ask the provider for a pending refund and store the answer.

    The same refund row always carries the same idempotency key, so asking again after a timeout
    (the provider may have refunded already) never pays twice. Only a clear refusal gives the
    held amount back; any other failure leaves the refund pending for retry_pending_refunds()."""
    record = db.session.get(Refund, refund_id)
    payment = db.session.get(Payment, record.payment_id)
    payment_ref, refund_ref = PaymentRef.of(payment), RefundRef.of(record)
    order_id, amount = payment.order_id, record.amount
    db.session.commit()  # no transaction stays open during the provider call
    try:
        result = gateway().refund(payment_ref, refund_ref)
    except Exception as exc:  # noqa: BLE001
        log.log(logging.ERROR if _is_our_mistake(exc) else logging.WARNING, "refund %s failed: %r", refund_id, exc)
        if not _is_refusal(exc):
            raise PaymentUnavailable("The payment provider cannot be reached right now. The refund is recorded "
                                     "as pending and will be retried automatically.") from None
        orders.lock(order_id)
        payment = lock_payment(payment_ref.id)
        record = db.session.get(Refund, refund_id, populate_existing=True)
        record.status = "failed"
        payment.refunded_amount -= amount
        db.session.commit()
        raise ApiError(409, "refund_refused", f"The payment provider refused the refund: "
                                              f"{getattr(exc, 'user_message', None) or exc}"[:300]) from None
    order = orders.lock(order_id)
    record = db.session.get(Refund, refund_id, populate_existing=True)
    if record.status != "pending":  # settled meanwhile by a concurrent retry
        db.session.commit()
        return record
    record.status = "succeeded" if result.status in ("succeeded", "pending") else result.status
    record.provider_refund_id = result.provider_refund_id
    payment = db.session.get(Payment, payment_ref.id, populate_existing=True)
    if order.status == states.RETURNED and payment.refunded_amount >= payment.amount and standing(payment):
        orders.move(order, states.REFUNDED, record.actor, record.reason)
    else:
        notify("order.refunded", order.email, {**orders.mail_payload(order),
                                               "refund": format_money(amount, order.currency)},
               key=f"refund:{record.id}")  # one mail per refund, however many partial refunds
    db.session.commit()
    return record


def retry_pending_refunds(older_than_seconds: int = 120) -> int:
    """Scheduled: ask again for refunds left pending by a timeout or an outage."""
    from datetime import datetime, timedelta, timezone

    cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_seconds)
    ids = db.session.scalars(select(Refund.id).where(Refund.status == "pending", Refund.created_at < cutoff)
                             .order_by(Refund.id).limit(100)).all()
    db.session.commit()
    done = 0
    for refund_id in ids:
        try:
            send_refund(refund_id)
            done += 1
        except ApiError:
            pass  # still unreachable (stays pending) or refused (now failed); the log says which
    return done


def refund_after_commit(order_id: int, reason: str, actor: str, payment_id: int | None = None) -> None:
    """Refund what is left of an order's payment (or of payment `payment_id`), in a job after this transaction
    commits."""
    from rq import Retry

    extra = {"payment_id": payment_id} if payment_id is not None else {}
    after_commit("default", refund_remaining_job, order_id, reason, actor,
                 retry=Retry(max=5, interval=[30, 60, 300, 900, 3600]), **extra)


def refund_remaining_job(order_id: int, reason: str, actor: str, payment_id: int | None = None) -> str:
    """RQ job (default queue): idempotent, as a refund of nothing left does nothing."""
    payment = db.session.scalar(_refund_source(order_id, payment_id))
    if payment is None or refundable(payment) <= 0:
        return "nothing to refund"
    refund(order_id, None, reason, actor, payment_id=payment.id)
    return "refunded"
