"""The audit log page: newest first, filtered, paged by keyset (Newer / Older) so that the page
of the millionth event costs what the first one does."""

from __future__ import annotations

from flask import render_template, request, url_for

from app.admin import bp
from app.admin.forms import AuditFilterForm
from app.pages import admin_required
from app.services import audit

PER_PAGE = 50
COUNT_CAP = 10_000

# Where a resource that still exists is shown: (endpoint, its argument).
RESOURCE_PAGES = {
    "ai_provider": ("admin.provider_detail", "provider_id"),
    "ai_provider_key": ("admin.provider_detail", "provider_id"),  # the provider the key belongs to
    "chat_model_config": ("admin.edit_model_config", "config_id"),
    "chat_provider": ("admin.edit_legacy_provider", "provider_id"),
    "group": ("admin.group_detail", "group_id"),
    "user": ("admin.audit_log", "actor"),  # users have no page of their own: what they did
}


def _cursor(name: str) -> int | None:
    raw = request.args.get(name, "")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 2**63 else None


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
    page = audit.page_events(filters, PER_PAGE, before=_cursor("before"), after=_cursor("after"), with_newer=True)
    total = audit.count_events(filters, COUNT_CAP)
    query = {k: v for k, v in request.args.items() if k not in ("before", "after") and v}
    links = {
        "newer": url_for("admin.audit_log", **query, after=page.newer) if page.newer else None,
        "older": url_for("admin.audit_log", **query, before=page.older) if page.older else None,
        "newest": url_for("admin.audit_log", **query),
    }
    resources = {}
    for (resource_type, resource_id), ref in audit.existing_resources(page.events).items():
        endpoint, argument = RESOURCE_PAGES[resource_type]
        resources[(resource_type, resource_id)] = (ref.label, url_for(endpoint, **{argument: str(ref.page_id)}))
    return render_template("admin/audit.html", events=page.events, form=form, total=total, capped=total > COUNT_CAP,
                           cap=COUNT_CAP, links=links, resources=resources, paged=bool(request.args.get("before")
                                                                                    or request.args.get("after")))
