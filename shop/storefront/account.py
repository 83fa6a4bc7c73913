"""Shopper accounts in the storefront: sign-up, log-in, log-out, verification, password reset and
change, and the address book. Pages are private (never cached); every form carries a CSRF token."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from shop import ratelimit
from shop.accounts import services, sessions
from shop.accounts.forms import (
    ActionForm,
    AddressForm,
    ChangePasswordForm,
    LoginForm,
    ResetForm,
    ResetRequestForm,
    SignupForm,
)
from shop.errors import DomainError, ValidationError
from shop.storefront import bp
from shop.storefront.cart import adopt_guest_cart, slow_down_text
from shop.storefront.orders import forget_orders


def _private(html: str, status: int = 200):
    resp = make_response(html, status)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def _safe_next(target: str | None) -> str:
    """Only same-site paths: a log-in link must not bounce people to another site."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("storefront.account")


def _slow_down(template: str, form, exc: ratelimit.RateLimited):
    """The form again, 429 with Retry-After and a message saying how long to wait."""
    flash(slow_down_text(exc), "error")
    resp = _private(render_template(template, form=form), 429)
    resp.headers["Retry-After"] = str(exc.retry_after)
    return resp


def _field_errors(form, exc: ValidationError) -> None:
    for name, problem in exc.details.get("fields", {}).items():
        field = getattr(form, name, None)
        message = f"This {name.replace('_', ' ')} {problem}."
        if field is not None:
            field.errors = list(field.errors) + [message]
        else:
            flash(message, "error")


@bp.route("/account/signup", methods=["GET", "POST"])
def signup():
    form = SignupForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = services.register(form.email.data, form.password.data, form.name.data or "")
        except ratelimit.RateLimited as exc:
            return _slow_down("account/signup.html", form, exc)
        except services.EmailTaken:
            form.email.errors = ["An account with this address exists. Log in, or reset its password."]
        except ValidationError as exc:
            _field_errors(form, exc)
        else:
            sessions.log_in(user)
            adopt_guest_cart(user)
            flash(f"Welcome! We sent a link to {user.email} to confirm the address.", "success")
            return redirect(url_for("storefront.account"))
    if form.errors:
        status = 422
    return _private(render_template("account/signup.html", form=form), status)


@bp.route("/account/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = services.authenticate(form.email.data, form.password.data)
        except services.Throttled as exc:
            minutes = max(1, round(exc.retry_after / 60))
            flash(
                f"Too many failed attempts. For your safety, try again in about {minutes} minute"
                f"{'s' if minutes > 1 else ''}, or reset your password.",
                "error",
            )
            resp = _private(render_template("account/login.html", form=form), 429)
            resp.headers["Retry-After"] = str(exc.retry_after)
            return resp
        except services.BadCredentials:
            form.password.errors = ["The e-mail address or password is not right."]
            status = 401
        else:
            sessions.log_in(user, remember=form.remember.data)
            adopt_guest_cart(user)  # what they put in the cart as a guest is theirs now
            return redirect(_safe_next(request.args.get("next")))
    elif form.errors:
        status = 422
    return _private(render_template("account/login.html", form=form), status)


@bp.post("/account/logout")
def logout():
    form = ActionForm()
    if form.validate_on_submit():
        sessions.log_out()  # on every device: a copied cookie stops working too
        forget_orders()  # the next person at this browser opens no order this one could
        flash("You are logged out.", "success")
    return redirect(url_for("storefront.home"))


@bp.get("/account")
@login_required
def account():
    return _private(
        render_template(
            "account/account.html",
            address_form=AddressForm(prefix="addr"),
            password_form=ChangePasswordForm(prefix="pw"),
            action=ActionForm(),
        )
    )


@bp.post("/account/password")
@login_required
def change_password():
    form = ChangePasswordForm(prefix="pw")
    if form.validate_on_submit():
        try:
            services.change_password(current_user, form.current_password.data, form.password.data)
        except ValidationError as exc:
            _field_errors(form, exc)
        else:
            login_user(
                current_user._get_current_object()
            )  # this session carries on with the new credentials; others end
            flash("Your password is changed. Every other device has been logged out.", "success")
            return redirect(url_for("storefront.account"))
    return _private(
        render_template(
            "account/account.html", address_form=AddressForm(prefix="addr"), password_form=form, action=ActionForm()
        ),
        422,
    )


@bp.post("/account/addresses")
@login_required
def add_address():
    form = AddressForm(prefix="addr")
    if form.validate_on_submit():
        try:
            services.add_address(current_user, form.address())
        except ValidationError as exc:
            _field_errors(form, exc)
        else:
            flash("Address saved.", "success")
            return redirect(url_for("storefront.account") + "#addresses")
    return _private(
        render_template(
            "account/account.html",
            address_form=form,
            password_form=ChangePasswordForm(prefix="pw"),
            action=ActionForm(),
        ),
        422,
    )


@bp.post("/account/addresses/<int:address_id>/delete")
@login_required
def delete_address(address_id: int):
    if ActionForm().validate_on_submit() and services.delete_address(current_user, address_id):
        flash("Address removed.", "success")
    return redirect(url_for("storefront.account") + "#addresses")


@bp.post("/account/verify/resend")
@login_required
def resend_verification():
    if ActionForm().validate_on_submit():
        try:
            services.resend_verification(current_user)
        except ratelimit.RateLimited as exc:
            flash(slow_down_text(exc), "error")
        else:
            flash(f"We sent a new confirmation link to {current_user.email}.", "success")
    return redirect(url_for("storefront.account"))


@bp.get("/account/verify/<token>")
def verify_email(token: str):
    try:
        services.verify_email(token)
    except DomainError as exc:
        return _private(
            render_template("account/message.html", title="Confirmation link not valid", message=exc.message), 400
        )
    flash("Thank you: your e-mail address is confirmed.", "success")
    return redirect(url_for("storefront.account") if current_user.is_authenticated else url_for("storefront.login"))


@bp.route("/account/reset", methods=["GET", "POST"])
def reset_request():
    form = ResetRequestForm()
    if form.validate_on_submit():
        try:  # the same answers whether or not the address has an account
            services.request_password_reset(form.email.data)
        except ratelimit.RateLimited as exc:
            return _slow_down("account/reset_request.html", form, exc)
        return _private(
            render_template(
                "account/message.html",
                title="Check your e-mail",
                message=f"If an account exists for {form.email.data}, we sent it a link to choose a new password. "
                "The link works once and expires in an hour.",
            )
        )
    return _private(render_template("account/reset_request.html", form=form), 422 if form.errors else 200)


@bp.route("/account/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    try:
        services.reset_user(token)
    except DomainError as exc:
        return _private(
            render_template(
                "account/message.html",
                title="Reset link not valid",
                message=exc.message,
                link=(url_for("storefront.reset_request"), "Ask for a new link"),
            ),
            400,
        )
    form = ResetForm()
    if form.validate_on_submit():
        try:
            services.reset_password(token, form.password.data)
        except ValidationError as exc:
            _field_errors(form, exc)
        except DomainError as exc:
            return _private(
                render_template("account/message.html", title="Reset link not valid", message=exc.message), 400
            )
        else:
            logout_user()
            flash("Your password is changed. Log in with the new one.", "success")
            return redirect(url_for("storefront.login"))
    return _private(render_template("account/reset.html", form=form), 422 if form.errors else 200)
