"""Sign-in, sessions, setup, password change, rate limits and the admin pages for users, through
the pages a browser uses."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import uuid
from contextlib import contextmanager

import pytest
import redis
import sqlalchemy as sa

from tests.support import PASSWORD, Api, get_csrf, is_postgres, login, make_token, make_user, new_key, post_form

NEW_PASSWORD = "a different long passphrase"


def session_cookie(client, name: str = "session") -> str | None:
    cookie = client.get_cookie(name)
    return cookie.value if cookie else None


def replay(app, cookie_value: str, name: str = "session"):
    """A fresh browser that holds only `cookie_value` (e.g. copied before sign-out)."""
    other = app.test_client()
    other.set_cookie(name, cookie_value)
    return other


def signed_in(client) -> bool:
    response = client.get("/settings/tokens")
    return response.status_code == 200


def field_error(html: str, field_id: str) -> str:
    """The error text shown right under the field `field_id` (the form macro's layout)."""
    match = re.search(rf'<p class="field-error" id="{field_id}-error">([^<]*)</p>', html)
    assert match, f"no error next to field {field_id}"
    return match.group(1)


# --- first-run setup -------------------------------------------------------------------------


def test_no_users_sends_visitors_to_setup(app, client):
    assert client.get("/").headers["Location"] == "/setup"
    assert client.get("/login").headers["Location"] == "/setup"


def test_setup_creates_the_first_admin_once_then_404(app, client):
    page = client.get("/setup")
    assert page.status_code == 200
    assert "Create the first administrator" in page.get_data(as_text=True)

    response = post_form(client, "/setup", {"email": "First@Example.com", "name": "First", "password": PASSWORD,
                                            "confirm": PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"

    assert client.get("/setup").status_code == 404
    token = get_csrf(client, "/login")
    again = client.post("/setup", data={"email": "second@example.com", "password": PASSWORD, "confirm": PASSWORD,
                                        "csrf_token": token})
    assert again.status_code == 404

    assert login(client, "first@example.com").status_code == 302
    me = client.get("/api/experimental/chats/me").get_json()
    assert me["email"] == "first@example.com"
    assert me["role"] == "admin"


def test_setup_shows_each_problem_next_to_its_field(app, client):
    response = post_form(client, "/setup", {"email": "not-an-email", "password": "short", "confirm": "other"})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "do not match" in field_error(html, "confirm")
    assert client.get("/setup").status_code == 200  # nothing was created

    response = post_form(client, "/setup", {"email": "a@example.com", "password": "short", "confirm": "short"})
    assert response.status_code == 400
    assert "at least 12 characters" in field_error(response.get_data(as_text=True), "password")
    assert client.get("/setup").status_code == 200


# --- sign-in and sign-out --------------------------------------------------------------------


def test_login_and_logout(app, client, member):
    page = client.get("/login")
    assert page.status_code == 200
    response = login(client, "MEMBER@example.com ")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    assert "Mel Member" in home.get_data(as_text=True)
    # Signed in: the login page sends you on.
    assert client.get("/login").status_code == 302

    response = post_form(client, "/logout", {}, csrf_path="/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert "You have been signed out." in client.get("/login").get_data(as_text=True)
    assert client.get("/").headers["Location"].startswith("/login")


def test_wrong_password_unknown_email_and_deactivated_user_look_alike(app, client, admin, member):
    from app.services import users
    from app.services.base import Actor

    with app.app_context():
        users.deactivate_user(Actor.system("test"), member.id)
    answers = []
    for email, password in (("admin@example.com", "wrong password!!"), ("nobody@example.com", PASSWORD),
                            ("member@example.com", PASSWORD)):
        response = login(client, email, password)
        assert response.status_code == 401
        html = response.get_data(as_text=True)
        answers.append(field_error(html, "password"))
        assert password not in html
    assert answers == ["Incorrect email or password."] * 3
    assert client.get("/").headers["Location"].startswith("/login")


def test_logout_needs_post_and_csrf(app, client, member):
    login(client, member.email)
    assert client.get("/logout").status_code == 405
    response = client.post("/logout")
    assert response.status_code == 400
    assert "Bad request" in response.get_data(as_text=True)
    assert signed_in(client)


def test_logout_ends_the_session_server_side(app, client, member):
    login(client, member.email)
    cookie = session_cookie(client)
    assert cookie
    assert signed_in(replay(app, cookie))

    post_form(client, "/logout", {}, csrf_path="/")
    stolen = replay(app, cookie)
    response = stolen.get("/settings/tokens")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    assert Api(stolen).get("/me").status_code == 401


def test_each_sign_in_gets_a_new_session(app, member):
    first, second = app.test_client(), app.test_client()
    first.get("/login")
    before = session_cookie(first)
    login(first, member.email)
    login(second, member.email)
    assert session_cookie(first) != before
    assert session_cookie(first) != session_cookie(second)

    # Signing out in one browser leaves the other signed in.
    post_form(first, "/logout", {}, csrf_path="/")
    assert not signed_in(first)
    assert signed_in(second)


def test_session_ends_after_its_lifetime(app, client, member):
    login(client, member.email)
    assert signed_in(client)
    app.config["PERMANENT_SESSION_LIFETIME"] = 0
    assert not signed_in(client)


@pytest.mark.parametrize("target", ["/settings/tokens", "/admin/users?page=2"])
def test_next_leads_to_a_path_of_this_app(app, client, admin, target):
    token = get_csrf(client, "/login")
    response = client.post("/login", query_string={"next": target},
                           data={"email": admin.email, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == target


@pytest.mark.parametrize("target", [
    "//evil.example", "https://evil.example", "/\\evil.example", "\\\\evil.example", "javascript:alert(1)",
    "/\t/evil.example", "http:/evil.example", " //evil.example", "evil.example", "////evil.example",
])
def test_next_never_leaves_the_app(app, client, member, target):
    token = get_csrf(client, "/login")
    response = client.post("/login", query_string={"next": target},
                           data={"email": member.email, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    # Already signed in, the login page applies the same rule.
    again = client.get("/login", query_string={"next": target})
    assert again.headers["Location"] == "/"


def test_protected_page_sends_to_login_and_back(app, client, member):
    response = client.get("/settings/password")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/settings/password"
    token = get_csrf(client, response.headers["Location"])
    done = client.post(response.headers["Location"],
                       data={"email": member.email, "password": PASSWORD, "csrf_token": token})
    assert done.headers["Location"] == "/settings/password"


# --- CSRF on forms ---------------------------------------------------------------------------


def test_form_post_without_csrf_is_400(app, client, admin):
    response = client.post("/login", data={"email": admin.email, "password": PASSWORD})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Reload the page and try again" in html
    assert 'class="topbar"' in html  # the error page is in the layout
    assert not signed_in(client)

    login(client, admin.email)
    for path, data in (("/admin/users", {"email": "x@example.com", "password": PASSWORD, "role": "member"}),
                       ("/settings/tokens", {"name": "laptop"}),
                       ("/settings/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                               "confirm": NEW_PASSWORD})):
        assert client.post(path, data=data).status_code == 400
        assert client.post(path, data={**data, "csrf_token": "forged"}).status_code == 400
    from app.services import users

    with app.app_context():
        assert [u.email for u in users.list_users()[0]] == ["admin@example.com"]
    assert login(app.test_client(), admin.email).status_code == 302  # password unchanged


def test_https_form_posts_work_with_the_referrer_a_browser_sends(make_app, member):
    secure = make_app(SESSION_COOKIE_SECURE=True)
    client = secure.test_client()
    page = client.get("/login", base_url="https://localhost")
    assert page.headers["Referrer-Policy"] == "same-origin"
    token = get_csrf(client, "/login")
    data = {"email": member.email, "password": PASSWORD, "csrf_token": token}
    # Flask-WTF insists on a same-origin Referer over HTTPS; with `same-origin` the browser sends it.
    foreign = client.post("/login", data=data, base_url="https://localhost", headers={"Referer": "https://evil.example/"})
    assert foreign.status_code == 400
    response = client.post("/login", data=data, base_url="https://localhost",
                           headers={"Referer": "https://localhost/login"})
    assert response.status_code == 302


# --- cookies ---------------------------------------------------------------------------------


def set_cookie_headers(response, name: str) -> list[str]:
    return [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]


def test_session_cookie_flags_over_plain_http(app, client, member):
    response = login(client, member.email)
    (cookie,) = set_cookie_headers(response, "session")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie


def test_session_cookie_flags_when_secure(make_app, member):
    secure = make_app(SESSION_COOKIE_SECURE=True)
    client = secure.test_client()
    token = get_csrf(client, "/login")
    response = client.post("/login", data={"email": member.email, "password": PASSWORD, "csrf_token": token},
                           base_url="https://localhost", headers={"Referer": "https://localhost/login"})
    assert response.status_code == 302
    (cookie,) = set_cookie_headers(response, "__Host-session")
    parts = [p.strip() for p in cookie.split(";")]
    assert "Secure" in parts
    assert "HttpOnly" in parts
    assert "SameSite=Lax" in parts
    assert "Path=/" in parts
    assert not any(p.lower().startswith("domain=") for p in parts)  # __Host- forbids a Domain
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


# --- rate limits -----------------------------------------------------------------------------


def failed_login(client, email: str, ip: str):
    token = get_csrf(client, "/login")
    return client.post("/login", data={"email": email, "password": "not the password", "csrf_token": token},
                       environ_base={"REMOTE_ADDR": ip})


def good_login(client, email: str, ip: str):
    token = get_csrf(client, "/login")
    return client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": ip})


def test_sixth_failed_login_from_one_ip_is_429(app, client, member):
    for n in range(5):
        assert failed_login(client, f"user{n}@example.com", "203.0.113.7").status_code == 401
    blocked = failed_login(client, "user6@example.com", "203.0.113.7")
    assert blocked.status_code == 429
    assert blocked.headers["Retry-After"]
    assert "Too many attempts" in blocked.get_data(as_text=True)
    assert 'class="topbar"' in blocked.get_data(as_text=True)
    # Even the right password is refused from that address for now...
    assert good_login(client, member.email, "203.0.113.7").status_code == 429
    # ...while another address is not affected.
    assert good_login(app.test_client(), member.email, "203.0.113.8").status_code == 302


def test_sixth_failed_login_for_one_email_is_429_from_any_ip(app, client, member):
    for n in range(5):
        assert failed_login(client, member.email, f"198.51.100.{n + 1}").status_code == 401
    assert failed_login(client, " Member@Example.com", "198.51.100.50").status_code == 429
    assert good_login(app.test_client(), member.email, "198.51.100.51").status_code == 429
    # Other accounts are not affected.
    assert failed_login(client, "someone-else@example.com", "198.51.100.52").status_code == 401


def test_successful_logins_do_not_count(app, member):
    for _ in range(7):
        client = app.test_client()
        assert good_login(client, member.email, "192.0.2.10").status_code == 302
    for _ in range(4):
        assert failed_login(app.test_client(), member.email, "192.0.2.10").status_code == 401
    assert good_login(app.test_client(), member.email, "192.0.2.10").status_code == 302


def exhaust_ip_budget(app_a, app_b, ip: str) -> None:
    for n in range(5):
        target = app_a if n % 2 == 0 else app_b
        assert failed_login(target.test_client(), f"guess{n}@example.com", ip).status_code == 401


def test_login_limit_is_shared_between_app_instances_through_redis(make_app, member):
    prefix = f"switchboard-test-{uuid.uuid4().hex}"
    url = "redis://127.0.0.1:6379/0"
    app_a = make_app(REDIS_URL=url, RATELIMIT_KEY_PREFIX=prefix)
    app_b = make_app(REDIS_URL=url, RATELIMIT_KEY_PREFIX=prefix)
    server = redis.Redis.from_url(url)
    try:
        exhaust_ip_budget(app_a, app_b, "203.0.113.20")
        assert failed_login(app_a.test_client(), "guess@example.com", "203.0.113.20").status_code == 429
        assert failed_login(app_b.test_client(), "guess@example.com", "203.0.113.20").status_code == 429
        assert any(prefix in key.decode() for key in server.scan_iter(match=f"*{prefix}*"))
    finally:
        for key in server.scan_iter(match=f"*{prefix}*"):
            server.delete(key)
        server.close()


def test_without_redis_each_app_instance_counts_alone(make_app, member):
    app_a, app_b = make_app(), make_app()
    exhaust_ip_budget(app_a, app_a, "203.0.113.30")
    assert failed_login(app_a.test_client(), "guess@example.com", "203.0.113.30").status_code == 429
    assert failed_login(app_b.test_client(), "guess@example.com", "203.0.113.30").status_code == 401


# --- deactivation ----------------------------------------------------------------------------


def test_deactivated_user_is_refused_at_once(app, client, admin, member):
    browser = app.test_client()
    login(browser, member.email)
    token = make_token(app, member)
    assert signed_in(browser)
    assert Api(app.test_client(), token).get("/me").status_code == 200

    login(client, admin.email)
    page = client.get(f"/admin/users/{member.id}/deactivate")
    assert page.status_code == 200
    assert "every API token of theirs stops working" in page.get_data(as_text=True)
    done = post_form(client, f"/admin/users/{member.id}/deactivate", {}, csrf_path=f"/admin/users/{member.id}/deactivate")
    assert done.status_code == 302
    assert "was deactivated" in client.get("/admin/users").get_data(as_text=True)

    response = browser.get("/settings/tokens")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    assert Api(app.test_client(), token).get("/me").status_code == 401
    assert login(app.test_client(), member.email).status_code == 401


def test_admin_cannot_deactivate_themselves_or_the_last_admin(app, client, admin, member):
    login(client, admin.email)
    page = client.get("/admin/users").get_data(as_text=True)
    assert f"/admin/users/{admin.id}/deactivate" not in page
    assert f"/admin/users/{member.id}/deactivate" in page
    response = post_form(client, f"/admin/users/{admin.id}/deactivate", {}, csrf_path="/admin/users", follow=True)
    assert "You cannot deactivate your own account." in response.get_data(as_text=True)
    assert signed_in(client)

    from app.errors import Conflict
    from app.services import users
    from app.services.base import Actor

    with app.app_context():
        with pytest.raises(Conflict):
            users.deactivate_user(Actor.system("test"), admin.id)
        assert users.get_user(admin.id).active


def test_deactivate_unknown_user_is_404(app, client, admin):
    login(client, admin.email)
    assert client.get(f"/admin/users/{uuid.uuid4()}/deactivate").status_code == 404
    assert client.get("/admin/users/not-a-uuid/deactivate").status_code == 404


# --- password change -------------------------------------------------------------------------


def test_password_change_requires_the_current_password(app, client, member):
    login(client, member.email)
    response = post_form(client, "/settings/password", {"current_password": "wrong password!",
                                                        "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "not correct" in field_error(html, "current_password")
    assert NEW_PASSWORD not in html
    assert login(app.test_client(), member.email).status_code == 302  # unchanged

    response = post_form(client, "/settings/password", {"current_password": PASSWORD,
                                                        "new_password": "too short", "confirm": "too short"})
    assert response.status_code == 400
    assert "at least 12 characters" in field_error(response.get_data(as_text=True), "new_password")


def test_password_change_ends_other_sessions(app, client, member):
    other = app.test_client()
    login(other, member.email)
    login(client, member.email)
    response = post_form(client, "/settings/password", {"current_password": PASSWORD,
                                                        "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 302
    assert "Password changed" in client.get("/settings/password").get_data(as_text=True)
    assert signed_in(client)
    assert not signed_in(other)
    assert login(app.test_client(), member.email).status_code == 401
    assert login(app.test_client(), member.email, NEW_PASSWORD).status_code == 302


# --- argon2 runs outside any transaction -----------------------------------------------------


def writer_is_blocked(app) -> bool:
    """SQLite: does this request hold the database write lock (another writer cannot start)?"""
    from app.extensions import db

    other = sqlite3.connect(db.engine.url.database, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.rollback()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        other.close()


@contextmanager
def watched_hashing(app, monkeypatch):
    """Record, for each argon2 call of the users service, whether a transaction was open then
    (and, on SQLite, whether the write lock was held); and count the commits meanwhile."""
    from app.extensions import db
    from app.services import users

    calls: list[tuple[str, bool, bool]] = []
    commits: list[int] = []
    for name in ("verify_password", "hash_password", "burn_time"):
        def spy(*args, _real=getattr(users, name), _name=name):
            blocked = False if is_postgres() else writer_is_blocked(app)
            calls.append((_name, db.session().in_transaction(), blocked))
            return _real(*args)
        monkeypatch.setattr(users, name, spy)
    with app.app_context():
        engine = db.engine

    def count(_conn):
        commits.append(1)

    sa.event.listen(engine, "commit", count)
    try:
        yield calls, commits
    finally:
        sa.event.remove(engine, "commit", count)


def test_sign_in_hashes_outside_any_transaction_and_commits_once(app, client, member, monkeypatch):
    app.config["ARGON2_TIME_COST"] = 2  # the stored hash is upgraded at this sign-in: one more hash
    token = get_csrf(client, "/login")
    with watched_hashing(app, monkeypatch) as (calls, commits):
        response = client.post("/login", data={"email": member.email, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    assert calls == [("verify_password", False, False), ("hash_password", False, False)]
    assert len(commits) == 1  # rehash, session row and audit event together
    assert signed_in(client)
    assert login(app.test_client(), member.email).status_code == 302  # the upgraded hash works

    for email, password in ((member.email, "not the password"), ("nobody@example.com", PASSWORD)):
        token = get_csrf(client := app.test_client(), "/login")
        with watched_hashing(app, monkeypatch) as (calls, commits):
            response = client.post("/login", data={"email": email, "password": password, "csrf_token": token})
        assert response.status_code == 401
        assert [(in_tx, blocked) for _, in_tx, blocked in calls] == [(False, False)]
        assert len(commits) == 1  # the audit event of the failure


@pytest.mark.parametrize(("changed_to", "status"), [(PASSWORD, 302), (NEW_PASSWORD, 401)],
                         ids=["same password rehashed meanwhile", "password changed meanwhile"])
def test_a_hash_that_changes_during_the_check_is_checked_again(app, client, member, monkeypatch, changed_to, status):
    from app.extensions import db
    from app.models import User
    from app.services import users
    from app.services.passwords import hash_password

    checked: list[str] = []

    def verify_while_someone_changes_it(stored, password, _real=users.verify_password):
        checked.append(stored)
        if len(checked) == 1:  # another request changes the hash while this one checks it
            with app.app_context():
                db.session.execute(sa.update(User).where(User.id == member.id)
                                   .values(password_hash=hash_password(changed_to)))
                db.session.commit()
        return _real(stored, password)

    monkeypatch.setattr(users, "verify_password", verify_while_someone_changes_it)
    assert login(client, member.email).status_code == status
    assert len(checked) == 2 and checked[0] != checked[1]  # checked again against the new hash
    assert signed_in(client) is (status == 302)


def test_password_change_hashes_outside_any_transaction_and_commits_once(app, client, member, monkeypatch):
    login(client, member.email)
    token = get_csrf(client, "/settings/password")
    with watched_hashing(app, monkeypatch) as (calls, commits):
        response = client.post("/settings/password", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                                            "confirm": NEW_PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    assert calls == [("verify_password", False, False), ("hash_password", False, False)]
    assert len(commits) == 1
    assert login(app.test_client(), member.email, NEW_PASSWORD).status_code == 302


# --- a password typed into the email field ---------------------------------------------------


def test_a_password_typed_into_the_email_field_is_never_kept_or_shown(app, client, admin):
    from app.extensions import db
    from app.models import AuditEvent

    typed = new_key("typed-password")  # the leak canary also scans every response, log and row
    for password in ("some other password", ""):  # a wrong sign-in (401) and a form error (400)
        token = get_csrf(client, "/login")
        response = client.post("/login", data={"email": typed, "password": password, "csrf_token": token})
        assert response.status_code in (400, 401)
        page = response.get_data(as_text=True)
        assert typed not in page and typed[-16:] not in page
        assert 'name="email"' in page
    token = get_csrf(client, "/login")
    response = client.post("/login", data={"email": "Someone@Example.com ", "password": "x", "csrf_token": token})
    assert 'value="Someone@Example.com "' in response.get_data(as_text=True)  # an email is kept for a retry
    with app.app_context():
        rows = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == "auth.login_failed")).scalars()
        recorded = [(e.resource_id, e.details) for e in rows]
    assert recorded == [(None, {"email": "(unknown account)"})] * 2
    assert typed not in repr(recorded)

    login(client, admin.email)
    audit_page = client.get("/admin/audit").get_data(as_text=True)
    assert "(unknown account)" in audit_page
    assert typed not in audit_page and typed[-16:] not in audit_page


def test_a_password_with_an_at_sign_typed_as_the_email_is_not_audited(app, client, admin, member):
    """Issue 21: a password shaped like an email, typed into the email field, reached the audit
    log and the admins' page. Only an input naming an existing account is recorded."""
    typed = "Summer@Holiday-2024!"  # has the shape of an email; not a canary (the form echoes it back)
    for email in (typed, member.email.upper()):
        token = get_csrf(client, "/login")
        client.post("/login", data={"email": email, "password": "not the password", "csrf_token": token})

    login(client, admin.email)
    page = client.get("/admin/audit", query_string={"action": "auth.login_failed"}).get_data(as_text=True)
    assert "Summer" not in page and "holiday" not in page.lower()
    assert "(unknown account)" in page
    assert "member@example.com" in page  # a failure for an existing account still names it
    from app.extensions import db
    from app.models import AuditEvent

    with app.app_context():
        rows = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == "auth.login_failed")).scalars()
        recorded = sorted((e.details["email"], e.resource_id) for e in rows)
    assert recorded == [("(unknown account)", None), ("member@example.com", str(member.id))]
    assert "holiday" not in repr(recorded).lower()


def test_the_per_email_limit_key_is_a_hash_of_the_input(make_app, admin):
    prefix = f"switchboard-test-{uuid.uuid4().hex}"
    url = "redis://127.0.0.1:6379/0"
    application = make_app(REDIS_URL=url, RATELIMIT_KEY_PREFIX=prefix)
    server = redis.Redis.from_url(url)
    typed = new_key("typed-password")
    try:
        assert failed_login(application.test_client(), typed, "203.0.113.40").status_code == 401
        keys = [key.decode() for key in server.scan_iter(match=f"*{prefix}*")]
        assert any(hashlib.sha256(typed.encode()).hexdigest() in key for key in keys), keys
        assert not any(typed[-16:] in key for key in keys)
    finally:
        for key in server.scan_iter(match=f"*{prefix}*"):
            server.delete(key)
        server.close()


# --- admin pages and layout ------------------------------------------------------------------


def admin_paths(app) -> list[tuple[str, str]]:
    """Every /admin route of the app, with a made-up id in place of each path parameter."""
    paths = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin"):
            continue
        path = re.sub(r"<[^>]+>", str(uuid.uuid4()), rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.append((method, path))
    return paths


def test_members_get_403_on_every_admin_page(app, client, member):
    login(client, member.email)
    token = get_csrf(client, "/")
    paths = admin_paths(app)
    assert ("GET", "/admin/users") in paths
    assert ("GET", "/admin/audit") in paths
    for method, path in paths:
        response = client.open(path, method=method, data={"csrf_token": token})
        assert response.status_code == 403, (method, path)
    page = client.get("/admin/users")
    assert "Not allowed" in page.get_data(as_text=True)
    assert 'class="topbar"' in page.get_data(as_text=True)


def test_anonymous_visitors_are_sent_to_login_from_admin_pages(app, client, member):
    for path in ("/admin/users", "/admin/audit"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")


def test_admin_links_only_for_admins(app, admin, member):
    member_client, admin_client = app.test_client(), app.test_client()
    login(member_client, member.email)
    login(admin_client, admin.email)
    member_home = member_client.get("/").get_data(as_text=True)
    admin_home = admin_client.get("/").get_data(as_text=True)
    for link in ('href="/admin/users"', 'href="/admin/audit"', 'href="/admin/providers"'):
        assert link in admin_home
        assert link not in member_home


def test_admin_creates_users_with_errors_next_to_fields(app, client, admin):
    login(client, admin.email)
    response = post_form(client, "/admin/users", {"email": "new@example.com", "name": "New Person",
                                                  "password": "short", "role": "member"})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "at least 12 characters" in field_error(html, "password")
    assert 'value="new@example.com"' in html  # what was typed is kept, the password is not
    assert 'value="short"' not in html

    response = post_form(client, "/admin/users", {"email": "New@Example.com", "name": "New Person",
                                                  "password": PASSWORD, "role": "admin"}, follow=True)
    html = response.get_data(as_text=True)
    assert "User new@example.com created." in html  # the flashed message
    assert "New Person" in html

    response = post_form(client, "/admin/users", {"email": "new@example.com", "password": PASSWORD, "role": "member"})
    assert response.status_code == 400
    assert "already exists" in field_error(response.get_data(as_text=True), "email")

    fresh = app.test_client()
    login(fresh, "new@example.com")
    assert fresh.get("/admin/users").status_code == 200  # created as an administrator


def test_users_list_shows_status_and_paginates(app, client, admin):
    for n in range(51):
        make_user(app, f"user{n:02d}@example.com")
    login(client, admin.email)
    first = client.get("/admin/users").get_data(as_text=True)
    assert "52 accounts" in first
    assert "Page 1 of 2" in first
    second = client.get("/admin/users?page=2").get_data(as_text=True)
    assert "user50@example.com" in second
    assert "user50@example.com" not in first
