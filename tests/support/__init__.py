"""Test helpers: settings, users and tokens made through the services, and HTTP helpers that
go through the same entry points a browser or an API client uses."""

from __future__ import annotations

import base64
import os
import re
import uuid
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

API = "/api/experimental/chats"
PASSWORD = "correct horse battery staple"
KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()
SECRET_KEY = "test-secret-key-" + "x" * 32


def database_url() -> str:
    raw = os.environ.get("TEST_DATABASE_URL", "sqlite")
    return raw


def is_postgres() -> bool:
    return database_url().startswith("postgresql")


def canary(label: str = "key") -> str:
    """A unique provider-key-shaped secret whose every appearance the leak scan looks for."""
    return f"sk-canary-{label}-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


CANARIES: list[str] = []


def new_key(label: str = "key") -> str:
    key = canary(label)
    CANARIES.append(key)
    return key


def make_user(app: Flask, email: str | None = None, role: str = "member", name: str = "", password: str = PASSWORD):
    from app.services import users
    from app.services.base import Actor

    with app.app_context():
        user = users.create_user(Actor.system("test"), email or f"user-{uuid.uuid4().hex[:8]}@example.com",
                                 name, password, role)
        return users.get_user(user.id)


def make_token(app: Flask, user, service: bool = False, name: str = "") -> str:
    from app.services import tokens, users
    from app.services.base import Actor

    with app.app_context():
        owner = users.get_user(user.id)
        _, plaintext = tokens.create_token(Actor.system("test"), owner, name, service=service)
        return plaintext


_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
_CSRF_INPUT = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    m = _CSRF_META.search(html)
    if m:
        return m.group(1)
    m = _CSRF_INPUT.search(html)
    assert m, "no CSRF token on the page"
    return m.group(1) or m.group(2)


def get_csrf(client: FlaskClient, path: str = "/login") -> str:
    response = client.get(path)
    return csrf_from(response.get_data(as_text=True))


def login(client: FlaskClient, email: str, password: str = PASSWORD, follow: bool = False):
    token = get_csrf(client, "/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token},
                       follow_redirects=follow)


def post_form(client: FlaskClient, path: str, data: dict[str, Any] | None = None, *, csrf_path: str | None = None,
              follow: bool = False):
    """POST a form the way a browser does: with the CSRF token from a page of the app."""
    token = get_csrf(client, csrf_path or path)
    return client.post(path, data={**(data or {}), "csrf_token": token}, follow_redirects=follow)


class Api:
    """A JSON client for /api/experimental/chats with a bearer token (or a session + CSRF)."""

    def __init__(self, client: FlaskClient, token: str | None = None, csrf: str | None = None):
        self.client, self.token, self.csrf = client, token, csrf

    def _headers(self, extra: dict | None) -> dict:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.csrf:
            headers["X-CSRFToken"] = self.csrf
        return headers

    def request(self, method: str, path: str, json: Any = None, headers: dict | None = None, **kw):
        return self.client.open(API + path, method=method, json=json, headers=self._headers(headers), **kw)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw):
        return self.request("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw):
        return self.request("PUT", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw):
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path: str, **kw):
        return self.request("DELETE", path, **kw)


PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Settings a subprocess must not inherit from the test run (or the developer's shell).
_APP_VARIABLES = ("DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEYS", "REDIS_URL", "ALLOW_BYOK", "KEY_MAX_AGE_DAYS", "SWITCHBOARD_ENV",
                  "SWITCHBOARD_INSTANCE_PATH", "SESSION_COOKIE_SECURE", "PRIVATE_BASE_URL_ALLOWLIST", "FLASK_APP",
                  "FLASK_DEBUG", "TEST_DATABASE_URL", "OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET",
                  "OIDC_SCOPES", "OIDC_GROUPS_CLAIM", "OIDC_ADMIN_GROUP", "OIDC_ALLOWED_EMAIL_DOMAINS", "PASSWORD_LOGIN")


def flask_cli(*args: str, env: dict[str, str], cwd: str = PROJECT_ROOT, timeout: int = 120):
    """Run `flask --app wsgi ARGS` in a subprocess, as an operator would, with only `env` set
    among the app's variables. Returns the CompletedProcess (text mode)."""
    import subprocess
    import sys

    full_env = {k: v for k, v in os.environ.items() if k not in _APP_VARIABLES}
    full_env.update(env)
    full_env.setdefault("PYTHONPATH", PROJECT_ROOT)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)
