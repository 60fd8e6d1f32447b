"""GET /api/openapi.json and /api/docs: every JSON route described from the schemas the code
validates with, and responses held to that description in TESTING mode."""

from __future__ import annotations

import re
import typing

import pytest
from flask import jsonify

from app.api import responses as out
from app.api.auth import access
from app.api.openapi import API_PREFIX, ResponseDrift, UndocumentedRoute, build_spec, doc
from app.services import key_testing
from tests.support import login, make_user

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def api_rules(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) for every route the app serves under the API prefix."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(API_PREFIX + "/"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            found |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return found


def operations(spec):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def resolve(spec, schema):
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_openapi_json_is_public_and_describes_every_api_route(app, client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    spec = response.get_json()
    assert spec["openapi"] == "3.1.0"
    described = {(path, method) for path, method, _ in operations(spec)}
    assert described == api_rules(app)
    assert len(described) >= 30  # SPEC sections 2-6a
    for path, method, operation in operations(spec):
        assert method in HTTP_METHODS
        assert operation["summary"] and operation["operationId"], (path, method)
        assert any(status.startswith("2") for status in operation["responses"]), (path, method)


def test_a_route_without_a_description_fails_the_build(make_app):
    app = make_app()

    def undocumented():
        return jsonify({})

    app.add_url_rule(f"{API_PREFIX}/undocumented/<thing_id>", endpoint="api.undocumented", view_func=undocumented)
    with pytest.raises(UndocumentedRoute, match=r"GET /api/experimental/chats/undocumented/<thing_id>"):
        build_spec(app)
    assert app.test_client().get("/api/openapi.json").status_code == 500


def test_path_ids_are_uuids_and_lists_take_limit_and_offset(app, client):
    spec = client.get("/api/openapi.json").get_json()
    for path, _method, operation in operations(spec):
        params = {(p["name"], p["in"]): p for p in operation["parameters"]}
        for name in re.findall(r"{([^}]+)}", path):
            assert params[(name, "path")]["required"] is True
            assert params[(name, "path")]["schema"] == {"type": "string", "format": "uuid"}
            assert "400" in operation["responses"] and "404" in operation["responses"]
    listing = spec["paths"][API_PREFIX + "/ai-providers"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert params["offset"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    assert "X-Total-Count" in listing["responses"]["200"]["headers"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/Provider"}}


def test_errors_share_the_envelope_and_503_says_when_to_retry(client):
    spec = client.get("/api/openapi.json").get_json()
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["message"]
    assert error["additionalProperties"] is False
    assert error["properties"]["detail"] == {"title": "Detail", "type": "string"}  # optional, never null
    assert resolve(spec, error["properties"]["validations"]["items"])["required"] == ["field", "detail"]
    for path, method, operation in operations(spec):
        errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
        assert {"401", "403", "503"} <= set(errors), (path, method)
        for answer in errors.values():
            assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert errors["503"]["headers"]["Retry-After"]["required"] is True


def test_security_bearer_or_session_cookie_with_csrf_on_unsafe_methods(app, client):
    spec = client.get("/api/openapi.json").get_json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerToken"] == {**schemes["bearerToken"], "type": "http", "scheme": "bearer"}
    assert schemes["sessionCookie"]["in"] == "cookie"
    assert schemes["sessionCookie"]["name"] == app.config["SESSION_COOKIE_NAME"]
    assert schemes["csrfToken"] == {**schemes["csrfToken"], "type": "apiKey", "in": "header", "name": "X-CSRFToken"}
    ops = spec["paths"]
    assert ops[API_PREFIX + "/ai-providers"]["get"]["security"] == [{"bearerToken": []}, {"sessionCookie": []}]
    assert ops[API_PREFIX + "/ai-providers"]["post"]["security"] == [
        {"bearerToken": []}, {"sessionCookie": [], "csrfToken": []}]
    assert ops[API_PREFIX + "/credentials"]["post"]["security"] == [{"bearerToken": []}]
    assert ops[API_PREFIX + "/credentials"]["post"]["x-access"] == "service"
    assert ops[API_PREFIX + "/ai-providers"]["post"]["x-access"] == "admin"


def test_request_bodies_are_the_schemas_the_views_parse_with(client):
    """Unknown fields are refused by the parser, and the description says so."""
    from app.api.schemas import ProviderCreate

    spec = client.get("/api/openapi.json").get_json()
    body = spec["paths"][API_PREFIX + "/ai-providers"]["post"]["requestBody"]
    assert body["required"] is True
    schema = resolve(spec, body["content"]["application/json"]["schema"])
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(ProviderCreate.model_fields)
    credentials = resolve(spec, spec["paths"][API_PREFIX + "/credentials"]["post"]["requestBody"]["content"]
                          ["application/json"]["schema"])
    assert set(credentials["required"]) == {"user_id", "model_config_id"}


def test_response_models_carry_the_fields_of_the_spec():
    assert set(out.Provider.model_fields) == {"id", "type", "name", "display_name", "enabled", "base_url", "key_policy",
                                              "byok_enabled", "has_provider_api_key", "created_at", "updated_at"}
    assert set(out.ProviderKey.model_fields) == {"id", "provider_id", "hint", "created_at", "updated_at",
                                                 "last_tested_at", "last_test_result"}
    assert set(out.UserKeyConfig.model_fields) == {"provider", "has_user_api_key", "has_provider_api_key",
                                                   "byok_enabled", "hint", "last_tested_at", "last_test_result"}
    assert set(out.ModelConfig.model_fields) == {"id", "ai_provider_id", "provider", "model", "display_name", "enabled",
                                                 "is_default", "context_limit", "compression_threshold", "options",
                                                 "access", "group_ids", "created_at", "updated_at"}
    assert set(out.Resolution.model_fields) == {"model_config_id", "provider", "base_url", "key_source", "available",
                                                "reason"}
    assert set(out.Credentials.model_fields) == set(out.Resolution.model_fields) | {"key_id", "api_key"}
    assert set(out.Me.model_fields) == {"id", "email", "name", "role"}
    assert set(out.LegacyProvider.model_fields) == {
        "id", "provider", "display_name", "enabled", "base_url", "has_api_key", "central_api_key_enabled",
        "allow_user_api_key", "allow_central_api_key_fallback", "created_at", "updated_at"}
    assert set(out.UserProviderConfig.model_fields) == {"provider_id", "provider", "display_name", "has_user_api_key",
                                                        "has_central_api_key_fallback"}
    assert set(out.Group.model_fields) == {"id", "name", "display_name", "member_count", "created_at", "updated_at"}
    assert set(out.GroupMember.model_fields) == {"user_id", "email", "name", "source", "added_at"}


def test_key_test_results_are_the_services_results():
    assert typing.get_args(out.KeyTestOutcome) == key_testing.RESULTS


def drift_app(make_app, body, status=200, declared=None):
    """An app with one extra API route whose answer may not match its @doc."""
    app = make_app()

    @access("public")
    @doc("Probe", responses=declared or {200: out.Me})
    def probe():
        return jsonify(body), status

    app.add_url_rule(f"{API_PREFIX}/probe", endpoint="api.probe", view_func=probe)
    return app.test_client()


def test_a_response_that_drifts_from_its_model_fails_in_testing(make_app):
    me = {"id": "0b9f1c1e-8a53-4b7e-9a57-1df0b8c1e2a3", "email": "a@example.com", "name": "", "role": "member"}
    assert drift_app(make_app, me).get(API_PREFIX + "/probe").status_code == 200
    with pytest.raises(ResponseDrift, match="does not match"):
        drift_app(make_app, {**me, "token": "extra"}).get(API_PREFIX + "/probe")
    with pytest.raises(ResponseDrift, match="does not match"):
        drift_app(make_app, {**me, "role": "owner"}).get(API_PREFIX + "/probe")
    with pytest.raises(ResponseDrift, match="does not declare"):
        drift_app(make_app, me, status=201).get(API_PREFIX + "/probe")
    with pytest.raises(ResponseDrift, match="does not declare"):
        drift_app(make_app, {"message": "Gone."}, status=410).get(API_PREFIX + "/probe")
    with pytest.raises(ResponseDrift, match="does not match"):
        drift_app(make_app, {"error": "not the envelope"}, status=503).get(API_PREFIX + "/probe")


def test_responses_are_not_checked_outside_testing(make_app):
    client = drift_app(make_app, {"anything": True})
    client.application.config["TESTING"] = False
    assert client.get(API_PREFIX + "/probe").status_code == 200


def test_docs_page_renders_every_operation_and_schema_from_the_same_document(app, client):
    spec = client.get("/api/openapi.json").get_json()
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for path, _method, operation in operations(spec):
        assert f'id="op-{operation["operationId"]}"' in page
        assert path in page and operation["summary"].replace("'", "&#39;") in page
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert "<script" not in page and " style=" not in page  # the CSP allows neither inline
    assert not re.search(r'(src|href)="(https?:)?//', page), "everything is served by the app itself"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_docs_are_public_and_the_same_for_a_signed_in_user(app, client):
    anonymous = client.get("/api/openapi.json").get_json()
    make_user(app, "reader@example.com")
    login(client, "reader@example.com")
    assert client.get("/api/openapi.json").get_json() == anonymous
    assert client.get("/api/docs").status_code == 200
