"""GET /audit-events (SPEC section 11): newest first, the page's filters plus since/until, keyset
paging by `before` with the next page in a `Link` header; admins only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.support import API

EVENT_FIELDS = {"id", "created_at", "actor_id", "actor_label", "action", "resource_type", "resource_id", "details",
                "request_id", "ip"}


def seed(app, n: int, action: str = "seed.event", at: datetime | None = None, actor: str = "seed") -> None:
    from app.extensions import db
    from app.services import audit
    from app.services.base import Actor, transaction

    with app.app_context(), transaction():
        for i in range(n):
            event = audit.record(Actor.system(actor), action, "thing", f"thing-{i:03d}", n=i)
            if at is not None:
                event.created_at = at
        db.session.flush()


def next_link(response) -> str | None:
    header = response.headers.get("Link")
    if header is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', header)
    assert match, header
    return match.group(1)


def test_only_admins_read_the_audit_log(member_api, anon_api, service_api, admin_api):
    assert member_api.get("/audit-events").status_code == 403
    assert member_api.get("/audit-events").get_json() == {"message": "Forbidden."}
    assert anon_api.get("/audit-events").status_code == 401
    assert service_api.get("/audit-events").status_code == 403
    assert admin_api.get("/audit-events").status_code == 200


def test_an_event_as_the_api_shows_it(app, admin, admin_api):
    created = admin_api.post("/ai-providers", json={"type": "openai", "name": "seen"}, headers={"X-Request-ID":
                                                                                               "req-12345678"})
    response = admin_api.get("/audit-events", query_string={"action": "provider.create"})
    assert response.status_code == 200
    assert "X-Total-Count" not in response.headers
    (event,) = response.get_json()
    assert set(event) == EVENT_FIELDS
    assert event["actor_id"] == str(admin.id)
    assert event["actor_label"] == "admin@example.com"
    assert (event["action"], event["resource_type"], event["resource_id"]) == (
        "provider.create", "ai_provider", created.get_json()["id"])
    assert event["details"] == {"name": "seen", "type": "openai", "key_policy": "provider_only", "enabled": True}
    assert event["request_id"] == "req-12345678"
    assert isinstance(event["id"], int)
    assert event["created_at"].endswith("Z")


def test_filters_match_the_audit_page(app, admin, admin_api):
    seed(app, 2, "user.create")
    seed(app, 1, "auth.login_failed")
    seed(app, 1, "auth.login", actor="someone@example.com")

    def actions(**query):
        response = admin_api.get("/audit-events", query_string=query)
        assert response.status_code == 200, response.get_json()
        return [e["action"] for e in response.get_json()]

    assert actions(action="auth.login") == ["auth.login"]
    assert actions(action="auth") == ["auth.login", "auth.login_failed"]
    assert actions(actor="SOMEONE@") == ["auth.login"]
    assert actions(actor=str(admin.id)) == []
    assert actions(resource_type="thing", resource_id="thing-001") == ["user.create"]
    assert actions(resource_type="nothing") == []


def test_since_is_inclusive_and_until_exclusive(app, admin_api):
    base = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    for hour in range(4):
        seed(app, 1, f"at.h{hour}", at=base + timedelta(hours=hour))

    def actions(**query):
        response = admin_api.get("/audit-events", query_string={"action": "at", **query})
        assert response.status_code == 200, response.get_json()
        return [e["action"] for e in response.get_json()]

    assert actions(since="2026-01-31T13:00:00Z") == ["at.h3", "at.h2", "at.h1"]
    assert actions(until="2026-01-31T13:00:00Z") == ["at.h0"]
    assert actions(since="2026-01-31T13:00:00Z", until="2026-01-31T15:00:00Z") == ["at.h2", "at.h1"]
    assert actions(since="2026-01-31T15:00:00+02:00") == ["at.h3", "at.h2", "at.h1"]  # 13:00 UTC
    assert actions(since="2026-01-31T14:30:00.5+00:00") == ["at.h3"]
    assert actions(since="2026-02-01T00:00:00Z") == []
    assert actions(until="2026-01-31t12:00:00z") == []


def test_malformed_parameters_are_refused_by_name(admin_api):
    for query, field in (({"since": "yesterday"}, "since"), ({"until": "2026-01-31T12:00:00"}, "until"),
                         ({"since": "2026-13-01T00:00:00Z"}, "since"), ({"limit": "0"}, "limit"),
                         ({"limit": "1001"}, "limit"), ({"limit": "ten"}, "limit"), ({"before": "x"}, "before"),
                         ({"offset": "10"}, "offset"), ({"colour": "red"}, "colour"), ({"actor": "a\x00b"}, "actor"),
                         ({"action": "x" * 255}, "action"), ({"since": ""}, "since"),
                         ({"until": "2026-01-31"}, "until"), ({"resource_id": "\x07"}, "resource_id")):
        response = admin_api.get("/audit-events", query_string=query)
        assert response.status_code == 400, query
        body = response.get_json()
        assert body["message"] == "Invalid query parameter."
        assert [v["field"] for v in body["validations"]] == [field], query
    response = admin_api.get("/audit-events?limit=5&limit=6")
    assert response.status_code == 400
    assert response.get_json()["validations"][0]["field"] == "limit"


def test_paging_to_the_end_shows_every_event_once_while_new_ones_arrive(app, admin_api):
    seed(app, 95)
    seen, url, pages = [], f"{API}/audit-events?action=seed&limit=20", 0
    expected = None
    while url:
        response = admin_api.client.get(url, headers={"Authorization": f"Bearer {admin_api.token}"})
        assert response.status_code == 200
        events = response.get_json()
        if expected is None:
            expected = list(range(events[0]["id"], events[0]["id"] - 95, -1))
        seen += [e["id"] for e in events]
        assert len(events) <= 20
        url = next_link(response)
        if url:
            assert url.startswith(f"{API}/audit-events?") and "action=seed" in url and "limit=20" in url
        seed(app, 3)  # recorded while paging: newer than the first page, so never on a later one
        pages += 1
    assert pages == 5
    assert seen == expected  # every event, once, newest first
    last = admin_api.get("/audit-events", query_string={"action": "seed", "limit": 20, "before": seen[-1]})
    assert last.get_json() == [] and "Link" not in last.headers


def test_default_and_largest_page(app, admin_api):
    seed(app, 101)
    first = admin_api.get("/audit-events", query_string={"action": "seed"})
    assert len(first.get_json()) == 100
    assert next_link(first).endswith(f"limit=100&before={first.get_json()[-1]['id']}")
    assert len(admin_api.get("/audit-events", query_string={"action": "seed", "limit": 1000}).get_json()) == 101
