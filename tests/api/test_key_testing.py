"""Testing keys and discovering models (SPEC section 6a), through the JSON API and the pages,
against a stub provider on 127.0.0.1 (allow-listed here only, never in the app's defaults).

Each outcome is checked the way a user meets it: the API's `{"result", "message"}`, the flash on
the provider or settings page. The stub records the credential header it received, so a test
proves which key was sent; its body and headers carry markers that must never come back.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AIProvider, AuditEvent, ChatModelConfig
from app.services import key_testing, model_configs, outbound, provider_keys, providers, user_keys
from app.services import resolution as resolution_service
from app.services.base import Actor
from tests.conftest import resolved_database_url
from tests.support import is_postgres, login, new_key, post_form
from tests.support.stub_provider import BODY_MARKER, HEADER_MARKER, StubProvider

ALLOWLIST = "127.0.0.1,localhost"
PUBLIC_IP = "93.184.215.14"

# (stub mode, result) for every outcome a stub can produce.
OUTCOMES = [
    ("ok", "ok"),
    ("401", "invalid_key"),
    ("403", "forbidden"),
    ("429", "rate_limited"),
    ("500", "unexpected_response"),
    ("slow", "timeout"),
    ("redirect", "unexpected_response"),
    ("oversized", "unexpected_response"),
    ("malformed", "unexpected_response"),
    ("unreachable", "unreachable"),
]


@pytest.fixture
def fast(app):
    """Small limits so timeouts take a fraction of a second, and the stub's loopback allow-listed."""
    app.config.update(OUTBOUND_CONNECT_TIMEOUT=1, OUTBOUND_READ_TIMEOUT=0.4, OUTBOUND_DEADLINE=2,
                      OUTBOUND_MAX_RESPONSE_BYTES=4096, PRIVATE_BASE_URL_ALLOWLIST=ALLOWLIST)
    return app


@pytest.fixture
def stub(stubs):
    """A stub in the requested mode; `redirect` points at a second stub that must see nothing."""

    def start(mode: str) -> StubProvider:
        if mode == "redirect":
            target = stubs("ok")
            made = stubs("redirect", redirect_to=target.url)
            made.redirect_target = target
            return made
        if mode == "unreachable":
            made = stubs("ok")
            made.stop_now = True
            return made
        return stubs(mode, delay=60, size=4096)  # `slow` would answer long after any bound below

    return start


@dataclass
class Setup:
    pid: str
    key_ids: list[str]
    keys: list[str]
    name: str


def add_provider(app, admin, base_url: str, *, type: str = "openai-compat", keys: int = 1,
                 key_policy: str = "provider_only", name: str = "stub-provider") -> Setup:
    with app.app_context():
        actor = Actor.for_user(admin)
        provider = providers.create_provider(actor, type=type, name=name, base_url=base_url, key_policy=key_policy)
        secrets = [new_key(f"{name}-{i}") for i in range(keys)]
        rows = []
        for secret in secrets:
            rows.append(provider_keys.add_key(actor, provider.id, secret))
            time.sleep(0.002)  # distinct created_at: "oldest" is well defined
        return Setup(str(provider.id), [str(r.id) for r in rows], secrets, name)


def save_user_key(app, user, provider_id: str) -> str:
    key = new_key("user")
    with app.app_context():
        user_keys.upsert_user_key(Actor.for_user(user), provider_id, key)
    return key


def for_stub(stub: StubProvider) -> str:
    url = stub.url + "/v1"
    if getattr(stub, "stop_now", False):
        stub.stop()
    return url


def assert_clean(text: str, *secrets: str) -> None:
    for secret in (BODY_MARKER, HEADER_MARKER, *secrets):
        assert secret not in text


def audit_events(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == action)
                                  .order_by(AuditEvent.id)).scalars().all()
        db.session.expunge_all()
        return list(rows)


# --- testing a provider key: the JSON API ----------------------------------------------------

@pytest.mark.parametrize(("mode", "result"), OUTCOMES)
def test_provider_key_outcomes_through_the_api(fast, admin, admin_api, stub, mode, result, caplog):
    caplog.set_level(logging.INFO)
    server = stub(mode)
    setup = add_provider(fast, admin, for_stub(server))
    started = time.monotonic()
    response = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"result", "message"}
    assert body["result"] == result
    assert body["message"].endswith(".")
    assert time.monotonic() - started < fast.config["OUTBOUND_DEADLINE"] + 5  # it gave up, however busy the machine
    assert_clean(response.get_data(as_text=True), *setup.keys)
    assert_clean(caplog.text, *setup.keys)
    if mode != "unreachable":
        assert server.hits[0].headers["authorization"] == f"Bearer {setup.keys[0]}"
        assert server.hits[0].path == "/v1/models"
    if mode == "redirect":
        assert server.redirect_target.connections == 0
    [event] = audit_events(fast, "provider_key.test")
    assert event.details["result"] == result
    assert event.resource_id == setup.key_ids[0]
    assert_clean(json.dumps(event.details), *setup.keys)


def test_messages_say_what_happened(fast, admin, admin_api, stubs):
    expected = {
        "ok": "The key works: OpenAI-compatible accepted it.",
        "401": "OpenAI-compatible rejected the key as invalid (HTTP 401). Check that it was copied in full and has "
               "not been revoked.",
        "403": "OpenAI-compatible recognised the key but refused access (HTTP 403). Check the key's permissions, "
               "project or billing.",
        "429": "OpenAI-compatible is rate limiting this key (HTTP 429). Wait a minute and try again; the key itself "
               "may be fine.",
        "500": "OpenAI-compatible answered with a server error (HTTP 500). Try again later.",
        "slow": "The provider did not answer within 0.4 seconds.",
        "oversized": "The provider's answer was larger than 4,096 bytes.",
        "malformed": "The provider's answer was not in the expected format.",
    }
    for i, (mode, message) in enumerate(expected.items()):
        server = stubs(mode, delay=2, size=4096)
        setup = add_provider(fast, admin, server.url + "/v1", name=f"p{i}")
        response = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test")
        assert response.get_json()["message"] == message, mode


def test_a_key_test_uses_the_key_asked_for_not_the_oldest(fast, admin, admin_api, stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1", keys=2)
    response = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[1]}/test")
    assert response.get_json()["result"] == "ok"
    assert [h.headers["authorization"] for h in server.hits] == [f"Bearer {setup.keys[1]}"]


def test_a_key_of_another_provider_or_an_unknown_one_is_not_found(fast, admin, admin_api, stubs):
    server = stubs("ok")
    one = add_provider(fast, admin, server.url + "/v1", name="one")
    two = add_provider(fast, admin, server.url + "/v1", name="two")
    response = admin_api.post(f"/ai-providers/{one.pid}/keys/{two.key_ids[0]}/test")
    assert (response.status_code, response.get_json()) == (404, {"message": "AI provider key not found."})
    response = admin_api.post(f"/ai-providers/{two.pid}/keys/not-a-uuid/test")
    assert response.status_code == 400
    with fast.app_context():
        providers.delete_provider(Actor.for_user(admin), one.pid)
    response = admin_api.post(f"/ai-providers/{one.pid}/keys/{one.key_ids[0]}/test")
    assert (response.status_code, response.get_json()) == (404, {"message": "AI provider not found."})
    assert server.connections == 0


def test_a_disabled_provider_can_still_be_tested_by_an_admin(fast, admin, admin_api, stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1")
    with fast.app_context():
        providers.update_provider(Actor.for_user(admin), setup.pid, {"enabled": False})
    response = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test")
    assert response.get_json()["result"] == "ok"


def test_only_admins_test_provider_keys_and_list_models(fast, admin, member_api, anon_api, service_api, stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1")
    for api, status in ((member_api, 403), (anon_api, 401), (service_api, 403)):
        assert api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test").status_code == status
        assert api.get(f"/ai-providers/{setup.pid}/models").status_code == status
    assert server.connections == 0


def test_a_body_with_fields_is_refused(fast, admin, admin_api, stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1")
    response = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test", json={"api_key": "x"})
    assert response.status_code == 400
    assert response.get_json()["validations"] == [{"field": "api_key", "detail": "Unknown field."}]
    assert admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test", json={}).status_code == 200


# --- each provider type: endpoint, header, default base URL ------------------------------------

TYPES = [
    # type, base path on the stub, expected request path (test), (models), header, header value format
    ("openai", "/v1", "/v1/models", "/v1/models", "authorization", "Bearer {}"),
    ("openai-compat", "/v1", "/v1/models", "/v1/models", "authorization", "Bearer {}"),
    ("openrouter", "/api/v1", "/api/v1/key", "/api/v1/models", "authorization", "Bearer {}"),
    ("vercel", "/v1", "/v1/credits", "/v1/models", "authorization", "Bearer {}"),
    ("anthropic", "", "/v1/models?limit=1", "/v1/models?limit=1000", "x-api-key", "{}"),
    ("anthropic", "/v1", "/v1/models?limit=1", "/v1/models?limit=1000", "x-api-key", "{}"),
    ("google", "", "/v1beta/models?pageSize=1", "/v1beta/models?pageSize=1000", "x-goog-api-key", "{}"),
    ("google", "/v1beta", "/v1beta/models?pageSize=1", "/v1beta/models?pageSize=1000", "x-goog-api-key", "{}"),
    ("azure", "", "/openai/models?api-version=2024-10-21", "/openai/models?api-version=2024-10-21", "api-key", "{}"),
    ("azure", "/openai/v1", "/openai/v1/models", "/openai/v1/models", "api-key", "{}"),
]


@pytest.mark.parametrize(("type_", "base", "test_path", "models_path", "header", "value"), TYPES)
def test_each_type_calls_its_endpoint_with_its_header(fast, admin, admin_api, stubs, type_, base, test_path,
                                                      models_path, header, value):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + base, type=type_)
    response = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test")
    assert response.get_json()["result"] == "ok"
    response = admin_api.get(f"/ai-providers/{setup.pid}/models")
    assert response.get_json() == [{"id": "gpt-4o"}, {"id": "gpt-4o-mini"}, {"id": "o3-mini"}]
    assert [h.path for h in server.hits] == [test_path, models_path]
    for hit in server.hits:
        assert hit.headers[header] == value.format(setup.keys[0])
        if header != "authorization":
            assert "authorization" not in hit.headers
    if type_ == "anthropic":
        assert server.hits[0].headers["anthropic-version"] == "2023-06-01"


def test_google_answers_400_for_a_bad_key(fast, admin, admin_api, stubs):
    server = stubs("400")
    setup = add_provider(fast, admin, server.url, type="google")
    assert admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test").get_json()["result"] == \
        "invalid_key"
    other = add_provider(fast, admin, server.url + "/v1", name="compat")
    assert admin_api.post(f"/ai-providers/{other.pid}/keys/{other.key_ids[0]}/test").get_json()["result"] == \
        "unexpected_response"


@pytest.mark.parametrize(("type_", "url"), [
    ("openai", "https://api.openai.com/v1/models"),
    ("anthropic", "https://api.anthropic.com/v1/models?limit=1"),
    ("google", "https://generativelanguage.googleapis.com/v1beta/models?pageSize=1"),
    ("openrouter", "https://openrouter.ai/api/v1/key"),
    ("vercel", "https://ai-gateway.vercel.sh/v1/credits"),
])
def test_an_empty_base_url_means_the_type_default(fast, admin, admin_api, monkeypatch, type_, url):
    calls = []
    monkeypatch.setattr(outbound, "get", lambda u, headers, **kw: calls.append(u) or outbound.Reply(200, None))
    setup = add_provider(fast, admin, "", type=type_)
    response = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test")
    assert response.get_json()["result"] == "ok"
    assert calls == [url]


@pytest.mark.parametrize("type_", ["azure", "openai-compat"])
def test_types_without_a_default_need_a_base_url(fast, admin, admin_api, monkeypatch, type_):
    monkeypatch.setattr(outbound, "get", lambda *a, **kw: pytest.fail("nothing may be sent"))
    setup = add_provider(fast, admin, "", type=type_)
    response = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test")
    assert response.status_code == 400
    assert response.get_json()["message"] == "AI provider has no base URL."
    assert admin_api.get(f"/ai-providers/{setup.pid}/models").status_code == 400


def test_bedrock_keys_are_not_tested_and_nothing_is_sent(fast, admin, admin_api, monkeypatch):
    monkeypatch.setattr(outbound, "get", lambda *a, **kw: pytest.fail("nothing may be sent"))
    setup = add_provider(fast, admin, "", type="bedrock")
    response = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test")
    assert response.status_code == 400
    assert response.get_json()["message"] == "Testing AWS Bedrock keys is not supported yet."
    assert "SigV4" in response.get_json()["detail"]
    assert admin_api.get(f"/ai-providers/{setup.pid}/models").get_json()["message"] == \
        "Testing AWS Bedrock keys is not supported yet."
    assert not key_testing.supports_testing("bedrock") and key_testing.supports_testing("openai")


def test_a_key_that_cannot_be_sent_in_a_header_is_invalid_without_a_call(fast, admin, admin_api, stubs):
    server = stubs("ok")
    with fast.app_context():
        actor = Actor.for_user(admin)
        provider = providers.create_provider(actor, type="openai", name="odd", base_url=server.url + "/v1")
        key = provider_keys.add_key(actor, provider.id, new_key() + "\u00e9")
        pid, kid = provider.id, key.id
    body = admin_api.post(f"/ai-providers/{pid}/keys/{kid}/test").get_json()
    assert body["result"] == "invalid_key"
    assert "cannot be sent in an HTTP header" in body["message"]
    assert server.connections == 0


# --- where calls may go ------------------------------------------------------------------------

def test_a_provider_whose_address_is_no_longer_allowed_gets_no_connection(fast, admin, admin_api, stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1")
    fast.config["PRIVATE_BASE_URL_ALLOWLIST"] = ""
    body = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test").get_json()
    assert body["result"] == "unreachable"
    assert "PRIVATE_BASE_URL_ALLOWLIST" in body["message"]
    response = admin_api.get(f"/ai-providers/{setup.pid}/models")
    assert (response.status_code, response.get_json()["detail"]) == (502, "unreachable")
    assert server.connections == 0


@pytest.mark.parametrize("base_url", ["http://169.254.169.254/latest", "http://metadata.google.internal/v1",
                                      "http://[fd00:ec2::254]/v1"])
def test_a_stored_metadata_base_url_never_gets_a_connection_attempt(fast, admin, admin_api, stubs, monkeypatch,
                                                                     base_url):
    """A row written before today's rules (or by hand) is judged again at call time."""
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1")
    with fast.app_context():
        db.session.execute(sa.update(AIProvider).where(AIProvider.id == uuid.UUID(setup.pid)).values(base_url=base_url))
        db.session.commit()
    fast.config["PRIVATE_BASE_URL_ALLOWLIST"] = "169.254.169.254,fd00:ec2::254,metadata.google.internal,0.0.0.0/0"
    attempts = []
    monkeypatch.setattr(outbound, "connect", lambda *a: attempts.append(a) or pytest.fail("no connection"))
    monkeypatch.setattr(outbound, "resolve", lambda *a: attempts.append(a) or ["169.254.169.254"])
    body = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test").get_json()
    assert body["result"] == "unreachable"
    assert attempts == []


def test_dns_rebinding_through_the_api_reaches_only_the_checked_address(fast, admin, admin_api, stubs, monkeypatch):
    """No allowlist at all: the name first resolves to a public address (routed here to a stand-in
    stub), then to loopback. The loopback server must never see a connection."""
    fast.config["PRIVATE_BASE_URL_ALLOWLIST"] = ""
    loopback_target = stubs("ok", models=("loopback-model",))
    stand_in = stubs("ok", models=("public-model",))
    lookups = []

    def rebinding(host, port, *args, **kwargs):
        lookups.append(host)
        ip = PUBLIC_IP if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    real_connect = outbound.connect
    monkeypatch.setattr(outbound, "connect", lambda ip, port, timeout: real_connect(
        "127.0.0.1" if ip == PUBLIC_IP else ip, stand_in.port if ip == PUBLIC_IP else port, timeout))
    setup = add_provider(fast, admin, f"http://models.rebind.example.com:{loopback_target.port}/v1")
    assert admin_api.get(f"/ai-providers/{setup.pid}/models").get_json() == [{"id": "public-model"}]
    lookups.clear()
    assert admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test").get_json()["result"] == "ok"
    assert len(lookups) == 1
    assert [h.headers["authorization"] for h in stand_in.hits] == [f"Bearer {setup.keys[0]}"] * 2
    time.sleep(0.2)
    assert loopback_target.connections == 0


def test_no_database_transaction_is_held_during_the_call(fast, admin, admin_api, stubs):
    """While the provider is answering, another connection can write (SQLite: no write lock held)
    and no connection of the app sits idle in a transaction (PostgreSQL)."""
    url = resolved_database_url()
    probes: list[str] = []

    def probe() -> None:
        engine = sa.create_engine(url, connect_args={"timeout": 0.3} if url.startswith("sqlite") else {})
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("UPDATE ai_providers SET display_name = display_name WHERE 1 = 0")
                if is_postgres():
                    idle = conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND starts_with(state, 'idle in transaction') AND pid <> pg_backend_pid()").scalar_one()
                    probes.append(f"idle in transaction: {idle}")
                else:
                    probes.append("idle in transaction: 0")
        except Exception as error:  # a lock wait that timed out, or anything else: reported, not raised
            probes.append(f"failed: {type(error).__name__}: {error}")
        finally:
            engine.dispose()

    fast.config["OUTBOUND_READ_TIMEOUT"] = 2  # room for the probe's own connection
    server = stubs("ok", on_request=probe)
    setup = add_provider(fast, admin, server.url + "/v1")
    assert admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test").get_json()["result"] == "ok"
    assert admin_api.get(f"/ai-providers/{setup.pid}/models").status_code == 200
    assert probes == ["idle in transaction: 0"] * 2


# --- model discovery ---------------------------------------------------------------------------

def test_discovery_lists_the_models_with_the_oldest_key(fast, admin, admin_api, stubs):
    server = stubs("ok", models=("zeta", "alpha", "alpha", "  ", "x" * 300, "bad\x00id", "mid"))
    setup = add_provider(fast, admin, server.url + "/v1", keys=2)
    response = admin_api.get(f"/ai-providers/{setup.pid}/models")
    assert response.status_code == 200
    assert response.get_json() == [{"id": "alpha"}, {"id": "mid"}, {"id": "zeta"}]
    assert [h.headers["authorization"] for h in server.hits] == [f"Bearer {setup.keys[0]}"]
    [event] = audit_events(fast, "provider.discover_models")
    assert (event.details["result"], event.details["model_count"]) == ("ok", 3)


def test_google_discovery_keeps_chat_models_without_the_prefix(fast, admin, admin_api, stubs):
    server = stubs("ok", models=("gemini-2.5-pro", "gemini-2.5-flash"))
    setup = add_provider(fast, admin, server.url, type="google")
    assert admin_api.get(f"/ai-providers/{setup.pid}/models").get_json() == [
        {"id": "gemini-2.5-flash"}, {"id": "gemini-2.5-pro"}]


@pytest.mark.parametrize(("mode", "status", "result"), [
    ("401", 502, "invalid_key"), ("403", 502, "forbidden"), ("429", 502, "rate_limited"),
    ("500", 502, "unexpected_response"), ("slow", 504, "timeout"), ("redirect", 502, "unexpected_response"),
    ("oversized", 502, "unexpected_response"), ("malformed", 502, "unexpected_response"),
    ("array", 502, "unexpected_response"), ("unreachable", 502, "unreachable"),
])
def test_discovery_failures_through_the_api(fast, admin, admin_api, stub, mode, status, result):
    server = stub(mode)
    setup = add_provider(fast, admin, for_stub(server))
    response = admin_api.get(f"/ai-providers/{setup.pid}/models")
    assert response.status_code == status
    body = response.get_json()
    assert body["detail"] == result
    assert body["message"].endswith(".")
    assert_clean(response.get_data(as_text=True), *setup.keys)
    [event] = audit_events(fast, "provider.discover_models")
    assert (event.details["result"], event.details["model_count"]) == (result, 0)


def test_discovery_needs_a_key(fast, admin, admin_api, stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1", keys=0)
    response = admin_api.get(f"/ai-providers/{setup.pid}/models")
    assert (response.status_code, response.get_json()["message"]) == (400, "AI provider has no API key.")
    assert admin_api.get("/ai-providers/00000000-0000-0000-0000-000000000000/models").status_code == 404
    assert server.connections == 0


# --- the admin pages ---------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "result"), OUTCOMES)
def test_provider_key_outcomes_through_the_page(fast, client, admin, stub, mode, result, caplog):
    caplog.set_level(logging.INFO)
    server = stub(mode)
    setup = add_provider(fast, admin, for_stub(server))
    login(client, admin.email)
    detail = f"/admin/providers/{setup.pid}"
    response = post_form(client, f"{detail}/keys/{setup.key_ids[0]}/test", csrf_path=detail)
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"{detail}#keys")
    page = client.get(detail).get_data(as_text=True)
    hint = "..." + setup.keys[0][-4:]
    expected_class = {"ok": "flash-success", "rate_limited": "flash-warning"}.get(result, "flash-error")
    assert f'<div class="flash {expected_class}">Key {hint}: ' in page
    assert_clean(page, *setup.keys)
    assert_clean(caplog.text, *setup.keys)
    [event] = audit_events(fast, "provider_key.test")
    assert event.details["result"] == result


def test_the_page_shows_the_same_sentence_as_the_api(fast, client, admin, admin_api, stubs):
    server = stubs("403")
    setup = add_provider(fast, admin, server.url + "/v1")
    message = admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test").get_json()["message"]
    login(client, admin.email)
    detail = f"/admin/providers/{setup.pid}"
    page = post_form(client, f"{detail}/keys/{setup.key_ids[0]}/test", csrf_path=detail, follow=True)
    assert message in page.get_data(as_text=True).replace("&#39;", "'")


def test_page_actions_need_csrf_and_an_admin(fast, client, admin, member, stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1")
    login(client, admin.email)
    assert client.post(f"/admin/providers/{setup.pid}/keys/{setup.key_ids[0]}/test").status_code == 400
    client.post("/logout", data={"csrf_token": ""})
    other = fast.test_client()
    login(other, member.email)
    assert post_form(other, f"/admin/providers/{setup.pid}/keys/{setup.key_ids[0]}/test",
                     csrf_path="/settings/tokens").status_code == 403
    assert other.get(f"/admin/providers/{setup.pid}/discover").status_code == 403
    assert server.connections == 0


def test_page_for_an_unknown_key_or_bedrock(fast, client, admin):
    setup = add_provider(fast, admin, "", type="bedrock")
    login(client, admin.email)
    detail = f"/admin/providers/{setup.pid}"
    assert post_form(client, f"{detail}/keys/00000000-0000-0000-0000-000000000000/test",
                     csrf_path=detail).status_code == 404
    assert post_form(client, f"{detail}/keys/nope/test", csrf_path=detail).status_code == 404
    page = post_form(client, f"{detail}/keys/{setup.key_ids[0]}/test", csrf_path=detail, follow=True)
    assert "Testing AWS Bedrock keys is not supported yet." in page.get_data(as_text=True)


def test_following_the_discover_link_calls_nothing(fast, client, admin, stubs):
    """SPEC 6a: a GET (a link followed, a prefetch, a crawler) never calls the provider, writes no
    audit event and spends none of the admin's budget: the page only offers the button."""
    fast.config["OUTBOUND_RATE_LIMIT"] = "1 per minute"
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1")
    login(client, admin.email)
    url = f"/admin/providers/{setup.pid}/discover"
    for _ in range(3):
        response = client.get(url)
        assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f'action="{url}"' in page and ">Discover models</button>" in page
    assert ">Create config</button>" not in page
    assert server.connections == 0
    assert audit_events(fast, "provider.discover_models") == []
    # The budget (1 a minute) is still whole: the first POST calls the provider.
    assert post_form(client, url).status_code == 200
    assert len(server.hits) == 1


def test_discover_button_lists_models_and_creates_a_config(fast, client, admin, stubs):
    server = stubs("ok", models=("gpt-4o", "evil<b>model"))
    setup = add_provider(fast, admin, server.url + "/v1")
    login(client, admin.email)
    url = f"/admin/providers/{setup.pid}/discover"
    response = post_form(client, url)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<code class=\"break\">gpt-4o</code>" in page
    assert "evil&lt;b&gt;model" in page and "evil<b>model" not in page
    assert page.count(">Create config</button>") == 2
    assert_clean(page, *setup.keys)
    assert len(server.hits) == 1
    # "Create config" posts the model (and the list, to show it again without a second call).
    response = post_form(client, url + "/config", {"model": "gpt-4o", "listed": ["gpt-4o", "evil<b>model"]},
                         csrf_path=url)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Model config “gpt-4o” created on stub-provider with default settings." in page
    assert page.count(">Create config</button>") == 1
    assert '<span class="badge badge-ok">Configured</span>' in page
    assert len(server.hits) == 1
    with fast.app_context():
        config = db.session.execute(sa.select(ChatModelConfig)).scalar_one()
        assert (str(config.ai_provider_id), config.model, config.enabled) == (setup.pid, "gpt-4o", True)
    page = post_form(client, url + "/config", {"model": "gpt-4o"}, csrf_path=url).get_data(as_text=True)
    assert "Chat model config already exists." in page
    assert client.post(url + "/config", data={"model": "x"}).status_code == 400  # no CSRF token
    assert client.post(url).status_code == 400


@pytest.mark.parametrize(("mode", "status", "text"), [
    ("401", 502, "rejected the key as invalid (HTTP 401)"),
    ("slow", 504, "did not answer within 0.4 seconds"),
    ("malformed", 502, "not in the expected format"),
])
def test_discover_page_failures(fast, client, admin, stubs, mode, status, text):
    server = stubs(mode, delay=2)
    setup = add_provider(fast, admin, server.url + "/v1")
    login(client, admin.email)
    response = post_form(client, f"/admin/providers/{setup.pid}/discover")
    page = response.get_data(as_text=True)
    assert response.status_code == status
    assert "Could not list the models" in page and text in page
    assert_clean(page, *setup.keys)


def test_discover_page_without_a_key(fast, client, admin, stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1", keys=0)
    login(client, admin.email)
    response = post_form(client, f"/admin/providers/{setup.pid}/discover")
    assert response.status_code == 400
    assert "AI provider has no API key." in response.get_data(as_text=True)
    assert client.get("/admin/providers/nope/discover").status_code == 404
    assert post_form(client, "/admin/providers/nope/discover", csrf_path="/admin/providers").status_code == 404


# --- users' own keys ---------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "result"), [("ok", "ok"), ("401", "invalid_key"), ("slow", "timeout")])
def test_a_user_tests_their_own_key_through_the_api(fast, admin, member, member_api, stubs, mode, result):
    server = stubs(mode, delay=2)
    setup = add_provider(fast, admin, server.url + "/v1", key_policy="user_preferred")
    mine = save_user_key(fast, member, setup.pid)
    response = member_api.post(f"/user-ai-provider-keys/{setup.pid}/test")
    assert response.status_code == 200
    assert response.get_json()["result"] == result
    assert [h.headers["authorization"] for h in server.hits] == [f"Bearer {mine}"]
    assert_clean(response.get_data(as_text=True), mine, *setup.keys)
    [event] = audit_events(fast, "user_key.test")
    assert event.details["result"] == result
    assert_clean(json.dumps(event.details), mine)


def test_user_key_tests_follow_the_byok_rules(fast, admin, member, member_api, member_b_api, service_api, anon_api,
                                             stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1", key_policy="user_preferred")
    save_user_key(fast, member, setup.pid)
    path = f"/user-ai-provider-keys/{setup.pid}/test"
    response = member_b_api.post(path)  # never someone else's key
    assert (response.status_code, response.get_json()) == (404, {"message": "User API key not found."})
    assert service_api.post(path).status_code == 403
    assert anon_api.post(path).status_code == 401
    assert member_api.post("/user-ai-provider-keys/nope/test").status_code == 400
    fast.config["ALLOW_BYOK"] = False
    assert member_api.post(path).get_json() == {"message": "BYOK is disabled."}
    fast.config["ALLOW_BYOK"] = True
    admin_api_actor = Actor.for_user(admin)
    with fast.app_context():
        providers.update_provider(admin_api_actor, setup.pid, {"key_policy": "provider_only"})
    assert member_api.post(path).get_json()["message"] == "AI provider does not allow user API keys."
    with fast.app_context():
        providers.update_provider(admin_api_actor, setup.pid, {"key_policy": "user_only", "enabled": False})
    assert member_api.post(path).get_json()["message"] == "AI provider is disabled."
    assert server.connections == 0


@pytest.mark.parametrize(("mode", "category", "text"), [
    ("ok", "flash-success", "The key works: OpenAI-compatible accepted it."),
    ("401", "flash-error", "rejected the key as invalid (HTTP 401)"),
    ("429", "flash-warning", "is rate limiting this key (HTTP 429)"),
])
def test_a_user_tests_their_own_key_on_the_settings_page(fast, client, admin, member, stubs, mode, category, text,
                                                        caplog):
    caplog.set_level(logging.INFO)
    server = stubs(mode)
    setup = add_provider(fast, admin, server.url + "/v1", key_policy="user_only")
    mine = save_user_key(fast, member, setup.pid)
    login(client, member.email)
    page = client.get("/settings/keys").get_data(as_text=True)
    assert f'action="/settings/keys/{setup.pid}/test"' in page and ">Test my key</button>" in page
    response = post_form(client, f"/settings/keys/{setup.pid}/test", csrf_path="/settings/keys")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/settings/keys#provider-{setup.pid}")
    page = client.get("/settings/keys").get_data(as_text=True)
    assert f'<div class="flash {category}">Your key for {setup.name}: ' in page
    assert text in page.replace("&#39;", "'")
    assert server.hits[0].headers["authorization"] == f"Bearer {mine}"
    assert_clean(page, mine, *setup.keys)
    assert_clean(caplog.text, mine, *setup.keys)


def test_the_settings_page_says_when_there_is_no_key(fast, client, admin, member, stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1", key_policy="user_only")
    login(client, member.email)
    assert "Test my key" not in client.get("/settings/keys").get_data(as_text=True)
    page = post_form(client, f"/settings/keys/{setup.pid}/test", csrf_path="/settings/keys", follow=True)
    assert '<div class="flash flash-error">User API key not found.</div>' in page.get_data(as_text=True)
    assert server.connections == 0


# --- rate limits -------------------------------------------------------------------------------

def test_provider_calls_are_rate_limited_per_user_across_api_and_pages(fast, client, admin, member, admin_api,
                                                                       member_api, stubs):
    fast.config["OUTBOUND_RATE_LIMIT"] = "3 per minute"
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1", key_policy="user_preferred")
    save_user_key(fast, member, setup.pid)
    test_path = f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test"
    assert admin_api.post(test_path).status_code == 200
    assert admin_api.get(f"/ai-providers/{setup.pid}/models").status_code == 200
    login(client, admin.email)
    detail = f"/admin/providers/{setup.pid}"
    assert post_form(client, f"{detail}/keys/{setup.key_ids[0]}/test", csrf_path=detail).status_code == 303
    response = admin_api.post(test_path)
    assert response.status_code == 429
    assert response.get_json() == {"message": "Too many requests."}
    assert client.get(f"{detail}/discover").status_code == 200  # the page itself calls nothing
    assert post_form(client, f"{detail}/discover").status_code == 429
    assert len(server.hits) == 3
    # Another user's budget is their own.
    assert member_api.post(f"/user-ai-provider-keys/{setup.pid}/test").get_json()["result"] == "ok"
    assert len(server.hits) == 4


# --- a stored key that cannot be decrypted -----------------------------------------------------

def _flip_a_byte(app, model, row_id: str) -> None:
    """Corrupt a stored ciphertext in place, with SQL, as a damaged row or a bad restore would."""
    table = model.__table__
    with app.app_context():
        ciphertext = db.session.execute(sa.select(table.c.ciphertext).where(table.c.id == uuid.UUID(row_id))).scalar_one()
        damaged = bytearray(ciphertext)
        damaged[len(damaged) // 2] ^= 0x01
        db.session.execute(sa.update(table).where(table.c.id == uuid.UUID(row_id)).values(ciphertext=bytes(damaged)))
        db.session.commit()
        db.session.remove()


UNREADABLE = {"message": "The stored key could not be decrypted.",
              "detail": "Run `flask --app wsgi dbcrypt verify` to find unreadable keys."}


def test_an_undecryptable_provider_key_is_409_and_nothing_is_sent(fast, admin, admin_api, stubs):
    from app.models import AIProviderKey

    server = stubs("ok")
    setup = add_provider(fast, admin, for_stub(server))
    _flip_a_byte(fast, AIProviderKey, setup.key_ids[0])

    for response in (admin_api.post(f"/ai-providers/{setup.pid}/keys/{setup.key_ids[0]}/test"),
                     admin_api.get(f"/ai-providers/{setup.pid}/models")):
        assert (response.status_code, response.get_json()) == (409, UNREADABLE)
        assert_clean(response.get_data(as_text=True), *setup.keys)
    assert server.connections == 0


def test_an_undecryptable_user_key_is_409_and_nothing_is_sent(fast, admin, member, member_api, stubs):
    from app.models import UserAIProviderKey

    server = stubs("ok")
    setup = add_provider(fast, admin, for_stub(server), key_policy="user_preferred")
    mine = save_user_key(fast, member, setup.pid)
    with fast.app_context():
        key_id = str(db.session.execute(sa.select(UserAIProviderKey.id)).scalar_one())
        db.session.remove()
    _flip_a_byte(fast, UserAIProviderKey, key_id)

    response = member_api.post(f"/user-ai-provider-keys/{setup.pid}/test")
    assert (response.status_code, response.get_json()) == (409, UNREADABLE)
    assert_clean(response.get_data(as_text=True), mine, *setup.keys)
    assert server.connections == 0


# --- key health: a test's result is remembered ---------------------------------------------------

def test_a_refused_test_marks_the_key_failing_and_a_later_ok_clears_it(fast, admin, admin_api, member, stubs):
    refusing, accepting = stubs("401"), stubs("ok")
    setup = add_provider(fast, admin, refusing.url + "/v1", keys=2)
    with fast.app_context():
        config_id = str(model_configs.create_config(Actor.for_user(admin), ai_provider_id=setup.pid,
                                                    model="stub-model").id)
    first, second = setup.key_ids
    assert admin_api.post(f"/ai-providers/{setup.pid}/keys/{first}/test").get_json()["result"] == "invalid_key"
    listed = {k["id"]: k for k in admin_api.get(f"/ai-providers/{setup.pid}/keys").get_json()}
    assert listed[first]["last_test_result"] == "invalid_key" and listed[first]["last_tested_at"]
    with fast.app_context():
        _, key, key_id = resolution_service.hand_out_credentials(
            Actor(is_service=True, label="test"), (member.id, config_id))
    assert (str(key_id), key) == (second, setup.keys[1])  # the refused key is passed over

    admin_api.patch(f"/ai-providers/{setup.pid}", json={"base_url": accepting.url + "/v1"})
    assert admin_api.post(f"/ai-providers/{setup.pid}/keys/{first}/test").get_json()["result"] == "ok"
    with fast.app_context():
        _, key, key_id = resolution_service.hand_out_credentials(Actor(is_service=True, label="test"),
                                                                 (member.id, config_id))
    assert (str(key_id), key) == (first, setup.keys[0])


def test_a_user_testing_their_key_remembers_the_result(fast, admin, member, member_api, stubs):
    server = stubs("403")
    setup = add_provider(fast, admin, server.url + "/v1", key_policy="user_preferred")
    save_user_key(fast, member, setup.pid)
    assert member_api.post(f"/user-ai-provider-keys/{setup.pid}/test").get_json()["result"] == "forbidden"
    [config] = member_api.get("/user-ai-provider-keys").get_json()
    assert (config["last_test_result"], config["has_user_api_key"]) == ("forbidden", True)


def test_discovery_passes_over_a_refused_key(fast, admin, admin_api, stubs):
    server = stubs("ok")
    setup = add_provider(fast, admin, server.url + "/v1", keys=2)
    with fast.app_context():
        from app.services import key_health
        from app.services.secrets import SECRET_COLUMNS

        key_health.record(SECRET_COLUMNS[0], uuid.UUID(setup.key_ids[0]), "invalid_key")
        db.session.commit()
    assert admin_api.get(f"/ai-providers/{setup.pid}/models").status_code == 200
    assert server.hits[-1].headers["authorization"] == f"Bearer {setup.keys[1]}"
