"""Who may use which model config (SPEC section 9) through the JSON API: `access` and `group_ids`
on create and PATCH, the enabled set of each caller, a member's GET of one config, resolution
(`model_not_allowed`) and the credentials hand-out, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from tests.support import Api, make_token, make_user
from tests.support.db import sql
from tests.support.factories import audit_events, make_group, make_provider

WITH_EVERYONE = "group_ids must be empty when access is everyone."


@pytest.fixture
def provider_id(app):
    return make_provider(app, "shared", "provider_only", shared_key=True)


def create(api, provider_id, model="gpt-4o", **fields):
    response = api.post("/model-configs", json={"ai_provider_id": provider_id, "model": model, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_error(response, status, message, detail=None, field=None):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["message"] == message
    if detail is not None:
        assert body["detail"] == detail
    if field is not None:
        assert field in [v["field"] for v in body.get("validations", [])], body
    return body


def config_rows(app) -> int:
    return sql(app, "SELECT count(*) FROM chat_model_configs")[0][0]


def access_rows(app) -> int:
    return sql(app, "SELECT count(*) FROM model_config_groups")[0][0]


def ids(items) -> set[str]:
    return {item["id"] for item in items}


# --- create ----------------------------------------------------------------------------------


def test_configs_are_open_to_everyone_by_default(admin_api, provider_id):
    body = create(admin_api, provider_id)
    assert (body["access"], body["group_ids"]) == ("everyone", [])


def test_create_open_to_groups_answers_their_ids_by_group_name(app, admin_api, provider_id):
    zeta, alpha = make_group(app, "zeta"), make_group(app, "alpha")
    body = create(admin_api, provider_id, access="groups", group_ids=[zeta, alpha, zeta])  # duplicates collapse
    assert body["access"] == "groups"
    assert body["group_ids"] == [alpha, zeta]
    assert admin_api.get(f"/model-configs/{body['id']}").get_json() == body
    assert access_rows(app) == 2
    [event] = audit_events(app, "model_config.create")
    assert event["details"]["access"] == "groups"
    assert sorted(event["details"]["group_ids"]) == sorted([alpha, zeta])


def test_groups_with_no_group_is_open_to_no_one(admin_api, member_api, provider_id):
    body = create(admin_api, provider_id, access="groups")
    assert (body["access"], body["group_ids"]) == ("groups", [])
    assert member_api.get("/model-configs/enabled").get_json() == []


@pytest.mark.parametrize("access", ["", "Everyone", "members", 1, True, None, ["groups"]])
def test_an_unknown_access_is_refused(app, admin_api, provider_id, access):
    response = admin_api.post("/model-configs", json={"ai_provider_id": provider_id, "model": "m", "access": access})
    if access is None:  # null means the default
        assert response.status_code == 201
        return
    assert_error(response, 400, "Invalid model access.", field="access")
    assert config_rows(app) == 0


def test_groups_named_while_open_to_everyone_are_refused(app, admin_api, provider_id):
    group = make_group(app, "team")
    for body in ({"group_ids": [group]}, {"access": "everyone", "group_ids": [group]}):
        response = admin_api.post("/model-configs", json={"ai_provider_id": provider_id, "model": "m", **body})
        assert_error(response, 400, "Invalid model access.", detail=WITH_EVERYONE)
    assert config_rows(app) == 0
    assert create(admin_api, provider_id, access="everyone", group_ids=[])["group_ids"] == []


def test_an_unknown_group_is_refused_and_nothing_is_written(app, admin_api, provider_id):
    known = make_group(app, "team")
    response = admin_api.post("/model-configs", json={"ai_provider_id": provider_id, "model": "m", "access": "groups",
                                                      "group_ids": [known, str(uuid.uuid4())]})
    assert_error(response, 400, "Group not found.", field="group_ids")
    assert (config_rows(app), access_rows(app)) == (0, 0)
    assert audit_events(app, "model_config.") == []


@pytest.mark.parametrize("group_ids", [["not-a-uuid"], [7], "a-string", {"id": "x"}, [None]])
def test_malformed_group_ids_are_refused(app, admin_api, provider_id, group_ids):
    response = admin_api.post("/model-configs", json={"ai_provider_id": provider_id, "model": "m", "access": "groups",
                                                      "group_ids": group_ids})
    assert_error(response, 400, "Invalid model access.", field="group_ids")
    assert config_rows(app) == 0


# --- update ----------------------------------------------------------------------------------


def test_patch_restricts_replaces_and_opens_again(app, admin_api, provider_id):
    one, two = make_group(app, "one"), make_group(app, "two")
    config = create(admin_api, provider_id)
    path = f"/model-configs/{config['id']}"

    restricted = admin_api.patch(path, json={"access": "groups", "group_ids": [one]}).get_json()
    assert (restricted["access"], restricted["group_ids"]) == ("groups", [one])
    replaced = admin_api.patch(path, json={"group_ids": [two, one]}).get_json()  # group_ids alone replaces
    assert (replaced["access"], replaced["group_ids"]) == ("groups", [one, two])
    kept = admin_api.patch(path, json={"access": "groups"}).get_json()  # access alone keeps the list
    assert kept["group_ids"] == [one, two]
    untouched = admin_api.patch(path, json={"display_name": "Renamed"}).get_json()
    assert untouched["group_ids"] == [one, two]
    opened = admin_api.patch(path, json={"access": "everyone"}).get_json()  # clears the list
    assert (opened["access"], opened["group_ids"]) == ("everyone", [])
    assert access_rows(app) == 0
    closed = admin_api.patch(path, json={"access": "groups"}).get_json()  # restricted without groups: no one
    assert (closed["access"], closed["group_ids"]) == ("groups", [])

    updates = [e["details"] for e in audit_events(app, "model_config.update")]
    assert [u["fields"] for u in updates] == [["access", "group_ids"], ["group_ids"], ["display_name"],
                                              ["access", "group_ids"], ["access"]]
    assert updates[0]["group_ids"] == [one] and updates[1]["group_ids"] == sorted([one, two])
    assert updates[3] == {"fields": ["access", "group_ids"], "access": "everyone", "group_ids": []}


def test_patch_group_ids_on_a_config_open_to_everyone_is_refused(app, admin_api, provider_id):
    group = make_group(app, "team")
    config = create(admin_api, provider_id)
    response = admin_api.patch(f"/model-configs/{config['id']}", json={"group_ids": [group]})
    assert_error(response, 400, "Invalid model access.", detail=WITH_EVERYONE)
    assert admin_api.get(f"/model-configs/{config['id']}").get_json() == config
    assert admin_api.patch(f"/model-configs/{config['id']}", json={"group_ids": []}).status_code == 200


def test_patch_refuses_bad_access_values_and_unknown_groups_changing_nothing(app, admin_api, provider_id):
    group = make_group(app, "team")
    config = create(admin_api, provider_id, access="groups", group_ids=[group])
    path = f"/model-configs/{config['id']}"
    assert_error(admin_api.patch(path, json={"access": None}), 400, "Invalid model access.", field="access")
    assert_error(admin_api.patch(path, json={"access": "nobody"}), 400, "Invalid model access.", field="access")
    assert_error(admin_api.patch(path, json={"group_ids": None}), 400, "Invalid model access.", field="group_ids")
    assert_error(admin_api.patch(path, json={"group_ids": [str(uuid.uuid4())], "display_name": "X"}), 400,
                 "Group not found.", field="group_ids")
    assert admin_api.get(path).get_json() == config
    assert audit_events(app, "model_config.update") == []


def test_patch_without_an_access_change_records_nothing(app, admin_api, provider_id):
    group = make_group(app, "team")
    config = create(admin_api, provider_id, access="groups", group_ids=[group])
    same = admin_api.patch(f"/model-configs/{config['id']}", json={"access": "groups", "group_ids": [group, group]})
    assert same.get_json() == config
    assert audit_events(app, "model_config.update") == []


# --- who sees what ---------------------------------------------------------------------------


@pytest.fixture
def world(app, admin_api, member, member_b, provider_id):
    """`open` to everyone, `team_only` to the team (member A in it), `nobody` to no group."""
    team = make_group(app, "team", members=[member])
    return {
        "team": team,
        "open": create(admin_api, provider_id, "open")["id"],
        "team_only": create(admin_api, provider_id, "team-only", access="groups", group_ids=[team])["id"],
        "nobody": create(admin_api, provider_id, "nobody", access="groups")["id"],
    }


def test_each_caller_lists_only_the_configs_open_to_them(app, world, admin_api, member_api, member_b_api):
    assert ids(member_api.get("/model-configs/enabled").get_json()) == {world["open"], world["team_only"]}
    assert ids(member_api.get("/model-configs").get_json()) == {world["open"], world["team_only"]}
    assert ids(member_b_api.get("/model-configs/enabled").get_json()) == {world["open"]}
    assert member_b_api.get("/model-configs").headers["X-Total-Count"] == "1"
    # an admin manages every config, but uses only those open to them
    every = admin_api.get("/model-configs").get_json()
    assert ids(every) == {world["open"], world["team_only"], world["nobody"]}
    assert {c["model"]: (c["access"], c["group_ids"]) for c in every} == {
        "open": ("everyone", []), "team-only": ("groups", [world["team"]]), "nobody": ("groups", [])}
    assert ids(admin_api.get("/model-configs/enabled").get_json()) == {world["open"]}


def test_a_config_not_open_to_a_member_is_not_found_for_them(world, admin_api, member_api, member_b_api):
    assert member_api.get(f"/model-configs/{world['team_only']}").status_code == 200
    assert_error(member_b_api.get(f"/model-configs/{world['team_only']}"), 404, "Chat model config not found.")
    assert_error(member_api.get(f"/model-configs/{world['nobody']}"), 404, "Chat model config not found.")
    assert admin_api.get(f"/model-configs/{world['nobody']}").status_code == 200


def test_membership_changes_apply_at_once(world, admin_api, member_b, member_b_api):
    team, config = world["team"], world["team_only"]
    assert admin_api.put(f"/groups/{team}/members/{member_b.id}").status_code == 200
    assert world["team_only"] in ids(member_b_api.get("/model-configs/enabled").get_json())
    assert member_b_api.get(f"/model-configs/{config}/resolution").get_json()["available"] is True
    assert admin_api.delete(f"/groups/{team}/members/{member_b.id}").status_code == 204
    assert world["team_only"] not in ids(member_b_api.get("/model-configs/enabled").get_json())


def test_deleting_the_only_group_leaves_the_config_open_to_no_one(world, admin_api, member_api):
    assert admin_api.delete(f"/groups/{world['team']}").status_code == 204
    assert ids(member_api.get("/model-configs/enabled").get_json()) == {world["open"]}
    config = admin_api.get(f"/model-configs/{world['team_only']}").get_json()
    assert (config["access"], config["group_ids"]) == ("groups", [])


# --- resolution and hand-outs ----------------------------------------------------------------


def test_resolution_of_a_config_the_caller_may_not_use(world, admin_api, member_api, member_b_api):
    allowed = member_api.get(f"/model-configs/{world['team_only']}/resolution").get_json()
    assert (allowed["available"], allowed["key_source"], allowed["reason"]) == (True, "provider", None)
    for api, config in ((member_b_api, world["team_only"]), (member_api, world["nobody"]),
                        (admin_api, world["team_only"])):
        response = api.get(f"/model-configs/{config}/resolution")
        assert response.status_code == 200
        assert response.get_json() == {"model_config_id": config, "provider": None, "base_url": None,
                                       "key_source": None, "available": False, "reason": "model_not_allowed"}


def test_model_not_allowed_comes_before_every_other_reason(app, admin_api, member_b_api, world):
    admin_api.patch(f"/model-configs/{world['team_only']}", json={"enabled": False})
    body = member_b_api.get(f"/model-configs/{world['team_only']}/resolution").get_json()
    assert body["reason"] == "model_not_allowed"
    assert admin_api.patch(f"/model-configs/{world['team_only']}", json={"access": "everyone"}).status_code == 200
    assert member_b_api.get(f"/model-configs/{world['team_only']}/resolution").get_json()["reason"] == "model_disabled"


def test_credentials_for_a_user_who_may_not_use_the_config(app, world, service_api, member, member_b):
    allowed = service_api.post("/credentials", json={"user_id": str(member.id),
                                                     "model_config_id": world["team_only"]}).get_json()
    assert allowed["available"] is True and allowed["api_key"].startswith("sk-canary-shared")
    response = service_api.post("/credentials", json={"user_id": str(member_b.id),
                                                      "model_config_id": world["team_only"]})
    assert response.status_code == 200
    assert response.get_json() == {"model_config_id": world["team_only"], "provider": None, "base_url": None,
                                   "key_source": None, "available": False, "reason": "model_not_allowed",
                                   "api_key": None, "key_id": None}
    events = [e["details"] for e in audit_events(app, "credentials.hand_out")]
    assert [(e["user_id"], e["available"], e["reason"]) for e in events] == [
        (str(member.id), True, None), (str(member_b.id), False, "model_not_allowed")]


def test_an_admin_uses_only_configs_open_to_them(app, world, admin, service_api):
    response = service_api.post("/credentials", json={"user_id": str(admin.id), "model_config_id": world["nobody"]})
    assert response.get_json()["reason"] == "model_not_allowed"
    assert response.get_json()["api_key"] is None


def test_a_user_in_one_of_several_groups_may_use_it(app, admin_api, provider_id):
    alice = make_user(app, "alice@example.com")
    first, second = make_group(app, "first"), make_group(app, "second", members=[alice])
    config = create(admin_api, provider_id, "both", access="groups", group_ids=[first, second])
    alice_api = Api(app.test_client(), make_token(app, alice))
    assert alice_api.get(f"/model-configs/{config['id']}/resolution").get_json()["available"] is True


def test_promotion_follows_the_specs_order_whoever_may_use_the_config(app, admin_api, provider_id):
    """SPEC section 6: the enabled set first, the oldest within it; access (section 9) does not
    reorder it, so an older config open only to a group is promoted before a newer open one."""
    team = make_group(app, "team")
    default = create(admin_api, provider_id, "default")
    older_restricted = create(admin_api, provider_id, "older-restricted", access="groups", group_ids=[team])
    create(admin_api, provider_id, "newer-open")
    assert admin_api.delete(f"/model-configs/{default['id']}").status_code == 204
    assert admin_api.get(f"/model-configs/{older_restricted['id']}").get_json()["is_default"] is True
