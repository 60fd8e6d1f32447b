"""JSON routes for chat model configs (SPEC section 6): every route, status and message."""

from __future__ import annotations

import uuid

import pytest

from tests.support import new_key


def make_provider(app, name="openai-main", type="openai", enabled=True, key_policy="provider_only", keys=()):
    from app.services import provider_keys, providers
    from app.services.base import Actor

    with app.app_context():
        actor = Actor.system("test")
        provider = providers.create_provider(actor, type=type, name=name, key_policy=key_policy)
        for key in keys:
            provider_keys.add_key(actor, provider.id, key)
        if not enabled:
            providers.update_provider(actor, provider.id, {"enabled": False})
        return str(provider.id)


def make_legacy(app, provider="anthropic", enabled=True, api_key=None, central=True, user=False, fallback=False):
    from app.extensions import db
    from app.models import ChatProvider
    from app.services import secrets

    with app.app_context():
        row = ChatProvider(id=uuid.uuid4(), provider=provider, display_name="", enabled=enabled,
                           central_api_key_enabled=central, allow_user_api_key=user,
                           allow_central_api_key_fallback=fallback)
        if api_key:
            secrets.seal(row, api_key)
        db.session.add(row)
        db.session.commit()
        return str(row.id)


def live_defaults(app) -> list[str]:
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import ChatModelConfig

    with app.app_context():
        ids = db.session.execute(sa.select(ChatModelConfig.id).where(
            ChatModelConfig.is_default.is_(True), ChatModelConfig.deleted.is_(False))).scalars().all()
        db.session.rollback()
        return [str(i) for i in ids]


def create(api, provider_id, model="gpt-4o", **fields):
    response = api.post("/model-configs", json={"ai_provider_id": provider_id, "model": model, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def provider_id(app):
    return make_provider(app)


# --- create ------------------------------------------------------------------------------------


def test_create_answers_every_field_and_the_first_config_becomes_default(admin_api, provider_id):
    response = admin_api.post("/model-configs", json={
        "ai_provider_id": provider_id, "model": "  gpt-4o  ", "display_name": " GPT-4o ",
        "context_limit": 64000, "compression_threshold": 80, "options": {"temperature": 0.2}})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "ai_provider_id", "provider", "model", "display_name", "enabled", "is_default",
                         "context_limit", "compression_threshold", "options", "access", "group_ids", "created_at", "updated_at"}
    assert body["ai_provider_id"] == provider_id
    assert body["provider"] == "openai"
    assert body["model"] == "gpt-4o"
    assert body["display_name"] == "GPT-4o"
    assert body["enabled"] is True
    assert body["is_default"] is True
    assert body["context_limit"] == 64000
    assert body["compression_threshold"] == 80
    assert body["options"] == {"temperature": 0.2}
    assert body["created_at"].endswith("Z")

    second = create(admin_api, provider_id, "gpt-4o-mini")
    assert second["is_default"] is False
    assert second["context_limit"] == 128000 and second["compression_threshold"] == 70 and second["options"] == {}


def test_create_with_is_default_moves_the_default(app, admin_api, provider_id):
    first = create(admin_api, provider_id, "a")
    second = create(admin_api, provider_id, "b", is_default=True)
    assert second["is_default"] is True
    assert live_defaults(app) == [second["id"]]
    assert admin_api.get(f"/model-configs/{first['id']}").get_json()["is_default"] is False


def test_create_requires_an_ai_provider_id(admin_api):
    response = admin_api.post("/model-configs", json={"model": "gpt-4o"})
    assert response.status_code == 400
    assert response.get_json()["message"] == "AI provider ID is required."
    response = admin_api.post("/model-configs", json={"model": "gpt-4o", "provider": "openai"})
    assert response.status_code == 400
    assert response.get_json()["message"] == "AI provider ID is required."


def test_create_legacy_config_when_the_type_has_a_legacy_provider(app, admin_api):
    make_legacy(app, "anthropic", api_key=new_key("legacy"))
    response = admin_api.post("/model-configs", json={"provider": "anthropic", "model": "claude-3-5-sonnet"})
    assert response.status_code == 201
    body = response.get_json()
    assert body["ai_provider_id"] is None
    assert body["provider"] == "anthropic"
    again = admin_api.post("/model-configs", json={"provider": "anthropic", "model": "claude-3-5-sonnet"})
    assert again.status_code == 409
    assert again.get_json()["message"] == "Chat model config already exists."
    make_legacy(app, "google", enabled=False)
    response = admin_api.post("/model-configs", json={"provider": "google", "model": "gemini"})
    assert response.status_code == 400
    assert response.get_json()["message"] == "Provider is disabled."


def test_create_on_missing_deleted_or_disabled_provider(app, admin_api):
    response = admin_api.post("/model-configs", json={"ai_provider_id": str(uuid.uuid4()), "model": "m"})
    assert response.status_code == 404
    assert response.get_json()["message"] == "AI provider not found."

    disabled = make_provider(app, "off", enabled=False)
    response = admin_api.post("/model-configs", json={"ai_provider_id": disabled, "model": "m"})
    assert response.status_code == 400
    assert response.get_json()["message"] == "AI provider is disabled."

    gone = make_provider(app, "gone")
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        providers.delete_provider(Actor.system("test"), gone)
    response = admin_api.post("/model-configs", json={"ai_provider_id": gone, "model": "m"})
    assert response.status_code == 404
    assert response.get_json()["message"] == "AI provider not found."

    response = admin_api.post("/model-configs", json={"ai_provider_id": "not-a-uuid", "model": "m"})
    assert response.status_code == 400
    assert response.get_json()["validations"][0]["field"] == "ai_provider_id"


def test_create_checks_the_provider_before_the_fields(app, admin_api):
    """SPEC section 6 order: ai_provider_id required, provider live (404), enabled (400), then the
    field rules: a body breaking both answers with the provider's message."""
    bad_fields = {"context_limit": 0, "compression_threshold": 101, "options": [], "display_name": "x" * 300}
    cases = [
        ({}, 400, "AI provider ID is required."),
        (bad_fields, 400, "AI provider ID is required."),
        ({"provider": "openai", **bad_fields}, 400, "AI provider ID is required."),
        ({"ai_provider_id": str(uuid.uuid4())}, 404, "AI provider not found."),
        ({"ai_provider_id": str(uuid.uuid4()), **bad_fields}, 404, "AI provider not found."),
        ({"ai_provider_id": make_provider(app, "off", enabled=False), **bad_fields}, 400, "AI provider is disabled."),
        ({"ai_provider_id": make_provider(app, "on"), "provider": "anthropic", **bad_fields}, 400, "Invalid provider."),
        ({"ai_provider_id": make_provider(app, "on-too"), **bad_fields}, 400, "Model is required."),
    ]
    for body, status, message in cases:
        response = admin_api.post("/model-configs", json=body)
        assert (response.status_code, response.get_json()["message"]) == (status, message), body
    assert admin_api.get("/model-configs").get_json() == []


def test_create_legacy_config_checks_the_legacy_provider_before_the_fields(app, admin_api):
    make_legacy(app, "google", enabled=False)
    make_legacy(app, "anthropic", api_key=new_key("legacy"))
    response = admin_api.post("/model-configs", json={"provider": "google", "context_limit": 0})
    assert (response.status_code, response.get_json()["message"]) == (400, "Provider is disabled.")
    response = admin_api.post("/model-configs", json={"provider": "anthropic", "context_limit": 0})
    assert (response.status_code, response.get_json()["message"]) == (400, "Model is required.")
    assert admin_api.get("/model-configs").get_json() == []


@pytest.mark.parametrize("model", [None, "", "   "])
def test_create_requires_a_model(admin_api, provider_id, model):
    body = {"ai_provider_id": provider_id}
    if model is not None:
        body["model"] = model
    response = admin_api.post("/model-configs", json=body)
    assert response.status_code == 400
    assert response.get_json()["message"] == "Model is required."


@pytest.mark.parametrize(("field", "value"), [
    ("context_limit", 0), ("context_limit", -5), ("context_limit", "1000"), ("context_limit", 2**31),
    ("context_limit", True), ("context_limit", 1.5),
    ("compression_threshold", -1), ("compression_threshold", 101), ("compression_threshold", "50"),
    ("options", []), ("options", "{}"), ("options", 3),
])
def test_create_rejects_bad_numbers_and_options_naming_the_field(admin_api, provider_id, field, value):
    response = admin_api.post("/model-configs", json={"ai_provider_id": provider_id, "model": "m", field: value})
    assert response.status_code == 400
    assert [v["field"] for v in response.get_json()["validations"]] == [field]


def test_create_accepts_the_bounds(admin_api, provider_id):
    body = create(admin_api, provider_id, "edge", context_limit=1, compression_threshold=0)
    assert (body["context_limit"], body["compression_threshold"]) == (1, 0)
    body = create(admin_api, provider_id, "edge2", compression_threshold=100)
    assert body["compression_threshold"] == 100


def test_create_rejects_a_provider_type_that_is_not_the_providers(admin_api, provider_id):
    response = admin_api.post("/model-configs", json={"ai_provider_id": provider_id, "model": "m",
                                                      "provider": "anthropic"})
    assert response.status_code == 400
    assert response.get_json()["validations"][0]["field"] == "provider"
    assert create(admin_api, provider_id, "m", provider="openai")["provider"] == "openai"


def test_create_rejects_unknown_fields_and_non_objects(admin_api, provider_id):
    response = admin_api.post("/model-configs", json={"ai_provider_id": provider_id, "model": "m", "deleted": True})
    assert response.status_code == 400
    assert response.get_json()["validations"] == [{"field": "deleted", "detail": "Unknown field."}]
    response = admin_api.post("/model-configs", json=["m"])
    assert response.status_code == 400
    assert response.get_json()["message"] == "Request body must be valid JSON."


def test_duplicate_live_model_on_a_provider_is_409_and_reusable_after_delete(admin_api, provider_id, app):
    first = create(admin_api, provider_id, "gpt-4o")
    response = admin_api.post("/model-configs", json={"ai_provider_id": provider_id, "model": " gpt-4o "})
    assert response.status_code == 409
    assert response.get_json()["message"] == "Chat model config already exists."
    other = make_provider(app, "second")
    assert create(admin_api, other, "gpt-4o")["model"] == "gpt-4o"  # same model, other provider
    assert admin_api.delete(f"/model-configs/{first['id']}").status_code == 204
    assert create(admin_api, provider_id, "gpt-4o")["model"] == "gpt-4o"


def test_only_admins_write(member_api, anon_api, provider_id, admin_api):
    config = create(admin_api, provider_id)
    assert member_api.post("/model-configs", json={"ai_provider_id": provider_id, "model": "x"}).status_code == 403
    assert member_api.patch(f"/model-configs/{config['id']}", json={"enabled": False}).status_code == 403
    assert member_api.delete(f"/model-configs/{config['id']}").status_code == 403
    assert member_api.get(f"/model-configs/{config['id']}").status_code == 200  # in the enabled set
    for call in (anon_api.get("/model-configs"), anon_api.get("/model-configs/enabled"),
                 anon_api.post("/model-configs", json={}), anon_api.get(f"/model-configs/{config['id']}/resolution")):
        assert call.status_code == 401
        assert call.get_json() == {"message": "Unauthorized."}


# --- list --------------------------------------------------------------------------------------


def test_admin_lists_every_live_config_members_only_the_enabled_set(app, admin_api, member_api, provider_id):
    default = create(admin_api, provider_id, "zeta", display_name="Zeta")
    disabled = create(admin_api, provider_id, "alpha", enabled=False)
    beta = create(admin_api, provider_id, "beta")
    off_provider = make_provider(app, "later")
    on_off = create(admin_api, off_provider, "gamma")
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        providers.update_provider(Actor.system("test"), off_provider, {"enabled": False})
    deleted = create(admin_api, provider_id, "deleted")
    admin_api.delete(f"/model-configs/{deleted['id']}")

    response = admin_api.get("/model-configs")
    assert response.status_code == 200
    # Default first, then by display name (or model), then id.
    assert [c["id"] for c in response.get_json()] == [default["id"], disabled["id"], beta["id"], on_off["id"]]
    assert response.headers["X-Total-Count"] == "4"

    for path in ("/model-configs", "/model-configs/enabled"):
        response = member_api.get(path)
        assert response.status_code == 200
        assert [c["id"] for c in response.get_json()] == [default["id"], beta["id"]]
        assert response.headers["X-Total-Count"] == "2"
    assert admin_api.get("/model-configs/enabled").get_json() == member_api.get("/model-configs/enabled").get_json()
    assert member_api.get(f"/model-configs/{disabled['id']}").status_code == 404
    assert admin_api.get(f"/model-configs/{disabled['id']}").status_code == 200


def test_lists_page_with_limit_and_offset(admin_api, provider_id):
    ids = [create(admin_api, provider_id, f"m{i}")["id"] for i in range(5)]
    response = admin_api.get("/model-configs?limit=2&offset=1")
    assert response.headers["X-Total-Count"] == "5"
    assert [c["id"] for c in response.get_json()] == ids[1:3]
    response = admin_api.get("/model-configs/enabled?limit=2&offset=4")
    assert [c["id"] for c in response.get_json()] == ids[4:]
    assert admin_api.get("/model-configs?limit=0").status_code == 400
    assert admin_api.get("/model-configs?limit=1001").status_code == 400


def test_enabled_set_includes_legacy_configs_of_enabled_legacy_providers(app, admin_api, member_api, provider_id):
    make_legacy(app, "anthropic")
    legacy_off = make_legacy(app, "google", enabled=True)
    on = admin_api.post("/model-configs", json={"provider": "anthropic", "model": "claude"}).get_json()
    off = admin_api.post("/model-configs", json={"provider": "google", "model": "gemini"}).get_json()
    from app.extensions import db
    from app.models import ChatProvider

    with app.app_context():
        db.session.get(ChatProvider, uuid.UUID(legacy_off)).enabled = False
        db.session.commit()
    ids = [c["id"] for c in member_api.get("/model-configs/enabled").get_json()]
    assert on["id"] in ids
    assert off["id"] not in ids


def test_a_config_on_a_disabled_ai_provider_is_not_rescued_by_a_legacy_row(app, admin_api, member_api):
    make_legacy(app, "openai")  # an enabled legacy provider of the same type
    pid = make_provider(app, "openai-new", type="openai")
    config = create(admin_api, pid, "gpt-4o")
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        providers.update_provider(Actor.system("test"), pid, {"enabled": False})
    assert member_api.get("/model-configs/enabled").get_json() == []
    with app.app_context():
        providers.delete_provider(Actor.system("test"), pid)
    assert member_api.get("/model-configs/enabled").get_json() == []
    assert admin_api.get(f"/model-configs/{config['id']}").status_code == 404


# --- get / patch -------------------------------------------------------------------------------


def test_get_missing_deleted_and_malformed(admin_api, provider_id):
    assert admin_api.get(f"/model-configs/{uuid.uuid4()}").get_json() == {"message": "Chat model config not found."}
    config = create(admin_api, provider_id)
    admin_api.delete(f"/model-configs/{config['id']}")
    response = admin_api.get(f"/model-configs/{config['id']}")
    assert response.status_code == 404
    assert response.get_json()["message"] == "Chat model config not found."
    assert admin_api.get("/model-configs/nope").status_code == 400


def test_patch_changes_fields(app, admin_api, provider_id, admin):
    config = create(admin_api, provider_id)
    response = admin_api.patch(f"/model-configs/{config['id']}", json={
        "model": " gpt-4.1 ", "display_name": "Four One", "enabled": False, "context_limit": 1000,
        "compression_threshold": 5, "options": {"reasoning": {"effort": "low"}}})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["model"], body["display_name"], body["enabled"], body["context_limit"],
            body["compression_threshold"], body["options"]) == ("gpt-4.1", "Four One", False, 1000, 5,
                                                                {"reasoning": {"effort": "low"}})
    assert body["updated_at"] >= config["updated_at"]
    assert admin_api.get(f"/model-configs/{config['id']}").get_json() == body

    from app.extensions import db
    from app.models import AuditEvent, ChatModelConfig

    with app.app_context():
        row = db.session.get(ChatModelConfig, uuid.UUID(config["id"]))
        assert row.created_by == admin.id and row.updated_by == admin.id
        actions = [e.action for e in db.session.query(AuditEvent).order_by(AuditEvent.created_at)]
        assert "model_config.create" in actions and "model_config.update" in actions


@pytest.mark.parametrize(("field", "value", "message"), [
    ("model", "", "Model is required."),
    ("model", None, "Model is required."),
    ("context_limit", 0, "Invalid context limit."),
    ("compression_threshold", 101, "Invalid compression threshold."),
    ("options", [1], "Invalid options."),
    ("options", None, "Invalid options."),
])
def test_patch_rejects_bad_values(admin_api, provider_id, field, value, message):
    config = create(admin_api, provider_id)
    response = admin_api.patch(f"/model-configs/{config['id']}", json={field: value})
    assert response.status_code == 400
    assert response.get_json()["message"] == message
    assert response.get_json()["validations"][0]["field"] == field
    assert admin_api.get(f"/model-configs/{config['id']}").get_json() == config


@pytest.mark.parametrize("field", ["ai_provider_id", "provider"])
def test_patch_refuses_to_move_a_config_to_another_provider(admin_api, provider_id, field):
    config = create(admin_api, provider_id)
    response = admin_api.patch(f"/model-configs/{config['id']}", json={field: "anthropic"})
    assert response.status_code == 400
    assert response.get_json()["validations"] == [{"field": field, "detail": "This field cannot be changed."}]


def test_patch_to_a_taken_model_is_409(admin_api, provider_id):
    create(admin_api, provider_id, "a")
    b = create(admin_api, provider_id, "b")
    response = admin_api.patch(f"/model-configs/{b['id']}", json={"model": "a"})
    assert response.status_code == 409
    assert response.get_json()["message"] == "Chat model config already exists."


def test_patch_missing_or_deleted_is_404(admin_api, provider_id):
    response = admin_api.patch(f"/model-configs/{uuid.uuid4()}", json={"enabled": False})
    assert response.status_code == 404
    assert response.get_json()["message"] == "Chat model config not found."
    config = create(admin_api, provider_id)
    admin_api.delete(f"/model-configs/{config['id']}")
    assert admin_api.patch(f"/model-configs/{config['id']}", json={"enabled": False}).status_code == 404


def test_patch_is_default_moves_the_default_in_one_step(app, admin_api, provider_id):
    a = create(admin_api, provider_id, "a")
    b = create(admin_api, provider_id, "b")
    response = admin_api.patch(f"/model-configs/{b['id']}", json={"is_default": True})
    assert response.status_code == 200
    assert response.get_json()["is_default"] is True
    assert live_defaults(app) == [b["id"]]
    assert admin_api.get(f"/model-configs/{a['id']}").get_json()["is_default"] is False
    # Setting it again changes nothing.
    assert admin_api.patch(f"/model-configs/{b['id']}", json={"is_default": True}).status_code == 200
    assert live_defaults(app) == [b["id"]]


def test_unsetting_the_only_default_is_refused(app, admin_api, provider_id):
    a = create(admin_api, provider_id, "a")
    b = create(admin_api, provider_id, "b")
    response = admin_api.patch(f"/model-configs/{a['id']}", json={"is_default": False})
    assert response.status_code == 400
    assert response.get_json()["message"] == "A default model is required while configs exist."
    assert live_defaults(app) == [a["id"]]
    # false on a config that is not the default is a no-op.
    assert admin_api.patch(f"/model-configs/{b['id']}", json={"is_default": False}).status_code == 200


# --- delete ------------------------------------------------------------------------------------


def test_delete_soft_deletes_and_promotes_a_new_default(app, admin_api, member_api, provider_id):
    a = create(admin_api, provider_id, "a")
    disabled = create(admin_api, provider_id, "b-disabled", enabled=False)
    c = create(admin_api, provider_id, "c")
    response = admin_api.delete(f"/model-configs/{a['id']}")
    assert response.status_code == 204
    assert response.data == b""
    # An enabled config is preferred over an older disabled one.
    assert live_defaults(app) == [c["id"]]
    assert [x["id"] for x in admin_api.get("/model-configs").get_json()] == [c["id"], disabled["id"]]
    again = admin_api.delete(f"/model-configs/{a['id']}")
    assert again.status_code == 404
    assert again.get_json()["message"] == "Chat model config not found."

    from app.extensions import db
    from app.models import ChatModelConfig

    with app.app_context():
        row = db.session.get(ChatModelConfig, uuid.UUID(a["id"]))
        assert row.deleted and row.deleted_at is not None and not row.is_default


def test_deleting_the_last_config_leaves_no_default(app, admin_api, provider_id):
    a = create(admin_api, provider_id, "a")
    assert admin_api.delete(f"/model-configs/{a['id']}").status_code == 204
    assert live_defaults(app) == []
    b = create(admin_api, provider_id, "b")
    assert b["is_default"] is True


def test_provider_deletion_soft_deletes_its_configs_and_promotes_a_default(app, admin_api, provider_id):
    a = create(admin_api, provider_id, "a")
    create(admin_api, provider_id, "b")
    other = make_provider(app, "other", type="anthropic")
    c = create(admin_api, other, "claude")
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        removed = providers.delete_provider(Actor.system("test"), provider_id)
    assert removed["model_configs"] == 2
    assert [x["id"] for x in admin_api.get("/model-configs").get_json()] == [c["id"]]
    assert live_defaults(app) == [c["id"]]
    assert admin_api.get(f"/model-configs/{a['id']}").status_code == 404


def test_promotion_prefers_a_config_people_can_use_over_an_older_one_on_a_disabled_provider(app, admin_api):
    """SPEC section 6, "Default promotion": the enabled set first, then other enabled configs,
    then the rest; the oldest within each."""
    switched_off = make_provider(app, "switched-off")
    on = make_provider(app, "on", type="anthropic")
    default = create(admin_api, on, "default-model")
    older_on_disabled_provider = create(admin_api, switched_off, "older")
    newer_disabled = create(admin_api, on, "newer-but-disabled", enabled=False)
    usable = create(admin_api, on, "newest-usable")
    assert admin_api.patch(f"/ai-providers/{switched_off}", json={"enabled": False}).status_code == 200

    assert admin_api.delete(f"/model-configs/{default['id']}").status_code == 204
    assert live_defaults(app) == [usable["id"]]
    assert admin_api.get("/model-configs/enabled").get_json()[0]["id"] == usable["id"]

    # Without a usable config, an enabled one (even on a disabled provider) beats a disabled config.
    assert admin_api.delete(f"/model-configs/{usable['id']}").status_code == 204
    assert live_defaults(app) == [older_on_disabled_provider["id"]]
    assert admin_api.delete(f"/model-configs/{older_on_disabled_provider['id']}").status_code == 204
    assert live_defaults(app) == [newer_disabled["id"]]


def test_provider_deletion_promotes_a_usable_config_over_an_older_one_on_a_disabled_provider(app, admin_api):
    doomed = make_provider(app, "doomed")
    switched_off = make_provider(app, "switched-off", type="google")
    on = make_provider(app, "on", type="anthropic")
    create(admin_api, doomed, "default-model")
    create(admin_api, switched_off, "older")
    usable = create(admin_api, on, "newer")
    assert admin_api.patch(f"/ai-providers/{switched_off}", json={"enabled": False}).status_code == 200
    assert admin_api.delete(f"/ai-providers/{doomed}").status_code == 204
    assert live_defaults(app) == [usable["id"]]


def test_every_change_is_audited(app, admin_api, provider_id):
    a = create(admin_api, provider_id, "a")
    b = create(admin_api, provider_id, "b")
    admin_api.patch(f"/model-configs/{b['id']}", json={"is_default": True})
    admin_api.delete(f"/model-configs/{b['id']}")
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import AuditEvent

    with app.app_context():
        events = db.session.execute(sa.select(AuditEvent.action, AuditEvent.resource_id)
                                    .where(AuditEvent.resource_type == "chat_model_config")).all()
    assert ("model_config.create", a["id"]) in events
    assert ("model_config.update", b["id"]) in events
    assert ("model_config.delete", b["id"]) in events
    assert ("model_config.promote_default", a["id"]) in events
