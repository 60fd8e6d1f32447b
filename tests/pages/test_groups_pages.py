"""The admin pages for groups and their members, and the users page's groups and role change,
driven the way a browser does (forms + CSRF)."""

from __future__ import annotations

import html
import re

import pytest

from tests.support import login, make_user, post_form
from tests.support.db import sql
from tests.support.factories import audit_events, make_config, make_group, make_provider, restrict_config

NAME_DETAIL = "Names must use lowercase letters, numbers, and single hyphens."


@pytest.fixture
def admin_client(client, admin):
    login(client, admin.email)
    return client


def text(response) -> str:
    return response.get_data(as_text=True)


def field_error(body: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="{field}-error">(.*?)</p>', body, re.S)
    assert match, f"no error next to {field}"
    return html.unescape(match.group(1))


def input_value(body: str, field: str) -> str | None:
    tag = re.search(rf'<input[^>]*\bname="{field}"[^>]*>', body)
    assert tag, f"no input {field}"
    value = re.search(r'\bvalue="([^"]*)"', tag.group(0))
    return html.unescape(value.group(1)) if value else None


def flashes(body: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<div class="flash flash-\w+">(.*?)</div>', body, re.S)]


def group_names(app) -> list[str]:
    return [r[0] for r in sql(app, "SELECT name FROM groups ORDER BY name")]


def members_of(app, group_id: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in sql(app, "SELECT users.email, source FROM group_members JOIN users "
                                       "ON users.id = group_members.user_id WHERE group_id = :g ORDER BY email",
                                  g=_uuid(group_id))]


def _uuid(value: str):
    import uuid

    return uuid.UUID(value)


# --- list, create, edit ----------------------------------------------------------------------


def test_empty_list_invites_to_add_a_group(admin_client):
    body = text(admin_client.get("/admin/groups"))
    assert "No groups yet" in body
    assert 'href="/admin/groups/new"' in body
    assert '<a href="/admin/groups" aria-current="page">Groups</a>' in body  # in the admin navigation


def test_list_shows_members_and_models_open_to_each_group(app, admin_client, member, member_b):
    team = make_group(app, "team", members=[member, member_b], display_name="The team")
    make_group(app, "alone")
    provider = make_provider(app, "p1", "provider_only")
    restrict_config(app, make_config(app, provider, "m1"), [team])
    restrict_config(app, make_config(app, provider, "m2"), [team])
    body = text(admin_client.get("/admin/groups"))
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)[1:]
    assert len(rows) == 2
    assert "alone" in rows[0] and "The team" in rows[1]  # by name
    cells = lambda row: re.findall(r'<td class="num" data-label="[^"]+">(\d+)</td>', row)  # noqa: E731
    assert cells(rows[0]) == ["0", "0"]
    assert cells(rows[1]) == ["2", "2"]


def test_create_shows_every_error_next_to_its_field_and_keeps_values(app, admin_client):
    response = post_form(admin_client, "/admin/groups/new", {"name": "Bad Name", "display_name": "x" * 129})
    assert response.status_code == 400
    body = text(response)
    assert field_error(body, "name") == f"Invalid group name. {NAME_DETAIL}"
    assert "128" in field_error(body, "display_name")
    assert input_value(body, "name") == "Bad Name"
    assert group_names(app) == []


def test_create_then_land_on_the_group_page(app, admin_client):
    response = post_form(admin_client, "/admin/groups/new", {"name": " data-science ", "display_name": "Data"},
                         follow=True)
    assert response.status_code == 200
    body = text(response)
    assert "Group data-science created." in " ".join(flashes(body))
    assert "No members yet" in body
    assert group_names(app) == ["data-science"]
    assert [e["details"]["name"] for e in audit_events(app, "group.create")] == ["data-science"]


def test_duplicate_name_is_shown_next_to_the_name(app, admin_client):
    make_group(app, "taken")
    response = post_form(admin_client, "/admin/groups/new", {"name": "taken", "display_name": "Kept"})
    assert response.status_code == 400
    assert field_error(text(response), "name") == "Group already exists."
    assert input_value(text(response), "display_name") == "Kept"
    assert group_names(app) == ["taken"]


def test_edit_saves_changes(app, admin_client):
    group = make_group(app, "before")
    form = text(admin_client.get(f"/admin/groups/{group}/edit"))
    assert input_value(form, "name") == "before"
    response = post_form(admin_client, f"/admin/groups/{group}/edit", {"name": "after", "display_name": "After"},
                         follow=True)
    assert "Changes saved." in flashes(text(response))
    assert group_names(app) == ["after"]
    make_group(app, "other")
    refused = post_form(admin_client, f"/admin/groups/{group}/edit", {"name": "other", "display_name": ""})
    assert refused.status_code == 400
    assert field_error(text(refused), "name") == "Group already exists."


def test_unknown_or_malformed_group_pages_are_404(admin_client):
    import uuid

    for path in (f"/admin/groups/{uuid.uuid4()}", "/admin/groups/nope", f"/admin/groups/{uuid.uuid4()}/edit",
                 f"/admin/groups/{uuid.uuid4()}/delete"):
        assert admin_client.get(path).status_code == 404, path


def test_forms_need_their_csrf_token(app, admin_client):
    group = make_group(app, "g")
    assert admin_client.post("/admin/groups/new", data={"name": "x"}).status_code == 400
    assert admin_client.post(f"/admin/groups/{group}/delete").status_code == 400
    assert group_names(app) == ["g"]


# --- members ---------------------------------------------------------------------------------


def test_group_page_shows_members_with_their_source(app, admin_client, member, member_b):
    group = make_group(app, "team", members=[member])
    from app.extensions import db
    from app.models import GroupMember

    with app.app_context():
        db.session.add(GroupMember(group_id=_uuid(group), user_id=member_b.id, source="sso"))
        db.session.commit()
    body = text(admin_client.get(f"/admin/groups/{group}"))
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)[1:]
    assert [re.search(r"[\w.-]+@example\.com", r).group(0) for r in rows] == [member.email, member_b.email]
    assert ">Manual<" in rows[0] and ">SSO<" in rows[1]


def test_add_a_member_by_email(app, admin_client, member):
    group = make_group(app, "team")
    response = post_form(admin_client, f"/admin/groups/{group}/members", {"email": " Member@Example.com "},
                         csrf_path=f"/admin/groups/{group}", follow=True)
    assert response.status_code == 200
    assert f"{member.email} is a member of team." in flashes(text(response))
    assert members_of(app, group) == [(member.email, "manual")]


def test_adding_an_unknown_or_deactivated_email_is_an_error_next_to_the_field(app, admin_client, runner):
    group = make_group(app, "team")
    gone = make_user(app, "gone@example.com")
    runner.invoke(args=["users", "deactivate", gone.email])
    for email in ("nobody@example.com", gone.email, ""):
        response = post_form(admin_client, f"/admin/groups/{group}/members", {"email": email},
                             csrf_path=f"/admin/groups/{group}")
        assert response.status_code == 400
        body = text(response)
        assert field_error(body, "email") == "No active user has this email."
        assert input_value(body, "email") == email
    assert members_of(app, group) == []


def test_remove_a_member_behind_a_confirmation(app, admin_client, member):
    group = make_group(app, "team", members=[member])
    path = f"/admin/groups/{group}/members/{member.id}/remove"
    confirm = text(admin_client.get(path))
    assert f"Remove {member.name} from team?" in confirm
    assert members_of(app, group) == [(member.email, "manual")]  # a GET changes nothing
    response = post_form(admin_client, path, follow=True)
    assert "Removed from team." in flashes(text(response))
    assert members_of(app, group) == []
    again = post_form(admin_client, path, csrf_path=f"/admin/groups/{group}", follow=True)
    assert "That user was no longer a member; nothing changed." in flashes(text(again))
    assert admin_client.get(path).status_code == 404  # no such membership to confirm


def test_removing_an_sso_member_says_it_may_come_back(app, admin_client, member):
    group = make_group(app, "team")
    from app.extensions import db
    from app.models import GroupMember

    with app.app_context():
        db.session.add(GroupMember(group_id=_uuid(group), user_id=member.id, source="sso"))
        db.session.commit()
    body = text(admin_client.get(f"/admin/groups/{group}/members/{member.id}/remove"))
    assert "comes back at their next sign-in" in body


# --- delete ----------------------------------------------------------------------------------


def test_delete_confirmation_names_the_models_left_open_to_no_one(app, admin_client, member):
    doomed = make_group(app, "doomed", members=[member])
    other = make_group(app, "other")
    provider = make_provider(app, "p1", "provider_only")
    restrict_config(app, make_config(app, provider, "only-doomed", display_name="Only doomed"), [doomed])
    restrict_config(app, make_config(app, provider, "both"), [doomed, other])
    make_config(app, provider, "everyone")

    body = text(admin_client.get(f"/admin/groups/{doomed}/delete"))
    closed = re.search(r'<ul class="closed-configs">(.*?)</ul>', body, re.S).group(1)
    assert "Only doomed" in closed and "only-doomed" in closed
    assert "both" not in closed and "everyone" not in closed
    assert "1 model will be open to no one" in body
    assert group_names(app) == ["doomed", "other"]

    response = post_form(admin_client, f"/admin/groups/{doomed}/delete", follow=True)
    assert "Group doomed deleted. 1 model open to it alone is now open to no one." in flashes(text(response))
    assert group_names(app) == ["other"]
    assert sql(app, "SELECT count(*) FROM group_members")[0][0] == 0


def test_delete_confirmation_without_models_left_closed(app, admin_client):
    group = make_group(app, "plain")
    assert "No model is open to this group alone" in text(admin_client.get(f"/admin/groups/{group}/delete"))


# --- the users page: groups and roles --------------------------------------------------------


def test_users_page_shows_each_users_groups(app, admin_client, member, member_b):
    make_group(app, "beta", members=[member])
    make_group(app, "alpha", members=[member])
    body = text(admin_client.get("/admin/users"))
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", body, re.S) if member.email in r)
    groups_cell = re.search(r'<td data-label="Groups">(.*?)</td>', row, re.S).group(1)
    assert re.findall(r">(\w+)</a>", groups_cell) == ["alpha", "beta"]
    row_b = next(r for r in re.findall(r"<tr>(.*?)</tr>", body, re.S) if member_b.email in r)
    assert "None" in re.search(r'<td data-label="Groups">(.*?)</td>', row_b, re.S).group(1)


def test_admin_changes_a_role(app, admin_client, member):
    response = post_form(admin_client, f"/admin/users/{member.id}/role", {"role": "admin"}, csrf_path="/admin/users",
                         follow=True)
    assert f"{member.email} is now an administrator." in flashes(text(response))
    assert sql(app, "SELECT role FROM users WHERE email = :e", e=member.email) == [("admin",)]
    member_browser = app.test_client()
    login(member_browser, member.email)
    assert member_browser.get("/admin/groups").status_code == 200
    post_form(admin_client, f"/admin/users/{member.id}/role", {"role": "member"}, csrf_path="/admin/users")
    assert sql(app, "SELECT role FROM users WHERE email = :e", e=member.email) == [("member",)]
    assert [e["details"]["role"] for e in audit_events(app, "user.role_change")] == ["admin", "member"]


def test_the_last_active_admin_keeps_the_role(app, admin_client, admin):
    response = post_form(admin_client, f"/admin/users/{admin.id}/role", {"role": "member"}, csrf_path="/admin/users",
                         follow=True)
    assert "The last administrator cannot lose that role." in flashes(text(response))
    assert sql(app, "SELECT role FROM users WHERE email = :e", e=admin.email) == [("admin",)]
    assert audit_events(app, "user.role_change") == []


def test_role_change_refuses_a_bad_role_or_user(app, admin_client, member):
    import uuid

    response = post_form(admin_client, f"/admin/users/{member.id}/role", {"role": "owner"}, csrf_path="/admin/users",
                         follow=True)
    assert "Invalid role." in flashes(text(response))
    assert sql(app, "SELECT role FROM users WHERE email = :e", e=member.email) == [("member",)]
    assert post_form(admin_client, f"/admin/users/{uuid.uuid4()}/role", {"role": "admin"},
                     csrf_path="/admin/users").status_code == 404
    assert admin_client.post(f"/admin/users/{member.id}/role", data={"role": "admin"}).status_code == 400  # no CSRF
    assert sql(app, "SELECT role FROM users WHERE email = :e", e=member.email) == [("member",)]
