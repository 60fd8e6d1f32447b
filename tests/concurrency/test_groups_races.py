"""Races on groups and their members, on PostgreSQL with its row locks: requests released
together (tests/support/concurrency.py). Whatever wins, no membership ever points at a deleted
group, no request fails with a 5xx, and the same membership is never stored twice.
"""

from __future__ import annotations

import pytest

from tests.support import make_user
from tests.support.concurrency import messages, race, scalar, statuses

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]

ROUNDS = 6
JOINERS = 8


def create(api, name: str) -> str:
    response = api.post("/groups", json={"name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_members_added_while_the_group_is_deleted_leave_no_membership_behind(app, admin_api):
    users = [make_user(app, f"joiner-{i}@example.com") for i in range(JOINERS)]
    for round_number in range(ROUNDS):
        group_id = create(admin_api, f"racing-{round_number}")
        calls = [(admin_api.token, "PUT", f"/groups/{group_id}/members/{user.id}", None) for user in users]
        position = round_number % (JOINERS + 1)  # the deletion starts at a different place each round
        calls.insert(position, (admin_api.token, "DELETE", f"/groups/{group_id}", None))
        results = race(app, calls)
        deletion, adds = results[position], results[:position] + results[position + 1:]
        assert deletion.status_code == 204
        assert set(statuses(adds)) <= {200, 404}, statuses(adds)
        assert messages(adds, 404) <= {"Group not found."}
        assert scalar(app, "SELECT count(*) FROM group_members WHERE group_id = :g", g=group_id) == 0
        # every add that answered 200 was recorded, and so was its removal by the deletion
        removed = scalar(app, "SELECT details->>'removed_member_count' FROM audit_events "
                              "WHERE action = 'group.delete' AND resource_id = :g", g=group_id)
        assert int(removed) == statuses(adds)[200]
    assert scalar(app, "SELECT count(*) FROM group_members m LEFT JOIN groups g ON g.id = m.group_id "
                       "WHERE g.id IS NULL") == 0
    assert scalar(app, "SELECT count(*) FROM groups") == 0


def test_the_same_member_added_twenty_times_is_one_membership(app, admin_api, member):
    group_id = create(admin_api, "crowded")
    results = race(app, [(admin_api.token, "PUT", f"/groups/{group_id}/members/{member.id}", None)] * 20)
    assert statuses(results) == {200: 20}
    assert {r.get_json()["added_at"] for r in results} == {results[0].get_json()["added_at"]}
    assert scalar(app, "SELECT count(*) FROM group_members") == 1
    assert scalar(app, "SELECT count(*) FROM audit_events WHERE action = 'group.member_add'") == 1


def test_twenty_creates_of_one_name_make_exactly_one_group(app, admin_api):
    results = race(app, [(admin_api.token, "POST", "/groups", {"name": "contested", "display_name": f"#{i}"})
                         for i in range(20)])
    assert statuses(results) == {201: 1, 409: 19}
    assert messages(results, 409) == {"Group already exists."}
    assert scalar(app, "SELECT count(*) FROM groups") == 1


def test_membership_changes_racing_a_deactivation_never_deadlock_or_leave_a_membership(app, admin_api, admin):
    """The user is added to one group, removed from another and a third is deleted, while an
    administrator deactivates them (each admin action records an audit event that refers to the
    acting administrator's row, which the deactivation locks too)."""
    from tests.concurrency.test_users_races import together
    from tests.support import Api, get_csrf, login

    for round_number in range(ROUNDS):
        user = make_user(app, f"leaver-{round_number}@example.com")
        joined, left, doomed = (create(admin_api, f"{kind}-{round_number}") for kind in ("joined", "left", "doomed"))
        for group_id in (left, doomed):
            assert admin_api.put(f"/groups/{group_id}/members/{user.id}").status_code == 200

        def api_call(method, path):
            def prepare():
                api = Api(app.test_client(), admin_api.token)
                return lambda: api.request(method, path)
            return prepare

        def deactivate(user=user):
            browser = app.test_client()
            login(browser, admin.email)
            path = f"/admin/users/{user.id}/deactivate"
            token = get_csrf(browser, path)
            return lambda: browser.post(path, data={"csrf_token": token})

        added, removed, deleted, deactivated = together(
            api_call("PUT", f"/groups/{joined}/members/{user.id}"),
            api_call("DELETE", f"/groups/{left}/members/{user.id}"),
            api_call("DELETE", f"/groups/{doomed}"),
            deactivate,
        )
        assert deactivated.status_code == 302
        assert (removed.status_code, deleted.status_code) == (204, 204)
        assert added.status_code in (200, 404), added.get_json()
        if added.status_code == 404:
            assert added.get_json() == {"message": "User not found."}
        assert scalar(app, "SELECT count(*) FROM group_members WHERE user_id = :u", u=str(user.id)) == 0
        assert scalar(app, "SELECT count(*) FROM users WHERE id = :u AND active", u=str(user.id)) == 0


def test_configs_saved_with_a_group_while_it_is_deleted_keep_no_access_row(app, admin_api):
    from tests.support.factories import make_config, make_provider

    provider_id = make_provider(app, "racing", "provider_only")
    configs = [make_config(app, provider_id, f"model-{i}") for i in range(4)]
    for round_number in range(ROUNDS):
        group_id = create(admin_api, f"doomed-{round_number}")
        calls = [(admin_api.token, "PATCH", f"/model-configs/{cid}", {"access": "groups", "group_ids": [group_id]})
                 for cid in configs]
        calls += [(admin_api.token, "POST", "/model-configs",
                   {"ai_provider_id": provider_id, "model": f"new-{round_number}-{i}", "access": "groups",
                    "group_ids": [group_id]}) for i in range(3)]
        position = round_number % len(calls)
        calls.insert(position, (admin_api.token, "DELETE", f"/groups/{group_id}", None))
        results = race(app, calls)
        deletion, saves = results[position], results[:position] + results[position + 1:]
        assert deletion.status_code == 204
        assert set(statuses(saves)) <= {200, 201, 400}, statuses(saves)
        assert messages(saves, 400) <= {"Group not found."}
        assert scalar(app, "SELECT count(*) FROM model_config_groups WHERE group_id = :g", g=group_id) == 0
        # a save that won kept its access: open to that group, now to no one (never widened)
        for response in saves:
            if response.status_code in (200, 201):
                config = admin_api.get(f"/model-configs/{response.get_json()['id']}").get_json()
                assert (config["access"], config["group_ids"]) == ("groups", [])
    assert scalar(app, "SELECT count(*) FROM model_config_groups m LEFT JOIN groups g ON g.id = m.group_id "
                       "WHERE g.id IS NULL") == 0
