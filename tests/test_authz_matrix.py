"""Authorization matrix: every route of the URL map, every method, five callers, each way in.

`MATRIX` is the one table of who may do what. Its keys must be exactly the (method, rule) pairs of
the app's URL map (static files, HEAD and OPTIONS aside), so a route added without a row fails
`test_every_route_has_a_row_in_the_matrix`. Each row says, for anonymous visitors, member A,
member B, an admin and a service token, what the route answers:

- `OK`: the action was allowed and done: 2xx, or a redirect that is not the sign-in gate;
- `LOGIN`: the sign-in gate of a page (a redirect to `/login?next=<the path>`);
- a number: exactly that status (401, 403, 404, or 302 where a public page redirects by itself).

Requests go through every way of authenticating that the route can see: JSON routes are called
with a bearer token AND with the browser session cookie plus `X-CSRFToken` (both must meet the
same check); pages with the session cookie (form posts carry their CSRF token). The service
token is a bearer token only; on pages it signs nobody in. Anonymous posts carry a valid CSRF
token too, so what refuses them is the sign-in check, not CSRF.

Path parameters are real objects made fresh for every single request (a provider with a shared
key and a model config, member A's own key for it, a legacy provider with member A's key, one
of member A's tokens, a user to deactivate, a group with that user as its member), so `OK` means the action really happened and a
destructive row never spoils the next request. Objects that belong to member A answer 404 to
member B (A's token on /settings/tokens/<id>/revoke) or touch only B's own rows (B's BYOK delete
and test on A's provider). After every request:

- a refused one (401, 403, 404, the sign-in gate) has changed nothing in the database;
- a member's request has left the other member's rows (user, sessions, tokens, keys) as they were;
- the stub provider has received member A's key only from member A's own requests.
"""

from __future__ import annotations

import uuid
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from tests.support import PASSWORD, get_csrf, login, make_token, make_user, new_key
from tests.support.stub_provider import StubProvider

API = "/api/experimental/chats"
NEW_PASSWORD = "another long passphrase 42"
STUB_MODELS = ("gpt-4o", "gpt-4o-mini", "o3-mini")

OK, LOGIN = "ok", "login"
ROLES = ("anonymous", "member_a", "member_b", "admin", "service")

# Row patterns, columns in ROLES order.
PUBLIC = (OK, OK, OK, OK, OK)
USER_API = (401, OK, OK, OK, 403)
ADMIN_API = (401, 403, 403, OK, 403)
SERVICE_API = (401, 403, 403, 403, OK)
PAGE = (LOGIN, OK, OK, OK, LOGIN)
ADMIN_PAGE = (LOGIN, 403, 403, OK, LOGIN)

#                                                                anonymous, member A, member B, admin, service
MATRIX: dict[tuple[str, str], tuple[Any, Any, Any, Any, Any]] = {
    # --- JSON API: AI providers and their keys (SPEC 4, 6a): admins only
    ("GET", f"{API}/ai-providers"): ADMIN_API,
    ("POST", f"{API}/ai-providers"): ADMIN_API,
    ("GET", f"{API}/ai-providers/<provider_id>"): ADMIN_API,
    ("PATCH", f"{API}/ai-providers/<provider_id>"): ADMIN_API,
    ("DELETE", f"{API}/ai-providers/<provider_id>"): ADMIN_API,
    ("GET", f"{API}/ai-providers/<provider_id>/keys"): ADMIN_API,
    ("POST", f"{API}/ai-providers/<provider_id>/keys"): ADMIN_API,
    ("DELETE", f"{API}/ai-providers/<provider_id>/keys/<key_id>"): ADMIN_API,
    ("POST", f"{API}/ai-providers/<provider_id>/keys/<key_id>/test"): ADMIN_API,
    ("GET", f"{API}/ai-providers/<provider_id>/models"): ADMIN_API,
    # --- JSON API: the caller, model configs, resolution, hand-outs (SPEC 2, 6)
    ("GET", f"{API}/me"): USER_API,
    ("GET", f"{API}/model-configs"): USER_API,
    ("POST", f"{API}/model-configs"): ADMIN_API,
    ("GET", f"{API}/model-configs/enabled"): USER_API,
    ("GET", f"{API}/model-configs/<config_id>"): USER_API,
    ("PATCH", f"{API}/model-configs/<config_id>"): ADMIN_API,
    ("DELETE", f"{API}/model-configs/<config_id>"): ADMIN_API,
    ("GET", f"{API}/model-configs/<config_id>/resolution"): USER_API,
    ("POST", f"{API}/credentials"): SERVICE_API,
    ("POST", f"{API}/credentials/report"): SERVICE_API,
    # --- JSON API: groups and their members (SPEC 9): admins only
    ("GET", f"{API}/groups"): ADMIN_API,
    ("POST", f"{API}/groups"): ADMIN_API,
    ("GET", f"{API}/groups/<group_id>"): ADMIN_API,
    ("PATCH", f"{API}/groups/<group_id>"): ADMIN_API,
    ("DELETE", f"{API}/groups/<group_id>"): ADMIN_API,
    ("GET", f"{API}/groups/<group_id>/members"): ADMIN_API,
    ("PUT", f"{API}/groups/<group_id>/members/<user_id>"): ADMIN_API,
    ("DELETE", f"{API}/groups/<group_id>/members/<user_id>"): ADMIN_API,
    # --- JSON API: the audit log (SPEC 11)
    ("GET", f"{API}/audit-events"): ADMIN_API,
    # --- JSON API: the caller's own keys (SPEC 5, 6a). B and the admin have no key of their own
    # for the provider, so testing "theirs" is 404; their DELETE is 204 and leaves A's key alone.
    ("GET", f"{API}/user-ai-provider-keys"): USER_API,
    ("PUT", f"{API}/user-ai-provider-keys/<provider_id>"): USER_API,
    ("DELETE", f"{API}/user-ai-provider-keys/<provider_id>"): USER_API,
    ("POST", f"{API}/user-ai-provider-keys/<provider_id>/test"): (401, OK, 404, 404, 403),
    # --- JSON API: legacy providers (admins) and each user's legacy key (SPEC 6)
    ("GET", f"{API}/providers"): ADMIN_API,
    ("POST", f"{API}/providers"): ADMIN_API,
    ("PATCH", f"{API}/providers/<provider_id>"): ADMIN_API,
    ("DELETE", f"{API}/providers/<provider_id>"): ADMIN_API,
    ("GET", f"{API}/user-provider-configs"): USER_API,
    ("PUT", f"{API}/user-provider-configs/<provider_id>"): USER_API,
    ("DELETE", f"{API}/user-provider-configs/<provider_id>"): USER_API,
    # --- public: the API description, health, sign-in
    ("GET", "/api/openapi.json"): PUBLIC,
    ("GET", "/api/docs"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    # Prometheus metrics: only METRICS_TOKEN opens them (set by the `world` fixture); no session,
    # API token or service token does (unset, the route is 404: tests/test_metrics.py)
    ("GET", "/metrics"): (401, 401, 401, 401, 401),
    ("GET", "/"): (302, OK, OK, OK, 302),  # the home page sends visitors to /login by itself
    ("GET", "/login"): PUBLIC,  # signed in: redirected on
    ("POST", "/login"): PUBLIC,  # signs member A in (a signed-in browser is redirected on)
    ("POST", "/logout"): PAGE,
    ("GET", "/setup"): (404, 404, 404, 404, 404),  # users exist: setup is over for everyone
    ("POST", "/setup"): (404, 404, 404, 404, 404),
    # Single sign-on is not configured in this app: its routes are not there for anyone
    # (tests/pages/test_sso.py covers them with SSO on).
    ("GET", "/auth/oidc/login"): (404, 404, 404, 404, 404),
    ("GET", "/auth/oidc/callback"): (404, 404, 404, 404, 404),
    # --- the signed-in user's own pages
    ("GET", "/models"): PAGE,
    ("GET", "/settings/keys"): PAGE,
    ("POST", "/settings/keys/<provider_id>"): PAGE,  # saves the caller's own key
    ("GET", "/settings/keys/<provider_id>/remove"): PAGE,  # B and the admin: "you have no key", redirect
    ("POST", "/settings/keys/<provider_id>/remove"): PAGE,  # removes the caller's key only
    ("POST", "/settings/keys/<provider_id>/test"): PAGE,  # tests the caller's key only (B: none, said so)
    ("GET", "/settings/password"): PAGE,
    ("POST", "/settings/password"): PAGE,
    ("GET", "/settings/tokens"): PAGE,
    ("POST", "/settings/tokens"): PAGE,
    ("GET", "/settings/tokens/<token_id>/revoke"): (LOGIN, OK, 404, 404, LOGIN),  # member A's token
    ("POST", "/settings/tokens/<token_id>/revoke"): (LOGIN, OK, 404, 404, LOGIN),
    # --- admin pages
    ("GET", "/admin/audit"): ADMIN_PAGE,
    ("GET", "/admin/users"): ADMIN_PAGE,
    ("POST", "/admin/users"): ADMIN_PAGE,
    ("GET", "/admin/users/<user_id>/deactivate"): ADMIN_PAGE,
    ("POST", "/admin/users/<user_id>/deactivate"): ADMIN_PAGE,
    ("POST", "/admin/users/<user_id>/role"): ADMIN_PAGE,
    ("GET", "/admin/groups"): ADMIN_PAGE,
    ("GET", "/admin/groups/new"): ADMIN_PAGE,
    ("POST", "/admin/groups/new"): ADMIN_PAGE,
    ("GET", "/admin/groups/<group_id>"): ADMIN_PAGE,
    ("POST", "/admin/groups/<group_id>/members"): ADMIN_PAGE,
    ("GET", "/admin/groups/<group_id>/members/<user_id>/remove"): ADMIN_PAGE,
    ("POST", "/admin/groups/<group_id>/members/<user_id>/remove"): ADMIN_PAGE,
    ("GET", "/admin/groups/<group_id>/edit"): ADMIN_PAGE,
    ("POST", "/admin/groups/<group_id>/edit"): ADMIN_PAGE,
    ("GET", "/admin/groups/<group_id>/delete"): ADMIN_PAGE,
    ("POST", "/admin/groups/<group_id>/delete"): ADMIN_PAGE,
    ("GET", "/admin/providers"): ADMIN_PAGE,
    ("GET", "/admin/providers/new"): ADMIN_PAGE,
    ("POST", "/admin/providers/new"): ADMIN_PAGE,
    ("GET", "/admin/providers/<provider_id>"): ADMIN_PAGE,
    ("GET", "/admin/providers/<provider_id>/edit"): ADMIN_PAGE,
    ("POST", "/admin/providers/<provider_id>/edit"): ADMIN_PAGE,
    ("GET", "/admin/providers/<provider_id>/delete"): ADMIN_PAGE,
    ("POST", "/admin/providers/<provider_id>/delete"): ADMIN_PAGE,
    ("POST", "/admin/providers/<provider_id>/keys"): ADMIN_PAGE,
    ("GET", "/admin/providers/<provider_id>/keys/<key_id>/delete"): ADMIN_PAGE,
    ("POST", "/admin/providers/<provider_id>/keys/<key_id>/delete"): ADMIN_PAGE,
    ("POST", "/admin/providers/<provider_id>/keys/<key_id>/test"): ADMIN_PAGE,
    ("GET", "/admin/providers/<provider_id>/discover"): ADMIN_PAGE,
    ("POST", "/admin/providers/<provider_id>/discover"): ADMIN_PAGE,
    ("POST", "/admin/providers/<provider_id>/discover/config"): ADMIN_PAGE,
    ("GET", "/admin/model-configs"): ADMIN_PAGE,
    ("GET", "/admin/model-configs/new"): ADMIN_PAGE,
    ("POST", "/admin/model-configs/new"): ADMIN_PAGE,
    ("GET", "/admin/model-configs/<config_id>/edit"): ADMIN_PAGE,
    ("POST", "/admin/model-configs/<config_id>/edit"): ADMIN_PAGE,
    ("POST", "/admin/model-configs/<config_id>/default"): ADMIN_PAGE,
    ("GET", "/admin/model-configs/<config_id>/delete"): ADMIN_PAGE,
    ("POST", "/admin/model-configs/<config_id>/delete"): ADMIN_PAGE,
    ("GET", "/admin/legacy-providers"): ADMIN_PAGE,
    ("GET", "/admin/legacy-providers/new"): ADMIN_PAGE,
    ("POST", "/admin/legacy-providers/new"): ADMIN_PAGE,
    ("GET", "/admin/legacy-providers/<provider_id>/edit"): ADMIN_PAGE,
    ("POST", "/admin/legacy-providers/<provider_id>/edit"): ADMIN_PAGE,
    ("GET", "/admin/legacy-providers/<provider_id>/delete"): ADMIN_PAGE,
    ("POST", "/admin/legacy-providers/<provider_id>/delete"): ADMIN_PAGE,
    ("GET", "/admin/legacy-providers/migrate"): ADMIN_PAGE,
    ("POST", "/admin/legacy-providers/migrate"): ADMIN_PAGE,
}


def url_map_routes(app) -> set[tuple[str, str]]:
    """Every (method, rule) the app serves, static files, HEAD and OPTIONS aside."""
    return {(method, rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
            for method in rule.methods - {"HEAD", "OPTIONS"}}


# --- the objects behind the path parameters ------------------------------------------------------


class World:
    """Three users signed in, their tokens, a service token and a stub provider to call."""

    def __init__(self, app, stub: StubProvider):
        self.app, self.stub = app, stub
        self.admin = make_user(app, "admin@example.com", role="admin", name="Ada Admin")
        self.member_a = make_user(app, "member-a@example.com", name="Mel A")
        self.member_b = make_user(app, "member-b@example.com", name="Bo B")
        self.tokens = {role: make_token(app, getattr(self, role)) for role in ("member_a", "member_b", "admin")}
        self.tokens["service"] = make_token(app, self.admin, service=True)
        self.sessions = {}
        for role in ("member_a", "member_b", "admin"):
            client = app.test_client()
            assert login(client, getattr(self, role).email).status_code == 302
            self.sessions[role] = (client, get_csrf(client, "/"))

    def user(self, role: str):
        return getattr(self, role)

    def actor(self, role: str = "admin"):
        from app.services.base import Actor

        return Actor.for_user(self.user(role))


class Objects:
    """Objects made on first use, fresh for each request: what a path or a body refers to."""

    def __init__(self, world: World):
        self.world, self.app = world, world.app

    def _run(self, fn, *args, **kwargs):
        with self.app.app_context():
            return fn(*args, **kwargs)

    @cached_property
    def provider(self) -> dict:
        """An enabled provider served by the stub, user keys allowed, with a shared key, a model
        config on it, and member A's own key for it."""
        from app.services import model_configs, provider_keys, providers, user_keys

        w = self.world

        def make():
            provider = providers.create_provider(
                w.actor(), type="openai", name=f"p-{uuid.uuid4().hex[:10]}", base_url=w.stub.url + "/v1",
                key_policy="user_preferred")
            shared_key = new_key("shared")
            key = provider_keys.add_key(w.actor(), provider.id, shared_key)
            config = model_configs.create_config(w.actor(), ai_provider_id=provider.id, model=f"m-{uuid.uuid4().hex[:8]}")
            a_key = new_key("member-a")
            user_keys.upsert_user_key(w.actor("member_a"), provider.id, a_key)
            return {"id": str(provider.id), "name": provider.name, "key_id": str(key.id), "config_id": str(config.id),
                    "model": config.model, "member_a_key": a_key}

        return self._run(make)

    @cached_property
    def legacy(self) -> dict:
        """A legacy provider (one per type: any earlier one of its type goes first) with a central
        key, user keys allowed, and member A's own key for it."""
        from app.models import ChatProvider
        from app.services import legacy

        w = self.world

        def make():
            from app.extensions import db

            for old in db.session.execute(sa.select(ChatProvider.id).where(ChatProvider.provider == "anthropic")).scalars():
                legacy.delete_provider(w.actor(), old)
            provider = legacy.create_provider(
                w.actor(), provider="anthropic", api_key=new_key("central"), central_api_key_enabled=True,
                allow_user_api_key=True, allow_central_api_key_fallback=True)
            a_key = new_key("legacy-a")
            legacy.set_user_key(w.actor("member_a"), provider.id, a_key)
            return {"id": str(provider.id), "member_a_key": a_key}

        return self._run(make)

    @cached_property
    def token_id(self) -> str:
        """One of member A's API tokens."""
        from app.services import tokens

        def make():
            token, _ = tokens.create_token(self.world.actor("member_a"), self.world.member_a, "matrix")
            return str(token.id)

        return self._run(make)

    @cached_property
    def user_id(self) -> str:
        """A member to deactivate (or to change the role of, or to add to and remove from a group)."""
        return str(make_user(self.app, f"victim-{uuid.uuid4().hex[:8]}@example.com").id)

    @cached_property
    def group(self) -> dict:
        """A group whose one member is the user of `user_id`."""
        from app.services import groups

        member_id = self.user_id  # made first: in its own app context, with no transaction open here

        def make():
            group = groups.create_group(self.world.actor(), name=f"g-{uuid.uuid4().hex[:10]}")
            groups.add_member(self.world.actor(), group.id, member_id)
            return {"id": str(group.id), "name": group.name}

        return self._run(make)

    @cached_property
    def joiner_email(self) -> str:
        """The email of an active user in no group yet."""
        return make_user(self.app, f"joiner-{uuid.uuid4().hex[:8]}@example.com").email

    def free_legacy_type(self) -> str:
        from app.extensions import db
        from app.models import PROVIDER_TYPES, ChatProvider

        def pick():
            used = set(db.session.execute(sa.select(ChatProvider.provider)).scalars())
            return next(t for t in PROVIDER_TYPES if t not in used and t != "bedrock")

        return self._run(pick)

    def path(self, rule: str) -> str:
        """`rule` with each parameter replaced by the id of a real object."""
        legacy = any(part in rule for part in (f"{API}/providers/", "/legacy-providers/", "/user-provider-configs/"))
        values = {
            "provider_id": lambda: self.legacy["id"] if legacy else self.provider["id"],
            "key_id": lambda: self.provider["key_id"],
            "config_id": lambda: self.provider["config_id"],
            "token_id": lambda: self.token_id,
            "user_id": lambda: self.user_id,
            "group_id": lambda: self.group["id"],
        }
        path = rule
        for name, value in values.items():
            if f"<{name}>" in path:
                path = path.replace(f"<{name}>", value())
        assert "<" not in path, f"no object for a parameter of {rule}: add one to Objects.path"
        return path


# Sample bodies of every write route: each, sent by someone allowed, succeeds (2xx or a redirect).
JSON_BODIES: dict[tuple[str, str], Any] = {
    ("POST", f"{API}/ai-providers"): lambda o: {"type": "openai", "name": f"new-{uuid.uuid4().hex[:8]}"},
    ("PATCH", f"{API}/ai-providers/<provider_id>"): lambda o: {"display_name": "Renamed"},
    ("POST", f"{API}/ai-providers/<provider_id>/keys"): lambda o: {"api_key": new_key("added")},
    ("POST", f"{API}/ai-providers/<provider_id>/keys/<key_id>/test"): lambda o: {},
    ("POST", f"{API}/credentials"): lambda o: {"user_id": str(o.world.member_a.id),
                                                "model_config_id": o.provider["config_id"]},
    ("POST", f"{API}/credentials/report"): lambda o: {"key_id": o.provider["key_id"], "result": "ok"},
    ("POST", f"{API}/model-configs"): lambda o: {"ai_provider_id": o.provider["id"], "model": f"m-{uuid.uuid4().hex[:8]}"},
    ("PATCH", f"{API}/model-configs/<config_id>"): lambda o: {"display_name": "Renamed"},
    ("PUT", f"{API}/user-ai-provider-keys/<provider_id>"): lambda o: {"api_key": new_key("byok")},
    ("POST", f"{API}/user-ai-provider-keys/<provider_id>/test"): lambda o: {},
    ("POST", f"{API}/providers"): lambda o: {"provider": o.free_legacy_type(), "api_key": new_key("central"),
                                             "allow_user_api_key": True},
    ("PATCH", f"{API}/providers/<provider_id>"): lambda o: {"display_name": "Renamed"},
    ("POST", f"{API}/groups"): lambda o: {"name": f"g-{uuid.uuid4().hex[:8]}"},
    ("PATCH", f"{API}/groups/<group_id>"): lambda o: {"display_name": "Renamed"},
    ("PUT", f"{API}/groups/<group_id>/members/<user_id>"): lambda o: {},
    ("PUT", f"{API}/user-provider-configs/<provider_id>"): lambda o: {"api_key": new_key("legacy-byok")},
}

FORM_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/login"): lambda o: {"email": o.world.member_a.email, "password": PASSWORD},
    ("POST", "/logout"): lambda o: {},
    ("POST", "/setup"): lambda o: {"email": "second@example.com", "password": PASSWORD, "confirm": PASSWORD},
    ("POST", "/settings/keys/<provider_id>"): lambda o: {"api_key": new_key("page")},
    ("POST", "/settings/keys/<provider_id>/remove"): lambda o: {},
    ("POST", "/settings/keys/<provider_id>/test"): lambda o: {},
    ("POST", "/settings/password"): lambda o: {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                               "confirm": NEW_PASSWORD},
    ("POST", "/settings/tokens"): lambda o: {"name": "laptop"},
    ("POST", "/settings/tokens/<token_id>/revoke"): lambda o: {},
    ("POST", "/admin/users"): lambda o: {"email": f"new-{uuid.uuid4().hex[:8]}@example.com", "name": "New",
                                         "password": PASSWORD, "role": "member"},
    ("POST", "/admin/users/<user_id>/deactivate"): lambda o: {},
    ("POST", "/admin/users/<user_id>/role"): lambda o: {"role": "admin"},
    ("POST", "/admin/groups/new"): lambda o: {"name": f"g-{uuid.uuid4().hex[:8]}", "display_name": "New"},
    ("POST", "/admin/groups/<group_id>/members"): lambda o: {"email": o.joiner_email},
    ("POST", "/admin/groups/<group_id>/members/<user_id>/remove"): lambda o: {},
    ("POST", "/admin/groups/<group_id>/edit"): lambda o: {"name": o.group["name"], "display_name": "Renamed"},
    ("POST", "/admin/groups/<group_id>/delete"): lambda o: {},
    ("POST", "/admin/providers/new"): lambda o: {"type": "openai", "name": f"new-{uuid.uuid4().hex[:8]}",
                                                 "key_policy": "provider_only", "enabled": "y"},
    ("POST", "/admin/providers/<provider_id>/edit"): lambda o: {
        "name": o.provider["name"], "display_name": "Renamed", "base_url": o.world.stub.url + "/v1",
        "key_policy": "user_preferred", "enabled": "y"},
    ("POST", "/admin/providers/<provider_id>/delete"): lambda o: {},
    ("POST", "/admin/providers/<provider_id>/keys"): lambda o: {"api_key": new_key("page-shared")},
    ("POST", "/admin/providers/<provider_id>/keys/<key_id>/delete"): lambda o: {},
    ("POST", "/admin/providers/<provider_id>/keys/<key_id>/test"): lambda o: {},
    ("POST", "/admin/providers/<provider_id>/discover"): lambda o: {},
    ("POST", "/admin/providers/<provider_id>/discover/config"): lambda o: {"model": STUB_MODELS[-1]},
    ("POST", "/admin/model-configs/new"): lambda o: {
        "ai_provider_id": o.provider["id"], "model": f"m-{uuid.uuid4().hex[:8]}", "context_limit": "1000",
        "compression_threshold": "70", "options": "{}", "enabled": "y"},
    ("POST", "/admin/model-configs/<config_id>/edit"): lambda o: {
        "model": o.provider["model"], "display_name": "Renamed", "context_limit": "1000",
        "compression_threshold": "70", "options": "{}", "enabled": "y"},
    ("POST", "/admin/model-configs/<config_id>/default"): lambda o: {},
    ("POST", "/admin/model-configs/<config_id>/delete"): lambda o: {},
    ("POST", "/admin/legacy-providers/new"): lambda o: {
        "provider": o.free_legacy_type(), "api_key": new_key("page-central"), "enabled": "y",
        "central_api_key_enabled": "y"},
    ("POST", "/admin/legacy-providers/<provider_id>/edit"): lambda o: {
        "display_name": "Renamed", "enabled": "y", "central_api_key_enabled": "y", "allow_user_api_key": "y",
        "allow_central_api_key_fallback": "y"},
    ("POST", "/admin/legacy-providers/<provider_id>/delete"): lambda o: {},
    ("POST", "/admin/legacy-providers/migrate"): lambda o: {},
}

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def is_api(rule: str) -> bool:
    return rule.startswith(API + "/")


def sample_body(method: str, rule: str, objects: Objects):
    """The sample body of a write route (None for reads and deletes). Fails for a write route
    that has none, so a new route cannot slip through untested."""
    if method not in ("POST", "PUT", "PATCH"):
        return None
    bodies = JSON_BODIES if is_api(rule) else FORM_BODIES
    assert (method, rule) in bodies, f"{method} {rule} has no sample body: add one to {'JSON' if is_api(rule) else 'FORM'}_BODIES"
    return bodies[(method, rule)](objects)


# --- what the database holds ----------------------------------------------------------------------


def database_rows(app, owner: uuid.UUID | None = None) -> dict[str, list[str]]:
    """Every row of every table (or only the rows of `owner`: their user row and every row with
    their user_id), as sorted text."""
    from app.extensions import db

    rows = {}
    with app.app_context(), db.engine.connect() as conn:
        for table in db.metadata.sorted_tables:
            stmt = sa.select(table)
            if owner is not None:
                if table.name == "users":
                    stmt = stmt.where(table.c.id == owner)
                elif "user_id" in table.c and table.name != "audit_events":
                    stmt = stmt.where(table.c.user_id == owner)
                else:
                    continue
            rows[table.name] = sorted(repr(tuple(row)) for row in conn.execute(stmt))
    return rows


# --- sending one request ---------------------------------------------------------------------------


class Call:
    """One request: its objects made, its path filled in and its body built, ready to send."""

    def __init__(self, world: World, role: str, way: str, method: str, rule: str):
        self.world, self.role, self.way, self.method, self.rule = world, role, way, method, rule
        self.objects = Objects(world)
        self.path = self.objects.path(rule)
        self.body = sample_body(method, rule, self.objects)

    def send(self, body: Any = None, extra_form: dict | None = None):
        """Send it as `role` through `way` ("bearer", "session" or "none")."""
        world, method = self.world, self.method
        body = self.body if body is None else body
        if self.way == "session":
            client, csrf = world.sessions[self.role]
        else:
            client, csrf = world.app.test_client(), None
        headers = {}
        if self.way == "bearer":
            headers["Authorization"] = f"Bearer {world.tokens[self.role]}"
        if is_api(self.rule):
            if self.way == "session" and method in UNSAFE:
                headers["X-CSRFToken"] = csrf
            return client.open(self.path, method=method, json=body, headers=headers)
        form = None
        if method in UNSAFE:
            form = {**(body or {}), **(extra_form or {}), "csrf_token": csrf or get_csrf(client, "/login")}
        return client.open(self.path, method=method, data=form, headers=headers)


def outcome(response, path: str) -> Any:
    """What the caller got: OK, LOGIN or the status (401, 403, 404...)."""
    status = response.status_code
    if 300 <= status < 400:
        location = urlsplit(response.headers.get("Location", ""))
        if location.path == "/login" and parse_qs(location.query).get("next", [""])[0].split("?")[0] == path:
            return LOGIN
        return OK
    if 200 <= status < 300:
        return OK
    return status


def ways(role: str, rule: str) -> tuple[str, ...]:
    if role == "anonymous":
        return ("none",)
    if role == "service":
        return ("bearer",)
    return ("bearer", "session") if is_api(rule) else ("session",)


@pytest.fixture(name="stub")
def stub_fixture():
    server = StubProvider(mode="ok", models=STUB_MODELS).start()
    yield server
    server.stop()


@pytest.fixture(name="world")
def world_fixture(app, stub):
    app.config["PRIVATE_BASE_URL_ALLOWLIST"] = "127.0.0.1"
    app.config["OUTBOUND_RATE_LIMIT"] = "1000 per minute"
    app.config["METRICS_TOKEN"] = "metrics-token-of-the-matrix-" + uuid.uuid4().hex
    return World(app, stub)


def test_every_route_has_a_row_in_the_matrix(app):
    routes = url_map_routes(app)
    assert sorted(routes - MATRIX.keys()) == [], "routes without a row in MATRIX"
    assert sorted(MATRIX.keys() - routes) == [], "rows in MATRIX for routes that no longer exist"


def test_every_write_route_has_a_sample_body(app):
    for method, rule in url_map_routes(app):
        if method in ("POST", "PUT", "PATCH"):
            bodies = JSON_BODIES if is_api(rule) else FORM_BODIES
            assert (method, rule) in bodies, f"{method} {rule} has no sample body"


@pytest.mark.parametrize(("method", "rule"), sorted(MATRIX), ids=[f"{m} {r}" for m, r in sorted(MATRIX)])
def test_authorization(world, method, rule):
    app = world.app
    problems = []
    for role, expected in zip(ROLES, MATRIX[(method, rule)], strict=True):
        for way in ways(role, rule):
            call = Call(world, role, way, method, rule)
            before = database_rows(app)
            other = {"member_a": world.member_b, "member_b": world.member_a}.get(role)
            theirs = database_rows(app, other.id) if other else None
            hits = len(world.stub.hits)

            response = call.send()
            path, objects = call.path, call.objects
            got = outcome(response, path)
            label = f"{role} via {way}: {method} {path}"
            if isinstance(expected, int) and response.status_code == expected and got != LOGIN:
                got = expected  # an exact status, e.g. a public page's own redirect
            if got != expected:
                problems.append(f"{label} answered {response.status_code} ({got}), expected {expected}")
                continue
            if is_api(rule) and got in (401, 403):
                assert response.get_json() == {"message": "Unauthorized." if got == 401 else "Forbidden."}, label
            if got in (401, 403, 404, LOGIN):
                assert database_rows(app) == before, f"{label} was refused but changed the database"
            if other is not None:
                assert database_rows(app, other.id) == theirs, f"{label} changed the rows of {other.email}"
            if role != "member_a" and "provider" in objects.__dict__:
                sent = [h.headers.get("authorization", "") for h in world.stub.hits[hits:]]
                assert not any(objects.provider["member_a_key"] in h for h in sent), f"{label} sent member A's key"
    assert not problems, "\n".join(problems)
