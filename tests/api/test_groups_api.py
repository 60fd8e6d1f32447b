"""Groups and their members through the JSON API (SPEC section 9), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from tests.support import make_user
from tests.support.db import sql
from tests.support.factories import audit_events, make_config, make_provider, restrict_config

NAME_DETAIL = "Names must use lowercase letters, numbers, and single hyphens."
GROUP_FIELDS = {"id", "name", "display_name", "member_count", "created_at", "updated_at"}
MEMBER_FIELDS = {"user_id", "email", "name", "source", "added_at"}


def create(api, name="data-science", **fields):
    response = api.post("/groups", json={"name": name, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_error(response, status, message, detail=None):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["message"] == message
    if detail is not None:
        assert body["detail"] == detail
    return body


def group_rows(app) -> int:
    return sql(app, "SELECT count(*) FROM groups")[0][0]


def member_rows(app) -> int:
    return sql(app, "SELECT count(*) FROM group_members")[0][0]


def set_source(app, group_id: str, user_id, source: str) -> None:
    """What an SSO sign-in does to a membership (the SSO issue builds that path)."""
    from app.extensions import db
    from app.models import GroupMember

    with app.app_context():
        row = db.session.get(GroupMember, (uuid.UUID(group_id), user_id))
        if row is None:
            db.session.add(GroupMember(group_id=uuid.UUID(group_id), user_id=user_id, source=source))
        else:
            row.source = source
        db.session.commit()


# --- create ----------------------------------------------------------------------------------


def test_create_returns_every_field(admin_api):
    body = create(admin_api, name="  research  ")
    assert set(body) == GROUP_FIELDS
    uuid.UUID(body["id"])
    assert body["name"] == "research"
    assert body["display_name"] == "research"  # falls back to the name
    assert body["member_count"] == 0
    assert body["created_at"].endswith("Z") and body["created_at"] == body["updated_at"]
    assert admin_api.get(f"/groups/{body['id']}").get_json() == body


def test_display_name_is_trimmed_and_limited(admin_api):
    assert create(admin_api, name="a1", display_name="  Data science  ")["display_name"] == "Data science"
    assert create(admin_api, name="a2", display_name="   ")["display_name"] == "a2"
    assert create(admin_api, name="a3", display_name="x" * 128)["display_name"] == "x" * 128
    body = assert_error(admin_api.post("/groups", json={"name": "a4", "display_name": "x" * 129}), 400,
                        "Invalid display name.")
    assert "128" in body["detail"]
    assert_error(admin_api.post("/groups", json={"name": "a5", "display_name": "tab\there"}), 400,
                 "Invalid display name.")
    assert admin_api.get("/groups").headers["X-Total-Count"] == "3"


@pytest.mark.parametrize("name", [
    None, "", "   ", "Research", "data_science", "data science", "data--science", "-data", "data-", "dätä",
    "a" * 65, "a.b", "a/b",
])
def test_a_bad_name_is_refused_with_the_rule_as_detail(app, admin_api, name):
    body = {} if name is None else {"name": name}
    assert_error(admin_api.post("/groups", json=body), 400, "Invalid group name.", NAME_DETAIL)
    assert group_rows(app) == 0
    assert audit_events(app, "group.") == []


@pytest.mark.parametrize("name", ["a" * 64, "0-1-2", "agents-ok", "team42"])
def test_good_names_are_accepted(admin_api, name):
    assert create(admin_api, name=name)["name"] == name


def test_duplicate_name_is_409_and_nothing_is_created(app, admin_api):
    create(admin_api, name="shared")
    assert_error(admin_api.post("/groups", json={"name": " shared "}), 409, "Group already exists.")
    assert group_rows(app) == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"name": 7}, "name"), ({"name": "x", "display_name": False}, "display_name"),
    ({"name": "x", "member_count": 3}, "member_count"), ({"name": "x", "id": str(uuid.uuid4())}, "id"),
])
def test_wrong_types_and_unknown_fields_are_refused(app, admin_api, body, field):
    response = assert_error(admin_api.post("/groups", json=body), 400, "Invalid request body.")
    assert field in [v["field"] for v in response["validations"]]
    assert group_rows(app) == 0


def test_a_body_that_is_not_an_object_is_refused(admin_api):
    assert_error(admin_api.post("/groups", json=["x"]), 400, "Request body must be valid JSON.")


# --- read ------------------------------------------------------------------------------------


def test_list_is_ordered_by_name_and_paged(admin_api):
    for name in ("zeta", "alpha", "mid", "beta"):
        create(admin_api, name=name)
    response = admin_api.get("/groups")
    assert [g["name"] for g in response.get_json()] == ["alpha", "beta", "mid", "zeta"]
    assert response.headers["X-Total-Count"] == "4"
    page = admin_api.get("/groups?limit=2&offset=1")
    assert [g["name"] for g in page.get_json()] == ["beta", "mid"]
    assert page.headers["X-Total-Count"] == "4"
    assert_error(admin_api.get("/groups?limit=0"), 400, "Invalid query parameter.")


def test_get_unknown_is_404_and_malformed_is_400(admin_api):
    assert_error(admin_api.get(f"/groups/{uuid.uuid4()}"), 404, "Group not found.")
    assert admin_api.get("/groups/not-a-uuid").status_code == 400


def test_member_count_follows_the_members(admin_api, member, member_b):
    group = create(admin_api)
    admin_api.put(f"/groups/{group['id']}/members/{member.id}")
    admin_api.put(f"/groups/{group['id']}/members/{member_b.id}")
    assert admin_api.get(f"/groups/{group['id']}").get_json()["member_count"] == 2
    assert admin_api.get("/groups").get_json()[0]["member_count"] == 2
    admin_api.delete(f"/groups/{group['id']}/members/{member.id}")
    assert admin_api.get(f"/groups/{group['id']}").get_json()["member_count"] == 1


# --- update ----------------------------------------------------------------------------------


def test_patch_renames_and_keeps_the_rest(app, admin_api, member):
    group = create(admin_api, name="old-name", display_name="Old")
    admin_api.put(f"/groups/{group['id']}/members/{member.id}")
    response = admin_api.patch(f"/groups/{group['id']}", json={"name": "new-name"})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["name"], body["display_name"], body["member_count"]) == ("new-name", "Old", 1)
    assert body["updated_at"] > group["updated_at"]
    cleared = admin_api.patch(f"/groups/{group['id']}", json={"display_name": ""}).get_json()
    assert cleared["display_name"] == "new-name"
    [update, _] = audit_events(app, "group.update")
    assert update["details"]["fields"] == ["name"]
    assert (update["details"]["name"], update["details"]["previous_name"]) == ("new-name", "old-name")


def test_patch_refuses_a_taken_or_bad_name_and_changes_nothing(admin_api):
    create(admin_api, name="taken")
    group = create(admin_api, name="mine")
    assert_error(admin_api.patch(f"/groups/{group['id']}", json={"name": "taken"}), 409, "Group already exists.")
    assert_error(admin_api.patch(f"/groups/{group['id']}", json={"name": "Bad Name"}), 400, "Invalid group name.",
                 NAME_DETAIL)
    assert_error(admin_api.patch(f"/groups/{group['id']}", json={"name": "fine", "display_name": "x" * 129}), 400,
                 "Invalid display name.")
    assert admin_api.get(f"/groups/{group['id']}").get_json() == group


def test_patch_without_a_change_records_nothing(app, admin_api):
    group = create(admin_api, name="same")
    assert admin_api.patch(f"/groups/{group['id']}", json={"name": " same "}).get_json() == group
    assert admin_api.patch(f"/groups/{group['id']}", json={}).get_json() == group
    assert audit_events(app, "group.update") == []


def test_patch_unknown_group_is_404(admin_api):
    assert_error(admin_api.patch(f"/groups/{uuid.uuid4()}", json={"name": "x"}), 404, "Group not found.")


# --- delete ----------------------------------------------------------------------------------


def test_delete_removes_the_group_and_its_memberships(app, admin_api, member):
    group = create(admin_api)
    kept = create(admin_api, name="kept")
    admin_api.put(f"/groups/{group['id']}/members/{member.id}")
    admin_api.put(f"/groups/{kept['id']}/members/{member.id}")
    assert admin_api.delete(f"/groups/{group['id']}").status_code == 204
    assert_error(admin_api.get(f"/groups/{group['id']}"), 404, "Group not found.")
    assert_error(admin_api.delete(f"/groups/{group['id']}"), 404, "Group not found.")
    assert [g["name"] for g in admin_api.get("/groups").get_json()] == ["kept"]
    assert member_rows(app) == 1  # the other group's membership stays


def test_delete_fails_closed_for_configs_open_to_that_group_alone(app, admin_api):
    doomed = create(admin_api, name="doomed")
    other = create(admin_api, name="other")
    provider = make_provider(app, "p1", "provider_only")
    alone = make_config(app, provider, "alone")
    shared = make_config(app, provider, "shared")
    restrict_config(app, alone, [doomed["id"]])
    restrict_config(app, shared, [doomed["id"], other["id"]])

    assert admin_api.delete(f"/groups/{doomed['id']}").status_code == 204

    access = dict(sql(app, "SELECT model, access FROM chat_model_configs"))
    assert access == {"alone": "groups", "shared": "groups"}  # never widened to everyone
    rows = sql(app, "SELECT model, group_id FROM model_config_groups JOIN chat_model_configs "
                    "ON chat_model_configs.id = model_config_id")
    assert [(m, str(uuid.UUID(str(g)))) for m, g in rows] == [("shared", other["id"])]
    [event] = audit_events(app, "group.delete")
    assert event["resource_id"] == doomed["id"]
    assert event["details"]["configs_open_to_no_one"] == [alone]
    assert event["details"]["removed_from_config_count"] == 2


def test_delete_unknown_or_malformed(admin_api):
    assert_error(admin_api.delete(f"/groups/{uuid.uuid4()}"), 404, "Group not found.")
    assert admin_api.delete("/groups/nope").status_code == 400


# --- members ---------------------------------------------------------------------------------


def test_put_member_adds_a_manual_member(app, admin_api, member):
    group = create(admin_api)
    response = admin_api.put(f"/groups/{group['id']}/members/{member.id}")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == MEMBER_FIELDS
    assert (body["user_id"], body["email"], body["name"], body["source"]) == (
        str(member.id), member.email, member.name, "manual")
    listed = admin_api.get(f"/groups/{group['id']}/members")
    assert listed.get_json() == [body]
    assert listed.headers["X-Total-Count"] == "1"


def test_put_member_is_idempotent(app, admin_api, member):
    group = create(admin_api)
    first = admin_api.put(f"/groups/{group['id']}/members/{member.id}").get_json()
    again = admin_api.put(f"/groups/{group['id']}/members/{member.id}", json={})
    assert again.status_code == 200
    assert again.get_json() == first
    assert member_rows(app) == 1
    assert len(audit_events(app, "group.member_add")) == 1  # the second call changed nothing


def test_put_member_makes_an_sso_membership_manual(app, admin_api, member):
    group = create(admin_api)
    set_source(app, group["id"], member.id, "sso")
    assert admin_api.get(f"/groups/{group['id']}/members").get_json()[0]["source"] == "sso"
    body = admin_api.put(f"/groups/{group['id']}/members/{member.id}").get_json()
    assert body["source"] == "manual"
    [event] = audit_events(app, "group.member_add")
    assert event["details"]["source"] == "manual"
    assert event["details"]["previous_source"] == "sso"


def test_put_member_refuses_unknown_and_deactivated_users(app, admin_api, runner):
    group = create(admin_api)
    assert_error(admin_api.put(f"/groups/{group['id']}/members/{uuid.uuid4()}"), 404, "User not found.")
    gone = make_user(app, "gone@example.com")
    assert runner.invoke(args=["users", "deactivate", gone.email]).exit_code == 0
    assert_error(admin_api.put(f"/groups/{group['id']}/members/{gone.id}"), 404, "User not found.")
    assert admin_api.put(f"/groups/{group['id']}/members/not-a-uuid").status_code == 400
    assert member_rows(app) == 0


def test_put_member_of_an_unknown_group_is_404(app, admin_api, member):
    assert_error(admin_api.put(f"/groups/{uuid.uuid4()}/members/{member.id}"), 404, "Group not found.")
    assert member_rows(app) == 0


def test_put_member_refuses_a_body_with_fields(app, admin_api, member):
    group = create(admin_api)
    response = admin_api.put(f"/groups/{group['id']}/members/{member.id}", json={"source": "sso"})
    body = assert_error(response, 400, "Invalid request body.")
    assert [v["field"] for v in body["validations"]] == ["source"]
    assert member_rows(app) == 0


def test_members_are_listed_by_email_and_paged(app, admin_api):
    group = create(admin_api)
    users = [make_user(app, f"{name}@example.com", name=name.title()) for name in ("carol", "alice", "bob")]
    for user in users:
        admin_api.put(f"/groups/{group['id']}/members/{user.id}")
    set_source(app, group["id"], users[2].id, "sso")
    response = admin_api.get(f"/groups/{group['id']}/members")
    assert [(m["email"], m["source"]) for m in response.get_json()] == [
        ("alice@example.com", "manual"), ("bob@example.com", "sso"), ("carol@example.com", "manual")]
    page = admin_api.get(f"/groups/{group['id']}/members?limit=1&offset=2")
    assert [m["email"] for m in page.get_json()] == ["carol@example.com"]
    assert page.headers["X-Total-Count"] == "3"
    assert_error(admin_api.get(f"/groups/{uuid.uuid4()}/members"), 404, "Group not found.")


def test_delete_member_is_idempotent_and_removes_any_source(app, admin_api, member, member_b):
    group = create(admin_api)
    admin_api.put(f"/groups/{group['id']}/members/{member.id}")
    set_source(app, group["id"], member_b.id, "sso")
    assert admin_api.delete(f"/groups/{group['id']}/members/{member.id}").status_code == 204
    assert admin_api.delete(f"/groups/{group['id']}/members/{member.id}").status_code == 204
    assert admin_api.delete(f"/groups/{group['id']}/members/{member_b.id}").status_code == 204
    assert admin_api.delete(f"/groups/{group['id']}/members/{uuid.uuid4()}").status_code == 204
    assert member_rows(app) == 0
    events = audit_events(app, "group.member_remove")
    assert [(e["details"]["email"], e["details"]["source"]) for e in events] == [
        (member.email, "manual"), (member_b.email, "sso")]  # only real removals are recorded
    assert_error(admin_api.delete(f"/groups/{uuid.uuid4()}/members/{member.id}"), 404, "Group not found.")


# --- audit -----------------------------------------------------------------------------------


def test_every_change_is_audited(app, admin_api, admin, member):
    group = create(admin_api, name="audited")
    admin_api.patch(f"/groups/{group['id']}", json={"display_name": "Audited"})
    admin_api.put(f"/groups/{group['id']}/members/{member.id}")
    admin_api.delete(f"/groups/{group['id']}/members/{member.id}")
    admin_api.put(f"/groups/{group['id']}/members/{member.id}")
    admin_api.delete(f"/groups/{group['id']}")
    events = audit_events(app, "group.")
    assert [e["action"] for e in events] == ["group.create", "group.update", "group.member_add",
                                             "group.member_remove", "group.member_add", "group.delete"]
    assert {e["resource_id"] for e in events} == {group["id"]}
    assert {e["actor_label"] for e in events} == {admin.email}
    add = events[2]["details"]
    assert (add["user_id"], add["email"], add["source"]) == (str(member.id), member.email, "manual")
    remove = events[3]["details"]
    assert (remove["user_id"], remove["email"], remove["source"]) == (str(member.id), member.email, "manual")
    assert events[5]["details"]["removed_member_count"] == 1


def test_deactivating_a_user_removes_their_memberships(app, admin_api, runner, member, member_b):
    one, two = create(admin_api, name="one"), create(admin_api, name="two")
    for group in (one, two):
        admin_api.put(f"/groups/{group['id']}/members/{member.id}")
    admin_api.put(f"/groups/{one['id']}/members/{member_b.id}")

    assert runner.invoke(args=["users", "deactivate", member.email]).exit_code == 0

    assert [m["email"] for m in admin_api.get(f"/groups/{one['id']}/members").get_json()] == [member_b.email]
    assert admin_api.get(f"/groups/{two['id']}/members").get_json() == []
    removals = audit_events(app, "group.member_remove")
    assert sorted((e["details"]["group"], e["details"]["reason"]) for e in removals) == [
        ("one", "user_deactivated"), ("two", "user_deactivated")]
    [deactivation] = audit_events(app, "user.deactivate")
    assert deactivation["details"]["removed_group_memberships"] == 2
