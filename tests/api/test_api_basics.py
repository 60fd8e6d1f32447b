"""The JSON API's ground rules: who may call, CSRF for cookie callers, the error envelope,
request ids, health checks and a database that does not answer."""

from __future__ import annotations

import logging
import uuid

import pytest
from flask import Blueprint, jsonify

from tests.support import API, Api, get_csrf, login, make_token

DOWN_DATABASE = "postgresql+psycopg://switchboard@127.0.0.1:1/switchboard"  # nothing listens on port 1
PROBE = "/api/probe"


# --- /me and who may call --------------------------------------------------------------------


def test_me_for_admin_and_member(admin_api, member_api, admin, member):
    assert admin_api.get("/me").get_json() == {"id": str(admin.id), "email": "admin@example.com",
                                               "name": "Ada Admin", "role": "admin"}
    response = member_api.get("/me")
    assert response.status_code == 200
    assert response.get_json() == {"id": str(member.id), "email": "member@example.com",
                                   "name": "Mel Member", "role": "member"}


def test_service_token_gets_403_on_me(service_api):
    response = service_api.get("/me")
    assert response.status_code == 403
    assert response.get_json() == {"message": "Forbidden."}


@pytest.mark.parametrize("header", [None, "Bearer sb_not-a-real-token", "Bearer ", "Basic dXNlcjpwYXNz", "sb_token"])
def test_no_valid_credentials_is_401(app, header):
    headers = {"Authorization": header} if header else {}
    response = app.test_client().get(API + "/me", headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"message": "Unauthorized."}


def test_revoked_token_is_401(app, member):
    from app.services import tokens
    from app.services.base import Actor

    plaintext = make_token(app, member)
    api = Api(app.test_client(), plaintext)
    assert api.get("/me").status_code == 200
    with app.app_context():
        (token,) = tokens.list_tokens(member)
        tokens.revoke_token(Actor.system("test"), member, token.id)
    assert api.get("/me").status_code == 401


def test_tokens_are_stored_only_as_sha256(app, member):
    import hashlib

    import sqlalchemy as sa

    from app.extensions import db
    from app.models import ApiToken

    plaintext = make_token(app, member)
    assert plaintext.startswith("sb_")
    assert len(plaintext) >= 3 + 43  # 32 random bytes, URL-safe base64
    with app.app_context():
        row = db.session.execute(sa.select(ApiToken)).scalar_one()
        values = [str(getattr(row, c.key)) for c in ApiToken.__table__.columns]
    assert row.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert not any(plaintext in v for v in values)


def test_cookie_session_reads_without_csrf(app, client, member):
    login(client, member.email)
    response = client.get(API + "/me")
    assert response.status_code == 200
    assert response.get_json()["email"] == member.email


# --- a throwaway app with probe routes (never on the real app) -------------------------------


def probe_app(make_app, **overrides):
    """An app with a JSON route behind the API's own authentication, and routes that fail."""
    from app.api.auth import access, actor, authenticate
    from app.api.util import Body, parse_body
    from app.extensions import csrf

    class EchoBody(Body):
        name: str
        count: int = 0
        ref: uuid.UUID | None = None

    probe = Blueprint("probe", __name__)
    probe.before_request(authenticate)
    csrf.exempt(probe)  # as the real API blueprint: bearer callers need no CSRF, cookie callers are checked

    @probe.post("/echo")
    @access("user")
    def echo():
        body, sent = parse_body(EchoBody)
        return jsonify({"name": body.name, "sent": sorted(sent), "caller": actor().user.email,
                        "ref": str(body.ref) if body.ref else None})

    @probe.get("/boom")
    @access("public")
    def api_boom():
        raise RuntimeError("probe failure: table secret_things exploded at row 42")

    application = make_app(**overrides)
    application.register_blueprint(probe, url_prefix=PROBE)

    @application.get("/boom")
    def page_boom():
        raise RuntimeError("probe failure: table secret_things exploded at row 42")

    return application


def test_bearer_requests_need_no_csrf(make_app, member):
    application = probe_app(make_app)
    token = make_token(application, member)
    response = application.test_client().post(PROBE + "/echo", json={"name": "x"},
                                              headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.get_json()["caller"] == member.email


def test_cookie_json_post_needs_the_csrf_header(make_app, member):
    application = probe_app(make_app)
    client = application.test_client()
    login(client, member.email)

    refused = client.post(PROBE + "/echo", json={"name": "x"})
    assert refused.status_code == 400
    assert refused.get_json() == {"message": "CSRF token missing or invalid."}
    forged = client.post(PROBE + "/echo", json={"name": "x"}, headers={"X-CSRFToken": "forged"})
    assert forged.status_code == 400

    token = get_csrf(client, "/")
    accepted = client.post(PROBE + "/echo", json={"name": "x"}, headers={"X-CSRFToken": token})
    assert accepted.status_code == 200
    assert accepted.get_json()["caller"] == member.email

    # A token from another session is worth nothing.
    other = application.test_client()
    login(other, member.email)
    assert other.post(PROBE + "/echo", json={"name": "x"}, headers={"X-CSRFToken": token}).status_code == 400


def test_anonymous_json_post_is_401(make_app):
    application = probe_app(make_app)
    response = application.test_client().post(PROBE + "/echo", json={"name": "x"})
    assert response.status_code == 401
    assert response.get_json() == {"message": "Unauthorized."}


@pytest.mark.parametrize("data", ["{not json", "[1, 2]", '"text"', "null", ""])
def test_body_that_is_not_a_json_object_is_400(make_app, member, data):
    application = probe_app(make_app)
    token = make_token(application, member)
    response = application.test_client().post(PROBE + "/echo", data=data, content_type="application/json",
                                              headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert response.get_json() == {"message": "Request body must be valid JSON."}


def test_unknown_and_mistyped_fields_are_rejected(make_app, member):
    application = probe_app(make_app)
    api = Api(application.test_client(), make_token(application, member))
    api_post = lambda body: api.client.post(PROBE + "/echo", json=body, headers=api._headers(None))  # noqa: E731

    response = api_post({"name": "x", "role": "admin"})
    assert response.status_code == 400
    body = response.get_json()
    assert body["message"] == "Invalid request body."
    assert body["validations"] == [{"field": "role", "detail": "Unknown field."}]

    response = api_post({"name": 5})
    assert response.status_code == 400
    assert [v["field"] for v in response.get_json()["validations"]] == ["name"]

    response = api_post({"name": "x", "count": "3"})  # strict: a string is not an integer
    assert response.status_code == 400
    assert [v["field"] for v in response.get_json()["validations"]] == ["count"]

    ref = str(uuid.uuid4())
    response = api_post({"name": "x", "count": 3, "ref": ref})  # ...but a UUID arrives as a JSON string
    assert response.status_code == 200
    assert response.get_json()["sent"] == ["count", "name", "ref"]
    assert response.get_json()["ref"] == ref


def test_exception_in_api_view_gives_500_envelope_and_is_logged(make_app, caplog):
    application = probe_app(make_app)
    with caplog.at_level(logging.ERROR):
        response = application.test_client().get(PROBE + "/boom")
    assert response.status_code == 500
    body = response.get_json()
    request_id = response.headers["X-Request-ID"]
    assert body == {"message": "Internal error.", "request_id": request_id}
    text = response.get_data(as_text=True)
    assert "secret_things" not in text
    assert "RuntimeError" not in text

    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert request_id in record.getMessage()
    assert record.exc_info or record.exc_text
    logged = record.exc_text or logging.Formatter().formatException(record.exc_info)
    assert "secret_things exploded" in logged


def test_exception_in_page_gives_500_page_without_exception_text(make_app, caplog):
    application = probe_app(make_app)
    with caplog.at_level(logging.ERROR):
        response = application.test_client().get("/boom", headers={"X-Request-ID": "trace-0123456789"})
    assert response.status_code == 500
    html = response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    assert 'class="topbar"' in html
    assert "Something went wrong" in html
    assert "trace-0123456789" in html  # the reference to quote to an administrator
    assert "secret_things" not in html
    assert "RuntimeError" not in html
    assert any("trace-0123456789" in r.getMessage() for r in caplog.records)


# --- errors, request ids, health -------------------------------------------------------------


def test_json_errors_under_api_and_pages_elsewhere(app, client, member_api):
    missing = client.get(API + "/no-such-thing")
    assert missing.status_code == 404
    assert missing.get_json() == {"message": "Not found."}
    wrong_method = member_api.delete("/me")
    assert wrong_method.status_code == 405
    assert wrong_method.get_json() == {"message": "Method not allowed."}
    assert "GET" in wrong_method.headers["Allow"]

    page = client.get("/no-such-page")
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    assert "Page not found" in page.get_data(as_text=True)
    assert 'class="topbar"' in page.get_data(as_text=True)


def test_every_response_carries_a_request_id(app, client, member, member_api):
    responses = [
        client.get("/"),  # redirect
        client.get("/login"),
        client.get("/no-such-page"),
        client.get("/healthz"),
        client.get("/static/app.css"),
        client.post("/login", data={}),  # CSRF failure
        client.get(API + "/me"),  # 401
        member_api.get("/me"),
    ]
    ids = [r.headers.get("X-Request-ID") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)
    for r in responses:
        r.close()


def test_a_well_formed_incoming_request_id_is_kept(app, client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123.DEF_456"}).headers["X-Request-ID"] == "abc-123.DEF_456"
    for bad in ("<script>alert(1)</script>", "short", "x" * 65):
        replaced = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert replaced != bad
        assert len(replaced) == 32


def test_healthz_and_readyz(app, client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok"}


def test_database_unreachable(make_app, member):
    down = make_app(DATABASE_URL=DOWN_DATABASE)
    client = down.test_client()

    assert client.get("/healthz").status_code == 200  # the process is alive; no database needed

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["Retry-After"]

    api = client.get(API + "/me", headers={"Authorization": "Bearer sb_whatever-token-value"})
    assert api.status_code == 503
    assert api.headers["Retry-After"]
    assert api.get_json() == {"message": "Service temporarily unavailable."}
    assert "127.0.0.1" not in api.get_data(as_text=True)

    page = client.get("/login")
    assert page.status_code == 503
    assert page.headers["Retry-After"]
    html = page.get_data(as_text=True)
    assert "Temporarily unavailable" in html
    assert 'class="topbar"' in html
    assert "psycopg" not in html
    assert "127.0.0.1" not in html


def test_database_unreachable_for_a_signed_in_browser(make_app, member):
    up = make_app()
    client = up.test_client()
    login(client, member.email)
    cookie = client.get_cookie("session").value

    down = make_app(DATABASE_URL=DOWN_DATABASE)
    browser = down.test_client()
    browser.set_cookie("session", cookie)
    page = browser.get("/settings/tokens")
    assert page.status_code == 503
    assert "Temporarily unavailable" in page.get_data(as_text=True)


def test_server_error_ids_differ_per_request(make_app):
    application = probe_app(make_app)
    client = application.test_client()
    first = client.get(PROBE + "/boom").get_json()["request_id"]
    second = client.get(PROBE + "/boom").get_json()["request_id"]
    assert first != second
    uuid.UUID(first)
