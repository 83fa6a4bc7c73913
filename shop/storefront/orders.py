"""Order pages for shoppers: history for accounts, detail for owners, for guests holding the token, and for
anyone holding a signed link from an order mail (`?k=`, ORDER_LINK_MAX_AGE_DAYS)."""

from __future__ import annotations

from datetime import UTC

from flask import abort, current_app, flash, make_response, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required

from shop import clock
from shop.accounts.forms import ActionForm
from shop.errors import DomainError
from shop.orders import services as orders
from shop.orders import states
from shop.storefront import bp

GUEST_ORDERS = "guest_orders"  # {order id: access token} for orders placed in this browser
ORDER_LINKS = "order_links"  # {order id: signed link key} for orders opened from a mail in this browser


def forget_orders() -> None:
    """Log-out: this browser keeps no key to any order (guest tokens or mailed links)."""
    session.pop(GUEST_ORDERS, None)
    session.pop(ORDER_LINKS, None)


@bp.app_template_global("address_lines")
def _address_lines(address):
    from shop.geo import address_lines

    return address_lines(address)


def remember_guest_order(order_id: int, token: str) -> None:
    tokens = dict(session.get(GUEST_ORDERS, {}))
    tokens[str(order_id)] = token
    session[GUEST_ORDERS] = dict(list(tokens.items())[-20:])


def _remember_link(order_id: int, key: str) -> None:
    keys = dict(session.get(ORDER_LINKS, {}))
    keys.pop(str(order_id), None)
    keys[str(order_id)] = key
    session[ORDER_LINKS] = dict(list(keys.items())[-20:])


def _own(order_id: int) -> bool:
    """Whether this visitor may see the order without a mailed link: its owner logged in, or the guest's token."""
    token = session.get(GUEST_ORDERS, {}).get(str(order_id))
    user = current_user if current_user.is_authenticated else None
    try:
        orders.for_reader(order_id, user=user, token=token)
    except DomainError:
        return False
    return True


def _readable(order_id: int):
    token = request.args.get("token") or session.get(GUEST_ORDERS, {}).get(str(order_id))
    user = current_user if current_user.is_authenticated else None
    try:
        return orders.for_reader(order_id, user=user, token=token)
    except DomainError:
        pass
    key = session.get(ORDER_LINKS, {}).get(str(order_id))
    if key:
        try:
            return orders.order_from_link(order_id, key)
        except orders.OrderLinkProblem:
            pass
    abort(404)


def _link_problem(reason: str):
    """A mail's order link that is too old or not valid: say so, and what to do instead."""
    days = current_app.config.get("ORDER_LINK_MAX_AGE_DAYS", 30)
    resp = make_response(
        render_template("orders/link_problem.html", reason=reason, days=days), 410 if reason == "expired" else 404
    )
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def _hold(order):
    """(expires at, minutes left) of a pending order's stock hold, or None once it has run out."""
    if order.status != states.PENDING:
        return None
    expires = orders.hold_expires_at(order.id)
    if expires is None:
        return None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    seconds = (expires - clock.now()).total_seconds()
    if seconds <= 0:
        return None
    return expires, max(1, int(seconds // 60))


def _mask(email: str) -> str:
    """a***@example.com: enough to recognise one's address on a shared screen."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


@bp.get("/orders/<int:order_id>")
def order_detail(order_id: int):
    if request.args.get("k"):  # a signed link from a mail: it opens this order in any browser
        try:
            order = orders.order_from_link(order_id, request.args["k"])
        except orders.OrderLinkProblem as exc:
            if _own(order_id):  # an old mail, opened where the order is this visitor's anyway: just show it
                return redirect(url_for("storefront.order_detail", order_id=order_id), 303)
            return _link_problem(exc.reason)
        _remember_link(order.id, request.args["k"])
        # The key leaves the address bar (and the history); this browser keeps it in its session.
        return redirect(
            url_for(
                "storefront.order_detail",
                order_id=order.id,
                **{k: v for k, v in request.args.items() if k in ("paid", "placed")},
            ),
            303,
        )
    order = _readable(order_id)
    if request.args.get("token"):
        remember_guest_order(order.id, request.args["token"])
    from shop.payments import services as payments
    from shop.payments.models import PaymentStatus

    attempt = payments.latest(order.id)
    hold = _hold(order)
    just_paid = request.args.get("paid")
    # A declined card: the attempt failed, or (Stripe's hosted page, which stays open for another card) it carries
    # the decline while still payable.
    declined = just_paid == "decline" or (
        attempt is not None
        and (
            attempt.status == PaymentStatus.FAILED
            or (attempt.status == PaymentStatus.REQUIRES_PAYMENT and bool(attempt.failure_reason))
        )
    )
    owner = current_user.is_authenticated and order.user_id == current_user.id
    resp = make_response(
        render_template(
            "orders/detail.html",
            order=order,
            action=ActionForm(),
            can_cancel=states.can_cancel(order.status),
            just_paid=just_paid,
            just_placed=request.args.get("placed") == "1",
            hold=hold,
            declined=declined,
            can_pay=hold is not None and order.status == states.PENDING,
            owner=owner,
            masked_email=_mask(order.email),
            payment_processing=attempt is not None and attempt.status == PaymentStatus.PROCESSING,
            shipping_note=next(
                (e.note for e in reversed(order.events) if e.to_status == states.SHIPPED and e.note), None
            ),
        )
    )
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


@bp.post("/orders/<int:order_id>/cancel")
def cancel_order(order_id: int):
    """The second step of "Cancel this order" (the order page asks first, in a <details>, without JavaScript)."""
    order = _readable(order_id)
    if ActionForm().validate_on_submit():
        try:
            orders.cancel_by_customer(order)
            flash("Your order is cancelled.", "success")
        except DomainError as exc:
            flash(exc.message, "error")
    return redirect(url_for("storefront.order_detail", order_id=order.id))


@bp.post("/orders/<int:order_id>/pay")
def pay_again(order_id: int):
    """A new payment attempt for a pending order whose stock is still held (after a declined card, say)."""
    from shop.payments import services as payments

    order = _readable(order_id)
    if not ActionForm().validate_on_submit():
        flash("Please press “Pay again” once more.", "error")
        return redirect(url_for("storefront.order_detail", order_id=order.id))
    try:
        answer = payments.pay_again(order.id, hosted=True)  # Stripe's own page in Stripe mode
    except DomainError as exc:
        flash(exc.message, "error")
        return redirect(url_for("storefront.order_detail", order_id=order.id))
    if answer.get("redirect_url"):
        return redirect(answer["redirect_url"], 303)
    if payments.checkout_state(order.id) != "waiting":  # it was paid (or submitted) on the page meanwhile
        return redirect(url_for("storefront.order_detail", order_id=order.id), 303)
    flash("A new payment is ready. We will confirm your order once it goes through.", "success")
    return redirect(url_for("storefront.order_detail", order_id=order.id), 303)


@bp.get("/account/orders")
@login_required
def order_history():
    items, total = orders.of_user(current_user.id, per_page=50)
    resp = make_response(render_template("orders/history.html", orders=items, total=total))
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
