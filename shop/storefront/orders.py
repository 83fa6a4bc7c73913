"""Order pages for shoppers: history for accounts, detail for owners and for guests holding the token."""
from __future__ import annotations

from flask import abort, make_response, render_template, request, session
from flask_login import current_user, login_required

from shop.accounts.forms import ActionForm
from shop.errors import ApiError
from shop.orders import services as orders
from shop.orders import states
from shop.storefront import bp

GUEST_ORDERS = "guest_orders"  # {order id: access token} for orders placed in this browser


def remember_guest_order(order_id: int, token: str) -> None:
    tokens = dict(session.get(GUEST_ORDERS, {}))
    tokens[str(order_id)] = token
    session[GUEST_ORDERS] = dict(list(tokens.items())[-20:])


def _readable(order_id: int):
    token = request.args.get("token") or session.get(GUEST_ORDERS, {}).get(str(order_id))
    user = current_user if current_user.is_authenticated else None
    try:
        return orders.for_reader(order_id, user=user, token=token)
    except ApiError:
        abort(404)


@bp.get("/orders/<int:order_id>")
def order_detail(order_id: int):
    order = _readable(order_id)
    if request.args.get("token"):
        remember_guest_order(order.id, request.args["token"])
    resp = make_response(render_template("orders/detail.html", order=order, action=ActionForm(),
                                         can_cancel=states.can_cancel(order.status),
                                         just_paid=request.args.get("paid")))
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


@bp.post("/orders/<int:order_id>/cancel")
def cancel_order(order_id: int):
    from flask import flash, redirect, url_for

    order = _readable(order_id)
    if ActionForm().validate_on_submit():
        try:
            orders.cancel_by_customer(order)
            flash("Your order is cancelled.", "success")
        except ApiError as exc:
            flash(exc.message, "error")
    return redirect(url_for("storefront.order_detail", order_id=order.id))


@bp.get("/account/orders")
@login_required
def order_history():
    items, total = orders.of_user(current_user.id, per_page=50)
    resp = make_response(render_template("orders/history.html", orders=items, total=total))
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
