"""POST /credentials: service tokens only, the resolution plus the key, every call audited."""

from __future__ import annotations

import json
import logging
import uuid
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from tests.support import Api, get_csrf, login, new_key
from tests.support.db import sql


def make_provider(app, name="prov", key_policy="provider_only", keys=()):
    from app.services import provider_keys, providers
    from app.services.base import Actor

    with app.app_context():
        actor = Actor.system("test")
        provider = providers.create_provider(actor, type="openai", name=name, key_policy=key_policy)
        for key in keys:
            provider_keys.add_key(actor, provider.id, key)
        return provider.id


def make_config(app, provider_id, model="gpt-4o", **fields):
    from app.services import model_configs
    from app.services.base import Actor

    with app.app_context():
        return model_configs.create_config(Actor.system("test"), ai_provider_id=provider_id, model=model, **fields).id


def hand_out_events(app) -> list:
    from app.extensions import db
    from app.models import AuditEvent

    with app.app_context():
        rows = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == "credentials.hand_out")
                                  .order_by(AuditEvent.created_at, AuditEvent.id)).scalars().all()
        return [SimpleNamespace(details=r.details, resource_id=r.resource_id, actor_label=r.actor_label)
                for r in rows]


def all_audit_text(app) -> str:
    from app.extensions import db
    from app.models import AuditEvent

    with app.app_context():
        rows = db.session.execute(sa.select(AuditEvent)).scalars().all()
        return json.dumps([[r.action, r.actor_label, r.resource_id, r.details] for r in rows])


def test_a_service_token_gets_the_key_and_the_hand_out_is_audited(app, service_api, member, caplog):
    caplog.set_level(logging.DEBUG)
    key = new_key("shared")
    pid = make_provider(app, keys=[key])
    cid = make_config(app, pid)

    response = service_api.post("/credentials", json={"user_id": str(member.id), "model_config_id": str(cid)})
    assert response.status_code == 200
    [(key_id,)] = sql(app, "SELECT id FROM ai_provider_keys")
    assert response.get_json() == {
        "model_config_id": str(cid),
        "provider": {"id": str(pid), "type": "openai", "name": "prov", "display_name": "prov", "enabled": True},
        "base_url": "",
        "key_source": "provider",
        "available": True,
        "reason": None,
        "key_id": str(uuid.UUID(str(key_id))),
        "api_key": key,
    }
    events = hand_out_events(app)
    assert len(events) == 1
    assert events[0].details == {"user_id": str(member.id), "model_config_id": str(cid), "key_source": "provider",
                                 "key_id": str(uuid.UUID(str(key_id))), "available": True, "reason": None}
    assert events[0].resource_id == str(cid)
    assert events[0].actor_label.startswith("service token")
    assert key not in all_audit_text(app)
    assert key not in caplog.text


def test_the_users_own_key_is_handed_out_under_user_preferred(app, service_api, member, member_b):
    from app.extensions import db
    from app.models import UserAIProviderKey
    from app.services import secrets

    shared, own = new_key("shared"), new_key("own")
    pid = make_provider(app, key_policy="user_preferred", keys=[shared])
    cid = make_config(app, pid)
    with app.app_context():
        row = UserAIProviderKey(id=uuid.uuid4(), user_id=member.id, ai_provider_id=pid)
        secrets.seal(row, own)
        db.session.add(row)
        db.session.commit()
    mine = service_api.post("/credentials", json={"user_id": str(member.id), "model_config_id": str(cid)}).get_json()
    assert (mine["key_source"], mine["api_key"]) == ("user", own)
    theirs = service_api.post("/credentials", json={"user_id": str(member_b.id), "model_config_id": str(cid)})
    assert (theirs.get_json()["key_source"], theirs.get_json()["api_key"]) == ("provider", shared)
    assert [e.details["key_source"] for e in hand_out_events(app)] == ["user", "provider"]
    assert own not in all_audit_text(app) and shared not in all_audit_text(app)


def test_unavailable_resolution_answers_null_key_with_the_reason(app, service_api, member):
    pid = make_provider(app, key_policy="user_only", keys=[new_key()])
    cid = make_config(app, pid)
    body = service_api.post("/credentials", json={"user_id": str(member.id), "model_config_id": str(cid)}).get_json()
    assert (body["available"], body["key_source"], body["reason"], body["api_key"]) == (
        False, None, "user_api_key_required", None)
    disabled = make_config(app, pid, "off", enabled=False)
    body = service_api.post("/credentials", json={"user_id": str(member.id),
                                                  "model_config_id": str(disabled)}).get_json()
    assert (body["reason"], body["api_key"]) == ("model_disabled", None)
    assert [(e.details["available"], e.details["reason"]) for e in hand_out_events(app)] == [
        (False, "user_api_key_required"), (False, "model_disabled")]


def test_unknown_or_deactivated_user_and_unknown_config_are_404_and_audited(app, service_api, member):
    from app.services import users
    from app.services.base import Actor

    key = new_key()
    pid = make_provider(app, keys=[key])
    cid = make_config(app, pid)
    response = service_api.post("/credentials", json={"user_id": str(uuid.uuid4()), "model_config_id": str(cid)})
    assert response.status_code == 404
    assert response.get_json() == {"message": "User not found."}
    response = service_api.post("/credentials", json={"user_id": str(member.id), "model_config_id": str(uuid.uuid4())})
    assert response.status_code == 404
    assert response.get_json() == {"message": "Chat model config not found."}
    with app.app_context():
        users.deactivate_user(Actor.system("test"), member.id)
    response = service_api.post("/credentials", json={"user_id": str(member.id), "model_config_id": str(cid)})
    assert response.status_code == 404
    assert response.get_json() == {"message": "User not found."}
    assert key not in response.get_data(as_text=True)
    events = hand_out_events(app)
    assert [(e.details["available"], e.details["refused"]) for e in events] == [
        (False, "User not found."), (False, "Chat model config not found."), (False, "User not found.")]


def test_deleted_config_is_404(app, service_api, member):
    from app.services import model_configs
    from app.services.base import Actor

    pid = make_provider(app, keys=[new_key()])
    cid = make_config(app, pid)
    with app.app_context():
        model_configs.delete_config(Actor.system("test"), cid)
    response = service_api.post("/credentials", json={"user_id": str(member.id), "model_config_id": str(cid)})
    assert response.status_code == 404
    assert response.get_json()["message"] == "Chat model config not found."


@pytest.mark.parametrize(("body", "field"), [
    ({"model_config_id": "x"}, "user_id"),
    ({"user_id": "x"}, "model_config_id"),
    ({"user_id": "nope", "model_config_id": str(uuid.uuid4())}, "user_id"),
    ({"user_id": str(uuid.uuid4()), "model_config_id": "nope"}, "model_config_id"),
    ({"user_id": str(uuid.uuid4()), "model_config_id": str(uuid.uuid4()), "api_key": "x"}, "api_key"),
])
def test_bad_bodies_are_400_naming_the_field(service_api, body, field):
    response = service_api.post("/credentials", json=body)
    assert response.status_code == 400
    assert field in [v["field"] for v in response.get_json()["validations"]]


def test_a_service_token_can_call_nothing_else(app, service_api, member):
    pid = make_provider(app, keys=[new_key()])
    cid = make_config(app, pid)
    calls = [
        service_api.get("/me"),
        service_api.get("/model-configs"),
        service_api.get("/model-configs/enabled"),
        service_api.get(f"/model-configs/{cid}"),
        service_api.get(f"/model-configs/{cid}/resolution"),
        service_api.post("/model-configs", json={"ai_provider_id": str(pid), "model": "other"}),
        service_api.patch(f"/model-configs/{cid}", json={"enabled": False}),
        service_api.delete(f"/model-configs/{cid}"),
        service_api.get("/ai-providers"),
        service_api.post("/ai-providers", json={"type": "openai", "name": "sneaky"}),
        service_api.get(f"/ai-providers/{pid}/keys"),
    ]
    for response in calls:
        assert response.status_code == 403, response.request.path
        assert response.get_json() == {"message": "Forbidden."}


def test_user_tokens_and_sessions_cannot_get_credentials(app, admin_api, member_api, admin, member, anon_api):
    key = new_key()
    pid = make_provider(app, keys=[key])
    cid = make_config(app, pid)
    body = {"user_id": str(member.id), "model_config_id": str(cid)}
    for api in (admin_api, member_api):
        response = api.post("/credentials", json=body)
        assert response.status_code == 403
        assert response.get_json() == {"message": "Forbidden."}
        assert key not in response.get_data(as_text=True)
    client = app.test_client()
    login(client, admin.email)
    session_api = Api(client, csrf=get_csrf(client, "/"))
    assert session_api.post("/credentials", json=body).status_code == 403
    assert anon_api.post("/credentials", json=body).status_code == 401
    assert hand_out_events(app) == []


# --- every call is audited, refused ones included ----------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    ({"user_id": "nope", "model_config_id": "also-nope"}, "Invalid user ID."),
    ({"user_id": str(uuid.uuid4()), "model_config_id": "nope"}, "Invalid model config ID."),
    ({"model_config_id": str(uuid.uuid4())}, "Invalid request body."),
    ({"user_id": str(uuid.uuid4()), "model_config_id": str(uuid.uuid4()), "api_key": "x"}, "Invalid request body."),
    ({"user_id": 5, "model_config_id": str(uuid.uuid4())}, "Invalid request body."),
    ("not an object", "Request body must be valid JSON."),
])
def test_refused_requests_are_audited_too(app, service_api, body, message):
    response = service_api.post("/credentials", json=body)
    assert response.status_code == 400
    assert response.get_json()["message"] == message
    (event,) = hand_out_events(app)
    assert event.details["available"] is False
    assert (event.details["reason"], event.details["refused"]) == ("invalid_request", message)
    assert event.actor_label.startswith("service token")


def test_a_malformed_id_is_recorded_as_sent(app, service_api):
    config_id = str(uuid.uuid4())
    service_api.post("/credentials", json={"user_id": "not-a-uuid", "model_config_id": config_id})
    (event,) = hand_out_events(app)
    assert (event.details["user_id"], event.details["model_config_id"]) == ("not-a-uuid", config_id)
    service_api.post("/credentials", json={"user_id": str(uuid.uuid4()), "model_config_id": "x" * 500})
    assert len(hand_out_events(app)[1].details["model_config_id"]) == 64


def test_a_body_that_is_not_json_is_audited(app, service_api):
    response = service_api.post("/credentials", data="{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    (event,) = hand_out_events(app)
    assert event.details["reason"] == "invalid_request" and event.resource_id is None


def test_an_unreadable_key_is_409_and_audited_without_a_500(app, service_api, member, caplog):
    """A stored key that no configured key decrypts (tampered, or its encryption key removed):
    the same answer as a key test of it, and the refusal is in the audit log."""
    from app.extensions import db
    from app.models import AIProviderKey

    key = new_key("unreadable")
    pid = make_provider(app, keys=[key])
    cid = make_config(app, pid)
    with app.app_context():
        row = db.session.execute(sa.select(AIProviderKey)).scalar_one()
        row.ciphertext = bytes(reversed(row.ciphertext))
        db.session.commit()

    response = service_api.post("/credentials", json={"user_id": str(member.id), "model_config_id": str(cid)})
    assert response.status_code == 409
    assert response.get_json() == {"message": "The stored key could not be decrypted.",
                                   "detail": "Run `flask --app wsgi dbcrypt verify` to find unreadable keys."}
    (event,) = hand_out_events(app)
    assert event.details == {"user_id": str(member.id), "model_config_id": str(cid), "key_source": "provider",
                             "available": False, "reason": "unreadable_key",
                             "refused": "The stored key could not be decrypted."}
    assert key not in all_audit_text(app) and key not in caplog.text


def test_a_keyless_legacy_bedrock_provider_hands_out_no_key(app, service_api, member):
    """Bedrock signs with the AWS credentials of the chat backend: available, from the provider,
    and `api_key` null."""
    from app.services import legacy, model_configs
    from app.services.base import Actor

    with app.app_context():
        lpid = legacy.create_provider(Actor.system("test"), provider="bedrock").id
        cid = model_configs.create_config(Actor.system("test"), provider="bedrock", model="titan").id
    response = service_api.post("/credentials", json={"user_id": str(member.id), "model_config_id": str(cid)})
    assert response.status_code == 200
    assert response.get_json() == {
        "model_config_id": str(cid),
        "provider": {"id": str(lpid), "type": "bedrock", "name": "bedrock", "display_name": "AWS Bedrock",
                     "enabled": True},
        "base_url": "", "key_source": "provider", "available": True, "reason": None, "key_id": None,
        "api_key": None,
    }
    (event,) = hand_out_events(app)
    assert (event.details["available"], event.details["key_source"]) == (True, "provider")
