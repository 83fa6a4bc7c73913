"""Back-office views. Each one declares its permissions (admin/security.py); rules live in services."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

from flask import abort, current_app, flash, g, jsonify, redirect, request, url_for
from flask_admin import AdminIndexView, expose
from flask_admin.actions import action
from flask_admin.contrib.sqla import filters as sqla_filters
from flask_admin.contrib.sqla.form import InlineModelConverter  # noqa: F401 - documented extension point
from flask_admin.model.form import InlineFormAdmin
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup, escape
from sqlalchemy import inspect, select
from sqlalchemy.orm import selectinload
from wtforms import BooleanField, IntegerField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, Regexp, StopValidation, ValidationError

from admin.bounds import id_fits
from admin.security import AdminForm, StaffModelView, StaffView, is_staff
from shop import clock, idempotency
from shop.accounts import services as accounts
from shop.accounts import sessions
from shop.accounts.forms import LoginForm
from shop.accounts.models import ROLES, User
from shop.accounts.passwords import hash_password, password_problem
from shop.accounts.permissions import Permission as P
from shop.accounts.permissions import has_permission
from shop.api.admin_orders import redact_payment_note
from shop.bounds import INT4_MAX
from shop.catalog import queries as catalog_queries
from shop.catalog.models import Product, Variant
from shop.errors import DomainError, NotFound
from shop.errors import ValidationError as ShopValidationError
from shop.extensions import db
from shop.idempotency import RequestInProgress
from shop.inventory import services as inventory
from shop.money import format_money, parse_major
from shop.orders import services as order_services
from shop.orders import states as order_states
from shop.orders.models import Order
from shop.payments import queries as payment_queries
from shop.payments import services as payment_services
from shop.payments.models import Dispute, Refund, RefundStatus, WebhookEvent
from shop.payments.services import PaymentDisputed
from shop.reports import services as reports
from shop.storage import backends as storage
from shop.uow import unit_of_work
from shop.webhooks import services as webhook_services


class MoneyField(StringField):
    """Prices typed in major units ("19.99"), stored as integer minor units (1999), at most `max_amount`
    (the price columns are integers)."""

    def __init__(self, *args, max_amount: int = INT4_MAX, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_amount = max_amount

    def _value(self):
        if self.raw_data:  # what was typed, also when it was refused ("abc" stays for the person to fix)
            return self.raw_data[0]
        if self.data is None:
            return ""
        return str(Decimal(self.data).scaleb(-2).quantize(Decimal("0.01")))

    def process_formdata(self, valuelist):
        if not valuelist or valuelist[0].strip() == "":
            self.data = None
            return
        currency = current_app.config["SHOP_CURRENCY"]
        try:
            self.data = parse_major(_bare_amount(valuelist[0], currency), currency)
            if self.data > self.max_amount:
                raise ValueError(f"at most {format_money(self.max_amount, currency)}")
        except ValueError as exc:
            self.data = None
            raise ValueError(f"Enter a price like 19.99 ({exc}).") from None


_GROUPED = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def _bare_amount(text: str, currency: str) -> str:
    """What staff type, as a number: "$59.00", "59 USD", "USD 1,299.50" -> "59.00", "59", "1299.50".
    Only the shop's own currency sign or code is taken off; a comma only as a thousands separator
    (so "59,50" stays wrong instead of becoming 5950)."""
    from shop.money import _SYMBOL

    text = text.strip()
    for mark in (_SYMBOL.get(currency.upper()), currency.upper(), currency.lower()):
        if mark and text.startswith(mark):
            text = text[len(mark) :].strip()
        if mark and text.endswith(mark):
            text = text[: -len(mark)].strip()
    if _GROUPED.match(text):
        text = text.replace(",", "")
    return text


class PriceRequired(DataRequired):
    """DataRequired that keeps a price's own parse error ("Enter a price like 19.99 (...)") when it has one."""

    def __call__(self, form, field):
        if field.process_errors:
            raise StopValidation()
        super().__call__(form, field)


def parse_options_text(text: str) -> list[tuple[str, list[str]]]:
    """ "size: S, M, L" lines -> [("size", ["S", "M", "L"])]."""
    options = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        name, sep, values = line.partition(":")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name.strip() or not vals:
            raise ValidationError(f"Write each option as 'name: value, value' (not {line.strip()!r}).")
        options.append((name.strip().lower(), vals))
    return options


def parse_variant_options(text: str) -> dict[str, str]:
    """ "size=S, colour=Red" -> {"size": "S", "colour": "Red"}."""
    chosen = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValidationError(f"Write variant options as 'size=S, colour=Red' (not {part.strip()!r}).")
        chosen[name.strip().lower()] = value.strip()
    return chosen


# -- log-in and dashboard -----------------------------------------------------------------------
class DashboardView(AdminIndexView):
    """The back-office home: what needs attention today. Also the staff log-in page."""

    def is_accessible(self):
        return is_staff()

    def _handle_view(self, name, **kwargs):
        if name in ("login", "logout"):
            return None
        if not is_staff():
            if current_user.is_authenticated:
                abort(403)
            return redirect(url_for("admin.login", next=request.full_path))
        return None

    @expose("/")
    def index(self):
        low = inventory.low_stock(limit=10) if has_permission(current_user, P.STOCK_VIEW) else None
        by_status = catalog_queries.count_by_status()
        counts = {
            "products": by_status.get("active", 0),
            "drafts": by_status.get("draft", 0),
            "low_stock": inventory.low_stock_count() if low is not None else None,  # all of them, not a capped list
        }
        return self.render(
            "admin/shop_dashboard.html",
            low=low,
            counts=counts,
            today=todays_orders(),
            threshold=current_app.config["LOW_STOCK_THRESHOLD"],
        )

    @expose("/login", methods=("GET", "POST"))
    def login(self):
        form = LoginForm()
        status = 200
        if form.validate_on_submit():
            try:
                user = accounts.authenticate(form.email.data, form.password.data, staff_only=True)
            except accounts.Throttled as exc:
                flash(f"Too many failed attempts. Try again in {max(1, exc.retry_after // 60)} minutes.", "error")
                status = 429
            except accounts.BadCredentials:
                flash("The e-mail address or password is not right, or the account is not a staff account.", "error")
                status = 401
            else:
                sessions.log_in(user)  # no remember-me for staff; the session's clocks start now
                target = request.args.get("next") or ""
                if not (target.startswith("/admin") and "//" not in target):
                    target = url_for("admin.index")
                return redirect(target)
        return self.render("admin/shop_login.html", form=form), status

    @expose("/logout", methods=("POST",))
    def logout(self):
        if AdminForm().validate_on_submit():
            sessions.log_out()  # every copy of this staff member's session cookie stops working
        return redirect(url_for("admin.login"))


def todays_orders() -> dict:
    """Today's (UTC) paid orders: their count for every staff member, their revenue for reports roles. From the
    sales read model (shop.reports), as the sales report."""
    rows = reports.sold_on(clock.now().date())
    revenue = None
    if has_permission(current_user, P.REPORTS_VIEW):
        revenue = [format_money(int(total), currency) for currency, _, total in rows] or [
            format_money(0, current_app.config["SHOP_CURRENCY"])
        ]
    return {"count": sum(n for _, n, _ in rows), "revenue": revenue}


# -- catalogue ----------------------------------------------------------------------------------
class VariantInline(InlineFormAdmin):
    form_columns = ("id", "sku", "options_text", "price_amount", "compare_at_amount", "on_hand", "weight_grams")
    form_label = "Variant"
    column_labels = {
        "price_amount": "Price",
        "compare_at_amount": "Compare-at price",
        "on_hand": "Stock on hand",
        "weight_grams": "Weight (g)",
        "sku": "SKU",
    }
    form_overrides = {"price_amount": MoneyField, "compare_at_amount": MoneyField}
    form_args = {
        "sku": {"validators": [DataRequired(), Length(max=64)]},
        "price_amount": {
            "validators": [PriceRequired(message="Every variant needs a price.")],
            "description": "e.g. 19.99",
        },
    }
    form_extra_fields = {"options_text": StringField("Options", description="e.g. size=M, colour=Red")}

    def postprocess_form(self, form_class):
        return form_class

    def on_model_change(self, form, model, is_created):
        model.options = parse_variant_options(form.options_text.data)


class ProductView(StaffModelView):
    view_permission = edit_permission = P.CATALOG_EDIT
    column_list = ("name", "category", "brand", "status", "price_min", "featured", "updated_at")
    column_labels = {"price_min": "From"}
    column_searchable_list = ("name", "brand", "slug")
    column_filters = ("status", "featured", "brand", "category.name")
    column_default_sort = ("updated_at", True)
    column_formatters = {"price_min": lambda v, c, m, n: format_money(m.price_min, m.currency)}
    form_columns = (
        "name",
        "slug",
        "category",
        "brand",
        "description",
        "status",
        "featured",
        "options_text",
        "generate_variants",
        "generate_price",
        "generate_sku_prefix",
        "generate_on_hand",
    )
    form_overrides = {"status": SelectField, "description": TextAreaField}
    form_args = {
        "status": {"choices": [("draft", "Draft (hidden)"), ("active", "Active (for sale)")]},
        "slug": {"validators": [Optional(), Length(max=160)], "description": "Leave empty to make one from the name."},
    }
    form_extra_fields = {
        "options_text": TextAreaField(
            "Options", description="One option per line, e.g. 'size: S, M, L' then 'colour: Red, Blue'."
        ),
        # The variant matrix in one go: a variant for every combination of the options above.
        "generate_variants": BooleanField(
            "Make a variant for each combination",
            description="Makes one variant for every combination of the options that has none yet "
            "(e.g. sizes S, M, L x colours Black, Navy = 6 variants), with the price, SKU prefix "
            "and stock below. Existing variants are kept.",
        ),
        "generate_price": MoneyField(
            "Price of each generated variant", validators=[Optional()], description="e.g. $59.00, 59 or 59.5"
        ),
        "generate_sku_prefix": StringField(
            "SKU prefix",
            validators=[
                Optional(),
                Length(max=40),
                Regexp(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", message="Use letters, digits, - and _ only."),
            ],
            description="SKUs are the prefix and the option values, e.g. TEE-S-BLACK. Leave empty to use the slug.",
        ),
        "generate_on_hand": IntegerField("Stock on hand of each generated variant", validators=[Optional()], default=0),
    }
    inline_models = (VariantInline(Variant),)

    def scaffold_form(self):
        # The column is NOT NULL, so Flask-Admin would make the field required; an empty slug is
        # made from the name in on_model_change.
        form_class = super().scaffold_form()
        form_class.slug = StringField(
            "Slug", validators=[Optional(), Length(max=160)], description="Leave empty to make one from the name."
        )
        return form_class

    def on_form_prefill(self, form, id):
        product = db.session.get(Product, id)
        form.options_text.data = "\n".join(f"{o.name}: {', '.join(o.values)}" for o in product.options)
        for entry, variant in zip(form.variants.entries, product.variants):
            entry.form.options_text.data = ", ".join(f"{k}={v}" for k, v in variant.options.items())

    def on_model_change(self, form, model, is_created):
        """The catalogue's rules (catalog.services.revise_product), the ones the API's products follow."""
        from shop.catalog import services as catalog

        options = parse_options_text(form.options_text.data)
        if form.generate_variants.data:
            self._generate_variants(form, model, options)
        try:
            catalog.revise_product(model, options, currency=current_app.config["SHOP_CURRENCY"])
        except catalog.CatalogError as exc:
            message = str(exc)
            raise ValidationError(f"{message[0].upper()}{message[1:]}.") from None

    def _generate_variants(self, form, model, options) -> None:
        from shop.catalog import services as catalog
        from shop.catalog.services import slugify

        if not options:
            raise ValidationError(
                "To generate variants, list the options first, e.g. 'size: S, M, L' and 'colour: Black, Navy'."
            )
        if form.generate_price.data is None:
            raise ValidationError("To generate variants, give their price, e.g. $59.00.")
        on_hand = form.generate_on_hand.data or 0
        if not 0 <= on_hand <= 10_000_000:
            raise ValidationError("The stock on hand of generated variants is a whole number from 0 to 10,000,000.")
        try:
            added = catalog.add_variant_matrix(
                model,
                options,
                price_amount=form.generate_price.data,
                on_hand=on_hand,
                sku_prefix=form.generate_sku_prefix.data or slugify(model.slug or model.name or "item"),
                currency=model.currency or current_app.config["SHOP_CURRENCY"],
            )
        except catalog.CatalogError as exc:
            raise ValidationError(f"The variants were not generated: {exc}.") from None
        g.generated_skus = [v.sku for v in added]  # said once the product is saved

    def after_model_change(self, form, model, is_created):
        added = g.pop("generated_skus", None)
        if added:
            flash(
                f"Generated {len(added)} variant{'' if len(added) == 1 else 's'}: "
                f"{', '.join(added[:12])}{' ...' if len(added) > 12 else ''}.",
                "success",
            )


class CategoryView(StaffModelView):
    view_permission = edit_permission = P.CATALOG_EDIT
    column_list = ("name", "slug", "parent", "position")
    form_columns = ("name", "slug", "parent", "description", "position")
    column_searchable_list = ("name", "slug")


class ImageView(StaffModelView):
    """Images go straight from the browser to storage (a pre-signed URL); the form keeps the key."""

    view_permission = edit_permission = P.CATALOG_EDIT
    column_list = ("preview", "product", "alt", "option_value", "position")
    form_columns = ("product", "path", "alt", "option_value", "position")
    form_args = {
        "path": {
            "label": "Image",
            "validators": [DataRequired(message="Upload an image first.")],
            "description": "Choose a file above: it uploads directly to storage.",
        },
        "alt": {"label": "Alt text (what the image shows)", "validators": [DataRequired(), Length(max=300)]},
        "option_value": {
            "label": "Shows option value (optional)",
            "validators": [Optional(), Length(max=60)],
            "description": "The colour (or other option value) this picture shows, e.g. Navy: "
            "the product page shows it when a shopper picks that value.",
        },
    }
    column_labels = {"option_value": "Shows"}
    column_formatters = {
        "preview": lambda v, c, m, n: Markup(
            f'<img src="{escape(_image_url(m.path))}" alt="{escape(m.alt)}" width="64" height="64" loading="lazy">'
        )
    }
    create_template, edit_template = "admin/shop_image_create.html", "admin/shop_image_edit.html"


def _image_url(path):
    from shop.media import image_url

    return image_url(path)


class UploadView(StaffView):
    """POST /admin/uploads/sign: a pre-signed URL for the image form (session + CSRF header)."""

    view_permission = edit_permission = P.CATALOG_EDIT

    def is_visible(self):
        return False

    @expose("/")
    def index(self):
        return redirect(url_for("images.create_view"))

    @expose("/sign", methods=("POST",))
    def sign(self):
        data = request.get_json(silent=True) or {}
        return jsonify(storage.presign(data.get("filename"), data.get("content_type"), data.get("size"))), 201


# -- stock --------------------------------------------------------------------------------------
class StockView(StaffModelView):
    view_permission, edit_permission = P.STOCK_VIEW, P.STOCK_EDIT
    allow_create = allow_delete = False
    column_list = ("sku", "product.name", "options", "on_hand", "low_stock_threshold", "price_amount")
    column_labels = {
        "product.name": "Product",
        "on_hand": "On hand",
        "price_amount": "Price",
        "sku": "SKU",
        "low_stock_threshold": "Low at",
    }
    column_searchable_list = ("sku",)
    column_sortable_list = ("sku", "on_hand")
    column_default_sort = "on_hand"
    column_formatters = {
        "price_amount": lambda v, c, m, n: format_money(m.price_amount, m.currency),
        "options": lambda v, c, m, n: ", ".join(f"{k} {val}" for k, val in m.options.items()),
    }
    form_columns = ("on_hand", "low_stock_threshold")
    edit_template = "admin/shop_stock_edit.html"  # names the product, the SKU and the stock now
    form_args = {
        # The browser's own bounds are the service's (inventory.set_on_hand checks them again).
        "on_hand": {
            "label": "Stock on hand (units counted)",
            "render_kw": {"min": 0, "max": inventory.MAX_ON_HAND},
        },
        "low_stock_threshold": {
            "label": "Low-stock threshold",
            "validators": [Optional()],
            "render_kw": {"min": 0, "max": inventory.MAX_THRESHOLD},
            "description": "Listed as low at or below this many available units. Leave empty for the shop's default.",
        },
    }

    def update_model(self, form, model):
        """Through inventory.set_on_hand, the API's write path: the same bounds, the variant row locked."""
        try:
            with unit_of_work():
                inventory.set_on_hand(model.id, form.on_hand.data, low_stock_threshold=form.low_stock_threshold.data)
        except ShopValidationError as exc:
            labels = {"on_hand": "Stock on hand", "low_stock_threshold": "The low-stock threshold"}
            for name, problem in exc.details["fields"].items():
                form[name].errors = [*form[name].errors, f"{labels[name]} {problem}."]
            flash(
                "The stock was not saved: " + " ".join(form[name].errors[-1] for name in exc.details["fields"]), "error"
            )
            return False
        self.after_model_change(form, model, False)
        return True


LOW_STOCK_PAGE = 500  # rows on the low-stock page; the heading says how many there are in all


class LowStockView(StaffView):
    view_permission = P.STOCK_VIEW

    @expose("/")
    def index(self):
        lines = inventory.low_stock(limit=LOW_STOCK_PAGE)
        total = len(lines) if len(lines) < LOW_STOCK_PAGE else inventory.low_stock_count()
        return self.render(
            "admin/shop_low_stock.html",
            lines=lines,
            total=total,
            threshold=current_app.config["LOW_STOCK_THRESHOLD"],
            can_edit=has_permission(current_user, P.STOCK_EDIT),
        )


# -- people -------------------------------------------------------------------------------------
class CustomerView(StaffModelView):
    """Shoppers and their personal data: roles with the customer-data permission only."""

    view_permission = P.CUSTOMERS_PII
    edit_permission = None  # read-only here; shoppers keep their own data
    column_list = ("id", "name", "email", "email_verified_at", "created_at", "last_login_at")
    column_details_list = ("id", "name", "email", "email_verified_at", "created_at", "last_login_at", "addresses")
    column_searchable_list = ("email", "name")
    column_default_sort = ("created_at", True)
    column_formatters_detail = {
        "addresses": lambda v, c, m, n: Markup(
            "<br>".join(
                escape(f"{a.name}, {a.line1} {a.line2 or ''}, {a.postal_code} {a.city}, {a.country} {a.phone or ''}")
                for a in m.addresses
            )
        )
    }

    def get_query(self):
        return super().get_query().filter(User.role.is_(None))

    def get_count_query(self):
        return super().get_count_query().filter(User.role.is_(None))

    def get_one(self, id):
        """Details (and any other page by id) of shoppers only: a staff account's id is 404 like a missing one."""
        user = super().get_one(id)
        if user is None or user.role is not None:
            abort(404)
        return user


class StaffAccountView(StaffModelView):
    view_permission = edit_permission = P.STAFF_MANAGE
    allow_delete = False  # deactivate instead: the audit log keeps pointing at real people
    column_list = ("email", "name", "role", "is_active_account", "last_login_at")
    column_labels = {"is_active_account": "Active"}
    form_columns = ("email", "name", "role", "is_active_account", "new_password")
    form_overrides = {"role": SelectField}
    form_args = {"role": {"choices": [(r, r.capitalize()) for r in ROLES]}}
    form_extra_fields = {
        "new_password": PasswordField(
            "Password", description="Required for a new account; leave empty to keep the current one."
        )
    }

    def get_query(self):
        return super().get_query().filter(User.role.isnot(None))

    def get_count_query(self):
        return super().get_count_query().filter(User.role.isnot(None))

    def on_model_change(self, form, model, is_created):
        model.email = accounts.normalise_email(model.email) if model.email else model.email
        if form.new_password.data or is_created:
            if problem := password_problem(form.new_password.data or ""):
                raise ValidationError(f"The password {problem}.")
            model.password_hash = hash_password(form.new_password.data)
            model.credentials_version = (model.credentials_version or 1) + (0 if is_created else 1)
        if model.id == current_user.id and (model.role != "admin" or not model.is_active_account):
            raise ValidationError("You cannot remove your own admin role or deactivate yourself.")
        state = inspect(model).attrs
        if not is_created and (state.is_active_account.history.deleted or state.role.history.deleted):
            accounts.end_sessions(model, commit=False)  # deactivated or re-roled: their sessions end now

    def handle_view_exception(self, exc):
        if isinstance(exc, DomainError):
            flash(exc.message + " " + " ".join(f"{k} {v}." for k, v in exc.details.get("fields", {}).items()), "error")
            return True
        return super().handle_view_exception(exc)


class AuditView(StaffModelView):
    view_permission = P.STAFF_MANAGE
    edit_permission = None  # the log is append-only
    column_list = ("at", "actor_email", "channel", "action", "entity_type", "entity_id")
    column_details_list = (
        "at",
        "actor_email",
        "actor_id",
        "channel",
        "ip",
        "action",
        "entity_type",
        "entity_id",
        "before",
        "after",
    )
    column_filters = ("actor_email", "action", "entity_type", "channel")
    column_default_sort = ("at", True)
    column_searchable_list = ("entity_id", "actor_email")


# -- orders -------------------------------------------------------------------------------------
# Which permission moves an order into each status: one rule, in shop/orders/states.py.
STAFF_TARGETS = {s: order_states.staff_permission(s) for s in order_states.FULFILMENT | order_states.CUSTOMER_SERVICE}
TARGET_LABELS = {
    order_states.PROCESSING: "Start processing",
    order_states.SHIPPED: "Mark shipped",
    order_states.DELIVERED: "Mark delivered",
    order_states.CANCELLED: "Cancel order",
    order_states.RETURNED: "Record return",
}


def _may(perm) -> bool:
    return has_permission(current_user, perm)


def redact_note(note: str) -> str:
    """An event note as this viewer may read it: provider ids only for roles with payment details."""
    if _may(P.PAYMENTS):
        return note
    return redact_payment_note(note)


def address_lines(address: dict | None, *, phone: bool) -> list[str]:
    """The address as its country writes it (as on the shopper's pages and mails), and the phone if allowed."""
    from shop.geo import address_lines as laid_out

    lines = laid_out(address)
    if phone and address and address.get("phone"):
        lines.append(f"Phone: {address['phone']}")
    return lines


class TransitionForm(AdminForm):
    status = StringField("New status")  # checked against the state machine and the role in the view
    note = StringField("Note", validators=[Optional(), Length(max=1000)])
    # Only on "Mark shipped"; checked by shop.orders.services.clean_tracking, as the admin API's `tracking`.
    tracking_carrier = StringField("Carrier")
    tracking_number = StringField("Tracking number")
    tracking_url = StringField("Tracking link (optional)")


class RefundForm(AdminForm):
    # Empty when refunding by line: the shop then computes the amount from the units (line_refund_amount).
    amount = StringField("Amount", validators=[Optional()])
    reason = StringField("Reason", validators=[DataRequired(message="Say why you refund."), Length(max=1000)])
    # One key per rendered form: a double click or a resent form refunds once. A bare UUID (hex): the
    # key is part of the audited row's id, which has room for 60 characters.
    idempotency_key = StringField(
        validators=[
            DataRequired(message="Reload the page and try again."),
            Regexp(r"^[0-9a-f]{32}$", message="Reload the page and try again."),
        ]
    )


# Stripe's dispute reasons and statuses as staff read them (an unknown code is made readable from its words).
DISPUTE_REASONS = {
    "bank_cannot_process": "Bank cannot process",
    "check_returned": "Check returned",
    "credit_not_processed": "Credit not processed",
    "customer_initiated": "Customer initiated",
    "debit_not_authorized": "Debit not authorized",
    "duplicate": "Duplicate charge",
    "fraudulent": "Fraudulent",
    "general": "General",
    "incorrect_account_details": "Incorrect account details",
    "insufficient_funds": "Insufficient funds",
    "noncompliant": "Noncompliant",
    "product_not_received": "Product not received",
    "product_unacceptable": "Product unacceptable",
    "subscription_canceled": "Subscription cancelled",
    "unrecognized": "Unrecognized charge",
}
DISPUTE_STATUSES = {
    "warning_needs_response": "Inquiry: needs a response",
    "warning_under_review": "Inquiry: under review",
    "warning_closed": "Inquiry closed",
    "needs_response": "Needs a response",
    "under_review": "Under review (evidence sent)",
    "won": "Won",
    "lost": "Lost",
}
DISPUTE_OUTCOMES = {"won": "Won", "lost": "Lost", "warning_closed": "Warning closed (no chargeback)"}
# A refund's status as staff read it: "pending" is the shop's, "processing" is Stripe's "pending".
REFUND_STATUSES = {
    "pending": "waiting for the provider",
    "processing": "in progress at Stripe",
    "succeeded": "succeeded",
    "failed": "failed",
}
DISPUTED_REFUND = "This payment is disputed: Stripe does not allow refunds until the dispute closes."


def readable(code: str | None, words: dict[str, str]) -> str:
    """A provider's code (fraudulent, product_not_received) as words, also for codes Stripe adds later."""
    if not code:
        return "Not given"
    return words.get(code) or code.replace("_", " ").capitalize()


def disputed_order_ids(order_ids) -> set[int]:
    """Which of these orders have an open dispute (one query for a whole list page)."""
    ids = [i for i in order_ids if i is not None]
    if not ids:
        return set()
    return set(
        db.session.scalars(select(Dispute.order_id).where(Dispute.order_id.in_(ids), Dispute.closed_at.is_(None)))
    )


class DisputeFilter(sqla_filters.BaseSQLAFilter):
    """The order list's "Dispute" filter, for roles with payment details only (OrderView hides it from the
    others, and it filters nothing for them whatever URL they type)."""

    def apply(self, query, value, alias=None):
        if not _may(P.PAYMENTS):
            return query
        which = select(Dispute.order_id)
        if value == "open":
            which = which.where(Dispute.closed_at.is_(None))
        return query.filter(Order.id.in_(which))

    def operation(self):
        return "is"


def _order_number(view, context, model, name):
    """The number, linked to the order page, with a "Disputed" marker for roles that see payments."""
    link = f'<a href="{escape(url_for(".order_page", order_id=model.id))}">{escape(model.number)}</a>'
    if model.id in (g.get("disputed_orders") or ()):
        link += ' <span class="badge badge-danger" data-testid="disputed">Disputed</span>'
    return Markup(link)


def refund_lines(order: Order) -> list[dict]:
    """Each order line with the units already refunded by line and the units still refundable by line."""
    done = payment_services.refunded_units(order.id)
    return [
        {"line": line, "refunded": done.get(line.id, 0), "left": max(line.quantity - done.get(line.id, 0), 0)}
        for line in order.lines
    ]


def parse_refund_lines(form, order: Order) -> tuple[dict[int, int], list[str]]:
    """The units typed per line ({order_line_id: quantity}, zeros left out) and what could not be read.
    Only whole numbers are read here; the service checks them against what is left of each line."""
    lines, problems = {}, []
    for line in order.lines:
        raw = (form.get(f"line-{line.id}") or "").strip()
        if raw in ("", "0"):
            continue
        if not (raw.isascii() and raw.isdigit()) or int(raw) > INT4_MAX:
            problems.append(f"{line.sku}: enter a whole number of units (0 to {line.quantity}).")
            continue
        lines[line.id] = int(raw)
    return lines, problems


def refund_problem(exc: DomainError, order: Order) -> str:
    """A refused refund as one message for staff; problems with lines ("lines.<order line id>") name the SKU."""
    if isinstance(exc, PaymentDisputed):
        return DISPUTED_REFUND
    fields = (exc.details or {}).get("fields") or {}
    skus = {str(line.id): line.sku for line in order.lines}
    about_lines = [
        f"{skus.get(k.removeprefix('lines.'), 'A line')}: {v}." if k.startswith("lines.") else f"Lines: {v}."
        for k, v in fields.items()
        if k == "lines" or k.startswith("lines.")
    ]
    if not about_lines:
        return exc.message
    return "Nothing was refunded. " + " ".join(about_lines)


class OrderView(StaffModelView):
    """Orders, read-only; status moves and refunds are buttons on the order page, each checked here
    for its own permission (the one the admin API asks), whatever the page showed."""

    view_permission = P.ORDERS_VIEW
    edit_permission = None  # no create/edit/delete of orders: they move only through the services
    can_view_details = True
    column_list = ("number", "status", "created_at", "total", "items", "email")  # e-mail last: hidden per role
    column_labels = {"created_at": "Created", "items": "Items", "email": "Customer e-mail"}
    column_sortable_list = ("number", "status", "created_at", "total")
    column_default_sort = ("created_at", True)
    column_searchable_list = ("number",)
    column_filters = (
        sqla_filters.FilterEqual(Order.status, "Status", options=[(s, s.capitalize()) for s in order_states.STATUSES]),
        DisputeFilter(Order.id, "Dispute", options=[("open", "open now"), ("any", "ever disputed")]),
    )
    column_formatters = {
        "number": _order_number,
        "total": lambda v, c, m, n: format_money(m.total, m.currency),
        "items": lambda v, c, m, n: sum(line.quantity for line in m.lines),
        "email": lambda v, c, m, n: m.email if _may(P.CUSTOMERS_PII) else "",
    }

    def search_placeholder(self):
        return "Order number"

    def get_query(self):
        return super().get_query().options(selectinload(Order.lines))

    def render(self, template, **kwargs):
        # The list's e-mail column exists only for roles with customer data (it is the last column,
        # so the column indexes used for sorting stay the same).
        if "list_columns" in kwargs and not _may(P.CUSTOMERS_PII):
            kwargs["list_columns"] = [c for c in kwargs["list_columns"] if c[0] != "email"]
        if "data" in kwargs and _may(P.PAYMENTS):  # the list's "Disputed" markers, one query per page
            g.disputed_orders = disputed_order_ids(m.id for m in kwargs["data"])
        return super().render(template, **kwargs)

    def _get_filter_groups(self):
        groups = super()._get_filter_groups()
        if groups and not _may(P.PAYMENTS):  # disputes are payment details
            groups = type(groups)((k, v) for k, v in groups.items() if k != "Dispute")
        return groups

    def _get_list_filter_args(self):
        found = super()._get_list_filter_args()
        if found and not _may(P.PAYMENTS):
            found = [f for f in found if not isinstance(self._filters[f[0]], DisputeFilter)]
        return found

    @expose("/details/")
    def details_view(self):
        order_id = request.args.get("id", type=int)
        if order_id is None:
            return redirect(url_for(".index_view"))
        return redirect(url_for(".order_page", order_id=order_id))

    @expose("/<int:order_id>")
    def order_page(self, order_id: int):
        return self._order_page(order_id)

    def _order_page(self, order_id: int, ship_form: TransitionForm | None = None, ship_errors: dict | None = None):
        """The order page; `ship_form`/`ship_errors`: a "Mark shipped" that was refused, shown again as typed."""
        order = db.session.scalar(
            select(Order).where(Order.id == order_id).options(selectinload(Order.lines), selectinload(Order.events))
        )
        if order is None:
            abort(404)
        moves = sorted(
            order_states.TRANSITIONS.get(order.status, ()) & set(STAFF_TARGETS), key=order_states.STATUSES.index
        )
        buttons = [(s, TARGET_LABELS[s]) for s in moves if _may(STAFF_TARGETS[s])]
        payments, refundable, disputes, open_disputes, lines = None, 0, [], [], []
        if _may(P.PAYMENTS):
            payments = payment_queries.payments_of(order.id, with_refunds=True)
            # What one refund can take: the standing payment's remainder (refunds come out of one payment).
            refundable = max(
                (payment_services.refundable(p) for p in payments if payment_services.standing(p)), default=0
            )
            disputes = payment_queries.disputes_of(order.id)
            open_disputes = [d for d in disputes if d.is_open]
            lines = refund_lines(order) if refundable else []
        # While a dispute is open Stripe refuses refunds of the charge: the form gives way to the reason.
        # Stripe refuses refunds during a chargeback; an inquiry (warning_*) may be settled by refunding.
        offer_refund = bool(refundable) and not any(not d.status.startswith("warning") for d in open_disputes)
        return self.render(
            "admin/shop_order.html",
            order=order,
            buttons=buttons,
            payments=payments,
            refundable=refundable,
            disputes=disputes,
            open_disputes=open_disputes,
            refund_lines=lines,
            dispute_reason=DISPUTE_REASONS,
            dispute_status=DISPUTE_STATUSES,
            dispute_outcome=DISPUTE_OUTCOMES,
            refund_status=REFUND_STATUSES,
            readable=readable,
            disputed_refund=DISPUTED_REFUND,
            line_skus={line.id: f"{line.sku} {line.name}" for line in order.lines},
            email=order.email if _may(P.CUSTOMERS_PII) else None,
            shipping=address_lines(order.shipping_address, phone=_may(P.CUSTOMERS_PII))
            if _may(P.ORDER_SHIPPING_ADDRESS)
            else None,
            billing=address_lines(order.billing_address, phone=True) if _may(P.CUSTOMERS_PII) else None,
            customer_url=url_for("customers.details_view", id=order.user_id)
            if order.user_id and _may(P.CUSTOMERS_PII)
            else None,
            redact=redact_note,
            format_money=format_money,
            transition_form=TransitionForm(),
            ship_form=ship_form or TransitionForm(formdata=None),
            ship_errors=ship_errors or {},
            refund_form=RefundForm(formdata=None, idempotency_key=uuid.uuid4().hex) if offer_refund else None,
        )

    @expose("/<int:order_id>/transition", methods=("POST",))
    def transition(self, order_id: int):
        form = TransitionForm(request.form)  # AdminForm binds no data unless given it
        target = form.status.data
        if target not in order_states.STATUSES:
            abort(400)
        if target not in STAFF_TARGETS or not _may(STAFF_TARGETS[target]):
            abort(403)  # e.g. support may not ship, warehouse may not cancel, nobody confirms by hand
        back = redirect(url_for(".order_page", order_id=order_id))
        if not form.validate_on_submit():
            flash(" ".join(e for errors in form.errors.values() for e in errors), "error")
            return back
        tracking = None
        if target == order_states.SHIPPED:
            try:
                tracking = order_services.clean_tracking(
                    {
                        "carrier": form.tracking_carrier.data,
                        "number": form.tracking_number.data,
                        "url": form.tracking_url.data,
                    }
                )
            except ShopValidationError as exc:  # shown next to the fields, as typed; nothing is written
                flash("The order was not marked shipped: correct the tracking below.", "error")
                errors = {k.removeprefix("tracking."): v for k, v in exc.details.get("fields", {}).items()}
                return self._order_page(order_id, ship_form=form, ship_errors=errors), 422
        try:
            with unit_of_work():
                order = order_services.transition(
                    order_id, target, current_user.email, (form.note.data or "").strip(), tracking
                )
        except DomainError as exc:
            if isinstance(exc, NotFound):
                abort(404)
            flash(exc.message, "error")
            return back
        flash(f"Order {order.number} is now {order.status}.", "success")
        return back

    @expose("/<int:order_id>/refund", methods=("POST",))
    def refund(self, order_id: int):
        if not _may(P.PAYMENTS):
            abort(403)
        order = db.session.get(Order, order_id)
        if order is None:
            abort(404)
        currency, back = order.currency, redirect(url_for(".order_page", order_id=order_id))
        form = RefundForm(request.form)
        if not form.validate_on_submit():
            flash(" ".join(e for errors in form.errors.values() for e in errors), "error")
            return back
        lines, problems = parse_refund_lines(request.form, order)
        if problems:
            flash("Nothing was refunded. " + " ".join(problems), "error")
            return back
        amount = None  # by line only: the shop computes the amount from the units
        if (form.amount.data or "").strip():
            try:
                amount = parse_major(form.amount.data, currency)
            except ValueError as exc:
                flash(f"Enter the amount like 12.50 ({exc}).", "error")
                return back
        elif not lines:
            flash("Enter an amount, e.g. 12.50. Or refund by line: enter the units to refund.", "error")
            return back
        reason = form.reason.data.strip()
        try:  # the form's key: a double click refunds once; a refusal is not kept, so the form may be corrected
            with (
                unit_of_work(),
                idempotency.once(
                    f"bo-refund:{order_id}",
                    form.idempotency_key.data,
                    {"amount": amount, "reason": reason, "lines": lines},
                    keep=(),
                ) as claim,
            ):
                if claim.repeat:
                    flash("This refund was already sent; it was not made twice.", "info")
                    return back
                record = payment_services.refund(order_id, amount, reason, current_user.email, lines=lines or None)
                claim.answer(201, {"refund_id": record.id})
        except RequestInProgress:  # the first click of a double click is still at the provider
            flash("This refund is being made already; reload the page in a moment to see it.", "error")
            return back
        except DomainError as exc:  # e.g. pending at an unreachable provider (retried later), or a wrong amount
            flash(refund_problem(exc, order), "error")
            return back
        flash(refund_done(record, order), "success")
        return back


def refund_done(record: Refund, order: Order) -> str:
    """What staff read after a refund: the amount (computed by the shop for a refund by line), the units,
    and, when the provider has not settled it yet, that it is under way."""
    units = {line.id: line for line in order.lines}
    text = f"Refunded {format_money(record.amount, order.currency)} on order {order.number}"
    if record.lines:
        text += (
            " ("
            + ", ".join(
                f"{rl.quantity} \u00d7 {units[rl.order_line_id].sku}"
                if rl.order_line_id in units
                else f"{rl.quantity} unit(s)"
                for rl in record.lines
            )
            + ")"
        )
    text += "."
    if record.status in (RefundStatus.PENDING, RefundStatus.PROCESSING):
        text += f" Refund status: {REFUND_STATUSES[record.status]}."
    return text


# -- payment provider events --------------------------------------------------------------------
def _retry_button(view, context, model, name):
    if model.status != "failed":
        return ""
    return Markup(
        f'<form method="post" action="{escape(url_for(".retry", id=model.id))}" class="m-0">'
        f'<input type="hidden" name="csrf_token" value="{escape(generate_csrf())}">'
        f'<button type="submit" class="btn btn-sm btn-outline-primary">Retry'
        f'<span class="sr-only"> event {escape(model.event_id)}</span></button></form>'
    )


class WebhookEventView(StaffModelView):
    """Every provider event received; failed ones can be applied again (admins only)."""

    view_permission = edit_permission = P.STAFF_MANAGE
    allow_create = allow_edit = allow_delete = False  # the log of what providers sent is not edited
    column_list = ("provider", "event_id", "type", "status", "attempts", "last_error", "received_at", "retry")
    column_labels = {"event_id": "Event id", "last_error": "Last error", "received_at": "Received", "retry": "Action"}
    column_details_list = (
        "provider",
        "event_id",
        "type",
        "status",
        "attempts",
        "last_error",
        "received_at",
        "processed_at",
        "payload",
    )
    column_sortable_list = ("provider", "type", "status", "attempts", "received_at")
    column_default_sort = ("received_at", True)
    column_searchable_list = ("event_id", "type")
    column_filters = ("status", "provider", "type")
    column_formatters = {"retry": _retry_button, "last_error": lambda v, c, m, n: (m.last_error or "")[:200]}

    def _retry(self, event_row_id: int) -> tuple[str, str]:
        try:
            with unit_of_work():
                outcome = webhook_services.retry(event_row_id)
        except Exception as exc:  # noqa: BLE001 - the service stored the error on the row
            return "error", f"Event {event_row_id} failed again: {type(exc).__name__}: {exc}"[:500]
        if outcome == "nothing to retry":
            return "info", f"Event {event_row_id} is not failed; nothing to retry."
        return "success", f"Event {event_row_id}: {outcome}."

    @expose("/retry", methods=("POST",))
    def retry(self):
        if not self.may_edit():
            abort(403)
        raw = request.form.get("id", "")
        if not id_fits(WebhookEvent, raw) or db.session.get(WebhookEvent, int(raw)) is None:
            abort(404)
        kind, message = self._retry(int(raw))
        flash(message, kind)
        return redirect(url_for(".index_view"))

    @action("retry", "Retry", "Apply the selected failed events again?")
    def action_retry(self, ids):
        for event_row_id in ids:
            if not id_fits(WebhookEvent, event_row_id):
                continue  # not an id this table can hold: nothing to retry
            kind, message = self._retry(int(event_row_id))
            flash(message, kind)
