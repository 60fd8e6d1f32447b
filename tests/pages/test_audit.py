"""The audit log: what gets recorded (never a secret), and the /admin/audit page with its
filters and pages. Token pages are exercised here because their events are what matter."""

from __future__ import annotations

import re

from tests.support import PASSWORD, Api, login, make_user, post_form


def events(app, **filters):
    from app.services import audit

    with app.app_context():
        rows = audit.page_events(audit.AuditFilter(**filters), 10_000).events
        return [(e.action, e.actor_label, e.resource_type, e.resource_id, e.details, e.request_id) for e in rows]


def actions(app, **filters) -> list[str]:
    return [e[0] for e in events(app, **filters)]


def audit_rows(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return re.findall(r"<code>([a-z_.]+)</code>", body)


def test_user_creation_and_deactivation_are_recorded(app, client, admin):
    login(client, admin.email)
    post_form(client, "/admin/users", {"email": "new@example.com", "password": PASSWORD, "role": "member"})
    (created,) = events(app, action="user.create", actor="admin@example.com")
    _, actor, resource_type, resource_id, details, request_id = created
    assert (actor, resource_type) == ("admin@example.com", "user")
    assert details == {"email": "new@example.com", "role": "member"}
    assert request_id  # ties the event to the server log

    post_form(client, f"/admin/users/{resource_id}/deactivate", {}, csrf_path=f"/admin/users/{resource_id}/deactivate")
    (deactivated,) = events(app, action="user.deactivate")
    assert deactivated[1:4] == ("admin@example.com", "user", resource_id)
    assert deactivated[4]["email"] == "new@example.com"


def test_cli_changes_are_recorded_as_the_cli(app, runner):
    runner.invoke(args=["users", "create", "cli@example.com", "--password", PASSWORD])
    runner.invoke(args=["users", "deactivate", "cli@example.com"])
    assert [(e[0], e[1]) for e in events(app)] == [("user.deactivate", "cli"), ("user.create", "cli")]


def test_failed_sign_ins_are_recorded_without_the_password(app, client, member):
    login(client, member.email, "wrong-password-canary-1234")
    login(client, "nobody@example.com", "another-password-canary-5678")
    failures = events(app, action="auth.login_failed")
    assert [e[4]["email"] for e in failures] == ["(unknown account)", "member@example.com"]
    assert failures[1][3] == str(member.id)
    assert failures[0][3] is None
    assert "canary" not in repr(events(app))
    login(client, member.email)
    assert actions(app, action="auth.login") == ["auth.login"]  # the prefix matches whole words only
    assert actions(app, action="auth.") == ["auth.login", "auth.login_failed", "auth.login_failed"]


def test_token_creation_and_revocation_from_settings(app, client, member):
    login(client, member.email)
    response = post_form(client, "/settings/tokens", {"name": "laptop"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    token = re.search(r'id="new-token" class="input input-mono" type="text" readonly value="([^"]+)"', html).group(1)
    assert "shown only this once" in html
    assert Api(app.test_client(), token).get("/me").status_code == 200
    assert token not in client.get("/settings/tokens").get_data(as_text=True)

    (created,) = events(app, action="token.create")
    token_id = created[3]
    assert created[1:3] == ("member@example.com", "api_token")
    assert created[4] == {"owner_id": str(member.id), "service": False}

    confirm = client.get(f"/settings/tokens/{token_id}/revoke")
    assert confirm.status_code == 200
    assert "laptop" in confirm.get_data(as_text=True)
    assert Api(app.test_client(), token).get("/me").status_code == 200  # GET only asks
    done = post_form(client, f"/settings/tokens/{token_id}/revoke", {}, csrf_path=f"/settings/tokens/{token_id}/revoke")
    assert done.status_code == 302
    assert Api(app.test_client(), token).get("/me").status_code == 401
    (revoked,) = events(app, action="token.revoke")
    assert revoked[1:4] == ("member@example.com", "api_token", token_id)

    assert token not in repr(events(app))
    assert client.get(f"/settings/tokens/{token_id}/revoke").status_code == 404  # already gone


def test_tokens_of_others_cannot_be_revoked(app, client, member, member_b):
    from app.services import tokens
    from app.services.base import Actor

    with app.app_context():
        token, _ = tokens.create_token(Actor.system("test"), member_b, "theirs")
        token_id = token.id
    login(client, member.email)
    assert client.get(f"/settings/tokens/{token_id}/revoke").status_code == 404
    assert post_form(client, f"/settings/tokens/{token_id}/revoke", {}, csrf_path="/settings/tokens").status_code == 404
    assert actions(app, action="token.revoke") == []


def test_audit_page_filters(app, client, admin, member):
    make_user(app, "percent%user@example.com")
    login(client, member.email, "wrong password here")
    login(client, admin.email)
    post_form(client, "/admin/users", {"email": "made@example.com", "password": PASSWORD, "role": "member"})
    made = events(app, action="user.create", actor="admin@example.com")[0][3]

    def shown(**query) -> list[str]:
        response = client.get("/admin/audit", query_string=query)
        assert response.status_code == 200
        return audit_rows(response.get_data(as_text=True))

    everything = shown()
    assert {"user.create", "auth.login_failed", "auth.login"} <= set(everything)
    assert shown(action="user.") == ["user.create"] * 4  # admin, member, percent%user, made
    assert shown(action="user") == ["user.create"] * 4
    assert shown(action="user.create") == ["user.create"] * 4
    assert shown(actor="ADMIN@example") == ["user.create", "auth.login"]
    assert shown(actor=str(admin.id)) == ["user.create", "auth.login"]
    assert shown(actor="%") == []  # a literal percent sign, not a wildcard: no actor label has one
    assert shown(resource_type="user", resource_id=made) == ["user.create"]
    assert shown(resource_type="api_token") == []
    empty = client.get("/admin/audit", query_string={"action": "nothing.like.this"}).get_data(as_text=True)
    assert "No events match" in empty


def seed_events(app, n: int, action: str = "seed.event") -> None:
    from app.services import audit
    from app.services.base import Actor, transaction

    with app.app_context(), transaction():
        for i in range(n):
            audit.record(Actor.system("seed"), action, "thing", f"thing-{i:02d}")


def pager_links(html: str) -> dict[str, str]:
    return {label: href.replace("&amp;", "&") for href, label in
            re.findall(r'<a class="btn btn-ghost btn-small" href="([^"]+)">(?:← )?(Newer|Older)(?: →)?</a>', html)}


def test_audit_page_pages_newer_and_older_by_event_id(app, client, admin):
    seed_events(app, 120)
    login(client, admin.email)
    first = client.get("/admin/audit?action=seed.").get_data(as_text=True)
    assert "120 events" in first
    assert len(audit_rows(first)) == 50
    assert "thing-119" in first  # newest first
    links = pager_links(first)
    assert set(links) == {"Older"}  # the newest page has nothing newer
    assert links["Older"].startswith("/admin/audit?action=seed.&before=")  # the filters stay on the next page

    seed_events(app, 3)  # recorded while someone pages: later pages neither repeat nor skip an event
    second = client.get(links["Older"]).get_data(as_text=True)
    third = client.get(pager_links(second)["Older"]).get_data(as_text=True)
    assert (len(audit_rows(second)), len(audit_rows(third))) == (50, 20)
    assert "Older" not in pager_links(third)
    shown = re.findall(r"thing-\d+", first + second + third)
    assert shown == [f"thing-{i:02d}" for i in range(119, -1, -1)]

    back = client.get(pager_links(third)["Newer"]).get_data(as_text=True)
    assert re.findall(r"thing-\d+", back) == re.findall(r"thing-\d+", second)
    top = client.get(pager_links(back)["Newer"]).get_data(as_text=True)
    assert re.findall(r"thing-\d+", top) == re.findall(r"thing-\d+", first)  # the same pages on the way back
    newest = client.get(pager_links(top)["Newer"]).get_data(as_text=True)  # 3 were recorded since
    assert re.findall(r"thing-\d+", newest)[:4] == ["thing-02", "thing-01", "thing-00", "thing-119"]
    assert len(audit_rows(newest)) == 50  # back at the top: the newest page, full
    assert "Newer" not in pager_links(newest)
    gone = client.get("/admin/audit?action=seed.&before=1").get_data(as_text=True)
    assert "Nothing on this page" in gone


def test_audit_page_counts_exactly_up_to_a_cap(app, client, admin, monkeypatch):
    """Exact up to 10,000 events, "More than 10,000" beyond (shown here with a cap of 2)."""
    import app.admin.audit as page

    assert page.COUNT_CAP == 10_000
    seed_events(app, 3)
    login(client, admin.email)
    assert "3 events" in client.get("/admin/audit?action=seed.").get_data(as_text=True)
    monkeypatch.setattr(page, "COUNT_CAP", 2)
    assert "More than 2 events" in client.get("/admin/audit?action=seed.").get_data(as_text=True)
    monkeypatch.setattr(page, "COUNT_CAP", 3)
    assert "3 events" in client.get("/admin/audit?action=seed.").get_data(as_text=True)


def test_audit_page_names_and_links_resources_that_still_exist(app, client, admin, admin_api):
    provider = admin_api.post("/ai-providers", json={"type": "openai", "name": "named-one"}).get_json()
    gone = admin_api.post("/ai-providers", json={"type": "openai", "name": "gone-one"}).get_json()
    config = admin_api.post("/model-configs", json={"ai_provider_id": provider["id"], "model": "gpt-4o"}).get_json()
    group = admin_api.post("/groups", json={"name": "named-team"}).get_json()
    admin_api.delete(f"/ai-providers/{gone['id']}")
    login(client, admin.email)
    html = client.get("/admin/audit").get_data(as_text=True)
    assert f'<a href="/admin/providers/{provider["id"]}">named-one</a>' in html
    assert f'<a href="/admin/groups/{group["id"]}">named-team</a>' in html
    assert f'<a href="/admin/model-configs/{config["id"]}/edit">named-one/gpt-4o</a>' in html
    assert f'<a href="/admin/audit?actor={admin.id}">admin@example.com</a>' in html  # the sign-in event
    assert "gone-one</a>" not in html  # deleted: shown by its id only
    assert gone["id"] in html


def test_audit_page_names_resources_with_one_query_per_type(app, client, admin, admin_api):
    from tests.support.query_budget import count_queries

    for n in range(2):
        admin_api.post("/ai-providers", json={"type": "openai", "name": f"few-{n}"})
    login(client, admin.email)
    with count_queries(app) as few:
        client.get("/admin/audit")
    for n in range(20):
        admin_api.post("/ai-providers", json={"type": "openai", "name": f"many-{n}"})
    with count_queries(app) as many:
        html = client.get("/admin/audit").get_data(as_text=True)
    assert html.count('href="/admin/providers/') == 22
    assert many.count == few.count


def test_audit_details_refuse_secrets(app):
    import pytest

    from app.services import audit
    from app.services.base import Actor

    with app.app_context(), pytest.raises(ValueError):
        audit.record(Actor.system("test"), "x.y", "thing", api_key="sk-123")
