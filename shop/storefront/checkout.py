"""Checkout in the storefront: details (e-mail, address, shipping method) -> review -> place and pay.

The details are kept in the session between the steps. Placing the order is the checkout service's
work; this view adds the storefront's double-submit guard: the review page's form carries a one-time
nonce, claimed with shop.idempotency under "storefront-checkout:<cart id>", so a double click (or a
resent page) answers like the first press instead of placing a second order.
"""

from __future__ import annotations

import secrets

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from shop import geo, idempotency, pricing
from shop.cart import services as carts
from shop.checkout import services as checkout
from shop.errors import Conflict, DomainError, Invalid, TooMany, ValidationError, error_body
from shop.money import format_money
from shop.storefront import bp
from shop.storefront.cart import (
    CART_TOKEN,
    forget_guest_cart,
    label,
    private,
    problem_text,
    slow_down_text,
    visitor_cart,
)
from shop.storefront.forms import ADDRESS_FIELDS, NEW_ADDRESS, CheckoutForm, PlaceOrderForm
from shop.storefront.orders import remember_guest_order
from shop.uow import unit_of_work

CHECKOUT = "checkout"  # the session's {email, address, address_id, shipping_method} between the steps
PLACED = "checkout_placed"  # {nonce, order_id, redirect_url} of the last order placed from this session
WAIT_FOR_FIRST_PRESS = 15.0  # seconds a second press waits for the first one's answer


def _user():
    return current_user._get_current_object() if current_user.is_authenticated else None


def _cart_to_check_out():
    cart = visitor_cart()
    if cart is None or not cart.items:
        return None
    return cart


def _empty_cart():
    flash("Your cart is empty: add something first.", "info")
    return redirect(url_for("storefront.cart_page"), 303)


# -------------------------------------------------------------------------------- step 1: details


def _address_text(a) -> str:
    parts = [a.name, a.line1, a.line2, f"{a.postal_code} {a.city}".strip(), a.region, geo.country_name(a.country)]
    return ", ".join(p for p in parts if p)


def _form(cart, *, from_request: bool) -> CheckoutForm:
    user = _user()
    addresses = list(user.addresses) if user else []
    if from_request:
        form = CheckoutForm()
    else:  # prefilled: from the details given before, else from the account
        saved = session.get(CHECKOUT) or {}
        address = saved.get("address") or {}
        values = {name: address.get(name, "") for name in ADDRESS_FIELDS} if not saved.get("address_id") else {}
        choice = (
            str(saved["address_id"])
            if saved.get("address_id")
            else (NEW_ADDRESS if saved.get("address") or not addresses else str(addresses[0].id))
        )
        form = CheckoutForm(
            formdata=None,
            email=saved.get("email") or (user.email if user else ""),
            shipping_method=saved.get("shipping_method", "standard"),
            saved_address=choice,
            **values,
        )
    subtotal = sum(line.line_total for line in carts.priced_lines(cart))
    free_over = current_app.config["FREE_SHIPPING_THRESHOLD"]
    choices = []
    for key, (text, _price, _free) in pricing.SHIPPING_METHODS.items():
        cost = pricing.shipping_cost(key, subtotal, free_over)
        choices.append((key, f"{text}: {'free' if cost == 0 else format_money(cost, cart.currency)}"))
    form.shipping_method.choices = choices
    form.saved_address.choices = [(str(a.id), _address_text(a)) for a in addresses] + [(NEW_ADDRESS, "A new address")]
    form.addresses = addresses
    return form


def _details(form: CheckoutForm) -> dict | None:
    """The checked details, or None with the problems attached to the form's fields."""
    address, address_id = form.address(), None
    if form.uses_saved_address():
        chosen = next((a for a in form.addresses if str(a.id) == form.saved_address.data), None)
        if chosen is None:  # not one of this shopper's addresses
            form.saved_address.errors = ["Choose one of your saved addresses, or “A new address”."]
            return None
        address, address_id = {name: getattr(chosen, name) or "" for name in ADDRESS_FIELDS}, chosen.id
        if address["country"] in form.regional and not address["region"]:  # its tax depends on the state
            form.saved_address.errors = [
                "That saved address has no state, which sets the sales tax: choose "
                "“A new address” and enter it with its state."
            ]
            return None
    try:
        email, address, _, method = checkout.validate(form.email.data, address, None, form.shipping_method.data)
    except ValidationError as exc:
        for name, problem in exc.details.get("fields", {}).items():
            key = name.split(".", 1)[-1]
            message = f"This {key.replace('_', ' ')} {problem}."
            if address_id and name.startswith("shipping_address."):
                form.saved_address.errors = list(form.saved_address.errors) + [f"That saved address: {message}"]
            elif key == "region" and "state" in form and address.get("country") in form.regional:
                form.state.errors = list(form.state.errors) + [message]
            elif key in form:
                form[key].errors = list(form[key].errors) + [message]
            else:
                flash(message, "error")
        return None
    return {"email": email, "address": address, "address_id": address_id, "shipping_method": method}


def _details_page(form: CheckoutForm, cart, status: int = 200):
    lines = carts.priced_lines(cart)
    return private(
        render_template(
            "checkout/details.html",
            form=form,
            cart=cart,
            lines=lines,
            thumbs=carts.thumbnails(line.variant_id for line in lines),
        ),
        status,
    )


@bp.get("/checkout")
def checkout_details():
    cart = _cart_to_check_out()
    if cart is None:
        return _empty_cart()
    return _details_page(_form(cart, from_request=False), cart)


# --------------------------------------------------------------------------------- step 2: review


@bp.route("/checkout/review", methods=["GET", "POST"])
def checkout_review():
    cart = _cart_to_check_out()
    if cart is None:
        return _empty_cart()
    if request.method == "POST":  # the details form
        form = _form(cart, from_request=True)
        details = _details(form) if form.validate_on_submit() else None
        if details is None:
            return _details_page(form, cart, 422)
        session[CHECKOUT] = details
        return redirect(url_for("storefront.checkout_review"), 303)
    details = session.get(CHECKOUT)
    if not details:
        return redirect(url_for("storefront.checkout_details"), 303)
    address = details["address"]
    totals = carts.quote(
        cart,
        shipping_method=details["shipping_method"],
        country=address["country"],
        region=address.get("region"),
        user=current_user if current_user.is_authenticated else None,
        email=details.get("email"),
    ).totals
    place = PlaceOrderForm(formdata=None, cart_id=str(cart.id), nonce=secrets.token_urlsafe(18))
    return private(
        render_template(
            "checkout/review.html",
            cart=cart,
            totals=totals,
            details=details,
            form=place,
            method_label=pricing.SHIPPING_METHODS[details["shipping_method"]][0],
            thumbs=carts.thumbnails(line.variant_id for line in totals.lines),
            sale_saving=sum(line.saving * line.quantity for line in totals.lines),
        )
    )


# ---------------------------------------------------------------------------------- step 3: place


@bp.post("/checkout/place")
def checkout_place():
    form = PlaceOrderForm()
    last = session.get(PLACED) or {}
    if form.nonce.data and last.get("nonce") == form.nonce.data:  # this page was sent before, and worked
        return _go_pay(last)
    details = session.get(CHECKOUT)
    if not details:
        flash("Please fill in your details first.", "info")
        return redirect(url_for("storefront.checkout_details"), 303)
    if not form.validate_on_submit():
        flash("Please check your order and press “Place order and pay” again.", "error")
        return redirect(url_for("storefront.checkout_review"), 303)
    user = _user()
    try:  # the cart on the form, if it is this visitor's (checked out already or not)
        cart = carts.for_reader(form.cart_id.data, user=user, token=None if user else session.get(CART_TOKEN))
    except DomainError:
        flash("Your cart has changed since that page was shown. Please check it and try again.", "error")
        return redirect(url_for("storefront.cart_page"), 303)
    cart_id, nonce = str(cart.id), form.nonce.data
    scope = f"storefront-checkout:{cart_id}"
    try:
        # The nonce is this page's Idempotency-Key: a second press waits for the first, then answers as it did; a
        # business refusal (409) is the nonce's answer too, anything else may be tried again with the same page.
        # What a refusal left half-made is rolled back (unit_of_work): none of it may ride along with a later commit.
        with (
            unit_of_work(),
            idempotency.once(scope, nonce, {"cart_id": cart_id, **details}, wait=WAIT_FOR_FIRST_PRESS) as claim,
        ):
            if claim.repeat:
                status, body = claim.repeat
                return _placed(body, nonce) if status == 201 else _refused(body, cart)
            placed = checkout.place_order(
                cart_id=cart.id,
                cart_token=cart.token if user is None else None,
                user=user,
                email=details["email"],
                shipping_address=details["address"],
                shipping_method=details["shipping_method"],
                claim=claim,
                hosted=True,
            )
            body = {
                "order_id": placed.order.id,
                "access_token": placed.access_token,
                "redirect_url": placed.payment.get("redirect_url"),
            }
            claim.answer(201, body)
    except idempotency.RequestInProgress:
        flash(
            "Your order is still being placed. Please wait a moment, then look at your orders or "
            "your e-mail before trying again.",
            "info",
        )
        return redirect(url_for("storefront.checkout_review"), 303)
    except DomainError as exc:
        if exc.code == idempotency.IdempotencyErrorCode.KEY_REUSED:  # the details changed in another tab
            flash("Your details changed since that page was shown. Please check the order again.", "info")
            return redirect(url_for("storefront.checkout_review"), 303)
        if isinstance(exc, Conflict):
            return _refused(error_body(exc.code, exc.message, exc.details), cart)
        if exc.code == checkout.CheckoutErrorCode.CART_EMPTY:
            return _empty_cart()
        flash(slow_down_text(exc) if isinstance(exc, TooMany) else problem_text(exc), "error")
        if isinstance(exc, Invalid):
            return redirect(url_for("storefront.checkout_details"), 303)
        return redirect(url_for("storefront.checkout_review"), 303)
    return _placed(body, nonce)


def _placed(body: dict, nonce: str):
    if body.get("access_token"):  # a guest's key to their order page
        remember_guest_order(body["order_id"], body["access_token"])
    forget_guest_cart()
    session.pop(CHECKOUT, None)
    session[PLACED] = {"nonce": nonce, "order_id": body["order_id"], "redirect_url": body.get("redirect_url")}
    return _go_pay(body)


def _go_pay(body: dict):
    if body.get("redirect_url"):
        return redirect(body["redirect_url"], 303)
    flash("Your order is placed. We will confirm it once the payment goes through.", "success")
    return redirect(url_for("storefront.order_detail", order_id=body["order_id"], placed=1), 303)


def _refused(answer: dict, cart):
    refusal = answer.get("error", answer)  # the stored answer in the API's error shape (or an older bare one)
    if refusal.get("code") == "out_of_stock":
        available = refusal.get("details", {}).get("available") or {}
        names = {line.sku: label(line.name, line.options) for line in carts.priced_lines(cart)}
        short = [
            f"{names.get(sku, sku)} ({'sold out' if not available.get(sku) else f'only {available[sku]} left'})"
            for sku in refusal.get("details", {}).get("skus", [])
        ]
        flash(
            "Sorry, some items ran short while you were checking out: "
            + "; ".join(short)
            + ". Please change your cart, then check out again.",
            "error",
        )
    elif refusal.get("code") == "hold_limit_reached":  # too much stock held by this shopper's unpaid orders
        flash(f"We could not place this order: {refusal.get('message')}", "error")
    elif str(refusal.get("code", "")).startswith("coupon_"):
        flash(
            f"Your discount code could not be used: {refusal.get('message')} Remove it from your cart to "
            "check out without it.",
            "error",
        )
    else:
        flash(refusal.get("message") or "Your cart cannot be checked out as it is.", "error")
    return redirect(url_for("storefront.cart_page"), 303)
