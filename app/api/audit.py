"""GET /audit-events (SPEC section 11): the audit log for security teams' tools. Admins only."""

from __future__ import annotations

from flask import jsonify, url_for

from app.api import bp
from app.api import responses as out
from app.api.auth import access
from app.api.openapi import doc
from app.api.schemas import AuditEventsQuery
from app.api.util import parse_query
from app.services import audit

DEFAULT_LIMIT = 100


@bp.get("/audit-events")
@access("admin")
@doc("List audit events", responses={200: list[out.AuditEvent]}, query=AuditEventsQuery, keyset=True)
def list_audit_events():
    """Newest first, filtered like /admin/audit, plus `since` (inclusive) and `until` (exclusive).

    Keyset paging: `limit` (1..1000, default 100) and `before` (an event id); the next page's URL is
    in the `Link` header (`rel="next"`), absent on the last page. No `X-Total-Count`. Following the
    links to the end shows every event once, whatever is recorded meanwhile (newer events are not
    on later pages: start again without `before` to see them).

    :raise 400: an unknown or malformed parameter, `since` or `until` not RFC 3339.
    """
    query = parse_query(AuditEventsQuery)
    filters = audit.AuditFilter(
        **{name: audit.clean_filter(getattr(query, name), name) for name in ("actor", "action", "resource_type",
                                                                             "resource_id")},
        since=audit.parse_instant(query.since, "since", allow_date=False),
        until=audit.parse_instant(query.until, "until", allow_date=False))
    limit = query.limit or DEFAULT_LIMIT
    page = audit.page_events(filters, limit, before=query.before)
    response = jsonify([audit.event_record(e) for e in page.events])
    if page.older is not None:
        kept = {k: v for k, v in query.model_dump(exclude={"before", "limit"}).items() if v not in (None, "")}
        next_url = url_for("api.list_audit_events", **kept, limit=limit, before=page.older)
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response
