"""Partner webhooks in the back-office (admins only): endpoints with their state, registering one (its secret shown
once), editing, enabling and deleting, the delivery log per endpoint with Retry, and "Send test event". Every change
is a POST with the CSRF token; the rules are shop.partners.services, as for the admin API."""

from __future__ import annotations

from flask import abort, flash, make_response, redirect, request, url_for
from flask_admin import expose
from wtforms import BooleanField, SelectMultipleField, StringField, widgets
from wtforms.validators import DataRequired, Length, Optional, StopValidation

from admin.security import AdminForm, StaffView
from shop.accounts.permissions import Permission as P
from shop.events import TYPES
from shop.partners import guard, services
from shop.partners.models import STATES

PER_PAGE = 25


class MultiCheckboxField(SelectMultipleField):
    """Event types as a list of checkboxes (each with its own label), not a multi-select box."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


def _some_ticked(form, field):
    """At least one box ticked (DataRequired would mark every checkbox `required` in the page)."""
    if not field.data:
        raise StopValidation("Choose at least one event type.")


class EndpointForm(AdminForm):
    url = StringField(
        "Endpoint URL",
        validators=[DataRequired(message="Enter the partner's https:// URL."), Length(max=guard.MAX_URL)],
        description="Where the shop POSTs the events, e.g. https://erp.partner.example/webhooks/shop",
    )
    events = MultiCheckboxField("Events to send", choices=[(t, t) for t in TYPES], validators=[_some_ticked])
    description = StringField(
        "Description (optional)",
        validators=[Optional(), Length(max=services.MAX_DESCRIPTION)],
        description="Whose endpoint this is, for the staff who read the list.",
    )


class EditEndpointForm(EndpointForm):
    enabled = BooleanField("Enabled (send events to this endpoint)")


class PartnerWebhookView(StaffView):
    view_permission = edit_permission = P.STAFF_MANAGE  # admins only (API.md: webhooks are the admins')

    def _handle_view(self, name, **kwargs):
        refused = super()._handle_view(name, **kwargs)
        if refused is None and request.method == "POST" and not self.may_edit():
            abort(403)
        return refused

    def _endpoint(self, endpoint_id: int):
        try:
            return services.get_endpoint(endpoint_id)
        except services.NotFound:
            abort(404)

    @expose("/")
    def index(self):
        total, endpoints = services.list_endpoints(1, 500)
        return self.render("admin/shop_partner_webhooks.html", endpoints=endpoints, total=total, form=AdminForm())

    def _save(self, form, save):
        """Call the service with the form's values; its refusals land on the fields they concern."""
        data = {"url": form.url.data, "events": form.events.data, "description": form.description.data or ""}
        if hasattr(form, "enabled"):
            data["enabled"] = bool(form.enabled.data)
        try:
            return save(data)
        except services.UrlRefused as exc:
            form.url.errors = [*form.url.errors, str(exc)]
        except services.Invalid as exc:
            for field, problem in exc.fields.items():
                getattr(form, field).errors = [*getattr(form, field).errors, f"This {problem}."]
        return None

    @expose("/new", methods=("GET", "POST"))
    def create(self):
        form = EndpointForm(request.form if request.method == "POST" else None)
        if form.validate_on_submit() and (made := self._save(form, services.create_endpoint)) is not None:
            endpoint, secret = made
            resp = make_response(
                self.render("admin/shop_partner_webhook_created.html", endpoint=endpoint, secret=secret)
            )
            resp.headers["Cache-Control"] = "no-store"  # the secret must not stay in any cache
            return resp
        status = 422 if form.is_submitted() else 200
        return self.render("admin/shop_partner_webhook_form.html", form=form, endpoint=None), status

    @expose("/<int:endpoint_id>/edit", methods=("GET", "POST"))
    def edit(self, endpoint_id: int):
        endpoint = self._endpoint(endpoint_id)
        form = EditEndpointForm(obj=endpoint) if request.method == "GET" else EditEndpointForm(request.form)
        if form.validate_on_submit():
            if self._save(form, lambda data: services.update_endpoint(endpoint_id, data)) is not None:
                flash(f"Saved the endpoint {endpoint.url}.", "success")
                return redirect(url_for(".index"))
        status = 422 if form.is_submitted() else 200
        return self.render("admin/shop_partner_webhook_form.html", form=form, endpoint=endpoint), status

    def _checked_post(self):
        if not AdminForm(request.form).validate_on_submit():
            abort(400)

    @expose("/<int:endpoint_id>/delete", methods=("POST",))
    def delete(self, endpoint_id: int):
        self._checked_post()
        url = self._endpoint(endpoint_id).url
        services.delete_endpoint(endpoint_id)
        flash(f"Deleted the endpoint {url} and its delivery log.", "success")
        return redirect(url_for(".index"))

    @expose("/<int:endpoint_id>/test", methods=("POST",))
    def send_test(self, endpoint_id: int):
        self._checked_post()
        try:
            delivery = services.send_test(endpoint_id)
        except services.NotFound:
            abort(404)
        except services.EndpointDisabled:
            flash("The endpoint is disabled: enable it first, then send a test event.", "error")
        else:
            flash(f"A test event ({delivery.event_id}) is on its way; its result appears in the log below.", "success")
        return redirect(url_for(".deliveries", endpoint_id=endpoint_id))

    @expose("/<int:endpoint_id>/deliveries")
    def deliveries(self, endpoint_id: int):
        endpoint = self._endpoint(endpoint_id)
        page = request.args.get("page", "1")
        page = int(page) if page.isdigit() and 0 < int(page) <= 100_000 else 1
        state = request.args.get("state", "")
        state = state if state in STATES else ""
        total, rows = services.list_deliveries(endpoint_id, page, PER_PAGE, state or None)
        pages = max(1, -(-total // PER_PAGE))
        return self.render(
            "admin/shop_partner_webhook_deliveries.html",
            endpoint=endpoint,
            deliveries=rows,
            total=total,
            page=page,
            pages=pages,
            state=state,
            states=STATES,
            form=AdminForm(),
        )

    @expose("/<int:endpoint_id>/deliveries/<int:delivery_id>/retry", methods=("POST",))
    def retry(self, endpoint_id: int, delivery_id: int):
        self._checked_post()
        try:
            services.retry_delivery(endpoint_id, delivery_id)
        except services.NotFound:
            abort(404)
        except services.EndpointDisabled:
            flash("The endpoint is disabled: enable it first, then retry.", "error")
        except services.DeliveryInProgress:
            flash(
                f"Delivery {delivery_id} is being attempted right now: its result appears in the log shortly.", "error"
            )
        else:
            flash(f"Delivery {delivery_id} will be attempted again in a moment.", "success")
        return redirect(url_for(".deliveries", endpoint_id=endpoint_id))
