"""Issue 21's limits, through the pages a browser uses: guessing the current password on
/settings/password (5 failed checks per minute per user and per IP), and device cookies, which keep
a stranger from locking a user out through the per-email sign-in limit.

Client addresses are set per request (`REMOTE_ADDR`), as several loopback addresses would be."""

from __future__ import annotations

from tests.support import PASSWORD, get_csrf, login, make_user

NEW_PASSWORD = "a different long passphrase"
WRONG = "not the current password"


def signed_in_from(app, email: str, ip: str):
    client = app.test_client()
    token = get_csrf(client, "/login")
    response = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token},
                           environ_base={"REMOTE_ADDR": ip})
    assert response.status_code == 302
    return client


def change_password(client, current: str, ip: str, new: str = NEW_PASSWORD):
    token = get_csrf(client, "/settings/password")
    return client.post("/settings/password", environ_base={"REMOTE_ADDR": ip},
                       data={"current_password": current, "new_password": new, "confirm": new, "csrf_token": token})


def password_is(app, email: str, password: str) -> bool:
    return login(app.test_client(), email, password).status_code == 302


# --- guessing the current password on /settings/password ----------------------------------------


def test_sixth_wrong_current_password_is_429_even_for_the_right_one(app, member):
    stolen = signed_in_from(app, member.email, "127.0.0.21")
    owner = signed_in_from(app, member.email, "127.0.0.22")
    for _ in range(5):
        response = change_password(stolen, WRONG, "127.0.0.21")
        assert response.status_code == 400
        assert "not correct" in response.get_data(as_text=True)

    blocked = change_password(stolen, PASSWORD, "127.0.0.21")
    assert blocked.status_code == 429
    page = blocked.get_data(as_text=True)
    assert "Too many attempts" in page and "Wait a minute before trying again." in page
    assert blocked.headers["Retry-After"] == "60"
    # Nothing changed: the old password still works, and the owner's session was not ended.
    assert password_is(app, member.email, PASSWORD)
    assert not password_is(app, member.email, NEW_PASSWORD)
    assert owner.get("/settings/password").status_code == 200


def test_the_limit_follows_the_user_to_other_sessions_and_addresses(app, member, member_b):
    first = signed_in_from(app, member.email, "127.0.0.23")
    for _ in range(5):
        assert change_password(first, WRONG, "127.0.0.23").status_code == 400

    elsewhere = signed_in_from(app, member.email, "127.0.0.24")
    assert change_password(elsewhere, PASSWORD, "127.0.0.24").status_code == 429
    # Another user, at another address, is not affected.
    other = signed_in_from(app, member_b.email, "127.0.0.25")
    assert change_password(other, PASSWORD, "127.0.0.25").status_code == 302
    assert password_is(app, member_b.email, NEW_PASSWORD)


def test_the_limit_is_per_address_too(app, member, member_b):
    """Guesses spread over several accounts from one address stop at 5 as well."""
    third = make_user(app, "third@example.com")
    guesses = [(member, 3), (member_b, 2)]
    for user, count in guesses:
        client = signed_in_from(app, user.email, "127.0.0.26")
        for _ in range(count):
            assert change_password(client, WRONG, "127.0.0.26").status_code == 400

    from_there = signed_in_from(app, third.email, "127.0.0.26")
    assert change_password(from_there, PASSWORD, "127.0.0.26").status_code == 429
    from_elsewhere = signed_in_from(app, third.email, "127.0.0.27")
    assert change_password(from_elsewhere, PASSWORD, "127.0.0.27").status_code == 302


def test_only_wrong_current_passwords_count(app, member):
    client = signed_in_from(app, member.email, "127.0.0.28")
    for _ in range(4):
        assert change_password(client, WRONG, "127.0.0.28").status_code == 400
    for _ in range(3):  # the right current password with a weak new one: not a guess
        response = change_password(client, PASSWORD, "127.0.0.28", new="too short")
        assert response.status_code == 400
        assert "at least 12 characters" in response.get_data(as_text=True)
    token = get_csrf(client, "/settings/password")
    incomplete = client.post("/settings/password", data={"csrf_token": token}, environ_base={"REMOTE_ADDR": "127.0.0.28"})
    assert incomplete.status_code == 400  # a form error: no password was checked

    assert change_password(client, PASSWORD, "127.0.0.28").status_code == 302
    assert change_password(client, NEW_PASSWORD, "127.0.0.28", new=PASSWORD).status_code == 302  # successes do not count
    assert password_is(app, member.email, PASSWORD)
