"""Key health (SPEC section 11): hand-outs say which key they gave (`key_id`), the chat backend
reports how it fared (`POST /credentials/report`), and resolution passes over a failing key on
every key policy, legacy configs included. Through the JSON API, as a chat backend and a user
would; the pages are in tests/pages/test_key_health_pages.py."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.support import new_key
from tests.support.db import sql
from tests.support.factories import oldest_first

REPORT = "/credentials/report"


def make_provider(app, name="prov", key_policy="provider_only", keys=()) -> tuple[str, list[str]]:
    """A provider with `keys` added oldest first; returns (provider id, key ids)."""
    from app.services import provider_keys, providers
    from app.services.base import Actor

    with app.app_context():
        actor = Actor.system("test")
        provider = providers.create_provider(actor, type="openai", name=name, key_policy=key_policy)
        ids = [str(provider_keys.add_key(actor, provider.id, key).id) for key in keys]
        oldest_first(ids)
        return str(provider.id), ids


def make_config(app, provider_id=None, model="gpt-4o", provider=None) -> str:
    from app.services import model_configs
    from app.services.base import Actor

    with app.app_context():
        return str(model_configs.create_config(Actor.system("test"), ai_provider_id=provider_id, provider=provider,
                                               model=model).id)


def hand_out(service_api, user, config_id) -> dict:
    response = service_api.post("/credentials", json={"user_id": str(user.id), "model_config_id": config_id})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def report(service_api, key_id, result):
    return service_api.post(REPORT, json={"key_id": key_id, "result": result})


def reports(app) -> list[tuple[str, dict]]:
    from app.extensions import db
    from app.models import AuditEvent

    with app.app_context():
        rows = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == "credentials.report")
                                  .order_by(AuditEvent.id)).scalars().all()
        return [(r.resource_type, r.resource_id, r.details) for r in rows]


# --- the hand-out names its key; the report records how it fared -----------------------------


def test_the_hand_out_names_the_key_and_a_report_marks_it(app, admin_api, service_api, member):
    first, second = new_key("first"), new_key("second")
    pid, (first_id, second_id) = make_provider(app, keys=[first, second])
    cid = make_config(app, pid)

    body = hand_out(service_api, member, cid)
    assert (body["key_id"], body["api_key"]) == (first_id, first)

    response = report(service_api, first_id, "invalid_key")
    assert response.status_code == 204
    assert response.data == b""
    listed = {k["id"]: k for k in admin_api.get(f"/ai-providers/{pid}/keys").get_json()}
    assert listed[first_id]["last_test_result"] == "invalid_key"
    assert listed[first_id]["last_tested_at"] is not None
    assert (listed[second_id]["last_test_result"], listed[second_id]["last_tested_at"]) == (None, None)

    # The refused key is passed over: the next oldest serves, and the hand-out says which.
    body = hand_out(service_api, member, cid)
    assert (body["available"], body["key_source"], body["key_id"], body["api_key"]) == (True, "provider", second_id,
                                                                                        second)
    [(resource_type, resource_id, details)] = reports(app)
    assert (resource_type, resource_id) == ("ai_provider_key", first_id)
    assert details == {"key_id": first_id, "result": "invalid_key", "failing": True}
    audit_text = str(sql(app, "SELECT details FROM audit_events"))
    assert first not in audit_text and second not in audit_text


def test_when_every_shared_key_is_refused_the_model_is_unavailable_until_one_is_ok(app, service_api, member,
                                                                                    member_api):
    pid, (first_id, second_id) = make_provider(app, keys=[new_key("a"), new_key("b")])
    cid = make_config(app, pid)
    assert report(service_api, first_id, "forbidden").status_code == 204
    assert report(service_api, second_id, "invalid_key").status_code == 204

    resolution = member_api.get(f"/model-configs/{cid}/resolution").get_json()
    assert (resolution["available"], resolution["reason"], resolution["key_source"]) == (
        False, "provider_keys_failing", None)
    body = hand_out(service_api, member, cid)
    assert (body["available"], body["reason"], body["api_key"], body["key_id"]) == (
        False, "provider_keys_failing", None, None)

    # A later ok clears the refusal: the oldest serves again.
    assert report(service_api, first_id, "ok").status_code == 204
    assert hand_out(service_api, member, cid)["key_id"] == first_id


def test_a_new_key_starts_fresh(app, admin_api, service_api, member):
    pid, (refused_id,) = make_provider(app, keys=[new_key("refused")])
    cid = make_config(app, pid)
    report(service_api, refused_id, "invalid_key")
    assert hand_out(service_api, member, cid)["reason"] == "provider_keys_failing"
    added = admin_api.post(f"/ai-providers/{pid}/keys", json={"api_key": new_key("fresh")}).get_json()
    assert (added["last_tested_at"], added["last_test_result"]) == (None, None)
    assert hand_out(service_api, member, cid)["key_id"] == added["id"]


# --- users' own keys ---------------------------------------------------------------------------


def save_user_key(member_api, pid, key) -> None:
    assert member_api.put(f"/user-ai-provider-keys/{pid}", json={"api_key": key}).status_code == 200


def user_key_id(app, user, pid) -> str:
    [(kid,)] = sql(app, "SELECT id FROM user_ai_provider_keys WHERE user_id = :u AND ai_provider_id = :p",
                   u=user.id, p=uuid.UUID(pid))
    return str(uuid.UUID(str(kid)))


def test_user_preferred_falls_back_to_the_shared_key_when_the_users_key_is_refused(app, service_api, member,
                                                                                   member_api):
    shared = new_key("shared")
    pid, (shared_id,) = make_provider(app, key_policy="user_preferred", keys=[shared])
    cid = make_config(app, pid)
    own = new_key("own")
    save_user_key(member_api, pid, own)
    mine = user_key_id(app, member, pid)
    assert hand_out(service_api, member, cid)["key_id"] == mine

    assert report(service_api, mine, "invalid_key").status_code == 204
    body = hand_out(service_api, member, cid)
    assert (body["key_source"], body["key_id"], body["api_key"]) == ("provider", shared_id, shared)
    [config] = [c for c in member_api.get("/user-ai-provider-keys").get_json() if c["provider"]["id"] == pid]
    assert (config["has_user_api_key"], config["last_test_result"]) == (True, "invalid_key")
    assert config["last_tested_at"] is not None

    # Saving a new key starts fresh: it serves again.
    save_user_key(member_api, pid, new_key("own-2"))
    assert hand_out(service_api, member, cid)["key_source"] == "user"
    [config] = [c for c in member_api.get("/user-ai-provider-keys").get_json() if c["provider"]["id"] == pid]
    assert (config["last_tested_at"], config["last_test_result"]) == (None, None)


def test_user_preferred_with_a_refused_key_and_refused_shared_keys(app, service_api, member, member_api):
    pid, (shared_id,) = make_provider(app, key_policy="user_preferred", keys=[new_key("shared")])
    cid = make_config(app, pid)
    save_user_key(member_api, pid, new_key("own"))
    report(service_api, user_key_id(app, member, pid), "forbidden")
    report(service_api, shared_id, "forbidden")
    resolution = member_api.get(f"/model-configs/{cid}/resolution").get_json()
    assert (resolution["available"], resolution["reason"]) == (False, "provider_keys_failing")


def test_user_only_with_a_refused_key_needs_a_new_one(app, service_api, member, member_api):
    pid, _ = make_provider(app, key_policy="user_only", keys=[new_key("unused-shared")])
    cid = make_config(app, pid)
    save_user_key(member_api, pid, new_key("own"))
    report(service_api, user_key_id(app, member, pid), "invalid_key")
    resolution = member_api.get(f"/model-configs/{cid}/resolution").get_json()
    assert (resolution["available"], resolution["reason"], resolution["key_source"]) == (
        False, "user_api_key_required", None)
    body = hand_out(service_api, member, cid)
    assert (body["api_key"], body["key_id"]) == (None, None)
    save_user_key(member_api, pid, new_key("own-2"))
    assert member_api.get(f"/model-configs/{cid}/resolution").get_json()["key_source"] == "user"


def test_another_users_refused_key_changes_nothing_for_me(app, service_api, member, member_b, member_api,
                                                          member_b_api):
    pid, _ = make_provider(app, key_policy="user_only")
    cid = make_config(app, pid)
    save_user_key(member_api, pid, new_key("mine"))
    save_user_key(member_b_api, pid, new_key("theirs"))
    report(service_api, user_key_id(app, member_b, pid), "invalid_key")
    assert hand_out(service_api, member, cid)["key_source"] == "user"
    assert hand_out(service_api, member_b, cid)["reason"] == "user_api_key_required"


# --- legacy configs ------------------------------------------------------------------------------


def make_legacy(app, *, user=False, fallback=False, api_key=None) -> str:
    from app.services import legacy
    from app.services.base import Actor

    with app.app_context():
        return str(legacy.create_provider(Actor.system("test"), provider="anthropic", api_key=api_key,
                                          central_api_key_enabled=True, allow_user_api_key=user,
                                          allow_central_api_key_fallback=fallback).id)


def test_a_legacy_central_key_fails_and_recovers(app, service_api, member):
    central = new_key("central")
    lpid = make_legacy(app, api_key=central)
    cid = make_config(app, provider="anthropic", model="claude")
    body = hand_out(service_api, member, cid)
    assert (body["key_id"], body["api_key"]) == (lpid, central)  # the central key is the provider's row
    assert report(service_api, lpid, "invalid_key").status_code == 204
    body = hand_out(service_api, member, cid)
    assert (body["available"], body["reason"], body["key_id"]) == (False, "provider_keys_failing", None)
    assert report(service_api, lpid, "ok").status_code == 204
    assert hand_out(service_api, member, cid)["api_key"] == central


def test_a_refused_legacy_user_key_falls_back_to_the_central_key(app, service_api, member, member_api):
    central = new_key("central")
    lpid = make_legacy(app, api_key=central, user=True, fallback=True)
    cid = make_config(app, provider="anthropic", model="claude")
    assert member_api.put(f"/user-provider-configs/{lpid}", json={"api_key": new_key("legacy-own")}).status_code == 200
    body = hand_out(service_api, member, cid)
    assert body["key_source"] == "user"
    assert report(service_api, body["key_id"], "forbidden").status_code == 204
    body = hand_out(service_api, member, cid)
    assert (body["key_source"], body["api_key"], body["key_id"]) == ("provider", central, lpid)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "message", "field"), [
    ({"key_id": str(uuid.uuid4()), "result": "ok"}, 404, "API key not found.", None),
    ({"key_id": "nope", "result": "ok"}, 400, "Invalid key ID.", "key_id"),
    ({"key_id": "KEY", "result": "rate_limited"}, 400, "Invalid request body.", "result"),
    ({"key_id": "KEY", "result": "fine"}, 400, "Invalid request body.", "result"),
    ({"key_id": "KEY"}, 400, "Invalid request body.", "result"),
    ({"key_id": "KEY", "result": "ok", "user_id": "x"}, 400, "Invalid request body.", "user_id"),
    ({"result": "ok"}, 400, "Invalid request body.", "key_id"),
])
def test_a_refused_report_changes_nothing(app, service_api, body, status, message, field):
    _, (key_id,) = make_provider(app, keys=[new_key("k")])
    body = {k: (key_id if v == "KEY" else v) for k, v in body.items()}
    response = service_api.post(REPORT, json=body)
    assert response.status_code == status
    answer = response.get_json()
    assert answer["message"] == message
    if field:
        assert field in [v["field"] for v in answer["validations"]]
    assert sql(app, "SELECT last_tested_at, last_test_result FROM ai_provider_keys") == [(None, None)]
    assert reports(app) == []


def test_only_a_service_token_may_report(app, anon_api, member_api, admin_api):
    _, (key_id,) = make_provider(app, keys=[new_key("k")])
    body = {"key_id": key_id, "result": "invalid_key"}
    assert anon_api.post(REPORT, json=body).status_code == 401
    assert member_api.post(REPORT, json=body).status_code == 403
    assert admin_api.post(REPORT, json=body).status_code == 403
    assert sql(app, "SELECT last_test_result FROM ai_provider_keys") == [(None,)]


def test_a_report_on_a_deleted_key_does_not_bring_it_back(app, admin_api, service_api):
    pid, (key_id,) = make_provider(app, keys=[new_key("gone")])
    assert admin_api.delete(f"/ai-providers/{pid}/keys/{key_id}").status_code == 204
    assert report(service_api, key_id, "ok").status_code == 404
    assert sql(app, "SELECT count(*) FROM ai_provider_keys") == [(0,)]


def test_legacy_user_configs_say_there_is_no_fallback_while_the_central_key_is_refused(app, service_api,
                                                                                       member_api):
    lpid = make_legacy(app, api_key=new_key("central"), user=True, fallback=True)
    [config] = member_api.get("/user-provider-configs").get_json()
    assert config["has_central_api_key_fallback"] is True
    report(service_api, lpid, "invalid_key")
    [config] = member_api.get("/user-provider-configs").get_json()
    assert config["has_central_api_key_fallback"] is False  # as resolution: provider_keys_failing
