"""The operations page (admins and managers): what an on-call engineer opens when an alert wakes them. Queue depths
and failed jobs, recent 5xx answers, webhook failures, the search engine's state and the slowest routes, each
section read by shop/telemetry/operations.py and each saying so when its source does not answer. Read only: the
pages it links to (Background jobs, Webhook events, Partner webhooks) are where things are changed, by admins."""

from __future__ import annotations

from flask import current_app, url_for
from flask_admin import expose
from flask_login import current_user

from admin.security import StaffView
from shop.accounts.permissions import Permission as P
from shop.accounts.permissions import has_permission
from shop.telemetry import operations


class OperationsView(StaffView):
    view_permission = P.OPERATIONS_VIEW

    @expose("/")
    def index(self):
        # The pages that act on what this one shows are the admins' (STAFF_MANAGE): linked only for those who may
        # open them; the others are told whom to ask.
        may_act = has_permission(current_user, P.STAFF_MANAGE)
        page = self.render(
            "admin/shop_operations.html",
            ops=operations.snapshot(current_app),
            may_act=may_act,
            failed_events_url=self._failed_events_url() if may_act else None,
        )
        response = current_app.make_response(page)
        response.headers["Cache-Control"] = "no-store"  # a page of the moment, never a stale copy
        return response

    def _failed_events_url(self) -> str:
        """Webhook events filtered to status = failed (Flask-Admin names its filters by position)."""
        for view in self.admin._views:
            if view.endpoint != "webhook_events":
                continue
            for index, flt in enumerate(getattr(view, "_filters", None) or ()):
                column = getattr(flt, "column", None)
                if getattr(column, "key", None) == "status" and str(flt.operation()) == "equals":
                    return url_for("webhook_events.index_view", **{f"flt0_{view.get_filter_arg(index, flt)}": "failed"})
        return url_for("webhook_events.index_view")
