"""Permission checks for every back-office view and action, on the server.

Each view names the permission needed to see it and the one needed to change things. A hidden
menu entry is a courtesy; the check is here: a staff member outside a view's row gets 403 for the
page and for each create, edit, delete or bulk action, whatever URL they type.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import abort, redirect, request, url_for
from flask_admin import BaseView
from flask_admin.contrib.sqla import ModelView
from flask_admin.model import typefmt
from flask_login import current_user
from flask_wtf import FlaskForm

from admin.bounds import BoundedModelConverter, id_fits
from shop.accounts.permissions import Permission, has_permission
from shop.audit.services import track

WRITE_VIEWS = {"create_view", "edit_view", "delete_view", "action_view", "ajax_update"}


class AdminForm(FlaskForm):
    """Flask-WTF forms, so the app-wide CSRFProtect and Flask-Admin agree on the token."""

    def __init__(self, formdata=None, obj=None, prefix="", **kwargs):
        self._obj = obj
        super().__init__(formdata=formdata, obj=obj, prefix=prefix, **kwargs)


def admin_time(value) -> str:
    """A moment as staff read it in lists and detail pages: "2026-12-02 04:51 UTC" (no microseconds).
    Also the `admin_time` Jinja filter of the back-office templates."""
    if value is None or value == "":
        return ""
    if not isinstance(value, datetime):
        return str(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _time_formatter(view, value, name):
    return admin_time(value)


def is_staff() -> bool:
    return bool(current_user.is_authenticated and current_user.is_active and current_user.is_staff)


class StaffOnly:
    """Mixin: `view_permission` to see the view, `edit_permission` to change anything in it."""

    view_permission: Permission
    edit_permission: Permission | None = None

    def is_accessible(self) -> bool:
        return has_permission(current_user, self.view_permission)

    def is_visible(self) -> bool:
        return self.is_accessible()

    def may_edit(self) -> bool:
        return self.edit_permission is not None and has_permission(current_user, self.edit_permission)

    def inaccessible_callback(self, name, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for("admin.login", next=request.full_path))
        abort(403)  # logged in, but a shopper or a role outside this view's row

    def _handle_view(self, name, **kwargs):
        if not self.is_accessible():
            return self.inaccessible_callback(name, **kwargs)
        if name in WRITE_VIEWS and not self.may_edit():
            abort(403)
        track(current_user, "back-office")  # writes made by this request are audited
        return None


class StaffModelView(StaffOnly, ModelView):
    form_base_class = AdminForm
    model_form_converter = BoundedModelConverter  # integer fields within their columns' range
    page_size = 50
    can_view_details = True
    # Timestamps in lists and detail pages: "2026-12-02 04:51 UTC", not Python's microsecond repr.
    column_type_formatters = {**typefmt.BASE_FORMATTERS, datetime: _time_formatter}
    column_type_formatters_detail = {**typefmt.DETAIL_FORMATTERS, datetime: _time_formatter}

    def get_one(self, id):
        # An id the key column cannot hold names no record (not a database error).
        return super().get_one(id) if id_fits(self.model, id) else None

    # Subclasses switch features off with allow_*; they never switch permissions on.
    allow_create = allow_edit = allow_delete = True

    # Evaluated per request, so the buttons a role sees match what the server allows.
    @property
    def can_create(self):
        return self.may_edit() and self.allow_create

    @property
    def can_edit(self):
        return self.may_edit() and self.allow_edit

    @property
    def can_delete(self):
        return self.may_edit() and self.allow_delete


class StaffView(StaffOnly, BaseView):
    pass
