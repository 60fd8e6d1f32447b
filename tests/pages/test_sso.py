"""Single sign-on (SPEC section 10), through the pages a person uses, against a real OpenID provider.

The provider is `oidc-provider-mock` in its own process on loopback (tests/support/oidc.py); the
app talks to it through a relay that passes everything on and keeps what went through, so each
test can check that no code, token, PKCE verifier or the client secret reached a page, a
response header, a log record or the database (`nothing_secret_leaks`, after every test).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import socket
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from tests.support import PASSWORD, get_csrf, login
from tests.support.oidc import OidcProvider, Relay, SsoBrowser

CLIENT_ID = "switchboard"
CLIENT_SECRET = "sso-client-secret-" + uuid.uuid4().hex
ADMIN_GROUP = "switchboard-admins"
FAILED = "Sign-in failed"
JWT = re.compile(r"eyJ[\w-]*\.eyJ[\w-]*\.")


# --- the provider, the app, the people ------------------------------------------------------------


_RELAYS: list[Relay] = []


@pytest.fixture
def make_relay(oidc_provider):
    """Relays in front of a provider (the run's one by default), stopped after the test."""
    made = []

    def start(upstream: str | None = None, port: int = 0) -> Relay:
        relay = Relay(upstream or oidc_provider.url, port=port).start()
        made.append(relay)
        _RELAYS.append(relay)
        return relay

    yield start
    for relay in made:
        relay.stop()


@pytest.fixture
def relay(make_relay):
    return make_relay()


def sso_settings(issuer: str, **more) -> dict:
    return {"OIDC_ISSUER": issuer, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_GROUPS_CLAIM": "groups", "OIDC_ADMIN_GROUP": ADMIN_GROUP, **more}


@pytest.fixture
def sso_app(make_app, relay):
    return make_app(**sso_settings(relay.url))


@pytest.fixture
def person(oidc_provider):
    """`person(email=..., verified=..., name=..., groups=...)`: a user at the provider; returns their sub."""

    def make(email: str | None = None, *, verified=True, name: str = "Jo Doe", groups=None, **claims) -> str:
        sub = f"sub-{uuid.uuid4().hex[:12]}"
        update(sub, email=email or f"{sub}@example.com", verified=verified, name=name, groups=groups, **claims)
        return sub

    def update(sub: str, *, email: str, verified=True, name: str = "Jo Doe", groups=None, **claims) -> None:
        claims = {"email": email, "name": name, **claims}
        if verified is not None:
            claims["email_verified"] = verified
        if groups is not None:
            claims["groups"] = groups
        oidc_provider.set_user(sub, **claims)

    make.update = update
    return make


@pytest.fixture(autouse=True)
def nothing_secret_leaks(app, monkeypatch, caplog):
    """After each test: no code, token or PKCE verifier that went through a relay, nor the client
    secret, nor any JWT, in a response (body or headers), a log record or a database row; and no
    code or token inside a session cookie (decoded). The cookie does carry the PKCE verifier while
    a sign-in is under way: that is where Authlib binds it to the browser."""
    caplog.set_level(logging.DEBUG)
    _RELAYS.clear()
    seen: list[tuple[str, str]] = []
    original = FlaskClient.open

    def open_and_keep(self, *args, **kwargs):
        response = original(self, *args, **kwargs)
        seen.append((f"{response.request.method} {response.request.path}",
                     str(response.headers) + response.get_data(as_text=True)))
        return response

    monkeypatch.setattr(FlaskClient, "open", open_and_keep)
    yield seen
    exchanged = [s for relay in _RELAYS for s in relay.secrets()]
    verifiers = {v for relay in _RELAYS for e in relay.exchanges if e.path == "/oauth2/token"
                 for v in parse_qs(e.request_body.decode()).get("code_verifier", [])}
    serializer = app.session_interface.get_signing_serializer(app)
    cookies = [(f"session cookie of {where}", json.dumps(serializer.loads(value)))
               for where, text in seen for value in re.findall(r"\bsession=([^;\s]+)", text) if value]
    for where, text in [*seen, ("log", caplog.text), *database_texts(app), *cookies]:
        for secret in [CLIENT_SECRET, *exchanged]:
            if secret in verifiers and where.startswith("session cookie"):
                continue
            assert secret not in text, f"a code, token or secret reached {where}"
        assert not JWT.search(text), f"a JWT reached {where}"


def database_texts(app) -> list[tuple[str, str]]:
    from app.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        return [(f"table {table.name}", repr(conn.execute(sa.select(table)).all())) for table in db.metadata.sorted_tables]


def in_app(app, fn):
    with app.app_context():
        return fn()


def user_row(app, email: str):
    from app.extensions import db
    from app.models import User

    return in_app(app, lambda: db.session.execute(sa.select(User).where(User.email == email)).scalar_one_or_none())


def count(app, model) -> int:
    from app.extensions import db

    return in_app(app, lambda: db.session.execute(sa.select(sa.func.count()).select_from(model)).scalar_one())


def audit(app, action: str) -> list[dict]:
    from app.extensions import db
    from app.models import AuditEvent

    def read():
        rows = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == action)
                                  .order_by(AuditEvent.created_at, AuditEvent.id)).scalars()
        return [{"actor": r.actor_label, "resource_id": r.resource_id, **(r.details or {})} for r in rows]

    return in_app(app, read)


def me(client) -> dict | None:
    response = client.get("/api/experimental/chats/me")
    return response.get_json() if response.status_code == 200 else None


def failed(response, status: int) -> str:
    """The sign-in error page: the status, a plain sentence and a link back, nothing else."""
    html = response.get_data(as_text=True)
    assert response.status_code == status, (response.status_code, html[:300])
    assert FAILED in html and "Back to sign in" in html
    assert 'href="/login' in html
    for leaked in ("invalid_grant", "error_description", "Traceback", "Internal error"):
        assert leaked not in html
    return html


# --- the sign-in page ------------------------------------------------------------------------------


def test_login_page_has_the_sso_button_only_when_sso_is_configured(app, client, admin, sso_app):
    page = client.get("/login").get_data(as_text=True)
    assert "Sign in with SSO" not in page
    assert client.get("/auth/oidc/login").status_code == 404
    assert client.get("/auth/oidc/callback?code=x&state=y").status_code == 404

    page = sso_app.test_client().get("/login?next=/models").get_data(as_text=True)
    assert 'href="/auth/oidc/login?next=/models"' in page
    assert ">Sign in with SSO</a>" in page
    assert 'name="password"' in page  # the password form is still there


def test_password_login_false_shows_only_the_button_and_post_login_is_404(make_app, relay, admin, person):
    app = make_app(**sso_settings(relay.url), PASSWORD_LOGIN=False)
    client = app.test_client()
    page = client.get("/login")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Sign in with SSO" in html
    assert 'name="password"' not in html and 'name="email"' not in html
    csrf = get_csrf(client, "/login")
    refused = client.post("/login", data={"email": admin.email, "password": PASSWORD, "csrf_token": csrf})
    assert refused.status_code == 404
    assert me(client) is None

    # SSO still signs people in, and the CLI still creates users and tokens.
    assert SsoBrowser(client).sign_in(person()).status_code == 302
    assert me(client)["role"] == "member"
    runner = app.test_cli_runner()
    created = runner.invoke(args=["users", "create", "cli@example.com", "--password", PASSWORD])
    assert created.exit_code == 0, created.output
    token = runner.invoke(args=["tokens", "create", "cli@example.com"])
    assert token.exit_code == 0 and token.output.strip().splitlines()[-1].startswith("sb_")


def test_password_login_false_has_no_setup_page(make_app, relay):
    client = make_app(**sso_settings(relay.url), PASSWORD_LOGIN=False).test_client()
    assert client.get("/login").status_code == 200  # no user yet, but no /setup for a password either
    assert client.get("/setup").status_code == 404


# --- the protocol ---------------------------------------------------------------------------------


def test_the_flow_uses_pkce_state_and_nonce(sso_app, relay, person):
    browser = SsoBrowser(sso_app.test_client())
    started = browser.start()
    query = parse_qs(urlsplit(started.headers["Location"]).query)
    assert started.headers["Location"].startswith(relay.url + "/oauth2/authorize?")
    assert query["response_type"] == ["code"] and query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == ["http://localhost/auth/oidc/callback"]
    assert query["scope"] == ["openid email profile"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["state"][0]) >= 20 and len(query["nonce"][0]) >= 20

    browser.finish(browser.authorize(started.headers["Location"], person()))
    sent = relay.token_request()
    verifier = sent["code_verifier"][0]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    assert challenge == query["code_challenge"][0]
    assert "client_secret" not in sent  # sent as HTTP Basic credentials, not in the body


def test_discovery_is_fetched_once_per_process(sso_app, relay, person):
    for _ in range(2):
        assert SsoBrowser(sso_app.test_client()).sign_in(person()).status_code == 302
    assert relay.hits("/.well-known/openid-configuration") == 1
    assert relay.hits("/jwks") == 1


# --- accounts ---------------------------------------------------------------------------------------


def test_first_sign_in_creates_a_member_and_the_next_one_finds_them_by_subject(sso_app, person):
    from app.models import User, UserIdentity

    sub = person("New.Person@Example.com", name="New Person")
    client = sso_app.test_client()
    done = SsoBrowser(client).sign_in(sub, next="/models")
    assert done.status_code == 302 and done.headers["Location"] == "/models"
    assert me(client) == {"id": me(client)["id"], "email": "new.person@example.com", "name": "New Person",
                          "role": "member"}
    assert client.get("/models").status_code == 200
    user = user_row(sso_app, "new.person@example.com")
    assert user.password_hash is None
    assert audit(sso_app, "user.create")[-1] == {"actor": "sso", "resource_id": str(user.id),
                                                      "email": "new.person@example.com", "role": "member",
                                                      "source": "sso"}
    login_event = audit(sso_app, "auth.login")[-1]
    assert login_event["method"] == "oidc" and login_event["account"] == "created"

    # The provider changes the email: the same account (matched by issuer and sub), unchanged.
    person.update(sub, email="renamed@example.com", name="Someone Else")
    other = sso_app.test_client()
    assert SsoBrowser(other).sign_in(sub).status_code == 302
    assert me(other)["id"] == me(client)["id"]
    assert me(other)["email"] == "new.person@example.com"
    assert count(sso_app, User) == 1 and count(sso_app, UserIdentity) == 1
    assert audit(sso_app, "auth.login")[-1]["account"] == "matched"


def test_a_user_made_by_sso_cannot_sign_in_with_a_password(sso_app, person):
    sub = person("nopass@example.com")
    SsoBrowser(sso_app.test_client()).sign_in(sub)
    client = sso_app.test_client()
    response = login(client, "nopass@example.com", "any password at all")
    assert response.status_code == 401
    assert "Incorrect email or password." in response.get_data(as_text=True)
    assert me(client) is None
    assert audit(sso_app, "auth.login_failed")[-1]["email"] == "nopass@example.com"


@pytest.mark.parametrize("verified", [False, None, "false"])
def test_an_existing_password_user_is_linked_only_when_the_email_is_verified(sso_app, member, person, verified):
    from app.models import UserIdentity

    sub = person(member.email, verified=verified)
    client = sso_app.test_client()
    html = failed(SsoBrowser(client).sign_in(sub), 403)
    assert "must be verified" in html
    assert me(client) is None
    assert count(sso_app, UserIdentity) == 0
    event = audit(sso_app, "auth.login_failed")[-1]
    assert event["reason"] == "email_not_verified" and event["method"] == "oidc"
    assert event["resource_id"] == str(member.id)

    person.update(sub, email=member.email.upper(), verified=True)
    assert SsoBrowser(client).sign_in(sub).status_code == 302
    assert me(client)["id"] == str(member.id)
    assert audit(sso_app, "auth.login")[-1]["account"] == "linked"
    assert audit(sso_app, "user.sso_link")[-1]["subject"] == sub
    assert login(sso_app.test_client(), member.email).status_code == 302  # the password still works


@pytest.mark.parametrize("verified", [False, "false"])
def test_an_address_the_provider_calls_unverified_creates_no_account(sso_app, person, verified):
    """Whoever first claimed an address must not get an account that its verified owner would later
    link to: an explicit `email_verified: false` creates nothing (an absent claim is not a no)."""
    from app.models import User

    client = sso_app.test_client()
    html = failed(SsoBrowser(client).sign_in(person("claimed@example.com", verified=verified)), 403)
    assert "says your email address is not verified" in html
    assert count(sso_app, User) == 0 and me(client) is None
    assert audit(sso_app, "auth.login_failed")[-1]["reason"] == "email_unverified"


def test_a_second_subject_of_the_same_provider_is_never_linked_to_an_account(sso_app, person):
    from app.models import UserIdentity

    first = person("shared@example.com", verified=None)  # an account made just in time (no claim either way)
    assert SsoBrowser(sso_app.test_client()).sign_in(first).status_code == 302
    second = person("shared@example.com", verified=True)
    client = sso_app.test_client()
    html = failed(SsoBrowser(client).sign_in(second), 403)
    assert "already linked to another sign-in" in html
    assert me(client) is None and count(sso_app, UserIdentity) == 1
    assert audit(sso_app, "auth.login_failed")[-1]["reason"] == "identity_conflict"


def test_a_device_cookie_and_the_email_of_an_account_without_a_password(sso_app, member, person):
    """A browser that holds a device cookie types the email of an SSO-only account: a failed
    sign-in like any other, never a 500."""
    SsoBrowser(sso_app.test_client()).sign_in(person("ssoonly@example.com"))
    client = sso_app.test_client()
    assert login(client, member.email).status_code == 302  # this browser now holds a device cookie
    client.post("/logout", data={"csrf_token": get_csrf(client, "/settings/tokens")})
    response = login(client, "ssoonly@example.com", "any password at all")
    assert response.status_code == 401


def test_a_deactivated_user_is_refused(sso_app, admin, person):
    from app.models import UserSession
    from app.services import users
    from app.services.base import Actor

    sub = person("leaver@example.com")
    SsoBrowser(sso_app.test_client()).sign_in(sub)
    leaver = user_row(sso_app, "leaver@example.com")
    in_app(sso_app, lambda: users.deactivate_user(Actor.for_user(admin), leaver.id))
    sessions = count(sso_app, UserSession)

    client = sso_app.test_client()
    html = failed(SsoBrowser(client).sign_in(sub), 403)
    assert "deactivated" in html
    assert me(client) is None
    assert count(sso_app, UserSession) == sessions
    assert audit(sso_app, "auth.login_failed")[-1]["reason"] == "user_deactivated"


def test_an_email_outside_the_allowed_domains_is_refused(make_app, relay, person):
    from app.models import User

    app = make_app(**sso_settings(relay.url), OIDC_ALLOWED_EMAIL_DOMAINS=" Example.com, @example.org ")
    outsider = app.test_client()
    html = failed(SsoBrowser(outsider).sign_in(person("someone@example.net")), 403)
    assert "email domain" in html
    assert me(outsider) is None and count(app, User) == 0
    event = audit(app, "auth.login_failed")[-1]
    assert event["reason"] == "email_domain_refused" and event["email"] == "someone@example.net"
    # A subdomain is another domain.
    failed(SsoBrowser(app.test_client()).sign_in(person("someone@mail.example.org")), 403)

    insider = app.test_client()
    assert SsoBrowser(insider).sign_in(person("someone@EXAMPLE.ORG")).status_code == 302
    assert me(insider)["email"] == "someone@example.org"


def test_a_provider_that_shares_no_email_is_refused(sso_app, oidc_provider):
    sub = f"sub-{uuid.uuid4().hex[:12]}"
    oidc_provider.set_user(sub, name="No Mail")
    client = sso_app.test_client()
    assert "email" in failed(SsoBrowser(client).sign_in(sub), 403)
    assert audit(sso_app, "auth.login_failed")[-1]["reason"] == "email_missing"


# --- groups and the admin role ------------------------------------------------------------------------


def make_group(app, name: str):
    from app.extensions import db
    from app.models import Group

    def create():
        group = Group(name=name, display_name=name.title())
        db.session.add(group)
        db.session.commit()
        return group.id

    return in_app(app, create)


def add_manual_member(app, group_id, user_id) -> None:
    from app.extensions import db
    from app.models import GroupMember

    def add():
        db.session.add(GroupMember(group_id=group_id, user_id=user_id, source="manual"))
        db.session.commit()

    in_app(app, add)


def memberships(app, email: str) -> dict[str, str]:
    from app.extensions import db
    from app.models import Group, GroupMember, User

    return in_app(app, lambda: dict(db.session.execute(
        sa.select(Group.name, GroupMember.source).join(GroupMember, GroupMember.group_id == Group.id)
        .join(User, User.id == GroupMember.user_id).where(User.email == email)).all()))


def test_the_groups_claim_adds_and_removes_sso_memberships_and_leaves_manual_ones(sso_app, relay, member, person):
    from app.models import Group

    eng, ops, design = (make_group(sso_app, n) for n in ("eng", "ops", "design"))
    assert design != ops
    add_manual_member(sso_app, ops, member.id)
    add_manual_member(sso_app, design, member.id)
    sub = person(member.email, groups=["eng", "ops", "not-a-group", "Eng"])

    assert SsoBrowser(sso_app.test_client()).sign_in(sub).status_code == 302
    assert memberships(sso_app, member.email) == {"eng": "sso", "ops": "manual", "design": "manual"}
    assert count(sso_app, Group) == 3  # no group is made from a claim
    added = audit(sso_app, "group.member_add")
    assert [(e["group"], e["source"], e["actor"]) for e in added] == [("eng", "sso", "sso")]
    assert added[0]["resource_id"] == str(eng) and added[0]["user_id"] == str(member.id)

    person.update(sub, email=member.email, groups=["design"])
    assert SsoBrowser(sso_app.test_client()).sign_in(sub).status_code == 302
    assert memberships(sso_app, member.email) == {"ops": "manual", "design": "manual"}
    removed = audit(sso_app, "group.member_remove")
    assert [(e["group"], e["source"]) for e in removed] == [("eng", "sso")]

    # No groups claim at all (the provider leaves it out for people without groups): no sso
    # memberships, once the userinfo endpoint has been asked too.
    person.update(sub, email=member.email, groups=["eng"])
    SsoBrowser(sso_app.test_client()).sign_in(sub)
    assert relay.hits("/userinfo") == 0
    person.update(sub, email=member.email)
    SsoBrowser(sso_app.test_client()).sign_in(sub)
    assert relay.hits("/userinfo") == 1
    assert memberships(sso_app, member.email) == {"ops": "manual", "design": "manual"}


def test_the_admin_group_promotes_and_demotes_but_never_the_last_admin(sso_app, admin, person):
    from app.services import users
    from app.services.base import Actor

    sub = person("boss@example.com", groups=[ADMIN_GROUP])
    first = sso_app.test_client()
    SsoBrowser(first).sign_in(sub)
    assert me(first)["role"] == "admin"
    assert first.get("/admin/users").status_code == 200
    boss = user_row(sso_app, "boss@example.com")
    assert audit(sso_app, "user.role_change")[-1] == {"actor": "sso", "resource_id": str(boss.id), "role": "admin"}

    # Out of the group: a member again, and the browser still signed in as an admin is signed out.
    person.update(sub, email="boss@example.com", groups=["eng"])
    second = sso_app.test_client()
    SsoBrowser(second).sign_in(sub)
    assert me(second)["role"] == "member"
    assert me(first) is None

    # Back in the group, then the password admin steps down: boss is the last active admin.
    person.update(sub, email="boss@example.com", groups=[ADMIN_GROUP])
    SsoBrowser(sso_app.test_client()).sign_in(sub)
    in_app(sso_app, lambda: users.set_role(Actor.for_user(admin), admin.id, "member"))
    person.update(sub, email="boss@example.com", groups=[])
    last = sso_app.test_client()
    assert SsoBrowser(last).sign_in(sub).status_code == 302
    assert me(last)["role"] == "admin"
    assert audit(sso_app, "auth.login")[-1]["role_kept"] == "last active administrator"


def test_without_an_admin_group_the_role_is_left_alone(make_app, relay, admin, person):
    app = make_app(**sso_settings(relay.url, OIDC_ADMIN_GROUP=None))
    client = app.test_client()
    SsoBrowser(client).sign_in(person(admin.email, groups=[]))
    assert me(client)["role"] == "admin"


# --- next ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "lands"), [
    ("/settings/tokens", "/settings/tokens"), ("/admin/users?page=2", "/admin/users?page=2"),
    ("//evil.example", "/"), ("https://evil.example", "/"), ("/\\evil.example", "/"), ("javascript:alert(1)", "/"),
    ("/\t/evil.example", "/"), (" //evil.example", "/"),
])
def test_next_follows_the_password_sign_in_rule(sso_app, person, target, lands):
    client = sso_app.test_client()
    done = SsoBrowser(client).sign_in(person(), next=target)
    assert done.status_code == 302 and done.headers["Location"] == lands
    # Signed in, the SSO button applies the same rule.
    again = client.get("/auth/oidc/login", query_string={"next": target})
    assert again.status_code == 302 and again.headers["Location"] == lands


def test_next_is_checked_again_on_the_way_out(sso_app, person):
    client = sso_app.test_client()
    browser = SsoBrowser(client)
    started = browser.start(next="/models")
    with client.session_transaction() as session:
        key = next(k for k in session if k.startswith("_state_sso_"))
        state = session[key]
        state["data"]["next"] = "https://evil.example/"
        session[key] = state
    done = browser.finish(browser.authorize(started.headers["Location"], person()))
    assert done.headers["Location"] == "/"


# --- failures: each ends on the sign-in error page -----------------------------------------------------


def test_a_forged_state_is_refused(sso_app, person):
    client = sso_app.test_client()
    browser = SsoBrowser(client)
    callback = browser.authorize(browser.start().headers["Location"], person())
    forged = callback.replace("state=", "state=forged")
    html = failed(browser.finish(forged), 400)
    assert "not started in this browser" in html
    assert me(client) is None
    assert audit(sso_app, "auth.login_failed")[-1]["reason"] == "state_mismatch"
    # Another browser cannot finish this one's sign-in either.
    failed(SsoBrowser(sso_app.test_client()).finish(callback), 400)


def test_a_replayed_callback_is_refused(sso_app, relay, person):
    from app.models import UserSession

    client = sso_app.test_client()
    browser = SsoBrowser(client)
    callback = browser.authorize(browser.start().headers["Location"], person())
    assert browser.finish(callback).status_code == 302
    assert count(sso_app, UserSession) == 1
    failed(browser.finish(callback), 400)
    failed(SsoBrowser(sso_app.test_client()).finish(callback), 400)
    assert count(sso_app, UserSession) == 1
    assert relay.hits("/oauth2/token") == 1  # the code was never sent again
    assert [e["reason"] for e in audit(sso_app, "auth.login_failed")] == ["state_mismatch", "state_mismatch"]


def test_a_wrong_nonce_is_refused(sso_app, person):
    """The nonce this browser keeps is changed before the callback: the provider's ID token
    carries the one sent at the start, which no longer matches."""
    client = sso_app.test_client()
    browser = SsoBrowser(client)
    started = browser.start()
    with client.session_transaction() as session:
        key = next(k for k in session if k.startswith("_state_sso_"))
        state = session[key]
        state["data"]["nonce"] = "another-nonce-" + uuid.uuid4().hex
        session[key] = state
    html = failed(browser.finish(browser.authorize(started.headers["Location"], person())), 401)
    assert "could not be verified" in html
    assert me(client) is None
    event = audit(sso_app, "auth.login_failed")[-1]
    assert (event["reason"], event["check"]) == ("invalid_token", "nonce")


def test_an_id_token_for_another_audience_is_refused(sso_app, relay, person):
    """A real ID token for another client: the browser authorizes `another-client` at the provider,
    and the relay presents that client's credentials when the app exchanges the code, so the
    provider issues a correctly signed token, with this sign-in's nonce, whose `aud` is not ours."""
    client = sso_app.test_client()
    browser = SsoBrowser(client)
    started = browser.start()
    relay.audience = "another-client"
    callback = browser.authorize(started.headers["Location"], person(), client_id="another-client")
    failed(browser.finish(callback), 401)
    assert me(client) is None
    event = audit(sso_app, "auth.login_failed")[-1]
    assert (event["reason"], event["check"]) == ("invalid_token", "aud")


def test_a_code_issued_to_another_client_is_refused(sso_app, person):
    client = sso_app.test_client()
    browser = SsoBrowser(client)
    callback = browser.authorize(browser.start().headers["Location"], person(), client_id="another-client")
    failed(browser.finish(callback), 400)
    assert audit(sso_app, "auth.login_failed")[-1]["reason"] == "code_rejected"


def test_an_id_token_with_a_bad_signature_is_refused(sso_app, relay, person):
    relay.tamper_signature = True
    client = sso_app.test_client()
    failed(SsoBrowser(client).sign_in(person()), 401)
    assert me(client) is None
    event = audit(sso_app, "auth.login_failed")[-1]
    assert (event["reason"], event["check"]) == ("invalid_token", "signature")


@pytest.fixture(scope="module")
def expiring_provider():
    """A second provider whose ID tokens expired ten minutes before they were issued (its token
    lifetime option set to -600 s): real tokens, signed by it, past `exp` beyond any clock skew."""
    provider = OidcProvider(token_max_age=-600).start()
    yield provider
    provider.stop()


def test_an_expired_id_token_is_refused(make_app, make_relay, expiring_provider):
    relay = make_relay(expiring_provider.url)
    app = make_app(**sso_settings(relay.url))
    sub = f"sub-{uuid.uuid4().hex[:12]}"
    expiring_provider.set_user(sub, email=f"{sub}@example.com", email_verified=True)
    client = app.test_client()
    failed(SsoBrowser(client).sign_in(sub), 401)
    assert me(client) is None
    event = audit(app, "auth.login_failed")[-1]
    assert (event["reason"], event["check"]) == ("invalid_token", "exp")


def test_a_refusal_at_the_provider_is_refused_here_too(sso_app, person):
    client = sso_app.test_client()
    browser = SsoBrowser(client)
    callback = browser.authorize(browser.start().headers["Location"], person(), deny=True)
    assert "error=access_denied" in callback
    failed(browser.finish(callback), 400)
    assert audit(sso_app, "auth.login_failed")[-1]["reason"] == "provider_error"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_starts_while_the_provider_is_down_and_uses_it_once_it_is_up(make_app, make_relay, admin, person):
    port = closed_port()
    app = make_app(**sso_settings(f"http://127.0.0.1:{port}"))
    client = app.test_client()
    assert client.get("/login").status_code == 200
    html = failed(client.get("/auth/oidc/login"), 502)
    assert "could not be reached" in html
    failed(client.get("/auth/oidc/login"), 502)  # tried again, not a failure kept from before
    assert [e["reason"] for e in audit(app, "auth.login_failed")] == ["provider_unreachable"] * 2

    make_relay(port=port)  # the provider comes up on that address
    assert SsoBrowser(client).sign_in(person()).status_code == 302
    assert me(client) is not None


def test_the_provider_going_down_mid_sign_in_ends_on_the_502_page(sso_app, relay, person):
    client = sso_app.test_client()
    browser = SsoBrowser(client)
    callback = browser.authorize(browser.start().headers["Location"], person())
    relay.stop()
    failed(browser.finish(callback), 502)
    assert me(client) is None
    assert audit(sso_app, "auth.login_failed")[-1]["reason"] == "provider_unreachable"


def test_a_provider_that_does_not_answer_ends_on_the_502_page_within_the_timeout(make_app, relay, person):
    app = make_app(**sso_settings(relay.url), OUTBOUND_READ_TIMEOUT=0.5)
    client = app.test_client()
    relay.hang = True
    failed(client.get("/auth/oidc/login"), 502)
    assert audit(app, "auth.login_failed")[-1]["reason"] == "provider_unreachable"


def test_a_discovery_document_for_another_issuer_is_not_used(make_app, relay):
    """Issuers are compared exactly: OIDC_ISSUER written with a trailing slash is another issuer
    than the one the provider's document names, so nobody is signed in through it."""
    app = make_app(**sso_settings(relay.url + "/"))
    html = failed(app.test_client().get("/auth/oidc/login"), 502)
    assert "Ask an administrator" in html
    assert audit(app, "auth.login_failed")[-1]["reason"] == "provider_invalid"


def test_the_redirect_uri_can_be_set_for_a_proxy_in_front(make_app, relay):
    """Behind a TLS terminator the app sees plain http and the proxy's host: OIDC_REDIRECT_URI is
    what the provider registered, and what the flow sends."""
    app = make_app(**sso_settings(relay.url, OIDC_REDIRECT_URI="https://switchboard.example.com/auth/oidc/callback"))
    started = app.test_client().get("/auth/oidc/login")
    query = parse_qs(urlsplit(started.headers["Location"]).query)
    assert query["redirect_uri"] == ["https://switchboard.example.com/auth/oidc/callback"]
