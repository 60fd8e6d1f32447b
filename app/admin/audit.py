from flask import render_template, request

from app.admin import bp
from app.admin.forms import AuditFilterForm
from app.pages import admin_required, page_args
from app.services import audit
from app.services.base import Page


@bp.route("/audit")
@admin_required
def audit_log():
    form = AuditFilterForm(formdata=request.args)
    filters = audit.AuditFilter(
        actor=(form.actor.data or "").strip() or None,
        action=(form.action.data or "").strip() or None,
        resource_type=(form.resource_type.data or "").strip() or None,
        resource_id=(form.resource_id.data or "").strip() or None,
    )
    page = page_args(per_page=50)
    events, total = audit.list_events(filters, Page(limit=page.per_page, offset=page.offset))
    page.total = total
    return render_template("admin/audit.html", events=events, form=form, page=page, total=total)
