"""Background jobs in the back-office (admins only): counts per queue and the jobs that kept failing,
each with Requeue and Delete (POST with the CSRF token)."""

from __future__ import annotations

from flask import abort, flash, redirect, request, url_for
from flask_admin import expose

from admin.security import AdminForm, StaffView
from shop import queues
from shop.accounts.permissions import Permission as P


class JobsView(StaffView):
    view_permission = edit_permission = P.STAFF_MANAGE

    @expose("/")
    def index(self):
        return self.render(
            "admin/shop_jobs.html", counts=queues.overview(), failed=queues.failed_jobs(), form=AdminForm()
        )

    def _act(self, action, done: str):
        if not self.may_edit():
            abort(403)
        form = AdminForm(request.form)
        if not form.validate_on_submit():
            abort(400)
        queue, job_id = request.form.get("queue", ""), request.form.get("job_id", "")
        if action(queue, job_id):
            flash(f"Job {job_id} {done}.", "success")
        else:
            flash(f"Job {job_id} is not a failed job on {queue or 'any queue'} (any more).", "error")
        return redirect(url_for(".index"))

    @expose("/requeue", methods=("POST",))
    def requeue(self):
        return self._act(queues.requeue, "is back on its queue")

    @expose("/delete", methods=("POST",))
    def delete(self):
        return self._act(queues.delete, "was deleted")
