"""AI providers and provider keys through the JSON API (SPEC section 4), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

import pytest

from tests.support import new_key
from tests.support.db import sql

NAME_DETAIL = (
    "Names must use lowercase letters, numbers, and single hyphens, and cannot use the reserved agents- prefix."
)
TYPES = ["openai", "anthropic", "azure", "bedrock", "google", "openai-compat", "openrouter", "vercel"]
PROVIDER_FIELDS = {"id", "type", "name", "display_name", "enabled", "base_url", "key_policy", "byok_enabled",
                   "has_provider_api_key", "created_at", "updated_at"}


def create(api, name="openai-main", type="openai", **fields):
    response = api.post("/ai-providers", json={"type": type, "name": name, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def add_key(api, provider_id, key=None):
    response = api.post(f"/ai-providers/{provider_id}/keys", json={"api_key": key or new_key()})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_error(response, status, message, detail=None):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["message"] == message
    if detail is not None:
        assert body["detail"] == detail
    return body


def rfc3339(value):
    assert value.endswith("Z")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def as_id(value) -> str:
    """A UUID read by raw SQL (a UUID on PostgreSQL, 32 hex characters on SQLite) as the API writes it."""
    return str(uuid.UUID(str(value)))


def uid(value) -> str:
    """A UUID as the database stores it in a text comparison (hex without dashes on SQLite)."""
    from tests.support import is_postgres

    return str(value) if is_postgres() else uuid.UUID(str(value)).hex


# --- create ----------------------------------------------------------------------------------


def test_create_returns_every_field_with_defaults(admin_api):
    response = admin_api.post("/ai-providers", json={"type": "anthropic", "name": "claude"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == PROVIDER_FIELDS
    uuid.UUID(body["id"])
    assert body["type"] == "anthropic"
    assert body["name"] == "claude"
    assert body["display_name"] == "claude"  # empty display name falls back to the name
    assert body["enabled"] is True
    assert body["base_url"] == ""
    assert body["key_policy"] == "provider_only"
    assert body["byok_enabled"] is False
    assert body["has_provider_api_key"] is False
    assert rfc3339(body["created_at"]) == rfc3339(body["updated_at"])
    assert admin_api.get(f"/ai-providers/{body['id']}").get_json() == body


@pytest.mark.parametrize("provider_type", TYPES)
def test_every_provider_type_can_be_created(admin_api, provider_type):
    assert create(admin_api, name=f"p-{provider_type}", type=provider_type)["type"] == provider_type


@pytest.mark.parametrize("body", [
    {"name": "x"},
    {"name": "x", "type": None},
    {"name": "x", "type": ""},
    {"name": "x", "type": "OpenAI"},
    {"name": "x", "type": "openai "},
    {"name": "x", "type": "azure-openai"},
    {"type": "mistral"},
])
def test_create_refuses_a_missing_or_unknown_type(admin_api, body):
    assert_error(admin_api.post("/ai-providers", json=body), 400, "Invalid AI provider type.")
    assert admin_api.get("/ai-providers").get_json() == []


@pytest.mark.parametrize("name", [
    None, "", "   ", "OpenAI", "open_ai", "open ai", "open--ai", "-openai", "openai-", "ö-provider",
    "a" * 65, "agents-openai", "agents-", "open.ai", "open/ai",
])
def test_create_refuses_a_bad_name_with_the_rule_as_detail(admin_api, name):
    body = {"type": "openai"} if name is None else {"type": "openai", "name": name}
    assert_error(admin_api.post("/ai-providers", json=body), 400, "Invalid AI provider name.", NAME_DETAIL)
    assert admin_api.get("/ai-providers").get_json() == []


@pytest.mark.parametrize(("sent", "stored"), [
    ("  openai-eu  ", "openai-eu"),
    ("a" * 64, "a" * 64),
    ("gpt4", "gpt4"),
    ("agents", "agents"),
    ("my-agents-provider", "my-agents-provider"),
    ("0-1-2", "0-1-2"),
])
def test_create_accepts_and_trims_good_names(admin_api, sent, stored):
    assert create(admin_api, name=sent)["name"] == stored


def test_duplicate_name_is_409_and_nothing_is_created(admin_api):
    create(admin_api, name="shared")
    response = admin_api.post("/ai-providers", json={"type": "anthropic", "name": " shared "})
    assert_error(response, 409, "AI provider already exists.")
    assert admin_api.get("/ai-providers").headers["X-Total-Count"] == "1"


def test_a_soft_deleted_providers_name_can_be_reused(admin_api):
    old = create(admin_api, name="reuse-me")
    assert admin_api.delete(f"/ai-providers/{old['id']}").status_code == 204
    new = create(admin_api, name="reuse-me", type="google")
    assert new["id"] != old["id"]
    assert admin_api.get(f"/ai-providers/{old['id']}").status_code == 404
    # and the name is taken again while the new one lives
    assert_error(admin_api.post("/ai-providers", json={"type": "openai", "name": "reuse-me"}), 409,
                 "AI provider already exists.")


def test_display_name_is_trimmed_and_limited(admin_api):
    assert create(admin_api, name="a1", display_name="  OpenAI (EU)  ")["display_name"] == "OpenAI (EU)"
    assert create(admin_api, name="a2", display_name="   ")["display_name"] == "a2"
    assert create(admin_api, name="a3", display_name="x" * 128)["display_name"] == "x" * 128
    assert create(admin_api, name="a4", display_name="é" * 128)["display_name"] == "é" * 128
    response = admin_api.post("/ai-providers", json={"type": "openai", "name": "a5", "display_name": "x" * 129})
    body = assert_error(response, 400, "Invalid display name.")
    assert "128" in body["detail"]


@pytest.mark.parametrize("value", ["a\u0000b", "line\nbreak", "tab\there", "bell\u0007"])
def test_display_name_refuses_control_characters(admin_api, value):
    response = admin_api.post("/ai-providers", json={"type": "openai", "name": "p", "display_name": value})
    assert_error(response, 400, "Invalid display name.")
    assert admin_api.get("/ai-providers").get_json() == []


@pytest.mark.parametrize(("field", "value"), [
    ("display_name", "lone \ud800 surrogate"),
    ("base_url", "https://api.example.com/\udfff"),
    ("api_key", "\ud800" * 20),
    ("api_key", "sk-\udfff-abcdefghijkl"),
])
def test_text_that_is_not_valid_unicode_is_400_not_500(admin_api, field, value):
    provider = create(admin_api)
    if field == "api_key":
        response = admin_api.post(f"/ai-providers/{provider['id']}/keys", json={"api_key": value})
    else:
        response = admin_api.patch(f"/ai-providers/{provider['id']}", json={field: value})
    assert_error(response, 400, "Invalid request body.")  # pydantic refuses it before any rule runs
    assert admin_api.get(f"/ai-providers/{provider['id']}").get_json() == provider
    assert admin_api.get(f"/ai-providers/{provider['id']}/keys").get_json() == []


def test_display_name_falls_back_to_name_after_being_cleared(admin_api):
    provider = create(admin_api, name="fallback", display_name="Fancy")
    assert provider["display_name"] == "Fancy"
    response = admin_api.patch(f"/ai-providers/{provider['id']}", json={"display_name": ""})
    assert response.get_json()["display_name"] == "fallback"
    response = admin_api.patch(f"/ai-providers/{provider['id']}", json={"display_name": None})
    assert response.get_json()["display_name"] == "fallback"


def test_enabled_defaults_to_true_and_can_start_disabled(admin_api):
    assert create(admin_api, name="on")["enabled"] is True
    assert create(admin_api, name="off", enabled=False)["enabled"] is False


@pytest.mark.parametrize("policy", ["provider_only", "user_preferred", "user_only"])
def test_each_key_policy_is_accepted(admin_api, policy):
    assert create(admin_api, name="p", key_policy=policy)["key_policy"] == policy


@pytest.mark.parametrize("policy", ["", "users", "PROVIDER_ONLY", None])
def test_an_unknown_key_policy_is_refused(admin_api, policy):
    response = admin_api.post("/ai-providers", json={"type": "openai", "name": "p", "key_policy": policy})
    if policy is None:  # null means "the default"
        assert response.status_code == 201
        assert response.get_json()["key_policy"] == "provider_only"
    else:
        assert_error(response, 400, "Invalid key policy.")


@pytest.mark.parametrize(("policy", "allow_byok", "expected"), [
    ("provider_only", True, False),
    ("user_preferred", True, True),
    ("user_only", True, True),
    ("provider_only", False, False),
    ("user_preferred", False, False),
    ("user_only", False, False),
])
def test_byok_enabled_follows_allow_byok_and_the_key_policy(app, admin_api, policy, allow_byok, expected):
    provider = create(admin_api, name="byok", key_policy=policy)
    app.config["ALLOW_BYOK"] = allow_byok
    assert admin_api.get(f"/ai-providers/{provider['id']}").get_json()["byok_enabled"] is expected
    assert admin_api.get("/ai-providers").get_json()[0]["byok_enabled"] is expected


@pytest.mark.parametrize(("sent", "stored"), [
    ("", ""),
    ("   ", ""),
    (None, ""),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("  https://api.openai.com/v1/  ", "https://api.openai.com/v1"),
    ("HTTPS://API.Example.COM/v1", "https://api.example.com/v1"),
    ("https://my-resource.openai.azure.com", "https://my-resource.openai.azure.com"),
    ("http://models.example.com:8080/v1", "http://models.example.com:8080/v1"),
    ("https://8.8.8.8/v1", "https://8.8.8.8/v1"),
])
def test_legitimate_base_urls_are_accepted_and_normalised(admin_api, sent, stored):
    assert create(admin_api, name="url", base_url=sent)["base_url"] == stored


@pytest.mark.parametrize("url", [
    "ftp://api.example.com",
    "api.example.com/v1",
    "https://user:pass@api.example.com",
    "https://api.example.com/v1#frag",
    "https://api.example.com\\@evil.example",
    "https://api.exa mple.com",
    "http://169.254.169.254/latest/meta-data",
    "http://[fd00:ec2::254]/",
    "http://metadata.google.internal/computeMetadata/v1",
    "http://127.0.0.1:8000",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://10.0.0.5/v1",
    "http://192.168.1.10",
    "http://100.64.0.1",
    "http://[::ffff:127.0.0.1]/",
    "https://" + "a" * 2048 + ".com",
])
def test_hostile_base_urls_are_refused_with_a_reason(admin_api, url):
    response = admin_api.post("/ai-providers", json={"type": "openai-compat", "name": "url", "base_url": url})
    body = assert_error(response, 400, "Invalid provider base URL.")
    assert body.get("detail")
    assert admin_api.get("/ai-providers").get_json() == []


def test_private_base_url_allowed_only_when_allow_listed(app, admin_api):
    refused = admin_api.post("/ai-providers", json={"type": "openai-compat", "name": "local",
                                                    "base_url": "http://10.1.2.3:8000/v1"})
    assert_error(refused, 400, "Invalid provider base URL.")
    app.config["PRIVATE_BASE_URL_ALLOWLIST"] = "10.0.0.0/8"
    assert create(admin_api, name="local", type="openai-compat",
                  base_url="http://10.1.2.3:8000/v1")["base_url"] == "http://10.1.2.3:8000/v1"
    # link-local metadata stays refused even when allow-listed
    app.config["PRIVATE_BASE_URL_ALLOWLIST"] = "169.254.0.0/16"
    metadata = admin_api.post("/ai-providers", json={"type": "openai-compat", "name": "meta",
                                                     "base_url": "http://169.254.169.254/"})
    assert_error(metadata, 400, "Invalid provider base URL.")


@pytest.mark.parametrize("body", [
    {"type": "openai", "name": "x", "deleted": True},
    {"type": "openai", "name": "x", "id": str(uuid.uuid4())},
    {"type": "openai", "name": "x", "has_provider_api_key": True},
    {"type": "openai", "name": "x", "api_key": "sk-nope"},
])
def test_create_refuses_unknown_fields_by_name(admin_api, body):
    extra = (set(body) - {"type", "name"}).pop()
    response = admin_api.post("/ai-providers", json=body)
    body = assert_error(response, 400, "Invalid request body.")
    assert [v["field"] for v in body["validations"]] == [extra]
    assert admin_api.get("/ai-providers").get_json() == []


@pytest.mark.parametrize(("body", "field"), [
    ({"type": "openai", "name": "x", "enabled": "false"}, "enabled"),
    ({"type": "openai", "name": "x", "enabled": 0}, "enabled"),
    ({"type": "openai", "name": 7}, "name"),
    ({"type": "openai", "name": "x", "display_name": ["a"]}, "display_name"),
    ({"type": "openai", "name": "x", "base_url": 1}, "base_url"),
])
def test_create_refuses_values_of_the_wrong_json_type(admin_api, body, field):
    response = admin_api.post("/ai-providers", json=body)
    body = assert_error(response, 400, "Invalid request body.")
    assert [v["field"] for v in body["validations"]] == [field]


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"openai"', b"null", b"{"])
def test_a_body_that_is_not_a_json_object_is_400(admin_api, raw):
    response = admin_api.post("/ai-providers", data=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "Request body must be valid JSON.")


def test_create_writes_an_audit_event(app, admin_api):
    provider = create(admin_api, name="audited")
    rows = sql(app, "SELECT action, actor_label FROM audit_events WHERE resource_id = :rid", rid=provider["id"])
    assert rows == [("provider.create", "admin@example.com")]


# --- list and read ---------------------------------------------------------------------------


def test_list_is_ordered_by_name_includes_disabled_and_excludes_deleted(admin_api):
    for name in ["zeta", "alpha", "mid", "beta"]:
        create(admin_api, name=name, enabled=name != "mid")
    gone = create(admin_api, name="aaa-gone")
    admin_api.delete(f"/ai-providers/{gone['id']}")
    response = admin_api.get("/ai-providers")
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "4"
    body = response.get_json()
    assert [p["name"] for p in body] == ["alpha", "beta", "mid", "zeta"]
    assert [p["enabled"] for p in body] == [True, True, False, True]
    assert all(set(p) == PROVIDER_FIELDS for p in body)


def test_list_pages_with_limit_and_offset(admin_api):
    for i in range(5):
        create(admin_api, name=f"p{i}")
    page = admin_api.get("/ai-providers?limit=2&offset=1")
    assert page.headers["X-Total-Count"] == "5"
    assert [p["name"] for p in page.get_json()] == ["p1", "p2"]
    last = admin_api.get("/ai-providers?limit=2&offset=4")
    assert [p["name"] for p in last.get_json()] == ["p4"]
    beyond = admin_api.get("/ai-providers?offset=10")
    assert beyond.get_json() == [] and beyond.headers["X-Total-Count"] == "5"
    assert len(admin_api.get("/ai-providers?limit=1000").get_json()) == 5


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "offset=-1", "offset=a"])
def test_list_refuses_bad_paging(admin_api, query):
    assert admin_api.get(f"/ai-providers?{query}").status_code == 400


def test_empty_list(admin_api):
    response = admin_api.get("/ai-providers")
    assert response.get_json() == [] and response.headers["X-Total-Count"] == "0"


def test_has_provider_api_key_follows_the_keys(admin_api):
    provider = create(admin_api)
    assert provider["has_provider_api_key"] is False
    key = add_key(admin_api, provider["id"])
    assert admin_api.get(f"/ai-providers/{provider['id']}").get_json()["has_provider_api_key"] is True
    assert admin_api.get("/ai-providers").get_json()[0]["has_provider_api_key"] is True
    admin_api.delete(f"/ai-providers/{provider['id']}/keys/{key['id']}")
    assert admin_api.get(f"/ai-providers/{provider['id']}").get_json()["has_provider_api_key"] is False


def test_get_unknown_or_deleted_provider_is_404(admin_api):
    assert_error(admin_api.get(f"/ai-providers/{uuid.uuid4()}"), 404, "AI provider not found.")
    provider = create(admin_api)
    admin_api.delete(f"/ai-providers/{provider['id']}")
    assert_error(admin_api.get(f"/ai-providers/{provider['id']}"), 404, "AI provider not found.")


@pytest.mark.parametrize("bad", ["not-a-uuid", "123", "0" * 31, "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"])
def test_malformed_ids_in_the_path_are_400(admin_api, bad):
    provider = create(admin_api)
    key = add_key(admin_api, provider["id"])
    pid = provider["id"]
    calls = [
        admin_api.get(f"/ai-providers/{bad}"),
        admin_api.patch(f"/ai-providers/{bad}", json={"enabled": False}),
        admin_api.delete(f"/ai-providers/{bad}"),
        admin_api.get(f"/ai-providers/{bad}/keys"),
        admin_api.post(f"/ai-providers/{bad}/keys", json={"api_key": new_key()}),
        admin_api.delete(f"/ai-providers/{bad}/keys/{key['id']}"),
        admin_api.delete(f"/ai-providers/{pid}/keys/{bad}"),
    ]
    assert [c.status_code for c in calls] == [400] * len(calls)
    assert admin_api.get(f"/ai-providers/{pid}").get_json()["enabled"] is True
    assert len(admin_api.get(f"/ai-providers/{pid}/keys").get_json()) == 1


# --- update ----------------------------------------------------------------------------------


def test_patch_changes_only_the_fields_sent(app, admin_api):
    provider = create(admin_api, name="orig", display_name="Original", key_policy="user_only")
    response = admin_api.patch(f"/ai-providers/{provider['id']}", json={
        "name": " renamed ", "display_name": " New ", "enabled": False,
        "base_url": "https://API.example.com/v1/", "key_policy": "user_preferred",
    })
    assert response.status_code == 200
    body = response.get_json()
    assert {k: body[k] for k in ("name", "display_name", "enabled", "base_url", "key_policy", "type")} == {
        "name": "renamed", "display_name": "New", "enabled": False,
        "base_url": "https://api.example.com/v1", "key_policy": "user_preferred", "type": "openai",
    }
    assert rfc3339(body["updated_at"]) > rfc3339(provider["updated_at"])
    assert body["created_at"] == provider["created_at"]
    assert admin_api.get(f"/ai-providers/{provider['id']}").get_json() == body
    partial = admin_api.patch(f"/ai-providers/{provider['id']}", json={"enabled": True}).get_json()
    assert partial["enabled"] is True and partial["name"] == "renamed" and partial["display_name"] == "New"
    actions = [r[0] for r in sql(app, "SELECT action FROM audit_events WHERE resource_id = :rid", rid=provider["id"])]
    assert actions.count("provider.update") == 2


def test_patch_with_no_change_keeps_updated_at(admin_api):
    provider = create(admin_api, name="same")
    body = admin_api.patch(f"/ai-providers/{provider['id']}", json={"name": "same"}).get_json()
    assert body["updated_at"] == provider["updated_at"]
    assert admin_api.patch(f"/ai-providers/{provider['id']}", json={}).status_code == 200


def test_patch_type_is_refused_and_nothing_changes(admin_api):
    provider = create(admin_api, name="fixed")
    response = admin_api.patch(f"/ai-providers/{provider['id']}", json={"type": "anthropic", "name": "moved"})
    body = assert_error(response, 400, "Invalid request body.")
    assert "type" in [v["field"] for v in body["validations"]]
    assert admin_api.get(f"/ai-providers/{provider['id']}").get_json() == provider


@pytest.mark.parametrize("field", ["deleted", "id", "created_at", "byok_enabled", "api_key", "has_provider_api_key"])
def test_patch_unknown_fields_are_refused_by_name_and_nothing_changes(admin_api, field):
    provider = create(admin_api, name="stable")
    response = admin_api.patch(f"/ai-providers/{provider['id']}", json={field: True, "enabled": False})
    assert_error(response, 400, "Invalid request body.")  # pydantic refuses it before any rule runs
    assert admin_api.get(f"/ai-providers/{provider['id']}").get_json() == provider
    assert admin_api.get(f"/ai-providers/{provider['id']}/keys").get_json() == []


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "Bad Name"}, "Invalid AI provider name."),
    ({"name": "agents-x"}, "Invalid AI provider name."),
    ({"name": None}, "Invalid AI provider name."),
    ({"name": ""}, "Invalid AI provider name."),
    ({"display_name": "x" * 129}, "Invalid display name."),
    ({"base_url": "http://169.254.169.254"}, "Invalid provider base URL."),
    ({"base_url": "javascript:alert(1)"}, "Invalid provider base URL."),
    ({"key_policy": "everyone"}, "Invalid key policy."),
    ({"key_policy": None}, "Invalid key policy."),
    ({"enabled": None}, "Invalid request body."),
    ({"enabled": "no"}, "Invalid request body."),
])
def test_patch_refuses_bad_values_and_nothing_changes(admin_api, change, message):
    provider = create(admin_api, name="keep", display_name="Keep")
    response = admin_api.patch(f"/ai-providers/{provider['id']}", json={"enabled": False, **change})
    assert_error(response, 400, message)
    assert admin_api.get(f"/ai-providers/{provider['id']}").get_json() == provider


def test_patch_to_a_taken_name_is_409_and_nothing_changes(admin_api):
    create(admin_api, name="taken")
    other = create(admin_api, name="other")
    response = admin_api.patch(f"/ai-providers/{other['id']}", json={"name": "taken", "enabled": False})
    assert_error(response, 409, "AI provider already exists.")
    assert admin_api.get(f"/ai-providers/{other['id']}").get_json() == other


def test_patch_to_a_deleted_providers_name_is_allowed(admin_api):
    gone = create(admin_api, name="gone")
    admin_api.delete(f"/ai-providers/{gone['id']}")
    other = create(admin_api, name="other")
    assert admin_api.patch(f"/ai-providers/{other['id']}", json={"name": "gone"}).get_json()["name"] == "gone"


def test_patch_missing_or_deleted_provider_is_404(admin_api):
    assert_error(admin_api.patch(f"/ai-providers/{uuid.uuid4()}", json={"enabled": False}), 404,
                 "AI provider not found.")
    provider = create(admin_api)
    admin_api.delete(f"/ai-providers/{provider['id']}")
    assert_error(admin_api.patch(f"/ai-providers/{provider['id']}", json={"enabled": True}), 404,
                 "AI provider not found.")


def test_patch_body_must_be_a_json_object(admin_api):
    provider = create(admin_api)
    response = admin_api.patch(f"/ai-providers/{provider['id']}", data=b"[]", headers={"Content-Type": "application/json"})
    assert_error(response, 400, "Request body must be valid JSON.")


def test_a_migrated_provider_keeps_its_reserved_name_when_edited(app, admin_api):
    """`agents-` names come only from migrate-legacy; editing such a provider must still work."""
    from app.extensions import db
    from app.models import AIProvider

    with app.app_context():
        db.session.add(AIProvider(type="openai", name="agents-openai", display_name="Legacy OpenAI"))
        db.session.commit()
    provider = admin_api.get("/ai-providers").get_json()[0]
    response = admin_api.patch(f"/ai-providers/{provider['id']}", json={"name": "agents-openai", "enabled": False})
    assert response.status_code == 200 and response.get_json()["enabled"] is False
    assert_error(admin_api.patch(f"/ai-providers/{provider['id']}", json={"name": "agents-other"}), 400,
                 "Invalid AI provider name.", NAME_DETAIL)
    assert admin_api.patch(f"/ai-providers/{provider['id']}", json={"name": "openai"}).get_json()["name"] == "openai"


# --- delete ----------------------------------------------------------------------------------


def _model_config(app, provider_id, model, is_default=False, deleted=False):
    from app.db import utcnow
    from app.extensions import db
    from app.models import ChatModelConfig

    with app.app_context():
        config = ChatModelConfig(ai_provider_id=uuid.UUID(provider_id) if provider_id else None, provider="openai",
                                 model=model, is_default=is_default, deleted=deleted,
                                 deleted_at=utcnow() if deleted else None)
        db.session.add(config)
        db.session.commit()
        return str(config.id)


def _user_key(app, user, provider_id, plaintext):
    from app.extensions import db
    from app.models import UserAIProviderKey
    from app.services import secrets

    with app.app_context():
        row = UserAIProviderKey(id=uuid.uuid4(), user_id=user.id, ai_provider_id=uuid.UUID(provider_id))
        secrets.seal(row, plaintext)
        db.session.add(row)
        db.session.commit()
        return str(row.id)


def test_delete_takes_keys_user_keys_and_model_configs_with_it(app, admin_api, member, member_b):
    doomed = create(admin_api, name="doomed")
    kept = create(admin_api, name="kept")
    add_key(admin_api, doomed["id"])
    add_key(admin_api, doomed["id"])
    kept_key = add_key(admin_api, kept["id"])
    _user_key(app, member, doomed["id"], new_key("user"))
    _user_key(app, member_b, doomed["id"], new_key("user"))
    kept_user_key = _user_key(app, member, kept["id"], new_key("user"))
    default_cfg = _model_config(app, doomed["id"], "gpt-4o", is_default=True)
    other_cfg = _model_config(app, doomed["id"], "gpt-4o-mini")
    survivor_cfg = _model_config(app, kept["id"], "gpt-4.1")

    response = admin_api.delete(f"/ai-providers/{doomed['id']}")
    assert response.status_code == 204
    assert response.get_data() == b""

    assert_error(admin_api.get(f"/ai-providers/{doomed['id']}"), 404, "AI provider not found.")
    assert [p["name"] for p in admin_api.get("/ai-providers").get_json()] == ["kept"]
    assert sql(app, "SELECT deleted, enabled FROM ai_providers WHERE id = :i", i=uid(doomed["id"])) == [(True, False)]
    assert sql(app, "SELECT count(*) FROM ai_provider_keys WHERE provider_id = :i", i=uid(doomed["id"])) == [(0,)]
    assert sql(app, "SELECT count(*) FROM user_ai_provider_keys WHERE ai_provider_id = :i",
               i=uid(doomed["id"])) == [(0,)]
    configs = {as_id(i): deleted for i, deleted in sql(app, "SELECT id, deleted FROM chat_model_configs")}
    assert configs == {default_cfg: True, other_cfg: True, survivor_cfg: False}
    # the default went with the provider: another live config was promoted
    assert [as_id(r[0]) for r in sql(app, "SELECT id FROM chat_model_configs WHERE is_default")] == [survivor_cfg]
    # the other provider's rows are untouched
    assert [k["id"] for k in admin_api.get(f"/ai-providers/{kept['id']}/keys").get_json()] == [kept_key["id"]]
    assert len(sql(app, "SELECT id FROM user_ai_provider_keys WHERE id = :i", i=uid(kept_user_key))) == 1
    details = sql(app, "SELECT details FROM audit_events WHERE action = 'provider.delete'")
    assert len(details) == 1


def test_delete_twice_or_unknown_is_404(admin_api):
    provider = create(admin_api)
    assert admin_api.delete(f"/ai-providers/{provider['id']}").status_code == 204
    assert_error(admin_api.delete(f"/ai-providers/{provider['id']}"), 404, "AI provider not found.")
    assert_error(admin_api.delete(f"/ai-providers/{uuid.uuid4()}"), 404, "AI provider not found.")


# --- keys ------------------------------------------------------------------------------------


def test_add_key_returns_only_a_hint(admin_api):
    provider = create(admin_api)
    key = new_key("provider")
    response = admin_api.post(f"/ai-providers/{provider['id']}/keys", json={"api_key": f"  {key}\n"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "provider_id", "hint", "created_at", "updated_at", "last_tested_at", "last_test_result"}
    assert (body["last_tested_at"], body["last_test_result"]) == (None, None)  # a new key starts untested
    assert body["provider_id"] == provider["id"]
    assert body["hint"] == "..." + key[-4:]
    rfc3339(body["created_at"])
    rfc3339(body["updated_at"])
    assert key not in response.get_data(as_text=True)
    listed = admin_api.get(f"/ai-providers/{provider['id']}/keys")
    assert listed.get_json() == [body]
    assert listed.headers["X-Total-Count"] == "1"
    assert key not in listed.get_data(as_text=True)


@pytest.mark.parametrize(("length", "hint"), [(1, "..."), (11, "..."), (12, "...last"), (40, "...last")])
def test_short_keys_have_a_bare_hint(admin_api, length, hint):
    provider = create(admin_api)
    key = ("k" * length)[:-4] + "last" if length >= 4 else "k" * length
    assert add_key(admin_api, provider["id"], key)["hint"] == hint


def test_keys_are_listed_oldest_first_with_paging(admin_api):
    provider = create(admin_api)
    ids = [add_key(admin_api, provider["id"])["id"] for _ in range(4)]
    listed = admin_api.get(f"/ai-providers/{provider['id']}/keys")
    assert [k["id"] for k in listed.get_json()] == ids
    page = admin_api.get(f"/ai-providers/{provider['id']}/keys?limit=2&offset=1")
    assert [k["id"] for k in page.get_json()] == ids[1:3]
    assert page.headers["X-Total-Count"] == "4"


@pytest.mark.parametrize("body", [{}, {"api_key": None}, {"api_key": ""}, {"api_key": "   \t\n "}])
def test_empty_key_is_refused(admin_api, body):
    provider = create(admin_api)
    assert_error(admin_api.post(f"/ai-providers/{provider['id']}/keys", json=body), 400, "API key is required.")
    assert admin_api.get(f"/ai-providers/{provider['id']}/keys").get_json() == []


def test_key_size_is_counted_in_utf8_bytes_after_trimming(admin_api):
    provider = create(admin_api)
    pid = provider["id"]
    detail = "API key exceeds maximum size of 10240 bytes"

    def padded(size_in_bytes, filler="k"):
        key = new_key("big")
        return key + filler * ((size_in_bytes - len(key)) // len(filler.encode()))

    assert len(padded(10240).encode()) == 10240
    assert add_key(admin_api, pid, padded(10240))["hint"] == "...kkkk"
    assert add_key(admin_api, pid, "  " + padded(10240, "j") + " \n")["hint"] == "...jjjj"  # trimmed first
    assert_error(admin_api.post(f"/ai-providers/{pid}/keys", json={"api_key": padded(10241)}), 400,
                 "API key too large.", detail)
    # "é" is 2 bytes in UTF-8 (1 character): 10240 bytes pass, one more byte is refused
    fits = padded(10240 - 4) + "éé"
    assert len(fits) < 10240 and len(fits.encode()) == 10240
    assert add_key(admin_api, pid, fits)["hint"] == "...kkéé"
    assert_error(admin_api.post(f"/ai-providers/{pid}/keys", json={"api_key": fits + "x"}), 400,
                 "API key too large.", detail)
    # 3414 "€" are 3414 characters but 10242 bytes
    assert_error(admin_api.post(f"/ai-providers/{pid}/keys", json={"api_key": new_key() + "€" * 3414}), 400,
                 "API key too large.", detail)
    assert len(admin_api.get(f"/ai-providers/{pid}/keys").get_json()) == 3


def test_the_same_key_twice_on_one_provider_is_409(admin_api):
    a = create(admin_api, name="a")
    b = create(admin_api, name="b")
    key = new_key()
    add_key(admin_api, a["id"], key)
    assert_error(admin_api.post(f"/ai-providers/{a['id']}/keys", json={"api_key": f" {key} "}), 409,
                 "API key already exists.")
    assert len(admin_api.get(f"/ai-providers/{a['id']}/keys").get_json()) == 1
    # the same key on another provider is a different key entry
    assert add_key(admin_api, b["id"], key)["provider_id"] == b["id"]


def test_add_key_to_unknown_or_deleted_provider_is_404(app, admin_api):
    assert_error(admin_api.post(f"/ai-providers/{uuid.uuid4()}/keys", json={"api_key": new_key()}), 404,
                 "AI provider not found.")
    provider = create(admin_api)
    admin_api.delete(f"/ai-providers/{provider['id']}")
    assert_error(admin_api.post(f"/ai-providers/{provider['id']}/keys", json={"api_key": new_key()}), 404,
                 "AI provider not found.")
    assert sql(app, "SELECT count(*) FROM ai_provider_keys") == [(0,)]


def test_list_keys_of_unknown_or_deleted_provider_is_404(admin_api):
    assert_error(admin_api.get(f"/ai-providers/{uuid.uuid4()}/keys"), 404, "AI provider not found.")
    provider = create(admin_api)
    admin_api.delete(f"/ai-providers/{provider['id']}")
    assert_error(admin_api.get(f"/ai-providers/{provider['id']}/keys"), 404, "AI provider not found.")


@pytest.mark.parametrize("body", [{"api_key": 123}, {"api_key": ["sk"]}, {"api_key": "sk-x", "note": "x"}, {"key": "sk"}])
def test_add_key_body_shape_is_checked(admin_api, body):
    provider = create(admin_api)
    body = assert_error(admin_api.post(f"/ai-providers/{provider['id']}/keys", json=body), 400, "Invalid request body.")
    assert len(body["validations"]) == 1


def test_delete_key(app, admin_api):
    provider = create(admin_api)
    first = add_key(admin_api, provider["id"])
    second = add_key(admin_api, provider["id"])
    response = admin_api.delete(f"/ai-providers/{provider['id']}/keys/{first['id']}")
    assert response.status_code == 204 and response.get_data() == b""
    assert [k["id"] for k in admin_api.get(f"/ai-providers/{provider['id']}/keys").get_json()] == [second["id"]]
    assert sql(app, "SELECT count(*) FROM ai_provider_keys WHERE id = :i", i=uid(first["id"])) == [(0,)]
    assert_error(admin_api.delete(f"/ai-providers/{provider['id']}/keys/{first['id']}"), 404,
                 "AI provider key not found.")
    assert_error(admin_api.delete(f"/ai-providers/{provider['id']}/keys/{uuid.uuid4()}"), 404,
                 "AI provider key not found.")


def test_a_key_cannot_be_deleted_through_another_providers_path(app, admin_api):
    a = create(admin_api, name="a")
    b = create(admin_api, name="b")
    key_a = add_key(admin_api, a["id"])
    assert_error(admin_api.delete(f"/ai-providers/{b['id']}/keys/{key_a['id']}"), 404, "AI provider key not found.")
    assert [k["id"] for k in admin_api.get(f"/ai-providers/{a['id']}/keys").get_json()] == [key_a["id"]]
    assert sql(app, "SELECT count(*) FROM ai_provider_keys WHERE id = :i", i=uid(key_a["id"])) == [(1,)]


def test_key_changes_are_audited_without_the_key(app, admin_api):
    provider = create(admin_api)
    key = new_key("audited")
    created = add_key(admin_api, provider["id"], key)
    admin_api.delete(f"/ai-providers/{provider['id']}/keys/{created['id']}")
    rows = sql(app, "SELECT action, details FROM audit_events WHERE resource_type = 'ai_provider_key' ORDER BY action")
    assert [r[0] for r in rows] == ["provider_key.create", "provider_key.delete"]
    dump = repr(sql(app, "SELECT * FROM audit_events"))
    assert key not in dump
    assert base64.b64encode(key.encode()).decode() not in dump


# --- who may call ----------------------------------------------------------------------------


def _every_route(pid, kid):
    return [
        ("GET", "/ai-providers", None),
        ("POST", "/ai-providers", {"type": "openai", "name": "intruder"}),
        ("GET", f"/ai-providers/{pid}", None),
        ("PATCH", f"/ai-providers/{pid}", {"enabled": False}),
        ("DELETE", f"/ai-providers/{pid}", None),
        ("GET", f"/ai-providers/{pid}/keys", None),
        ("POST", f"/ai-providers/{pid}/keys", {"api_key": new_key("intruder")}),
        ("DELETE", f"/ai-providers/{pid}/keys/{kid}", None),
    ]


def _assert_untouched(admin_api, provider, key):
    assert [p["name"] for p in admin_api.get("/ai-providers").get_json()] == [provider["name"]]
    assert admin_api.get(f"/ai-providers/{provider['id']}").get_json() == provider | {"has_provider_api_key": True}
    assert [k["id"] for k in admin_api.get(f"/ai-providers/{provider['id']}/keys").get_json()] == [key["id"]]


@pytest.mark.parametrize("caller", ["member_api", "service_api"])
def test_members_and_service_tokens_are_forbidden(request, admin_api, caller):
    api = request.getfixturevalue(caller)
    provider = create(admin_api)
    key = add_key(admin_api, provider["id"])
    for method, path, body in _every_route(provider["id"], key["id"]):
        response = api.request(method, path, json=body)
        assert response.status_code == 403, (method, path)
        assert response.get_json() == {"message": "Forbidden."}
    _assert_untouched(admin_api, provider, key)


def test_anonymous_callers_are_unauthorized(anon_api, admin_api):
    provider = create(admin_api)
    key = add_key(admin_api, provider["id"])
    for method, path, body in _every_route(provider["id"], key["id"]):
        response = anon_api.request(method, path, json=body)
        assert response.status_code == 401, (method, path)
        assert response.get_json() == {"message": "Unauthorized."}
    bad_token = anon_api.request("GET", "/ai-providers", headers={"Authorization": "Bearer not-a-token"})
    assert bad_token.status_code == 401
    _assert_untouched(admin_api, provider, key)


def test_an_admin_session_works_with_the_csrf_header(client, admin):
    from tests.support import Api, get_csrf, login

    login(client, admin.email)
    without_csrf = Api(client).post("/ai-providers", json={"type": "openai", "name": "via-session"})
    assert without_csrf.status_code == 400
    api = Api(client, csrf=get_csrf(client, "/admin/providers"))
    assert api.post("/ai-providers", json={"type": "openai", "name": "via-session"}).status_code == 201
    assert [p["name"] for p in api.get("/ai-providers").get_json()] == ["via-session"]


def test_no_response_ever_contains_a_stored_key(admin_api):
    provider = create(admin_api)
    keys = [new_key("scan") for _ in range(3)]
    bodies = [admin_api.post(f"/ai-providers/{provider['id']}/keys", json={"api_key": k}).get_data(as_text=True)
              for k in keys]
    bodies.append(admin_api.post(f"/ai-providers/{provider['id']}/keys", json={"api_key": keys[0]}).get_data(as_text=True))
    bodies.append(admin_api.get(f"/ai-providers/{provider['id']}/keys").get_data(as_text=True))
    bodies.append(admin_api.get(f"/ai-providers/{provider['id']}").get_data(as_text=True))
    bodies.append(admin_api.get("/ai-providers").get_data(as_text=True))
    text = "\n".join(bodies)
    for key in keys:
        assert key not in text
        assert key[:-4] not in text
