"""Session management beyond tests/pages/test_auth.py (sign-in renewal, sign-out, password change and
deactivation are tested there through the pages): role changes end the user's sessions, every
ending is server-side (the session row is gone, a copied cookie is refused by pages and the API),
a password change renews the session id of the browser that made it, nothing from before sign-in
carries over, and session ids are random and stored only as hashes.

Role changes go through `users.set_role`, the service behind the users page's role form and
`flask users set-role` (both tested in tests/pages/test_groups_pages.py and tests/cli).
"""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from tests.support import PASSWORD, Api, get_csrf, login, make_token, make_user, post_form

NEW_PASSWORD = "a brand new passphrase"


def browser(app, email: str):
    """A browser signed in as `email`, and the value of its session cookie."""
    client = app.test_client()
    assert login(client, email).status_code == 302
    return client, client.get_cookie("session").value


def replay(app, cookie: str):
    """A fresh browser holding only a copy of `cookie`."""
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client


def works(app, cookie: str) -> bool:
    """Does a copy of this session cookie still sign anyone in, on a page and on the API?"""
    client = replay(app, cookie)
    page = client.get("/settings/tokens")
    api = Api(client).get("/me")
    assert (page.status_code == 200) == (api.status_code == 200), (page.status_code, api.status_code)
    if page.status_code != 200:
        assert page.headers["Location"].startswith("/login")
        assert api.status_code == 401
    return page.status_code == 200


def session_rows(app, user) -> int:
    from app.extensions import db
    from app.models import UserSession

    with app.app_context():
        return db.session.execute(
            sa.select(sa.func.count()).select_from(UserSession).where(UserSession.user_id == user.id)).scalar()


def set_role(app, user, role: str):
    from app.services import users
    from app.services.base import Actor

    with app.app_context():
        return users.set_role(Actor.system("test"), user.id, role)


def role_changes(app) -> list[tuple]:
    from app.extensions import db
    from app.models import AuditEvent

    with app.app_context():
        return [(e.resource_id, e.details) for e in db.session.execute(
            sa.select(AuditEvent).where(AuditEvent.action == "user.role_change")).scalars()]


# --- role changes ------------------------------------------------------------------------------


def test_a_promotion_ends_every_session_and_applies_at_once(app, admin, member):
    first, first_cookie = browser(app, member.email)
    _, second_cookie = browser(app, member.email)
    token = make_token(app, member)
    assert first.get("/admin/users").status_code == 403
    assert Api(app.test_client(), token).get("/ai-providers").status_code == 403
    assert session_rows(app, member) == 2

    set_role(app, member, "admin")

    assert session_rows(app, member) == 0
    assert not works(app, first_cookie)
    assert not works(app, second_cookie)
    assert first.get("/admin/users").headers["Location"].startswith("/login")
    # Signing in again gives a new session with the new role; the token acts as an admin now.
    again, again_cookie = browser(app, member.email)
    assert again_cookie not in (first_cookie, second_cookie)
    assert again.get("/admin/users").status_code == 200
    assert Api(app.test_client(), token).get("/ai-providers").status_code == 200
    assert Api(app.test_client(), token).get("/me").get_json()["role"] == "admin"
    assert role_changes(app) == [(str(member.id), {"role": "admin"})]


def test_a_demoted_admin_loses_admin_access_at_once(app, admin, member):
    other_admin = make_user(app, "second-admin@example.com", role="admin")
    client, cookie = browser(app, other_admin.email)
    token = make_token(app, other_admin)
    assert client.get("/admin/users").status_code == 200

    set_role(app, other_admin, "member")

    assert session_rows(app, other_admin) == 0
    assert not works(app, cookie)
    assert client.get("/admin/users").headers["Location"].startswith("/login")
    assert Api(app.test_client(), token).get("/ai-providers").status_code == 403
    again, _ = browser(app, other_admin.email)
    assert again.get("/admin/users").status_code == 403


def test_the_last_admin_keeps_the_role_and_the_session(app, admin):
    from app.errors import Conflict

    _, cookie = browser(app, admin.email)
    with pytest.raises(Conflict):
        set_role(app, admin, "member")
    assert works(app, cookie)
    assert session_rows(app, admin) == 1
    assert role_changes(app) == []


def test_the_same_role_or_an_unknown_one_changes_nothing(app, admin, member):
    from app.errors import InvalidInput

    _, cookie = browser(app, member.email)
    set_role(app, member, "member")
    with pytest.raises(InvalidInput):
        set_role(app, member, "owner")
    assert works(app, cookie)
    assert role_changes(app) == []
    with app.app_context():
        from app.services import users

        assert users.get_user(member.id).role == "member"


# --- every ending is server-side -----------------------------------------------------------------


def _sign_out(app, client, user, admin_client):
    post_form(client, "/logout", {}, csrf_path="/")


def _change_password(app, client, user, admin_client):
    response = post_form(client, "/settings/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                                        "confirm": NEW_PASSWORD})
    assert response.status_code == 302


def _change_role(app, client, user, admin_client):
    set_role(app, user, "admin")


def _deactivate(app, client, user, admin_client):
    path = f"/admin/users/{user.id}/deactivate"
    assert post_form(admin_client, path, {}, csrf_path=path).status_code == 302


# (what happens, does the browser that did it stay signed in, do the user's other browsers)
ENDINGS = [
    pytest.param(_sign_out, False, True, id="sign-out ends that session only"),
    pytest.param(_change_role, False, False, id="role change ends every session"),
    pytest.param(_deactivate, False, False, id="deactivation ends every session"),
]


@pytest.mark.parametrize(("event", "this_one_stays", "others_stay"), ENDINGS)
def test_sessions_end_on_the_server(app, admin, member, event, this_one_stays, others_stay):
    admin_client, _ = browser(app, admin.email)
    client, cookie = browser(app, member.email)
    _, other_cookie = browser(app, member.email)
    _, bystander_cookie = browser(app, make_user(app, "bystander@example.com").email)
    assert session_rows(app, member) == 2

    event(app, client, member, admin_client)

    assert works(app, cookie) is this_one_stays
    assert works(app, other_cookie) is others_stay
    assert session_rows(app, member) == int(this_one_stays) + int(others_stay)
    assert works(app, bystander_cookie)  # nobody else's session is touched


def session_id_in(app, cookie: str) -> str:
    """The server-side session id a session cookie names."""
    return app.session_interface.get_signing_serializer(app).loads(cookie)["_user_id"]


def test_a_password_change_renews_the_session_id_of_the_browser_that_made_it(app, member):
    client, cookie = browser(app, member.email)
    _, other_cookie = browser(app, member.email)
    _, bystander_cookie = browser(app, make_user(app, "bystander@example.com").email)

    _change_password(app, client, member, None)

    new_cookie = client.get_cookie("session").value
    assert session_id_in(app, new_cookie) != session_id_in(app, cookie)
    assert works(app, new_cookie)  # the browser that changed it stays signed in, under a new id
    assert not works(app, cookie)  # a copy of its cookie from before the change is refused
    assert not works(app, other_cookie)  # and so is every other session of the user
    assert session_rows(app, member) == 1
    assert works(app, bystander_cookie)
    assert "Password changed" in client.get("/settings/password").get_data(as_text=True)


# --- nothing carries over, ids are random and stored hashed ------------------------------------------


def test_a_csrf_token_from_before_sign_in_is_void_after_it(app, member):
    client = app.test_client()
    before = get_csrf(client, "/login")
    assert login(client, member.email).status_code == 302
    stale = client.post("/settings/tokens", data={"name": "x", "csrf_token": before})
    assert stale.status_code == 400
    fresh = client.post("/settings/tokens", data={"name": "x", "csrf_token": get_csrf(client, "/settings/tokens")})
    assert fresh.status_code == 200


def test_session_ids_are_random_and_stored_only_as_hashes(app, member):
    from app.extensions import db
    from app.models import UserSession

    ids = []
    for _ in range(2):
        client = app.test_client()
        signed_in = login(client, member.email)
        assert [h.split("=")[0] for h in signed_in.headers.getlist("Set-Cookie")] == ["session"]  # no remember-me
        cookie = client.get_cookie("session").value
        ids.append(app.session_interface.get_signing_serializer(app).loads(cookie)["_user_id"])
    assert ids[0] != ids[1]
    assert all(len(i) >= 43 for i in ids)  # 32 random bytes, URL-safe base64
    with app.app_context():
        stored = set(db.session.execute(sa.select(UserSession.id_hash)).scalars())
    assert stored == {hashlib.sha256(i.encode()).hexdigest() for i in ids}
    dump = " ".join(map(str, stored))
    assert not any(i in dump for i in ids)
