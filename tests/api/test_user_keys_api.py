"""BYOK through the JSON API (SPEC section 5): every row and message, isolation between users,
and what deactivation and provider deletion leave behind."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from tests.support import login, new_key, post_form
from tests.support.db import sql
from tests.support.factories import delete_provider, key_rows, make_provider, stored_key, update_provider

PATH = "/user-ai-provider-keys"


# --- helpers -------------------------------------------------------------------------------------


def put(api, provider_id: str, key) -> object:
    return api.put(f"{PATH}/{provider_id}", json={"api_key": key})


def listed(api) -> dict[str, dict]:
    response = api.get(PATH)
    assert response.status_code == 200, response.get_json()
    return {item["provider"]["name"]: item for item in response.get_json()}


# --- listing -------------------------------------------------------------------------------------


def test_listing_is_empty_when_no_provider_allows_user_keys(app, member_api):
    make_provider(app, "shared-only", "provider_only", shared_key=True)
    response = member_api.get(PATH)
    assert response.status_code == 200
    assert response.get_json() == []
    assert response.headers["X-Total-Count"] == "0"


def test_listing_shape_order_and_flags(app, member_api):
    preferred = make_provider(app, "beta", "user_preferred", shared_key=True, display_name="Beta AI")
    make_provider(app, "alpha", "user_only", type="anthropic")
    make_provider(app, "gamma", "provider_only", shared_key=True)
    make_provider(app, "delta-off", "user_preferred", enabled=False)

    response = member_api.get(PATH)
    assert response.status_code == 200
    body = response.get_json()
    assert [item["provider"]["name"] for item in body] == ["alpha", "beta"]
    assert response.headers["X-Total-Count"] == "2"
    alpha, beta = body
    assert set(beta) == {"provider", "has_user_api_key", "has_provider_api_key", "byok_enabled", "hint",
                         "last_tested_at", "last_test_result"}
    assert beta == {
        "provider": {"id": preferred, "type": "openai", "name": "beta", "display_name": "Beta AI", "enabled": True},
        "has_user_api_key": False,
        "has_provider_api_key": True,
        "byok_enabled": True,
        "hint": None,
        "last_tested_at": None,
        "last_test_result": None,
    }
    assert alpha["provider"]["display_name"] == "alpha"  # falls back to the name
    assert alpha["provider"]["type"] == "anthropic"
    assert alpha["has_provider_api_key"] is False


def test_listing_pages(app, member_api):
    for name in ("p-one", "p-two", "p-three"):
        make_provider(app, name)
    response = member_api.get(PATH + "?limit=1&offset=1")
    assert response.status_code == 200
    assert [item["provider"]["name"] for item in response.get_json()] == ["p-three"]
    assert response.headers["X-Total-Count"] == "3"
    assert member_api.get(PATH + "?limit=0").status_code == 400


def test_listing_uses_a_constant_number_of_queries(app, member_api):
    from app.extensions import db

    statements: list[str] = []

    def count(*args, **kw):
        statements.append(args[2])

    def queries_for_listing() -> int:
        with app.app_context():
            engine = db.engine
        statements.clear()
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            assert member_api.get(PATH).status_code == 200
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    first = make_provider(app, "q-1", shared_key=True)
    put(member_api, first, new_key())
    few = queries_for_listing()
    for i in range(2, 8):
        pid = make_provider(app, f"q-{i}", "user_only" if i % 2 else "user_preferred", shared_key=i % 3 == 0)
        if i % 2:
            put(member_api, pid, new_key())
    many = queries_for_listing()
    assert len(listed(member_api)) == 7
    assert many == few


def test_disabled_provider_is_listed_only_while_the_caller_has_a_key(app, member_api, member_b_api):
    pid = make_provider(app, "fading")
    key = new_key()
    assert put(member_api, pid, key).status_code == 200
    update_provider(app, pid, enabled=False)

    mine = listed(member_api)
    assert mine["fading"]["provider"]["enabled"] is False
    assert mine["fading"]["has_user_api_key"] is True
    assert mine["fading"]["hint"] == "..." + key[-4:]
    assert "fading" not in listed(member_b_api)  # no key of theirs: not listed for them

    assert member_api.delete(f"{PATH}/{pid}").status_code == 204
    assert "fading" not in listed(member_api)


def test_deleted_provider_is_not_listed(app, member_api):
    pid = make_provider(app, "gone-soon")
    assert put(member_api, pid, new_key()).status_code == 200
    delete_provider(app, pid)
    assert listed(member_api) == {}


# --- PUT -----------------------------------------------------------------------------------------


def test_put_saves_the_key_and_answers_the_config(app, member, member_api):
    pid = make_provider(app, "openai-main", shared_key=True)
    key = new_key()
    response = put(member_api, pid, key)
    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        "provider": {"id": pid, "type": "openai", "name": "openai-main", "display_name": "openai-main", "enabled": True},
        "has_user_api_key": True,
        "has_provider_api_key": True,
        "byok_enabled": True,
        "hint": "..." + key[-4:],
        "last_tested_at": None,
        "last_test_result": None,
    }
    assert key not in response.get_data(as_text=True)
    assert listed(member_api)["openai-main"] == body
    assert stored_key(app, member, pid)[4] == key
    assert key_rows(app, user=member) == 1


def test_put_trims_surrounding_whitespace(app, member, member_api):
    pid = make_provider(app, "trimmed")
    key = new_key()
    assert put(member_api, pid, f"  \t{key}\n ").status_code == 200
    assert stored_key(app, member, pid)[4] == key


def test_second_put_keeps_id_and_created_at_and_changes_hint(app, member, member_api):
    pid = make_provider(app, "rotating")
    first, second = new_key("first"), new_key("second")
    assert put(member_api, pid, first).status_code == 200
    row_id, created, updated, hint, _ = stored_key(app, member, pid)

    response = put(member_api, pid, second)
    assert response.status_code == 200
    assert response.get_json()["hint"] == "..." + second[-4:]
    new_id, new_created, new_updated, new_hint, plaintext = stored_key(app, member, pid)
    assert (new_id, new_created) == (row_id, created)
    assert new_updated > updated
    assert new_hint != hint and new_hint == "..." + second[-4:]
    assert plaintext == second
    assert key_rows(app, user=member) == 1


def test_short_keys_are_hinted_without_characters(app, member_api):
    pid = make_provider(app, "short")
    key = new_key()[-11:]
    response = put(member_api, pid, key)
    assert response.status_code == 200
    assert response.get_json()["hint"] == "..."


def test_ciphertext_is_bound_to_its_user_and_provider(app, member, member_b, member_api, member_b_api):
    from app.extensions import db
    from app.models import UserAIProviderKey
    from app.services.secrets import DecryptionError, open_secret

    pid = make_provider(app, "bound")
    put(member_api, pid, new_key("a"))
    put(member_b_api, pid, new_key("b"))
    with app.app_context():
        rows = {r.user_id: r for r in db.session.execute(sa.select(UserAIProviderKey)).scalars()}
        rows[member_b.id].ciphertext = rows[member.id].ciphertext
        rows[member_b.id].key_digest = rows[member.id].key_digest
        db.session.commit()
        row = db.session.execute(sa.select(UserAIProviderKey).where(UserAIProviderKey.user_id == member_b.id)).scalar_one()
        with pytest.raises(DecryptionError):
            open_secret(row)


def test_byok_off_refuses_put_before_any_other_check(app, member_api):
    pid = make_provider(app, "some-provider")
    app.config["ALLOW_BYOK"] = False
    expected = {"message": "BYOK is disabled."}
    for path, body in [
        (f"{PATH}/{pid}", {"api_key": new_key()}),
        (f"{PATH}/not-a-uuid", {"api_key": new_key()}),  # before the malformed id
        (f"{PATH}/{uuid.uuid4()}", {"api_key": new_key()}),  # before not found
        (f"{PATH}/{pid}", {"unknown": 1}),  # before the body
        (f"{PATH}/{pid}", {"api_key": ""}),
    ]:
        response = member_api.put(path, json=body)
        assert (response.status_code, response.get_json()) == (403, expected), path
    response = member_api.put(f"{PATH}/{pid}", data="not json", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.get_json()) == (403, expected)


def test_byok_off_still_lists_and_deletes(app, member, member_api):
    pid = make_provider(app, "switch-off", shared_key=True)
    assert put(member_api, pid, new_key()).status_code == 200
    app.config["ALLOW_BYOK"] = False

    item = listed(member_api)["switch-off"]
    assert item["byok_enabled"] is False
    assert item["has_user_api_key"] is True

    assert member_api.delete(f"{PATH}/{pid}").status_code == 204
    assert key_rows(app, user=member) == 0
    assert member_api.delete(f"{PATH}/not-a-uuid").status_code == 400  # still a malformed id


def test_malformed_id_is_400(app, member_api):
    response = put(member_api, "not-a-uuid", new_key())
    assert response.status_code == 400
    assert response.get_json()["validations"] == [{"field": "provider_id", "detail": "Must be a UUID."}]
    # the id is checked before the body
    assert member_api.put(f"{PATH}/42", json={"nope": True}).get_json()["validations"][0]["field"] == "provider_id"


@pytest.mark.parametrize("how", ["missing", "deleted"])
def test_missing_or_deleted_provider_is_404(app, member_api, how):
    pid = str(uuid.uuid4())
    if how == "deleted":
        pid = make_provider(app, "deleted-one")
        delete_provider(app, pid)
    for body in ({"api_key": new_key()}, {"api_key": ""}, {"unknown": 1}):  # before the key rules
        response = member_api.put(f"{PATH}/{pid}", json=body)
        assert (response.status_code, response.get_json()) == (404, {"message": "AI provider not found."})


def test_disabled_provider_is_400(app, member_api):
    pid = make_provider(app, "switched-off", enabled=False)
    for body in ({"api_key": new_key()}, {"api_key": ""}):
        response = member_api.put(f"{PATH}/{pid}", json=body)
        assert (response.status_code, response.get_json()) == (400, {"message": "AI provider is disabled."})


def test_provider_only_is_400(app, member_api):
    pid = make_provider(app, "central", "provider_only", shared_key=True)
    for body in ({"api_key": new_key()}, {"api_key": " "}):
        response = member_api.put(f"{PATH}/{pid}", json=body)
        assert (response.status_code, response.get_json()) == (400, {"message": "AI provider does not allow user API keys."})


def test_disabled_comes_before_provider_only(app, member_api):
    pid = make_provider(app, "off-and-central", "provider_only", enabled=False)
    response = put(member_api, pid, new_key())
    assert response.get_json() == {"message": "AI provider is disabled."}


@pytest.mark.parametrize("body", [{"api_key": ""}, {"api_key": "   \n"}, {"api_key": None}, {}])
def test_empty_key_is_400(app, member, member_api, body):
    pid = make_provider(app, "needs-key")
    response = member_api.put(f"{PATH}/{pid}", json=body)
    assert response.status_code == 400
    assert response.get_json()["message"] == "API key is required."
    assert key_rows(app, user=member) == 0


def test_key_size_limit_is_10240_bytes_after_trimming(app, member, member_api):
    pid = make_provider(app, "big-keys")
    key = new_key("big")
    exact = key + "x" * (10240 - len(key))
    assert put(member_api, pid, f"  {exact}  ").status_code == 200

    too_large = exact + "y"
    response = put(member_api, pid, too_large)
    assert response.status_code == 400
    assert response.get_json() == {"message": "API key too large.", "detail": "API key exceeds maximum size of 10240 bytes"}
    assert too_large not in response.get_data(as_text=True)

    multibyte = key + "é" * ((10241 - len(key)) // 2 + 1)  # fewer than 10240 characters, more bytes
    assert len(multibyte) <= 10240 < len(multibyte.encode())
    assert put(member_api, pid, multibyte).get_json()["message"] == "API key too large."
    assert stored_key(app, member, pid)[4] == exact  # the refused keys changed nothing


def test_bad_bodies_are_400(app, member_api):
    pid = make_provider(app, "bodies")
    response = member_api.put(f"{PATH}/{pid}", data="{not json", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.get_json()) == (400, {"message": "Request body must be valid JSON."})
    response = member_api.put(f"{PATH}/{pid}", json=[new_key()])
    assert response.get_json() == {"message": "Request body must be valid JSON."}

    response = member_api.put(f"{PATH}/{pid}", json={"api_key": new_key(), "user_id": str(uuid.uuid4())})
    assert response.status_code == 400
    assert {"field": "user_id", "detail": "Unknown field."} in response.get_json()["validations"]

    response = member_api.put(f"{PATH}/{pid}", json={"api_key": 12345})
    assert response.status_code == 400
    assert response.get_json()["validations"][0]["field"] == "api_key"
    assert listed(member_api)["bodies"]["has_user_api_key"] is False


# --- DELETE --------------------------------------------------------------------------------------


def test_delete_is_idempotent(app, member, member_api):
    pid = make_provider(app, "idem")
    assert member_api.delete(f"{PATH}/{pid}").status_code == 204  # nothing there yet
    assert put(member_api, pid, new_key()).status_code == 200
    response = member_api.delete(f"{PATH}/{pid}")
    assert response.status_code == 204 and response.get_data() == b""
    assert key_rows(app, user=member) == 0
    assert member_api.delete(f"{PATH}/{pid}").status_code == 204
    assert member_api.delete(f"{PATH}/{uuid.uuid4()}").status_code == 204
    assert listed(member_api)["idem"]["has_user_api_key"] is False


def test_delete_works_on_a_disabled_provider(app, member, member_api):
    pid = make_provider(app, "disabled-later")
    assert put(member_api, pid, new_key()).status_code == 200
    update_provider(app, pid, enabled=False)
    assert member_api.delete(f"{PATH}/{pid}").status_code == 204
    assert key_rows(app, user=member) == 0


def test_delete_malformed_id_is_400(app, member_api):
    response = member_api.delete(f"{PATH}/xyz")
    assert response.status_code == 400
    assert response.get_json()["validations"] == [{"field": "provider_id", "detail": "Must be a UUID."}]


# --- who may call --------------------------------------------------------------------------------


def test_only_signed_in_users(app, anon_api, service_api):
    pid = make_provider(app, "who")
    assert anon_api.get(PATH).status_code == 401
    assert anon_api.put(f"{PATH}/{pid}", json={"api_key": new_key()}).get_json() == {"message": "Unauthorized."}
    assert anon_api.delete(f"{PATH}/{pid}").status_code == 401
    for response in (service_api.get(PATH), service_api.put(f"{PATH}/{pid}", json={"api_key": new_key()}),
                     service_api.delete(f"{PATH}/{pid}")):
        assert (response.status_code, response.get_json()) == (403, {"message": "Forbidden."})
    assert key_rows(app) == 0


def test_browser_session_needs_the_csrf_header(app, client, member):
    pid = make_provider(app, "cookie")
    login(client, member.email)
    from tests.support import API, get_csrf

    assert client.put(f"{API}{PATH}/{pid}", json={"api_key": new_key()}).status_code == 400
    token = get_csrf(client, "/settings/keys")
    response = client.put(f"{API}{PATH}/{pid}", json={"api_key": new_key()}, headers={"X-CSRFToken": token})
    assert response.status_code == 200
    assert key_rows(app, user=member) == 1


def test_members_see_and_touch_only_their_own_keys(app, admin, member, member_b, admin_api, member_api, member_b_api):
    pid = make_provider(app, "private")
    key_a = new_key("a")
    assert put(member_api, pid, key_a).status_code == 200

    for api in (member_b_api, admin_api):  # not even an admin sees another user's key here
        item = listed(api)["private"]
        assert item["has_user_api_key"] is False and item["hint"] is None
        assert api.delete(f"{PATH}/{pid}").status_code == 204  # deletes nothing of A's
    assert stored_key(app, member, pid)[4] == key_a

    key_b = new_key("b")
    assert put(member_b_api, pid, key_b).get_json()["hint"] == "..." + key_b[-4:]
    assert stored_key(app, member, pid)[4] == key_a
    assert stored_key(app, member_b, pid)[4] == key_b
    assert listed(member_api)["private"]["hint"] == "..." + key_a[-4:]

    assert member_b_api.delete(f"{PATH}/{pid}").status_code == 204
    assert key_rows(app, user=member) == 1 and key_rows(app, user=member_b) == 0


# --- what goes with users and providers ----------------------------------------------------------


def test_deactivating_through_the_admin_page_leaves_no_keys(app, client, admin, member, member_b, member_api, member_b_api):
    first, second = make_provider(app, "first"), make_provider(app, "second", "user_only")
    for pid in (first, second):
        assert put(member_api, pid, new_key()).status_code == 200
    assert put(member_b_api, first, new_key()).status_code == 200

    login(client, admin.email)
    response = post_form(client, f"/admin/users/{member.id}/deactivate")
    assert response.status_code == 302
    assert key_rows(app, user=member) == 0
    assert sql(app, "SELECT count(*) FROM user_ai_provider_keys WHERE user_id = :u", u=member.id)[0][0] == 0
    assert key_rows(app, user=member_b) == 1
    assert member_api.get(PATH).status_code == 401


def test_deactivating_through_the_cli_leaves_no_keys(app, runner, member, member_b, member_api, member_b_api):
    pid = make_provider(app, "cli-provider")
    assert put(member_api, pid, new_key()).status_code == 200
    assert put(member_b_api, pid, new_key()).status_code == 200
    result = runner.invoke(args=["users", "deactivate", member.email])
    assert result.exit_code == 0, result.output
    assert key_rows(app, user=member) == 0
    assert key_rows(app, user=member_b) == 1


def test_deleting_a_provider_deletes_every_users_key(app, member_api, member_b_api, admin_api):
    doomed, kept = make_provider(app, "doomed"), make_provider(app, "kept")
    for api in (member_api, member_b_api, admin_api):
        assert put(api, doomed, new_key()).status_code == 200
        assert put(api, kept, new_key()).status_code == 200
    count = "SELECT count(*) FROM user_ai_provider_keys"
    assert sql(app, count)[0][0] == 6

    delete_provider(app, doomed)
    assert sql(app, count)[0][0] == 3
    assert key_rows(app, provider_id=doomed) == 0
    assert key_rows(app, provider_id=kept) == 3
    assert put(member_api, doomed, new_key()).status_code == 404


# --- audit ---------------------------------------------------------------------------------------


def test_every_change_is_audited_without_the_key(app, member, member_api):
    from app.extensions import db
    from app.models import AuditEvent

    pid = make_provider(app, "audited")
    first, second = new_key("first"), new_key("second")
    put(member_api, pid, first)
    put(member_api, pid, second)
    member_api.delete(f"{PATH}/{pid}")
    member_api.delete(f"{PATH}/{pid}")  # nothing left: not a change, not recorded
    put(member_api, pid, "")  # refused: not recorded

    with app.app_context():
        events = db.session.execute(
            sa.select(AuditEvent).where(AuditEvent.action.startswith("user_key.")).order_by(AuditEvent.created_at)
        ).scalars().all()
        assert [e.action for e in events] == ["user_key.create", "user_key.update", "user_key.delete"]
        assert {e.actor_id for e in events} == {member.id}
        assert all(e.details["provider_id"] == pid for e in events)
        assert events[1].details["key_hint"] == "..." + second[-4:]
        dumped = json.dumps([e.details for e in events])
        assert first not in dumped and second not in dumped


# --- what administrators may know ----------------------------------------------------------------


def test_key_holders_are_counted_and_listed_without_keys(app, admin, member, member_b, member_api, member_b_api):
    from dataclasses import asdict

    from app.services.user_keys import user_key_holders

    pid, other = make_provider(app, "held"), make_provider(app, "unheld")
    keys = [new_key("a"), new_key("b")]
    put(member_b_api, pid, keys[1])
    put(member_api, pid, keys[0])
    with app.app_context():
        holders = user_key_holders(pid)
        assert holders.count == 2
        assert [(h.email, h.name) for h in holders.users] == [("member@example.com", "Mel Member"),
                                                              ("other@example.com", "Bo Other")]
        assert all(h.updated_at is not None for h in holders.users)
        dumped = repr([asdict(h) for h in holders.users])
        assert not any(k in dumped or "..." + k[-4:] in dumped for k in keys)  # neither key nor hint
        limited = user_key_holders(pid, limit=1)
        assert (limited.count, len(limited.users)) == (2, 1)
        assert user_key_holders(other).count == 0
