"""Security headers on every kind of response, the body size limit, the session cookie, and the
debug guard."""

from __future__ import annotations

import pytest
from werkzeug.http import parse_cookie

from tests.conftest import base_config
from tests.support import API, PASSWORD, csrf_from

CSP_DIRECTIVES = {
    "default-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}
HTTPS = "https://localhost"


def assert_security_headers(response, *, no_store: bool = True, hsts: bool = False) -> None:
    headers = response.headers
    policy = dict(
        [*d.strip().split(" ", 1), ""][:2] for d in headers["Content-Security-Policy"].split(";") if d.strip()
    )
    for directive, value in CSP_DIRECTIVES.items():
        assert policy.get(directive) == value, directive
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    # Same-origin only: Flask-WTF needs the Referer on HTTPS form posts, other sites never see it.
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Request-ID"]
    if no_store:
        assert "no-store" in headers.get("Cache-Control", "")
    if hsts:
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        assert int(headers["Strict-Transport-Security"].split("=")[1].split(";")[0]) >= 31536000
    else:
        assert "Strict-Transport-Security" not in headers


@pytest.fixture
def secure_app(app):
    """An app as deployed (SESSION_COOKIE_SECURE on) on the test database."""
    from app import create_app
    from app.extensions import db

    application = create_app(base_config(SESSION_COOKIE_SECURE=True))
    yield application
    with application.app_context():
        db.engine.dispose()


# --- every kind of response carries the headers ---------------------------------------------------

def test_html_page(client, admin):
    response = client.get("/login")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert_security_headers(response)


def test_redirect_that_may_set_the_session_cookie(client, admin):
    response = client.get("/")
    assert response.status_code == 302
    assert_security_headers(response)


def test_json_api_response(member_api):
    response = member_api.get("/me")
    assert response.status_code == 200
    assert response.json["email"] == "member@example.com"
    assert_security_headers(response)
    assert response.headers["Pragma"] == "no-cache"


def test_json_api_401(anon_api):
    response = anon_api.get("/me")
    assert response.status_code == 401
    assert response.json == {"message": "Unauthorized."}
    assert_security_headers(response)


def test_json_api_404(member_api):
    response = member_api.get("/no-such-route")
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.json == {"message": "Not found."}
    assert_security_headers(response)


def test_html_404_page(client, admin):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Page not found" in response.get_data(as_text=True)
    assert_security_headers(response)


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}
    assert_security_headers(response)


def test_static_file_is_cacheable_but_still_protected(client):
    response = client.get("/static/app.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    assert_security_headers(response, no_store=False)
    assert "no-store" not in response.headers.get("Cache-Control", "")
    response.close()


def test_request_id_is_echoed_when_well_formed_and_replaced_otherwise(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123_def.456"}).headers["X-Request-ID"] == "abc-123_def.456"
    for hostile in ("<script>alert(1)</script>", "short", "x" * 65):
        replaced = client.get("/healthz", headers={"X-Request-ID": hostile}).headers["X-Request-ID"]
        assert replaced != hostile and len(replaced) == 32


# --- body size -----------------------------------------------------------------------------------

def test_413_json_under_api(app, member_api):
    too_big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    response = member_api.post("/me", data=too_big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json == {"message": "Request body too large."}
    assert_security_headers(response)


def test_413_html_page(app, client, admin):
    response = client.post("/login", data={"email": "a@example.com", "password": "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)})
    assert response.status_code == 413
    assert response.mimetype == "text/html"
    assert_security_headers(response)


def test_max_content_length_is_bounded(app):
    assert 0 < app.config["MAX_CONTENT_LENGTH"] <= 1024 * 1024


def test_a_body_just_under_the_limit_is_not_refused(app, member_api):
    response = member_api.get("/me", data="x" * 1000, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200


# --- HTTPS deployments: HSTS and the session cookie ----------------------------------------------

def test_hsts_only_when_cookies_are_secure(client, secure_app):
    assert "Strict-Transport-Security" not in client.get("/healthz").headers
    response = secure_app.test_client().get("/healthz", base_url=HTTPS)
    assert_security_headers(response, hsts=True)


def _set_cookie(response, name: str) -> dict[str, str]:
    """The attributes of the Set-Cookie header for `name` (lower-cased names; flags map to '')."""
    for header in response.headers.getlist("Set-Cookie"):
        first, *attributes = [part.strip() for part in header.split(";")]
        key, _, value = first.partition("=")
        if key == name:
            parsed = {"value": value}
            for attribute in attributes:
                attr_name, _, attr_value = attribute.partition("=")
                parsed[attr_name.lower()] = attr_value
            return parsed
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.getlist('Set-Cookie')}")


def _sign_in(client, email: str):
    page = client.get("/login", base_url=HTTPS)
    form = {"email": email, "password": PASSWORD, "csrf_token": csrf_from(page.get_data(as_text=True))}
    return page, client.post("/login", data=form, base_url=HTTPS, headers={"Referer": f"{HTTPS}/login"})


def test_session_cookie_is_host_prefixed_secure_httponly_lax(secure_app, admin):
    client = secure_app.test_client()
    page, signed_in = _sign_in(client, admin.email)
    assert signed_in.status_code == 302
    for response in (page, signed_in):
        cookie = _set_cookie(response, "__Host-session")
        assert "secure" in cookie
        assert "httponly" in cookie
        assert cookie["samesite"] == "Lax"
        assert cookie["path"] == "/"
        assert "domain" not in cookie
        assert_security_headers(response, hsts=True)
    assert not any(h.startswith("session=") for h in signed_in.headers.getlist("Set-Cookie"))


def test_sign_in_renews_the_session_cookie(secure_app, admin):
    client = secure_app.test_client()
    page, signed_in = _sign_in(client, admin.email)
    before = _set_cookie(page, "__Host-session")["value"]
    after = _set_cookie(signed_in, "__Host-session")["value"]
    assert before and after and before != after
    assert client.get(f"{API}/me", base_url=HTTPS).json["email"] == admin.email

    # A cookie planted before sign-in (session fixation) does not carry the sign-in.
    planted = secure_app.test_client()
    planted.set_cookie("__Host-session", parse_cookie(f"v={before}")["v"], domain="localhost", secure=True)
    assert planted.get(f"{API}/me", base_url=HTTPS).status_code == 401


def test_session_cookie_without_https_is_plain_but_httponly(client, admin):
    cookie = _set_cookie(client.get("/login"), "session")
    assert "httponly" in cookie
    assert cookie["samesite"] == "Lax"
    assert "secure" not in cookie


# --- debug mode ----------------------------------------------------------------------------------

@pytest.mark.parametrize("environment", ["production", "testing"])
def test_debug_is_refused_outside_development(environment):
    from app import create_app
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="FLASK_DEBUG"):
        create_app(base_config(SWITCHBOARD_ENV=environment, DEBUG=True))


def test_flask_debug_in_the_environment_is_refused_outside_development(monkeypatch):
    from app import create_app
    from app.config import ConfigError

    monkeypatch.setenv("FLASK_DEBUG", "1")
    with pytest.raises(ConfigError, match="FLASK_DEBUG"):
        create_app(base_config())


def test_debug_is_allowed_in_development(app):
    from app import create_app
    from app.extensions import db

    application = create_app(base_config(SWITCHBOARD_ENV="development", DEBUG=True))
    try:
        assert application.debug
    finally:
        with application.app_context():
            db.engine.dispose()


def test_the_test_app_is_not_in_debug(app):
    assert app.debug is False
