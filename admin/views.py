"""Back-office views. Each one declares its permissions (admin/security.py); rules live in services."""
from __future__ import annotations

from decimal import Decimal

from flask import current_app, flash, jsonify, redirect, request, url_for
from flask_admin import AdminIndexView, expose
from flask_admin.contrib.sqla.form import InlineModelConverter  # noqa: F401 - documented extension point
from flask_admin.model.form import InlineFormAdmin
from flask_login import current_user, login_user, logout_user
from markupsafe import Markup, escape
from sqlalchemy import func, select
from wtforms import PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from admin.security import AdminForm, StaffModelView, StaffView, is_staff
from shop.accounts import services as accounts
from shop.accounts.forms import LoginForm
from shop.accounts.models import ROLES, User
from shop.accounts.passwords import hash_password, password_problem
from shop.accounts.permissions import Permission as P
from shop.accounts.permissions import has_permission
from shop.catalog.models import Category, Product, ProductImage, Variant
from shop.extensions import db
from shop.inventory import services as inventory
from shop.money import format_money, parse_major
from shop.storage import backends as storage


class MoneyField(StringField):
    """Prices typed in major units ("19.99"), stored as integer minor units (1999)."""

    def _value(self):
        if self.data is None:
            return ""
        return str(Decimal(self.data).scaleb(-2).quantize(Decimal("0.01")))

    def process_formdata(self, valuelist):
        if not valuelist or valuelist[0].strip() == "":
            self.data = None
            return
        try:
            self.data = parse_major(valuelist[0], current_app.config["SHOP_CURRENCY"])
        except ValueError as exc:
            self.data = None
            raise ValueError(f"Enter a price like 19.99 ({exc}).") from None


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
                from flask import abort

                abort(403)
            return redirect(url_for("admin.login", next=request.full_path))
        return None

    @expose("/")
    def index(self):
        low = inventory.low_stock(limit=10) if has_permission(current_user, P.STOCK_VIEW) else None
        counts = {
            "products": db.session.scalar(select(func.count()).select_from(Product).where(Product.status == "active")),
            "drafts": db.session.scalar(select(func.count()).select_from(Product).where(Product.status == "draft")),
            "low_stock": len(inventory.low_stock()) if low is not None else None,
        }
        return self.render("admin/shop_dashboard.html", low=low, counts=counts,
                           threshold=current_app.config["LOW_STOCK_THRESHOLD"])

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
                login_user(user, remember=False)
                target = request.args.get("next") or ""
                if not (target.startswith("/admin") and "//" not in target):
                    target = url_for("admin.index")
                return redirect(target)
        return self.render("admin/shop_login.html", form=form), status

    @expose("/logout", methods=("POST",))
    def logout(self):
        if AdminForm().validate_on_submit():
            logout_user()
        return redirect(url_for("admin.login"))


# -- catalogue ----------------------------------------------------------------------------------
class VariantInline(InlineFormAdmin):
    form_columns = ("id", "sku", "options_text", "price_amount", "compare_at_amount", "on_hand", "weight_grams")
    form_label = "Variant"
    column_labels = {"price_amount": "Price", "compare_at_amount": "Compare-at price", "on_hand": "Stock on hand",
                     "weight_grams": "Weight (g)", "sku": "SKU"}
    form_overrides = {"price_amount": MoneyField, "compare_at_amount": MoneyField}
    form_args = {"sku": {"validators": [DataRequired(), Length(max=64)]},
                 "price_amount": {"validators": [DataRequired(message="Every variant needs a price.")],
                                  "description": "e.g. 19.99"}}
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
    form_columns = ("name", "slug", "category", "brand", "description", "status", "featured", "options_text")
    form_overrides = {"status": SelectField, "description": TextAreaField}
    form_args = {"status": {"choices": [("draft", "Draft (hidden)"), ("active", "Active (for sale)")]},
                 "slug": {"validators": [Optional(), Length(max=160)],
                          "description": "Leave empty to make one from the name."}}
    form_extra_fields = {"options_text": TextAreaField(
        "Options", description="One option per line, e.g. 'size: S, M, L' then 'colour: Red, Blue'.")}
    inline_models = (VariantInline(Variant),)

    def on_form_prefill(self, form, id):
        product = db.session.get(Product, id)
        form.options_text.data = "\n".join(f"{o.name}: {', '.join(o.values)}" for o in product.options)
        for entry, variant in zip(form.variants.entries, product.variants):
            entry.form.options_text.data = ", ".join(f"{k}={v}" for k, v in variant.options.items())

    def on_model_change(self, form, model, is_created):
        from shop.catalog.models import ProductOption
        from shop.catalog.services import slugify

        options = parse_options_text(form.options_text.data)
        allowed = dict(options)
        seen = set()
        for v in model.variants:
            if set(v.options) != set(allowed) or any(v.options[k] not in allowed[k] for k in v.options):
                declared = "; ".join(f"{k}: {', '.join(vals)}" for k, vals in options) or "none"
                raise ValidationError(f"Variant {v.sku} must pick one value of each option ({declared}).")
            key = tuple(sorted(v.options.items()))
            if key in seen:
                raise ValidationError(f"Two variants share the options {dict(key)}.")
            seen.add(key)
            v.currency = model.currency or current_app.config["SHOP_CURRENCY"]
        if model.status == "active" and not model.variants:
            raise ValidationError("An active product needs at least one variant.")
        model.slug = slugify(model.slug or model.name)
        existing = {o.name: o for o in model.options}
        model.options = [existing.get(name) or ProductOption(name=name) for name, _ in options]
        for pos, (option, (_, values)) in enumerate(zip(model.options, options)):
            option.values, option.position = values, pos
        for pos, v in enumerate(model.variants):
            v.position = pos
        prices = [v.price_amount for v in model.variants if v.price_amount is not None]
        model.price_min, model.price_max = (min(prices), max(prices)) if prices else (None, None)


class CategoryView(StaffModelView):
    view_permission = edit_permission = P.CATALOG_EDIT
    column_list = ("name", "slug", "parent", "position")
    form_columns = ("name", "slug", "parent", "description", "position")
    column_searchable_list = ("name", "slug")


class ImageView(StaffModelView):
    """Images go straight from the browser to storage (a pre-signed URL); the form keeps the key."""

    view_permission = edit_permission = P.CATALOG_EDIT
    column_list = ("preview", "product", "alt", "position")
    form_columns = ("product", "path", "alt", "position")
    form_args = {"path": {"label": "Image", "validators": [DataRequired(message="Upload an image first.")],
                          "description": "Choose a file above: it uploads directly to storage."},
                 "alt": {"label": "Alt text (what the image shows)", "validators": [DataRequired(), Length(max=300)]}}
    column_formatters = {"preview": lambda v, c, m, n: Markup(
        f'<img src="{escape(_image_url(m.path))}" alt="{escape(m.alt)}" width="64" height="64" loading="lazy">')}
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
    column_list = ("sku", "product.name", "options", "on_hand", "price_amount")
    column_labels = {"product.name": "Product", "on_hand": "On hand", "price_amount": "Price", "sku": "SKU"}
    column_searchable_list = ("sku",)
    column_sortable_list = ("sku", "on_hand")
    column_default_sort = "on_hand"
    column_formatters = {"price_amount": lambda v, c, m, n: format_money(m.price_amount, m.currency),
                         "options": lambda v, c, m, n: ", ".join(f"{k} {val}" for k, val in m.options.items())}
    form_columns = ("on_hand",)
    form_args = {"on_hand": {"label": "Stock on hand (units counted)"}}

    def on_model_change(self, form, model, is_created):
        if model.on_hand is None or model.on_hand < 0:
            raise ValidationError("Stock on hand cannot be negative.")


class LowStockView(StaffView):
    view_permission = P.STOCK_VIEW

    @expose("/")
    def index(self):
        return self.render("admin/shop_low_stock.html", lines=inventory.low_stock(),
                           threshold=current_app.config["LOW_STOCK_THRESHOLD"],
                           can_edit=has_permission(current_user, P.STOCK_EDIT))


# -- people -------------------------------------------------------------------------------------
class CustomerView(StaffModelView):
    """Shoppers and their personal data: roles with the customer-data permission only."""

    view_permission = P.CUSTOMERS_PII
    edit_permission = None  # read-only here; shoppers keep their own data
    column_list = ("id", "name", "email", "email_verified_at", "created_at", "last_login_at")
    column_details_list = ("id", "name", "email", "email_verified_at", "created_at", "last_login_at", "addresses")
    column_searchable_list = ("email", "name")
    column_default_sort = ("created_at", True)
    column_formatters_detail = {"addresses": lambda v, c, m, n: Markup("<br>".join(
        escape(f"{a.name}, {a.line1} {a.line2 or ''}, {a.postal_code} {a.city}, {a.country} {a.phone or ''}")
        for a in m.addresses))}

    def get_query(self):
        return super().get_query().filter(User.role.is_(None))

    def get_count_query(self):
        return super().get_count_query().filter(User.role.is_(None))


class StaffAccountView(StaffModelView):
    view_permission = edit_permission = P.STAFF_MANAGE
    allow_delete = False  # deactivate instead: the audit log keeps pointing at real people
    column_list = ("email", "name", "role", "is_active_account", "last_login_at")
    column_labels = {"is_active_account": "Active"}
    form_columns = ("email", "name", "role", "is_active_account", "new_password")
    form_overrides = {"role": SelectField}
    form_args = {"role": {"choices": [(r, r.capitalize()) for r in ROLES]}}
    form_extra_fields = {"new_password": PasswordField(
        "Password", description="Required for a new account; leave empty to keep the current one.")}

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

    def handle_view_exception(self, exc):
        from shop.errors import ApiError

        if isinstance(exc, ApiError):
            flash(exc.message + " " + " ".join(f"{k} {v}." for k, v in exc.details.get("fields", {}).items()), "error")
            return True
        return super().handle_view_exception(exc)


class AuditView(StaffModelView):
    view_permission = P.STAFF_MANAGE
    edit_permission = None  # the log is append-only
    column_list = ("at", "actor_email", "channel", "action", "entity_type", "entity_id")
    column_details_list = ("at", "actor_email", "actor_id", "channel", "ip", "action", "entity_type", "entity_id",
                           "before", "after")
    column_filters = ("actor_email", "action", "entity_type", "channel")
    column_default_sort = ("at", True)
    column_searchable_list = ("entity_id", "actor_email")
