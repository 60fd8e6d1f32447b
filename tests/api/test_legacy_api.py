"""Legacy chat providers and users' keys for them, through the JSON API (SPEC section 6)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.support import new_key

POLICY_DETAILS = {
    "no_source": "At least one credential source must be enabled: central API key or user API key.",
    "needs_central": "Central API key fallback requires central API key to be enabled.",
    "needs_user": "Central API key fallback requires user API key to be enabled.",
}
FIELDS = {"id", "provider", "display_name", "enabled", "base_url", "has_api_key", "central_api_key_enabled",
          "allow_user_api_key", "allow_central_api_key_fallback", "created_at", "updated_at"}


def create(api, **fields):
    body = {"provider": "openai", "api_key": new_key("central"), **fields}
    response = api.post("/providers", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def byok_provider(api, provider="anthropic", **fields):
    return create(api, provider=provider, allow_user_api_key=True, allow_central_api_key_fallback=True, **fields)


def db_rows(app, model, **where):
    from app.extensions import db

    with app.app_context():
        stmt = sa.select(model).filter_by(**where)
        rows = db.session.execute(stmt).scalars().all()
        db.session.expunge_all()
        return rows


def assert_no_secret(response, *secrets):
    text = response.get_data(as_text=True)
    for secret in secrets:
        assert secret not in text


# --- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/providers"), ("post", "/providers"),
    ("patch", f"/providers/{uuid.uuid4()}"), ("delete", f"/providers/{uuid.uuid4()}"),
])
def test_provider_routes_are_for_admins(member_api, anon_api, method, path):
    kwargs = {"json": {}} if method in ("post", "patch") else {}
    forbidden = getattr(member_api, method)(path, **kwargs)
    assert forbidden.status_code == 403
    assert forbidden.get_json() == {"message": "Forbidden."}
    assert getattr(anon_api, method)(path, **kwargs).status_code == 401


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/user-provider-configs"), ("put", f"/user-provider-configs/{uuid.uuid4()}"),
    ("delete", f"/user-provider-configs/{uuid.uuid4()}"),
])
def test_user_config_routes_need_a_signed_in_user(anon_api, service_api, method, path):
    kwargs = {"json": {"api_key": "x"}} if method == "put" else {}
    assert getattr(anon_api, method)(path, **kwargs).status_code == 401
    assert getattr(service_api, method)(path, **kwargs).status_code == 403


# --- create ------------------------------------------------------------------------------------


def test_create_answers_the_provider_without_its_key(app, admin_api):
    key = new_key("central")
    response = admin_api.post("/providers", json={
        "provider": "openai", "display_name": "  Company OpenAI ", "api_key": f"  {key}\n",
        "base_url": "HTTPS://API.Example.COM/v1/",
    })
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == FIELDS
    assert body["provider"] == "openai"
    assert body["display_name"] == "Company OpenAI"
    assert body["base_url"] == "https://api.example.com/v1"
    assert body["enabled"] is True
    assert body["has_api_key"] is True
    assert (body["central_api_key_enabled"], body["allow_user_api_key"], body["allow_central_api_key_fallback"]) == (
        True, False, False)
    assert body["created_at"].endswith("Z")
    assert_no_secret(response, key)

    from app.models import ChatProvider
    from app.services.secrets import open_secret

    with app.app_context():
        from app.extensions import db

        row = db.session.get(ChatProvider, uuid.UUID(body["id"]))
        assert row.api_key_ciphertext is not None and key.encode() not in row.api_key_ciphertext
        assert open_secret(row) == key  # trimmed before sealing
        assert row.api_key_hint == "..." + key[-4:]


def test_create_without_display_name_falls_back_to_the_type_label(admin_api):
    assert create(admin_api, provider="azure")["display_name"] == "Azure OpenAI"


def test_unknown_type_is_invalid_provider(admin_api):
    for provider in ("nope", "OpenAI", 7):
        response = admin_api.post("/providers", json={"provider": provider, "api_key": new_key()})
        assert response.status_code == 400
        if provider != 7:  # 7 is refused by the body's shape before the rule
            assert response.get_json()["message"] == "Invalid provider."


@pytest.mark.parametrize("body", [{}, {"provider": None}, {"api_key": "x"}, {"central_api_key_enabled": False}])
def test_provider_is_required(admin_api, body):
    """A missing or null type is the SPEC's "Invalid provider.", answered by the service, not
    the body's shape (which answered "Invalid request body.")."""
    response = admin_api.post("/providers", json=body)
    assert response.status_code == 400
    assert response.get_json()["message"] == "Invalid provider."
    assert response.get_json()["validations"][0]["field"] == "provider"
    assert admin_api.get("/providers").get_json() == []


def test_second_provider_of_a_type_conflicts(admin_api):
    create(admin_api, provider="google")
    response = admin_api.post("/providers", json={"provider": "google", "api_key": new_key()})
    assert response.status_code == 409
    assert response.get_json()["message"] == "Chat provider already exists."
    assert len(admin_api.get("/providers").get_json()) == 1


@pytest.mark.parametrize(("flags", "detail"), [
    ({"central_api_key_enabled": False, "allow_user_api_key": False}, "no_source"),
    ({"central_api_key_enabled": False, "allow_user_api_key": True, "allow_central_api_key_fallback": True},
     "needs_central"),
    ({"central_api_key_enabled": True, "allow_user_api_key": False, "allow_central_api_key_fallback": True},
     "needs_user"),
    ({"allow_central_api_key_fallback": True}, "needs_user"),  # defaults: central on, user keys off
])
def test_flags_that_break_the_policy_are_refused_with_the_rule(admin_api, flags, detail):
    response = admin_api.post("/providers", json={"provider": "openai", "api_key": new_key(), **flags})
    assert response.status_code == 400
    assert response.get_json()["message"] == "Invalid credential policy."
    assert response.get_json()["detail"] == POLICY_DETAILS[detail]
    assert admin_api.get("/providers").get_json() == []


def test_central_key_enabled_needs_a_key_except_for_bedrock(admin_api):
    response = admin_api.post("/providers", json={"provider": "openai"})
    assert response.status_code == 400
    assert response.get_json()["message"] == "API key is required when central API key is enabled."
    bedrock = admin_api.post("/providers", json={"provider": "bedrock"})
    assert bedrock.status_code == 201
    assert bedrock.get_json()["has_api_key"] is False
    user_only = admin_api.post("/providers", json={"provider": "openai", "central_api_key_enabled": False,
                                                   "allow_user_api_key": True})
    assert user_only.status_code == 201
    assert user_only.get_json()["has_api_key"] is False


def test_api_key_rules(admin_api):
    empty = admin_api.post("/providers", json={"provider": "openai", "api_key": "   "})
    assert empty.status_code == 400
    assert empty.get_json()["message"] == "API key is required."
    big = admin_api.post("/providers", json={"provider": "openai", "api_key": "k" * 10241})
    assert big.status_code == 400
    assert big.get_json() == {"message": "API key too large.", "detail": "API key exceeds maximum size of 10240 bytes"}
    exactly = admin_api.post("/providers", json={"provider": "openai", "api_key": "é" * 5120})
    assert exactly.status_code == 201


def test_base_url_rules(admin_api):
    response = admin_api.post("/providers", json={"provider": "openai", "api_key": new_key(),
                                                  "base_url": "http://169.254.169.254/latest"})
    assert response.status_code == 400
    assert response.get_json()["message"] == "Invalid provider base URL."
    assert response.get_json()["detail"]


def test_unknown_fields_and_bad_bodies_are_refused(admin_api):
    response = admin_api.post("/providers", json={"provider": "openai", "api_key": new_key(), "id": str(uuid.uuid4())})
    assert response.status_code == 400
    assert {"field": "id", "detail": "Unknown field."} in response.get_json()["validations"]
    not_json = admin_api.post("/providers", data="nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert not_json.get_json()["message"] == "Request body must be valid JSON."
    wrong_type = admin_api.post("/providers", json={"provider": "openai", "api_key": new_key(), "enabled": "yes"})
    assert wrong_type.status_code == 400
    assert wrong_type.get_json()["validations"][0]["field"] == "enabled"


# --- list --------------------------------------------------------------------------------------


def test_list_is_ordered_by_type_and_counts(admin_api):
    key = new_key()
    create(admin_api, provider="openrouter", api_key=key)
    create(admin_api, provider="anthropic")
    create(admin_api, provider="google", enabled=False)
    response = admin_api.get("/providers")
    assert response.status_code == 200
    assert [p["provider"] for p in response.get_json()] == ["anthropic", "google", "openrouter"]
    assert response.headers["X-Total-Count"] == "3"
    assert_no_secret(response, key)
    page = admin_api.get("/providers?limit=1&offset=1")
    assert [p["provider"] for p in page.get_json()] == ["google"]
    assert page.headers["X-Total-Count"] == "3"
    assert admin_api.get("/providers?limit=0").status_code == 400


# --- update ------------------------------------------------------------------------------------


def test_patch_changes_the_fields_sent(admin_api):
    provider = create(admin_api, display_name="Before")
    response = admin_api.patch(f"/providers/{provider['id']}", json={
        "display_name": "After", "enabled": False, "base_url": "https://proxy.example.org/",
        "allow_user_api_key": True, "allow_central_api_key_fallback": True,
    })
    assert response.status_code == 200
    body = response.get_json()
    assert body["display_name"] == "After"
    assert body["enabled"] is False
    assert body["base_url"] == "https://proxy.example.org"
    assert body["allow_user_api_key"] is True and body["allow_central_api_key_fallback"] is True
    assert body["has_api_key"] is True
    assert body["id"] == provider["id"] and body["created_at"] == provider["created_at"]
    assert admin_api.get("/providers").get_json() == [body]


def test_patch_checks_the_policy_of_the_result(admin_api):
    provider = byok_provider(admin_api)
    for changes, detail in [
        ({"allow_user_api_key": False}, "needs_user"),
        ({"central_api_key_enabled": False}, "needs_central"),
        ({"central_api_key_enabled": False, "allow_user_api_key": False, "allow_central_api_key_fallback": False},
         "no_source"),
    ]:
        response = admin_api.patch(f"/providers/{provider['id']}", json=changes)
        assert response.status_code == 400, changes
        assert response.get_json()["message"] == "Invalid credential policy."
        assert response.get_json()["detail"] == POLICY_DETAILS[detail]
    assert admin_api.get("/providers").get_json() == [provider]
    ok = admin_api.patch(f"/providers/{provider['id']}",
                         json={"central_api_key_enabled": False, "allow_central_api_key_fallback": False})
    assert ok.status_code == 200
    assert ok.get_json()["central_api_key_enabled"] is False


def test_patch_replaces_and_removes_the_central_key(app, admin_api):
    provider = create(admin_api, allow_user_api_key=True)
    replacement = new_key("replacement")
    replaced = admin_api.patch(f"/providers/{provider['id']}", json={"api_key": replacement})
    assert replaced.status_code == 200
    assert_no_secret(replaced, replacement)

    from app.models import ChatProvider
    from app.services.secrets import open_secret

    with app.app_context():
        from app.extensions import db

        assert open_secret(db.session.get(ChatProvider, uuid.UUID(provider["id"]))) == replacement

    still_needed = admin_api.patch(f"/providers/{provider['id']}", json={"api_key": None})
    assert still_needed.status_code == 400
    assert still_needed.get_json()["message"] == "API key is required when central API key is enabled."
    removed = admin_api.patch(f"/providers/{provider['id']}", json={"api_key": None, "central_api_key_enabled": False})
    assert removed.status_code == 200
    assert removed.get_json()["has_api_key"] is False
    (row,) = db_rows(app, ChatProvider)
    assert row.api_key_ciphertext is None and row.api_key_digest is None and row.api_key_hint is None
    turn_on = admin_api.patch(f"/providers/{provider['id']}", json={"central_api_key_enabled": True})
    assert turn_on.status_code == 400
    assert turn_on.get_json()["message"] == "API key is required when central API key is enabled."
    empty = admin_api.patch(f"/providers/{provider['id']}", json={"api_key": ""})
    assert empty.status_code == 400
    assert empty.get_json()["message"] == "API key is required."


def test_patch_unrelated_fields_is_not_blocked_by_a_missing_key(admin_api):
    bedrock = create(admin_api, provider="bedrock", api_key=None)
    assert admin_api.patch(f"/providers/{bedrock['id']}", json={"enabled": False}).status_code == 200


def test_patch_refuses_the_type_unknown_fields_and_nulls_for_flags(admin_api):
    provider = create(admin_api)
    for body, field in [({"provider": "anthropic"}, "provider"), ({"name": "x"}, "name"),
                        ({"enabled": None}, "enabled")]:
        response = admin_api.patch(f"/providers/{provider['id']}", json=body)
        assert response.status_code == 400
        assert response.get_json()["validations"][0]["field"] == field
    assert admin_api.get("/providers").get_json() == [provider]


def test_patch_and_delete_missing_or_malformed(admin_api):
    missing = uuid.uuid4()
    for response in (admin_api.patch(f"/providers/{missing}", json={"enabled": False}),
                     admin_api.delete(f"/providers/{missing}")):
        assert response.status_code == 404
        assert response.get_json() == {"message": "Chat provider not found."}
    assert admin_api.patch("/providers/not-a-uuid", json={"enabled": False}).status_code == 400
    assert admin_api.delete("/providers/not-a-uuid").status_code == 400


# --- delete ------------------------------------------------------------------------------------


def test_delete_removes_the_provider_its_key_and_every_users_key(app, admin_api, member_api, member_b_api):
    provider = byok_provider(admin_api)
    other = byok_provider(admin_api, provider="openai")
    assert member_api.put(f"/user-provider-configs/{provider['id']}", json={"api_key": new_key()}).status_code == 200
    assert member_b_api.put(f"/user-provider-configs/{provider['id']}", json={"api_key": new_key()}).status_code == 200
    assert member_api.put(f"/user-provider-configs/{other['id']}", json={"api_key": new_key()}).status_code == 200

    response = admin_api.delete(f"/providers/{provider['id']}")
    assert response.status_code == 204
    assert [p["id"] for p in admin_api.get("/providers").get_json()] == [other["id"]]
    assert admin_api.delete(f"/providers/{provider['id']}").status_code == 404

    from app.models import ChatProvider, UserChatProviderKey

    assert [r.id for r in db_rows(app, ChatProvider)] == [uuid.UUID(other["id"])]
    assert [r.chat_provider_id for r in db_rows(app, UserChatProviderKey)] == [uuid.UUID(other["id"])]
    assert [c["provider_id"] for c in member_api.get("/user-provider-configs").get_json()] == [other["id"]]


# --- users' keys -------------------------------------------------------------------------------


def test_user_configs_list_what_the_caller_may_use(admin_api, member_api):
    fallback = byok_provider(admin_api, provider="anthropic", display_name="Claude")
    user_only = create(admin_api, provider="openai", central_api_key_enabled=False, allow_user_api_key=True,
                       api_key=None)
    create(admin_api, provider="google")  # central key only: nothing for users to bring
    byok_provider(admin_api, provider="vercel", enabled=False)  # disabled, and no key of the caller's
    response = member_api.get("/user-provider-configs")
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "2"
    assert response.get_json() == [
        {"provider_id": fallback["id"], "provider": "anthropic", "display_name": "Claude",
         "has_user_api_key": False, "has_central_api_key_fallback": True},
        {"provider_id": user_only["id"], "provider": "openai", "display_name": "OpenAI",
         "has_user_api_key": False, "has_central_api_key_fallback": False},
    ]


def test_put_saves_the_callers_key_and_keeps_the_row(app, admin_api, member_api, member_b_api):
    provider = byok_provider(admin_api)
    first, second = new_key("first"), new_key("second")
    response = member_api.put(f"/user-provider-configs/{provider['id']}", json={"api_key": f" {first} "})
    assert response.status_code == 200
    assert response.get_json() == {"provider_id": provider["id"], "provider": "anthropic",
                                   "display_name": "Anthropic", "has_user_api_key": True,
                                   "has_central_api_key_fallback": True}
    assert_no_secret(response, first)

    from app.models import UserChatProviderKey
    from app.services.secrets import open_secret

    (before,) = db_rows(app, UserChatProviderKey)
    again = member_api.put(f"/user-provider-configs/{provider['id']}", json={"api_key": second})
    assert again.status_code == 200
    (after,) = db_rows(app, UserChatProviderKey)
    assert after.id == before.id and after.created_at == before.created_at
    assert after.ciphertext != before.ciphertext
    with app.app_context():
        assert open_secret(after) == second

    listed = member_api.get("/user-provider-configs")
    assert listed.get_json()[0]["has_user_api_key"] is True
    assert_no_secret(listed, first, second)
    assert member_b_api.get("/user-provider-configs").get_json()[0]["has_user_api_key"] is False


def test_put_checks_in_order(app, admin_api, member_api):
    disabled = byok_provider(admin_api, provider="anthropic", enabled=False)
    central_only = create(admin_api, provider="openai")
    ok = byok_provider(admin_api, provider="google")
    cases = [
        (f"/user-provider-configs/{uuid.uuid4()}", {"api_key": new_key()}, 404, "Chat provider not found."),
        ("/user-provider-configs/not-a-uuid", {"api_key": new_key()}, 400, "Invalid ID."),
        (f"/user-provider-configs/{disabled['id']}", {"api_key": new_key()}, 400, "Provider is disabled."),
        (f"/user-provider-configs/{central_only['id']}", {"api_key": new_key()}, 400,
         "Provider does not allow user API keys."),
        (f"/user-provider-configs/{disabled['id']}", {}, 400, "Provider is disabled."),
        (f"/user-provider-configs/{ok['id']}", {}, 400, "API key is required."),
        (f"/user-provider-configs/{ok['id']}", {"api_key": "  "}, 400, "API key is required."),
        (f"/user-provider-configs/{ok['id']}", {"api_key": "k" * 10241}, 400, "API key too large."),
    ]
    for path, body, status, message in cases:
        response = member_api.put(path, json=body)
        assert (response.status_code, response.get_json()["message"]) == (status, message), path
    unknown = member_api.put(f"/user-provider-configs/{ok['id']}", json={"api_key": new_key(), "user_id": "x"})
    assert unknown.status_code == 400
    assert {"field": "user_id", "detail": "Unknown field."} in unknown.get_json()["validations"]

    app.config["ALLOW_BYOK"] = False
    for path in (f"/user-provider-configs/{ok['id']}", "/user-provider-configs/not-a-uuid"):
        response = member_api.put(path, json={"api_key": new_key()})
        assert response.status_code == 403
        assert response.get_json() == {"message": "BYOK is disabled."}

    from app.models import UserChatProviderKey

    assert db_rows(app, UserChatProviderKey) == []


def test_put_with_byok_off_is_403_whatever_the_body(app, admin_api, member_api):
    """BYOK off comes first (as for /user-ai-provider-keys): a bad body does not answer 400."""
    ok = byok_provider(admin_api)
    app.config["ALLOW_BYOK"] = False
    bodies = [{}, {"api_key": 5}, {"api_key": new_key(), "user_id": "x"}, ["not", "an", "object"]]
    for path in (f"/user-provider-configs/{ok['id']}", "/user-provider-configs/not-a-uuid"):
        for body in bodies:
            response = member_api.put(path, json=body)
            assert (response.status_code, response.get_json()) == (403, {"message": "BYOK is disabled."}), body
        response = member_api.put(path, data="{not json", headers={"Content-Type": "application/json"})
        assert (response.status_code, response.get_json()) == (403, {"message": "BYOK is disabled."})


def test_put_checks_the_provider_before_the_body(admin_api, member_api):
    disabled = byok_provider(admin_api, provider="anthropic", enabled=False)
    central_only = create(admin_api, provider="openai")
    ok = byok_provider(admin_api, provider="google")
    bad = {"api_key": 5, "user_id": "x"}
    cases = [
        ("/user-provider-configs/not-a-uuid", 400, "Invalid ID."),
        (f"/user-provider-configs/{uuid.uuid4()}", 404, "Chat provider not found."),
        (f"/user-provider-configs/{disabled['id']}", 400, "Provider is disabled."),
        (f"/user-provider-configs/{central_only['id']}", 400, "Provider does not allow user API keys."),
        (f"/user-provider-configs/{ok['id']}", 400, "Invalid request body."),
    ]
    for path, status, message in cases:
        response = member_api.put(path, json=bad)
        assert (response.status_code, response.get_json()["message"]) == (status, message), path
    not_json = member_api.put(f"/user-provider-configs/{disabled['id']}", data="{not json",
                              headers={"Content-Type": "application/json"})
    assert not_json.get_json()["message"] == "Provider is disabled."


def test_a_deactivated_user_cannot_save_a_legacy_key(app, admin_api, member):
    """The save locks the caller's row while active (as BYOK saves do): a user deactivated
    meanwhile gets 401 and keeps no key (deactivation deletes keys once, then none may appear)."""
    from app.errors import Unauthorized
    from app.models import UserChatProviderKey
    from app.services import legacy, users
    from app.services.base import Actor

    provider = byok_provider(admin_api)
    with app.app_context():
        stale = Actor.for_user(member)  # what a request authenticated just before holds
        users.deactivate_user(Actor.system("test"), member.id)
        with pytest.raises(Unauthorized):
            legacy.set_user_key(stale, provider["id"], new_key())
    assert db_rows(app, UserChatProviderKey) == []


@pytest.mark.postgres_only
def test_a_legacy_key_saved_during_a_deactivation_does_not_survive_it(app, admin_api, member):
    """PostgreSQL, deterministic: a deactivation holds the user row (FOR UPDATE) and has deleted
    the user's keys; a PUT arriving then waits on the user lock and, once the deactivation
    commits, answers 401 instead of writing a key the deactivation already swept."""
    import threading
    import time

    from app.extensions import db
    from app.models import UserChatProviderKey
    from tests.support import API, make_token

    provider = byok_provider(admin_api)
    token = make_token(app, member)
    answered: list = []

    def put() -> None:
        response = app.test_client().put(f"{API}/user-provider-configs/{provider['id']}",
                                         json={"api_key": new_key()}, headers={"Authorization": f"Bearer {token}"})
        answered.append(response.status_code)

    with app.app_context(), db.engine.connect() as deactivation, db.engine.connect() as watcher:
        with deactivation.begin():
            deactivation.execute(sa.text("SELECT id FROM users WHERE id = :id FOR UPDATE"), {"id": member.id})
            deactivation.execute(sa.text("UPDATE users SET active = false WHERE id = :id"), {"id": member.id})
            deactivation.execute(sa.text("DELETE FROM user_chat_provider_keys WHERE user_id = :id"),
                                 {"id": member.id})
            thread = threading.Thread(target=put)
            thread.start()
            waiting = 0
            for _ in range(200):
                waiting = watcher.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")).scalar_one()
                watcher.rollback()  # activity is read once per transaction: look again afresh
                if waiting or answered:
                    break
                time.sleep(0.05)
            assert waiting == 1, "the PUT should wait on the deactivation's lock"
        thread.join(timeout=30)
    assert answered == [401]
    assert db_rows(app, UserChatProviderKey) == []


def test_a_key_row_deleted_between_conflict_and_reselect_fails_the_request(app, admin_api, member, monkeypatch):
    """The insert lost to another writer's row, which was then gone before the re-select: the
    save fails with the database's error (a 500 for the API), not an AttributeError on None."""
    from sqlalchemy.exc import IntegrityError

    from app.services import legacy, secrets
    from app.services.base import Actor

    provider = byok_provider(admin_api)
    with app.app_context():
        legacy.set_user_key(Actor.for_user(member), provider["id"], new_key("first"))
    monkeypatch.setattr(secrets, "lock_one", lambda stmt, shared=False: None)  # the upsert never finds the row
    with app.app_context(), pytest.raises(IntegrityError):
        legacy.set_user_key(Actor.for_user(member), provider["id"], new_key("second"))


def test_delete_is_idempotent_and_only_the_callers_key(app, admin_api, member_api, member_b_api):
    provider = byok_provider(admin_api)
    member_api.put(f"/user-provider-configs/{provider['id']}", json={"api_key": new_key()})
    member_b_api.put(f"/user-provider-configs/{provider['id']}", json={"api_key": new_key()})
    # Disabled and BYOK off: removing one's key is still allowed.
    admin_api.patch(f"/providers/{provider['id']}", json={"enabled": False})
    app.config["ALLOW_BYOK"] = False
    assert member_api.delete(f"/user-provider-configs/{provider['id']}").status_code == 204
    assert member_api.delete(f"/user-provider-configs/{provider['id']}").status_code == 204
    assert member_api.delete(f"/user-provider-configs/{uuid.uuid4()}").status_code == 204
    assert member_api.delete("/user-provider-configs/not-a-uuid").status_code == 400

    from app.models import User, UserChatProviderKey

    (left,) = db_rows(app, UserChatProviderKey)
    (owner,) = db_rows(app, User, id=left.user_id)
    assert owner.email == "other@example.com"
    assert member_api.get("/user-provider-configs").get_json() == []


def test_a_disabled_provider_is_listed_while_the_caller_holds_a_key(admin_api, member_api, member_b_api):
    provider = byok_provider(admin_api)
    member_api.put(f"/user-provider-configs/{provider['id']}", json={"api_key": new_key()})
    admin_api.patch(f"/providers/{provider['id']}", json={"enabled": False})
    assert [c["has_user_api_key"] for c in member_api.get("/user-provider-configs").get_json()] == [True]
    assert member_b_api.get("/user-provider-configs").get_json() == []


def test_session_callers_need_csrf_for_writes(app, admin, member):
    from tests.support import Api, get_csrf, login

    client = app.test_client()
    login(client, admin.email)
    api = Api(client)
    assert api.get("/providers").status_code == 200
    assert api.post("/providers", json={"provider": "openai", "api_key": new_key()}).status_code == 400
    api.csrf = get_csrf(client, "/")
    assert api.post("/providers", json={"provider": "openai", "api_key": new_key()}).status_code == 201


def test_every_change_is_audited_without_the_key(app, admin_api, member_api):
    central, user_key, replacement = new_key("central"), new_key("user"), new_key("replacement")
    provider = create(admin_api, api_key=central, allow_user_api_key=True)
    admin_api.patch(f"/providers/{provider['id']}", json={"api_key": replacement, "display_name": "X"})
    member_api.put(f"/user-provider-configs/{provider['id']}", json={"api_key": user_key})
    member_api.delete(f"/user-provider-configs/{provider['id']}")
    admin_api.delete(f"/providers/{provider['id']}")

    from app.models import AuditEvent

    events = db_rows(app, AuditEvent)
    actions = [e.action for e in events if e.action.startswith("legacy_")]
    assert sorted(actions) == sorted(["legacy_provider.create", "legacy_provider.update", "legacy_user_key.set",
                                      "legacy_user_key.delete", "legacy_provider.delete"])
    dumped = repr([(e.details, e.resource_id) for e in events])
    for secret in (central, user_key, replacement):
        assert secret not in dumped
        assert "..." + secret[-4:] in dumped  # the hint only
