"""The cart in the storefront: add from the product page, change and remove lines, and hand a guest's
cart over to their account when they log in.

A guest's cart is held by its secret token in the session ("cart_token", with its id beside it, since
the cart service finds carts by id and checks the token); a logged-in shopper's cart is their open
cart. Every rule (quantities, stock, prices) is the cart service's: its refusals become messages.

Product pages are cached publicly, so the add-to-cart form there cannot carry a visitor's CSRF token.
`POST /cart/items` therefore checks the token itself: with a valid one (filled in by the product
page's script from `/csrf-token`, or from the confirmation page) it adds the item; without one it
changes nothing and shows a private page asking to confirm, whose form does carry the token.
"""

from __future__ import annotations

from flask import current_app, flash, jsonify, make_response, redirect, render_template, request, session, url_for
from flask_login import current_user
from flask_wtf.csrf import generate_csrf

from shop import pricing, ratelimit
from shop.cart import services as carts
from shop.cart.models import Cart, CartStatus
from shop.catalog import queries
from shop.errors import DomainError, TooMany
from shop.extensions import csrf, db
from shop.inventory.services import OutOfStock
from shop.promotions import rules
from shop.security import is_own_url
from shop.storefront import bp
from shop.storefront.forms import AddToCartForm, QuantityForm
from shop.uow import unit_of_work

CART_TOKEN = "cart_token"  # a guest cart's secret token
CART_ID = "cart_id"  # and its id


def private(html: str, status: int = 200):
    """A page for this visitor alone: never stored by a browser cache or a CDN."""
    resp = make_response(html, status)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def label(name: str, options: dict | None) -> str:
    """ "Trail Runner (42, Black)": how messages name a line."""
    values = ", ".join(str(v) for v in (options or {}).values())
    return f"{name} ({values})" if values else name


# ---------------------------------------------------------------------------------- whose cart


def forget_guest_cart() -> None:
    session.pop(CART_TOKEN, None)
    session.pop(CART_ID, None)


def _guest_cart() -> Cart | None:
    cart_id, token = session.get(CART_ID), session.get(CART_TOKEN)
    if not (cart_id and token):
        return None
    try:
        return carts.for_reader(cart_id, token=token)
    except DomainError:
        return None


def visitor_cart(*, create: bool = False) -> Cart | None:
    """This visitor's open cart; a new one when `create` and there is none."""
    if current_user.is_authenticated:
        user = current_user._get_current_object()
        if session.get(CART_TOKEN):  # a guest cart from before a log-in that did not go through our form
            adopt_guest_cart(user)
        return carts.create(user) if create else carts.open_cart_of(user.id)
    cart = _guest_cart()
    if cart is not None and cart.status == CartStatus.OPEN:
        return cart
    if session.get(CART_TOKEN):
        forget_guest_cart()  # checked out, merged or gone: the next item starts a new cart
    if not create:
        return None
    cart = carts.create()
    session[CART_ID], session[CART_TOKEN] = str(cart.id), cart.token
    return cart


def adopt_guest_cart(user) -> None:
    """On log-in: merge the session's guest cart into the user's cart, then drop its token.

    Quantities add up, capped by what is in stock (the cart service's rule); the shopper is told
    which lines came out lower than they had asked."""
    token = session.get(CART_TOKEN)
    if not token:
        return
    guest = _guest_cart()
    wanted: dict[int, int] = {}
    if guest is not None and guest.status == CartStatus.OPEN and guest.items:
        mine = carts.open_cart_of(user.id)
        for item in mine.items if mine else []:
            wanted[item.variant_id] = item.quantity
        for item in guest.items:
            wanted[item.variant_id] = min(wanted.get(item.variant_id, 0) + item.quantity, carts.MAX_QUANTITY)
    # Only reads so far. End this transaction so the merge's row locks read the carts afresh
    # (a SELECT ... FOR UPDATE does not refresh objects already loaded in the session).
    db.session.commit()
    forget_guest_cart()
    try:
        with unit_of_work():
            target = carts.merge(token, user)
    except DomainError:  # the guest cart is gone: nothing to merge
        return
    if not wanted:
        return
    have = {item.variant_id: item.quantity for item in target.items}
    names = {line.variant_id: label(line.name, line.options) for line in carts.priced_lines(target)}
    lowered = [f"{names.get(vid, 'an item')}: {have.get(vid, 0)}" for vid, n in wanted.items() if have.get(vid, 0) < n]
    if lowered:
        flash(
            "We added the items from before you logged in to your cart, but some are short in stock, so "
            f"their quantities are lower than you asked: {'; '.join(lowered)}.",
            "info",
        )
    else:
        flash("The items you added before logging in are in your cart.", "info")


# ------------------------------------------------------------------------------------- messages


def problem_text(exc: DomainError) -> str:
    """A sentence for a service's refusal: its field problems if it has them, else its message."""
    fields = exc.details.get("fields") if isinstance(exc.details, dict) else None
    if not fields:
        return exc.message
    sentences = []
    for name, problem in fields.items():
        problem = str(problem)
        if problem.startswith(("must ", "is ", "has ", "was ")):  # "quantity" + "must be ..."
            sentences.append(f"{name.replace('_', ' ').capitalize()} {problem}.")
        else:  # a sentence of its own: "a cart holds at most 100 of one item"
            sentences.append(f"{problem[:1].upper()}{problem[1:]}.")
    return " ".join(sentences)


def slow_down_text(exc: DomainError) -> str:
    """The storefront's sentence for a 429: what was refused and how long to wait."""
    retry_after = int(getattr(exc, "retry_after", None) or exc.details.get("retry_after") or 60)
    return f"{exc.message.split(';')[0]}. Please wait {ratelimit.wait_text(retry_after)} and try again."


def _too_fast():
    """Count a cart change against RATE_CART_WRITES_PER_IP; a redirect with a message past it, else None."""
    try:
        ratelimit.enforce("RATE_CART_WRITES_PER_IP", message="You are changing your cart very quickly")
    except ratelimit.RateLimited as exc:
        flash(slow_down_text(exc), "error")
        return redirect(url_for("storefront.cart_page"), 303)
    return None


def _line_of(cart: Cart, *, sku: str | None = None, item_id: int | None = None):
    """(cart item, priced line) for a SKU or an item id, or (None, None)."""
    items = {item.variant_id: item for item in cart.items}
    for line in carts.priced_lines(cart):
        item = items.get(line.variant_id)
        if item is not None and (line.sku == sku or item.id == item_id):
            return item, line
    return None, None


def _variant_named(product_slug: str | None, sku: str):
    """(product, variant) for a SKU of the product named on the form, to say what is being added."""
    product = queries.product_by_slug(product_slug) if product_slug else None
    variant = next((v for v in product.variants if v.sku == sku), None) if product else None
    return (product, variant) if variant else (None, None)


# ---------------------------------------------------------------------------------------- pages


@bp.get("/csrf-token")
def csrf_token():
    """A CSRF token for this visitor's session, for forms on publicly cached pages (see above)."""
    resp = jsonify({"csrf_token": generate_csrf()})
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


@bp.get("/cart")
def cart_page():
    cart = visitor_cart()
    lines, totals, applied = [], None, None
    if cart is not None and cart.items:
        # an estimate: standard shipping, tax once the address is known
        priced = carts.quote(
            cart, shipping_method="standard", user=current_user if current_user.is_authenticated else None
        )
        totals, applied = priced.totals, priced.applied
        items = {item.variant_id: item for item in cart.items}
        thumbs = carts.thumbnails(items)
        for line in totals.lines:
            item = items[line.variant_id]
            lines.append(
                {
                    "item_id": item.id,
                    "name": line.name,
                    "options": line.options,
                    "sku": line.sku,
                    "label": label(line.name, line.options),
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "line_total": line.line_total,
                    "list_price": line.list_price,
                    "saving": line.saving,
                    "image": thumbs.get(line.variant_id),
                    "slug": item.variant.product.slug,
                    "available": item.variant.available,
                }
            )
    _, standard_price, _ = pricing.SHIPPING_METHODS["standard"]
    return private(
        render_template(
            "cart/cart.html",
            cart=cart,
            lines=lines,
            totals=totals,
            form=QuantityForm(),
            applied=applied,
            coupon_message=(applied.error_message or rules.MESSAGES.get(applied.error))
            if applied and applied.error
            else None,
            sale_saving=sum(line["saving"] * line["quantity"] for line in lines),
            count=sum(line["quantity"] for line in lines),
            standard_price=standard_price,
            free_over=current_app.config["FREE_SHIPPING_THRESHOLD"],
        )
    )


@bp.post("/cart/items")
@csrf.exempt  # checked below: a POST without a valid token changes nothing (module docstring)
def add_to_cart():
    form = AddToCartForm()
    valid = form.validate()
    token_field = getattr(form, "csrf_token", None)
    if token_field is not None and token_field.errors:
        return _confirm_add(form)
    if not valid:
        flash(
            "Enter how many you want, as a whole number."
            if form.quantity.errors
            else "Choose the options you want, then add the item again.",
            "error",
        )
        return redirect(request.referrer if _same_site(request.referrer) else url_for("storefront.cart_page"), 303)
    sku, quantity = form.sku.data, form.quantity.data
    if refused := _too_fast():
        return refused
    try:
        cart = visitor_cart(create=True)
    except ratelimit.RateLimited as exc:  # too many new carts from this network
        flash(slow_down_text(exc), "error")
        return redirect(url_for("storefront.cart_page"), 303)
    try:
        with unit_of_work():
            carts.add_item(cart, sku, quantity)
    except OutOfStock as exc:
        _add_what_is_left(cart, sku, form.product.data, exc)
        return redirect(url_for("storefront.cart_page"), 303)
    except DomainError as exc:
        flash(
            "That item is no longer for sale." if exc.code == carts.CartErrorCode.SKU_NOT_FOUND else problem_text(exc),
            "error",
        )
        return redirect(url_for("storefront.cart_page"), 303)
    _, line = _line_of(cart, sku=sku)
    name = label(line.name, line.options) if line else sku
    flash(f"Added {quantity} × {name} to your cart.", "success")
    return redirect(url_for("storefront.cart_page"), 303)


def _add_what_is_left(cart: Cart, sku: str, product_slug: str | None, exc: DomainError) -> None:
    """More was asked than is in stock: put in what is left, and say so."""
    available = int((exc.details.get("available") or {}).get(sku, 0))
    item, line = _line_of(cart, sku=sku)
    in_cart = item.quantity if item else 0
    if line is not None:
        name = label(line.name, line.options)
    else:
        product, variant = _variant_named(product_slug, sku)
        name = label(product.name, variant.options) if variant else f"the item {sku}"
    room = min(available, carts.MAX_QUANTITY) - in_cart
    if room > 0:
        try:
            with unit_of_work():
                carts.add_item(cart, sku, room)
        except DomainError as again:  # the last units went in the meantime
            flash(problem_text(again), "error")
            return
        flash(
            f"Only {available} of {name} {'is' if available == 1 else 'are'} available, so we added {room}: "
            f"your cart now holds {in_cart + room}.",
            "info",
        )
    elif available == 0:
        flash(f"Sorry, {name} is sold out.", "error")
    else:
        flash(f"Your cart already holds all {available} of {name} that we have.", "info")


def _confirm_add(form: AddToCartForm):
    """No valid CSRF token came with the item: ask, on a private page whose form carries one."""
    product, variant = _variant_named(form.product.data, form.sku.data or "")
    quantity = form.quantity.data if isinstance(form.quantity.data, int) and form.quantity.data > 0 else 1
    return private(
        render_template(
            "cart/confirm_add.html",
            form=AddToCartForm(formdata=None, sku=form.sku.data, product=form.product.data, quantity=quantity),
            product=product,
            variant=variant,
            quantity=quantity,
        )
    )


def _same_site(url: str | None) -> bool:
    return is_own_url(url)  # PUBLIC_BASE_URL's host, or a host TRUSTED_HOSTS let in


@bp.post("/cart/items/<int:item_id>")
def update_cart_item(item_id: int):
    form = QuantityForm()
    cart = visitor_cart()
    if cart is None:
        return redirect(url_for("storefront.cart_page"), 303)
    if refused := _too_fast():
        return refused
    if not form.validate_on_submit():
        flash("Enter a quantity as a whole number.", "error")
        return redirect(url_for("storefront.cart_page"), 303)
    quantity = form.quantity.data
    item, line = _line_of(cart, item_id=item_id)
    name = label(line.name, line.options) if line else "the item"
    if quantity == 0 and item is not None:  # 0 means "none of these"
        return _remove(cart, item_id, name)
    try:
        with unit_of_work():
            carts.set_quantity(cart, item_id, quantity)
    except DomainError as exc:
        if isinstance(exc, OutOfStock) and item is not None:
            available = min(int((exc.details.get("available") or {}).get(line.sku, 0)), carts.MAX_QUANTITY)
            if available > 0:
                with unit_of_work():
                    carts.set_quantity(cart, item_id, available)
                flash(
                    f"Only {available} of {name} {'is' if available == 1 else 'are'} available, so the "
                    f"quantity is now {available}.",
                    "info",
                )
            else:
                flash(f"Sorry, {name} is sold out now. Remove it to check out.", "error")
        else:
            flash(problem_text(exc), "error")
        return redirect(url_for("storefront.cart_page"), 303)
    flash(f"Updated: {quantity} × {name}.", "success")
    return redirect(url_for("storefront.cart_page"), 303)


@bp.post("/cart/items/<int:item_id>/remove")
def remove_cart_item(item_id: int):
    cart = visitor_cart()  # (the CSRF token was checked before this view runs, as for every POST)
    if cart is None:
        return redirect(url_for("storefront.cart_page"), 303)
    if refused := _too_fast():
        return refused
    _, line = _line_of(cart, item_id=item_id)
    return _remove(cart, item_id, label(line.name, line.options) if line else "the item")


def _remove(cart: Cart, item_id: int, name: str):
    try:
        with unit_of_work():
            carts.remove_item(cart, item_id)
    except DomainError as exc:
        flash(problem_text(exc), "error")
    else:
        flash(f"Removed {name} from your cart.", "success")
    return redirect(url_for("storefront.cart_page"), 303)


# ------------------------------------------------------------------------------------- coupons


@bp.post("/cart/coupon")
def apply_coupon():
    """Apply a code (the CSRF token was checked before this view runs); say exactly why one fails."""
    cart = visitor_cart()
    if cart is None or not cart.items:
        flash("Add something to your cart before applying a code.", "error")
        return redirect(url_for("storefront.cart_page"), 303)
    code = (request.form.get("code") or "").strip()
    if not code:
        flash("Enter a code to apply.", "error")
        return redirect(url_for("storefront.cart_page"), 303)
    try:
        with unit_of_work():
            cart = carts.apply_coupon(
                cart, code, request.remote_addr or "unknown", current_user if current_user.is_authenticated else None
            )
    except DomainError as exc:
        if isinstance(exc, TooMany):
            minutes = max(1, round(int(exc.details.get("retry_after", 60)) / 60))
            flash(
                f"Too many codes tried. Please wait about {minutes} minute{'s' if minutes != 1 else ''} and try again.",
                "error",
            )
        else:
            flash(f"The code {code.upper()!s} was not applied: {problem_text(exc)}", "error")
        return redirect(url_for("storefront.cart_page"), 303)
    flash(f"The code {cart.coupon_code} was applied.", "success")
    return redirect(url_for("storefront.cart_page"), 303)


@bp.post("/cart/coupon/remove")
def remove_coupon():
    cart = visitor_cart()
    if cart is not None and cart.coupon_code:
        code = cart.coupon_code
        try:
            with unit_of_work():
                carts.remove_coupon(cart)
        except DomainError as exc:
            flash(problem_text(exc), "error")
            return redirect(url_for("storefront.cart_page"), 303)
        flash(f"The code {code} was removed.", "info")
    return redirect(url_for("storefront.cart_page"), 303)
