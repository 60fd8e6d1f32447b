"""The audit log: what gets recorded (never a secret), and the /admin/audit page with its
filters and pages. Token pages are exercised here because their events are what matter."""

from __future__ import annotations

import re

from tests.support import PASSWORD, Api, login, make_user, post_form


def events(app, **filters):
    from app.services import audit
    from app.services.base import Page

    with app.app_context():
        rows, _ = audit.list_events(audit.AuditFilter(**filters), Page())
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


def test_audit_page_paginates(app, client, admin):
    from app.services import audit
    from app.services.base import Actor, transaction

    with app.app_context(), transaction():
        for n in range(60):
            audit.record(Actor.system("seed"), "seed.event", "thing", f"thing-{n:02d}")
    login(client, admin.email)
    first = client.get("/admin/audit?action=seed.").get_data(as_text=True)
    assert "60 events" in first
    assert "Page 1 of 2" in first
    assert len(audit_rows(first)) == 50
    assert "thing-59" in first  # newest first
    assert 'href="/admin/audit?action=seed.&amp;page=2"' in first  # the filters stay on the next page
    second = client.get("/admin/audit?action=seed.&page=2").get_data(as_text=True)
    assert len(audit_rows(second)) == 10
    assert "thing-00" in second
    assert "thing-00" not in first


def test_audit_details_refuse_secrets(app):
    import pytest

    from app.services import audit
    from app.services.base import Actor

    with app.app_context(), pytest.raises(ValueError):
        audit.record(Actor.system("test"), "x.y", "thing", api_key="sk-123")
