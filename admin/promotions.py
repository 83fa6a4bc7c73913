"""Promotions in the back-office: rules with their shared codes (managers and admins edit, analysts view),
batches of single-use codes with a CSV download, and the usage report (API.md, Back-office)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from flask import Response, abort, current_app, flash, redirect, request, url_for
from flask_admin import expose
from flask_admin.contrib.sqla import filters as sqla_filters
from flask_login import current_user
from markupsafe import Markup, escape
from psycopg import errors as pg_errors
from sqlalchemy import delete, func, select
from wtforms import IntegerField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from admin.security import AdminForm, StaffModelView, StaffView
from admin.views import MoneyField
from shop.accounts.permissions import Permission as P
from shop.accounts.permissions import has_permission
from shop.bounds import YEARS, parse_day
from shop.catalog.models import Category, Product, Variant
from shop.extensions import db
from shop.money import exponent, format_money, parse_major
from shop.promotions import backoffice as bo
from shop.promotions.models import Promotion, PromotionCode, Redemption

KIND_LABELS = {"percent": "Percentage off", "fixed": "Fixed amount off", "free_shipping": "Free shipping"}
TARGETS = (("categories", Category), ("products", Product), ("variants", Variant))


def describe_value(p: Promotion) -> str:
    if p.kind == "percent":
        return f"{p.value}% off"
    if p.kind == "fixed":
        return f"{format_money(p.value, p.currency)} off"
    return "Free shipping"


def _utc(value: datetime | None) -> datetime | None:
    """The form's date-times are UTC (it shows no time zone)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _major(amount: int, currency: str) -> str:
    """1999 -> "19.99": how the form shows an amount."""
    exp = exponent(currency)
    return f"{Decimal(amount).scaleb(-exp):.{exp}f}"


def _split(text: str | None) -> list[str]:
    return [part for part in re.split(r"[\s,;]+", text or "") if part]


def _links(view, context, model, name):
    codes = url_for(".codes_page", promotion_id=model.id)
    report = url_for(".promotion_report", promotion_id=model.id)
    return Markup(
        f'<a href="{escape(codes)}">Codes<span class="sr-only"> of {escape(model.name)}</span></a> · '
        f'<a href="{escape(report)}">Usage<span class="sr-only"> of {escape(model.name)}</span></a>'
    )


def _targets_text(view, context, model, name):
    """{"categories": [3], "variants": [9]} -> "categories: Tops (#3); variants: TEE-M (#9)"."""
    spec = getattr(model, name) or {}
    if not spec:
        return "everything" if name == "applies_to" else "nothing"
    parts = []
    for key, target in TARGETS:
        ids = spec.get(key) or []
        if not ids:
            continue
        label = target.sku if target is Variant else target.name
        names = dict(db.session.execute(select(target.id, label).where(target.id.in_(ids))).all())
        parts.append(f"{key}: " + ", ".join(f"{names.get(i, '(deleted)')} (#{i})" for i in ids))
    return "; ".join(parts)


def _window(view, context, model, name):
    fmt = "%Y-%m-%d %H:%M"
    start = model.starts_at.astimezone(UTC).strftime(fmt) if model.starts_at else "any time"
    end = model.ends_at.astimezone(UTC).strftime(fmt) if model.ends_at else "open-ended"
    return f"{start} → {end} UTC" if model.starts_at or model.ends_at else "Always"


class GenerateCodesForm(AdminForm):
    count = IntegerField(
        "How many codes",
        validators=[
            DataRequired(message="Say how many codes (1 to 10,000)."),
            NumberRange(min=1, max=bo.MAX_BATCH, message="From 1 to 10,000 codes at a time."),
        ],
    )
    prefix = StringField(
        "Prefix (optional)",
        validators=[Optional(), Length(max=10)],
        description="e.g. XMAS-: letters, digits, - and _; 10 random characters follow.",
    )


class PromotionView(StaffModelView):
    """Coupons (with codes) and automatic sales (no code, e.g. a timed flash sale)."""

    view_permission, edit_permission = P.PROMOTIONS_VIEW, P.PROMOTIONS_EDIT
    column_list = ("name", "kind", "value", "code_summary", "automatic", "active", "window", "priority", "links")
    column_labels = {
        "value": "Discount",
        "code_summary": "Codes",
        "automatic": "Automatic sale",
        "window": "Runs",
        "links": "Codes and usage",
        "kind": "Kind",
    }
    column_sortable_list = ("name", "kind", "automatic", "active", "priority")
    column_searchable_list = ("name",)
    column_filters = (
        sqla_filters.FilterEqual(Promotion.kind, "Kind", options=list(KIND_LABELS.items())),
        "automatic",
        "active",
    )
    column_default_sort = ("id", True)
    column_details_list = (
        "name",
        "description",
        "kind",
        "value",
        "automatic",
        "active",
        "window",
        "min_subtotal",
        "usage_limit",
        "per_customer_limit",
        "first_order_only",
        "stackable",
        "priority",
        "applies_to",
        "excludes",
        "code_summary",
        "created_at",
        "updated_at",
    )
    column_formatters = {
        "kind": lambda v, c, m, n: KIND_LABELS.get(m.kind, m.kind),
        "value": lambda v, c, m, n: describe_value(m),
        "window": _window,
        "links": _links,
        "min_subtotal": lambda v, c, m, n: format_money(m.min_subtotal, m.currency) if m.min_subtotal else "none",
        "applies_to": _targets_text,
        "excludes": _targets_text,
    }
    form_columns = (
        "name",
        "description",
        "kind",
        "value_text",
        "automatic",
        "active",
        "starts_at",
        "ends_at",
        "min_subtotal",
        "usage_limit",
        "per_customer_limit",
        "first_order_only",
        "stackable",
        "priority",
        "applies_categories",
        "applies_products",
        "applies_variants",
        "excludes_categories",
        "excludes_products",
        "excludes_variants",
        "code_list",
    )
    form_overrides = {"kind": SelectField, "description": TextAreaField, "min_subtotal": MoneyField}
    form_args = {
        "name": {"validators": [DataRequired(), Length(max=120)]},
        "kind": {"choices": list(KIND_LABELS.items())},
        "automatic": {"label": "Automatic (a sale without a code, e.g. a flash sale shown on product pages)"},
        "starts_at": {"label": "Starts at (UTC)", "description": "Leave empty to start now."},
        "ends_at": {"label": "Ends at (UTC)", "description": "Leave empty to run until switched off."},
        "min_subtotal": {
            "label": "Minimum subtotal",
            "description": "e.g. 50.00; leave empty for none.",
            "max_amount": bo.MAX_AMOUNT,
        },
        "usage_limit": {
            "label": "Total usage limit",
            "validators": [Optional(), NumberRange(min=1, max=bo.MAX_LIMIT)],
            "description": "Redemptions in all; leave empty for no limit.",
        },
        "per_customer_limit": {
            "label": "Per-customer limit",
            "validators": [Optional(), NumberRange(min=1, max=bo.MAX_LIMIT)],
            "description": "Per account and per e-mail address; leave empty for no limit.",
        },
        "first_order_only": {"label": "First order only"},
        "stackable": {"label": "Stackable (combines with other stackable promotions)"},
        "priority": {
            "validators": [Optional(), NumberRange(min=-1000, max=1000)],
            "description": "Higher goes first; among exclusive promotions the best one wins.",
        },
    }
    form_extra_fields = {
        "value_text": StringField(
            "Value", description="Percentage: 1 to 100. Fixed amount: e.g. 5.00. Free shipping: leave empty."
        ),
        "applies_categories": SelectMultipleField("Applies to categories", coerce=int, choices=[]),
        "applies_products": SelectMultipleField("Applies to products", coerce=int, choices=[]),
        "applies_variants": StringField(
            "Applies to variants (SKUs)",
            description="SKUs separated by commas. With no categories, products or variants it applies to everything.",
        ),
        "excludes_categories": SelectMultipleField("Except categories", coerce=int, choices=[]),
        "excludes_products": SelectMultipleField("Except products", coerce=int, choices=[]),
        "excludes_variants": StringField("Except variants (SKUs)", description="SKUs separated by commas."),
        "code_list": TextAreaField(
            "Shared codes",
            description="One code per line, used by many shoppers "
            "(letters, digits, - and _). Single-use codes are generated on the codes page.",
        ),
    }

    # -- list -------------------------------------------------------------------------------------
    def get_list(self, *args, **kwargs):
        count, rows = super().get_list(*args, **kwargs)
        ids = [r.id for r in rows]
        shared, single = bo.shared_codes_of(ids), bo.single_use_counts(ids)
        for r in rows:
            parts = list(shared.get(r.id, []))
            if len(parts) > 3:
                parts = parts[:3] + [f"+{len(parts) - 3} more"]
            if single.get(r.id):
                parts.append(f"{single[r.id]} single-use")
            r.code_summary = ", ".join(parts) or ("none (automatic)" if r.automatic else "none")
        return count, rows

    def get_one(self, id):
        model = super().get_one(id)
        if model is not None:
            shared = [c.code for c in bo.shared_codes(model.id)]
            single = bo.single_use_counts([model.id]).get(model.id, 0)
            model.code_summary = ", ".join(shared + ([f"{single} single-use"] if single else [])) or "none"
        return model

    # -- form -------------------------------------------------------------------------------------
    def _with_choices(self, form):
        cats = [(i, n) for i, n in db.session.execute(select(Category.id, Category.name).order_by(Category.name))]
        products = [
            (i, f"{n} (#{i})") for i, n in db.session.execute(select(Product.id, Product.name).order_by(Product.name))
        ]
        form.applies_categories.choices = form.excludes_categories.choices = cats
        form.applies_products.choices = form.excludes_products.choices = products
        return form

    def create_form(self, obj=None):
        return self._with_choices(super().create_form(obj))

    def edit_form(self, obj=None):
        return self._with_choices(super().edit_form(obj))

    def on_form_prefill(self, form, id):
        p = db.session.get(Promotion, id)
        form.value_text.data = (
            str(p.value) if p.kind == "percent" else _major(p.value, p.currency) if p.kind == "fixed" else ""
        )
        for prefix, spec in (("applies", p.applies_to or {}), ("excludes", p.excludes or {})):
            getattr(form, f"{prefix}_categories").data = spec.get("categories", [])
            getattr(form, f"{prefix}_products").data = spec.get("products", [])
            ids = spec.get("variants", [])
            skus = dict(db.session.execute(select(Variant.id, Variant.sku).where(Variant.id.in_(ids))).all())
            getattr(form, f"{prefix}_variants").data = ", ".join(skus.get(i, f"#{i}") for i in ids)
        form.code_list.data = "\n".join(c.code for c in bo.shared_codes(p.id))

    def _value(self, form, model) -> int:
        text = (form.value_text.data or "").strip()
        if model.kind == "free_shipping":
            if text not in ("", "0"):
                raise ValidationError("Free shipping takes no value; leave Value empty.")
            return 0
        if model.kind == "percent":
            if not re.fullmatch(r"\d{1,3}", text) or not 1 <= int(text) <= 100:
                raise ValidationError("A percentage is a whole number from 1 to 100.")
            return int(text)
        if model.kind == "fixed":
            try:
                amount = parse_major(text, model.currency)
            except ValueError as exc:
                raise ValidationError(f"Enter the amount off like 5.00 ({exc}).") from None
            if not 0 < amount <= bo.MAX_AMOUNT:
                raise ValidationError("A fixed amount off must be more than 0.")
            return amount
        raise ValidationError("Choose the kind of discount.")

    def _targets(self, form, prefix: str) -> dict:
        spec = {
            "categories": list(getattr(form, f"{prefix}_categories").data or []),
            "products": list(getattr(form, f"{prefix}_products").data or []),
        }
        refs = _split(getattr(form, f"{prefix}_variants").data)
        if refs:
            skus = [r for r in refs if not r.startswith("#")]
            ids = [int(r[1:]) for r in refs if r.startswith("#") and r[1:].isdigit()]
            bad = [r for r in refs if r.startswith("#") and not r[1:].isdigit()]
            found = dict(db.session.execute(select(Variant.sku, Variant.id).where(Variant.sku.in_(skus))).all())
            missing = [s for s in skus if s not in found] + bad
            if missing:
                raise ValidationError(f"No variants with the SKUs {', '.join(missing[:10])}.")
            spec["variants"] = [found[s] for s in skus] + ids
        if problem := bo.targets_problem(spec):
            raise ValidationError(f"{'Applies to' if prefix == 'applies' else 'Except'}: {problem}.")
        return bo.clean_targets(spec)

    def on_model_change(self, form, model, is_created):
        if is_created:
            model.currency = current_app.config["SHOP_CURRENCY"]
        model.value = self._value(form, model)
        model.starts_at, model.ends_at = _utc(model.starts_at), _utc(model.ends_at)
        if bo.window_problem(model.starts_at, model.ends_at):
            raise ValidationError("The end must be after the start.")
        if model.priority is None:
            model.priority = 0
        model.description = model.description or ""
        model.applies_to = self._targets(form, "applies")
        model.excludes = self._targets(form, "excludes")
        codes = _split(form.code_list.data)
        if model.automatic and codes:
            raise ValidationError(
                "An automatic sale applies without a code: remove the shared codes or untick Automatic."
            )
        self._sync_codes(model, codes)

    def _sync_codes(self, model: Promotion, codes: list[str]) -> None:
        for code in codes:
            if problem := bo.code_problem(code):
                raise ValidationError(f"Code {code!r} {problem}.")
        upper = [c.upper() for c in codes]
        dupes = sorted({c for c in upper if upper.count(c) > 1})
        if dupes:
            raise ValidationError(f"The code {dupes[0]} is listed twice (codes ignore case).")
        db.session.flush()  # a new promotion gets its id
        current = {c.code.upper(): c for c in bo.shared_codes(model.id)}
        for key, row in current.items():
            if key not in upper:
                db.session.delete(row)
        new = [c for c in codes if c.upper() not in current]
        if new:
            # A single-use code of this promotion counts too: a code names one thing.
            taken = bo.codes_taken(new)
            if taken:
                raise ValidationError(f"The code {taken[0]} exists already (codes ignore case).")
            db.session.flush()  # deletions first: a code removed and typed again in another case
            for code in new:
                db.session.add(PromotionCode(promotion_id=model.id, code=code, usage_limit=None))

    def on_model_delete(self, model):
        used = db.session.scalar(
            select(func.count()).select_from(Redemption).where(Redemption.promotion_id == model.id)
        )
        if used:
            raise ValidationError(
                f"{model.name} has been used by {used} orders; switch it off (untick Active) instead of deleting it."
            )
        # Thousands of single-use codes go in one statement, with one audit entry.
        codes = list(
            db.session.scalars(
                select(PromotionCode.code).where(
                    PromotionCode.promotion_id == model.id, PromotionCode.usage_limit.is_(None)
                )
            )
        )
        n = db.session.execute(delete(PromotionCode).where(PromotionCode.promotion_id == model.id)).rowcount
        if n:
            bo.audit_bulk(
                "delete",
                "PromotionCodeBatch",
                f"{model.id}@all",
                {"promotion_id": model.id, "deleted": n, "shared_codes": codes},
            )
        db.session.expire(model, ["codes"])

    def handle_view_exception(self, exc):
        from sqlalchemy.exc import IntegrityError

        if isinstance(exc, IntegrityError) and isinstance(exc.orig, pg_errors.UniqueViolation):
            flash("That code was taken a moment ago by another promotion (codes ignore case). Try another.", "error")
            return True
        return super().handle_view_exception(exc)

    # -- single-use codes -------------------------------------------------------------------------
    def _promotion(self, promotion_id: int) -> Promotion:
        promotion = db.session.get(Promotion, promotion_id)
        if promotion is None:
            abort(404)
        return promotion

    @expose("/<int:promotion_id>/codes/")
    def codes_page(self, promotion_id: int):
        promotion = self._promotion(promotion_id)
        return self.render(
            "admin/shop_promotion_codes.html",
            promotion=promotion,
            shared=bo.shared_codes(promotion.id),
            batches=bo.batches(promotion.id),
            form=GenerateCodesForm(formdata=None) if self.may_edit() else None,
            describe_value=describe_value,
            max_batch=bo.MAX_BATCH,
        )

    @expose("/<int:promotion_id>/codes/generate", methods=("POST",))
    def generate_codes(self, promotion_id: int):
        if not self.may_edit():
            abort(403)
        promotion = self._promotion(promotion_id)
        back = redirect(url_for(".codes_page", promotion_id=promotion_id))
        form = GenerateCodesForm(request.form)
        if not form.validate_on_submit():
            flash(" ".join(e for errors in form.errors.values() for e in errors), "error")
            return back
        prefix = (form.prefix.data or "").strip().upper()
        if prefix and not re.fullmatch(r"[A-Z0-9_-]+", prefix):
            flash("A prefix may use letters, digits, - and _ only.", "error")
            return back
        if promotion.automatic:
            flash("An automatic sale applies without codes.", "error")
            return back
        batch_at, codes = bo.generate_codes(promotion.id, form.count.data, prefix=prefix)
        db.session.commit()
        csv_url = url_for(".codes_csv", promotion_id=promotion.id, batch=batch_at.isoformat())
        flash(
            Markup(f'Generated {len(codes)} single-use codes. <a href="{escape(csv_url)}">Download them as CSV</a>.'),
            "success",
        )
        return back

    @expose("/<int:promotion_id>/codes.csv")
    def codes_csv(self, promotion_id: int):
        promotion = self._promotion(promotion_id)
        batch = request.args.get("batch")
        batch_at = None
        if batch:
            try:
                batch_at = datetime.fromisoformat(batch.replace(" ", "+"))  # a "+" left unescaped
            except ValueError:
                abort(400)
        name = f"promotion-{promotion.id}-codes" + (f"-{batch_at.strftime('%Y%m%d-%H%M%S')}" if batch_at else "")
        return Response(
            bo.codes_csv(promotion, batch_at),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"', "Cache-Control": "no-store"},
        )

    # -- usage of one promotion ------------------------------------------------------------------
    @expose("/<int:promotion_id>/report/")
    def promotion_report(self, promotion_id: int):
        promotion = self._promotion(promotion_id)
        return render_report(self, promotion)


def _range() -> tuple[date | None, date | None, datetime | None, datetime | None]:
    """?from=&to= (days, UTC) of the redemptions counted; a bad date is ignored with a message."""

    def day(name):
        raw = request.args.get(name)
        if not raw:
            return None
        day = parse_day(raw)
        if day is None:
            flash(f"'{raw[:40]}' is not a date like 2026-11-01 (years {YEARS[0]} to {YEARS[1]}); ignored.", "error")
            return None
        return day

    start, end = day("from"), day("to")
    lo = datetime.combine(start, time.min, UTC) if start else None
    hi = datetime.combine(end + timedelta(days=1), time.min, UTC) if end else None
    return start, end, lo, hi


def render_report(view, promotion: Promotion | None):
    start, end, lo, hi = _range()
    rows = bo.usage_report(promotion.id if promotion else None, lo, hi)
    return view.render(
        "admin/shop_promotion_report.html",
        rows=rows,
        totals=bo.usage_totals(rows, with_refunded=True),
        promotion=promotion,
        start=start,
        end=end,
        format_money=format_money,
        describe=lambda r: KIND_LABELS.get(r.kind, r.kind),
    )


class PromotionReportView(StaffView):
    """Usage of every promotion: for those who see promotions and for those who see sales reports."""

    view_permission = P.PROMOTIONS_VIEW

    def is_accessible(self) -> bool:
        return has_permission(current_user, P.PROMOTIONS_VIEW) or has_permission(current_user, P.REPORTS_VIEW)

    @expose("/")
    def index(self):
        return render_report(self, None)
