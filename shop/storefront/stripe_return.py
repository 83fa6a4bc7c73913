"""The shopper's way back from Stripe's hosted Checkout page (Stripe mode).

Stripe sends the browser to /checkout/return/<order id>?result=paid|back&session_id=cs_... . The URL carries no key
to the order: it may be forwarded, screenshotted or left in a shared computer's history. So the order shows only to
the browser that owns it (its account logged in, the guest's key or a mailed link's key in this session) AND only
with the order's own Checkout Session id (the "back" address, which Stripe cannot fill with it, needs ownership only:
it just leads the owner to their own order page); anyone else gets the same neutral thank-you page, whether the
order exists or not (no way to probe order ids).

A paid return usually arrives before Stripe's webhook: the page asks Stripe once (payments.sync_checkout) and, while
the answer is still "waiting", shows "confirming…", which confirming.js polls through /checkout/return/<id>/state.
"""

from __future__ import annotations

import logging

from flask import jsonify, make_response, redirect, render_template, request, session, url_for
from redis.exceptions import RedisError
from sqlalchemy import select

from shop.errors import error_body
from shop.extensions import db, redis_ext
from shop.orders import services as orders
from shop.orders.models import Order
from shop.payments.models import Payment
from shop.storefront import bp
from shop.storefront.orders import ORDER_LINKS, _own

log = logging.getLogger(__name__)

STATES = ("confirmed", "waiting", "processing", "declined", "cancelled")
SYNC_EVERY_SECONDS = 10  # the poll (every 2 s) asks Stripe at most this often per order; the database between


def _private(resp):
    """Only this browser may keep the answer, and the next site learns nothing of the URL (it has the session id)."""
    resp.headers["Cache-Control"] = "private, no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


def _linked(order_id: int) -> bool:
    """This browser opened the order from a mail's signed link (kept in its session), and the link still works."""
    key = session.get(ORDER_LINKS, {}).get(str(order_id))
    if not key:
        return False
    try:
        orders.order_from_link(order_id, key)
    except orders.OrderLinkProblem:
        return False
    return True


def _returning(order_id: int, session_id: str | None, *, session_required: bool = True) -> bool:
    """Whether this browser owns the order and `session_id` is one of the order's Checkout Sessions. False for a
    missing order too: callers answer all of those alike.

    The way back from "← Back" on Stripe's page may come without a session id (Stripe fills {CHECKOUT_SESSION_ID}
    into the success URL only): it just sends the owner to their own order page, which they may open anyway."""
    if not (_own(order_id) or _linked(order_id)):
        return False
    if not session_id:
        return not session_required
    if len(session_id) > 255:
        return False
    return (
        db.session.scalar(
            select(Payment.id).where(Payment.order_id == order_id, Payment.checkout_session_id == session_id)
        )
        is not None
    )


def _sync(order_id: int, session_id: str) -> str:
    """Ask Stripe for the session and apply it (best effort, never raises); outside any open transaction."""
    from shop.payments import services as payments

    db.session.commit()  # only reads so far: nothing of ours stays open while Stripe answers
    state = payments.sync_checkout(order_id, session_id)
    return state if state in STATES else "waiting"


def _may_sync(order_id: int) -> bool:
    """At most one Stripe look-up per order every SYNC_EVERY_SECONDS, however many tabs poll; without Redis, none
    (the webhook still confirms the order, and the page's own reload asks Stripe)."""
    try:
        return bool(redis_ext.client.set(f"checkout-sync:{order_id}", "1", ex=SYNC_EVERY_SECONDS, nx=True))
    except RedisError as exc:
        log.warning("checkout return: no sync throttle (%r)", exc)
        return False


def _order_page(order_id: int, **params):
    return _private(redirect(url_for("storefront.order_detail", order_id=order_id, **params), 303))


def _page(kind: str, **context):
    return _private(make_response(render_template("checkout/returned.html", kind=kind, **context)))


@bp.get("/checkout/return/<int:order_id>")
def stripe_return(order_id: int):
    session_id, paid = request.args.get("session_id"), request.args.get("result") == "paid"
    if not _returning(order_id, session_id, session_required=paid):
        return _page("neutral")
    if not paid:  # "back": the shopper left Stripe's page (or gave up on a card)
        return _order_page(order_id, paid="back")
    state = _sync(order_id, session_id)
    if state == "confirmed":
        return _order_page(order_id, paid="approve")
    if state == "declined":
        return _order_page(order_id, paid="decline")
    if state == "cancelled":
        return _order_page(order_id)
    order = db.session.get(Order, order_id, populate_existing=True)
    here = url_for("storefront.stripe_return", order_id=order_id, result="paid", session_id=session_id)
    if state == "processing":
        return _page("processing", order=order, hold=orders.hold_expires_at(order_id), here=here)
    return _page(
        "confirming",
        order=order,
        here=here,
        state_url=url_for("storefront.stripe_return_state", order_id=order_id, session_id=session_id),
    )


@bp.get("/checkout/return/<int:order_id>/state")
def stripe_return_state(order_id: int):
    """{"state": ...} for confirming.js; 404 in the API's error shape for anyone but the order's owner."""
    session_id = request.args.get("session_id")
    if not _returning(order_id, session_id):
        return _private(make_response(jsonify(error_body("not_found", "No such order here.")), 404))
    from shop.payments import services as payments

    state = _sync(order_id, session_id) if _may_sync(order_id) else payments.checkout_state(order_id)
    return _private(make_response(jsonify({"state": state})))
