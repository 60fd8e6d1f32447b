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


# --- device cookies: no locking a user out through the per-email sign-in limit -------------------


def attempt(client, email: str, ip: str, password: str = WRONG):
    token = get_csrf(client, "/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": ip})


def lock_out(app, email: str, first_ip: int = 31) -> None:
    """What the attacker of issue 21 did: five failed sign-ins for the email from five addresses."""
    for n in range(5):
        assert attempt(app.test_client(), email, f"127.0.0.{first_ip + n}").status_code == 401
    assert attempt(app.test_client(), email, "127.0.0.39").status_code == 429


def signed_out_browser(app, email: str, ip: str = "127.0.0.40"):
    """A browser in which the user signed in before (and then signed out)."""
    browser = signed_in_from(app, email, ip)
    token = get_csrf(browser, "/")
    assert browser.post("/logout", data={"csrf_token": token}).status_code == 302
    return browser


def device_cookie(client, name: str = "device") -> str:
    cookie = client.get_cookie(name)
    assert cookie is not None, "no device cookie"
    return cookie.value


def test_a_stranger_cannot_lock_out_a_user_who_signed_in_before(app, member):
    browser = signed_out_browser(app, member.email)
    lock_out(app, member.email)

    assert attempt(browser, member.email, "127.0.0.41", PASSWORD).status_code == 302
    token = get_csrf(browser, "/")
    browser.post("/logout", data={"csrf_token": token})
    # Its own typos answer 401 as usual (only its address's budget counts them).
    for _ in range(5):
        assert attempt(browser, member.email, "127.0.0.42").status_code == 401
    assert attempt(browser, member.email, "127.0.0.43", PASSWORD).status_code == 302
    # Any other browser is still refused for that email, even with the right password.
    assert attempt(app.test_client(), member.email, "127.0.0.44", PASSWORD).status_code == 429


def test_the_per_ip_limit_still_applies_to_a_known_browser(app, member):
    browser = signed_out_browser(app, member.email)
    for n in range(5):
        assert attempt(app.test_client(), f"guess{n}@example.com", "127.0.0.45").status_code == 401
    assert attempt(browser, member.email, "127.0.0.45", PASSWORD).status_code == 429
    assert attempt(browser, member.email, "127.0.0.46", PASSWORD).status_code == 302


def test_a_device_cookie_never_exempts_another_users_email(app, member, member_b):
    browser = signed_out_browser(app, member.email)
    lock_out(app, member_b.email)
    assert attempt(browser, member_b.email, "127.0.0.47", PASSWORD).status_code == 429
    # Copied into another browser, the member's cookie still names the member only.
    other = app.test_client()
    other.set_cookie("device", device_cookie(browser))
    assert attempt(other, member_b.email, "127.0.0.48", PASSWORD).status_code == 429


def test_a_tampered_or_foreign_cookie_exempts_nothing(app, make_app, member):
    genuine = device_cookie(signed_out_browser(app, member.email))
    foreign_app = make_app(SECRET_KEY="another deployment's secret key " + "y" * 16)
    foreign = device_cookie(signed_out_browser(foreign_app, member.email, "127.0.0.49"))
    lock_out(app, member.email)

    # value = [.]payload.timestamp.signature: change one character of the payload
    parts = genuine.split(".")
    longest = max(range(len(parts)), key=lambda i: len(parts[i]))
    parts[longest] = parts[longest][:5] + ("A" if parts[longest][5] != "A" else "B") + parts[longest][6:]
    tampered = ".".join(parts)
    for value in (tampered, genuine[:-2], foreign, "", "garbage"):
        browser = app.test_client()
        browser.set_cookie("device", value)
        assert attempt(browser, member.email, "127.0.0.50", PASSWORD).status_code == 429, value
    browser = app.test_client()
    browser.set_cookie("device", genuine)
    assert attempt(browser, member.email, "127.0.0.50", PASSWORD).status_code == 302


def issued_days_ago(app, email: str, days: int, monkeypatch) -> str:
    """A device cookie the app issued `days` ago (only the signer's clock is moved)."""
    import time
    import types

    import itsdangerous.timed

    then = time.time() - days * 86400
    with monkeypatch.context() as patch:
        patch.setattr(itsdangerous.timed, "time", types.SimpleNamespace(time=lambda: then))
        client = app.test_client()
        token = get_csrf(client, "/login")
        response = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token},
                               environ_base={"REMOTE_ADDR": "127.0.0.51"})
        assert response.status_code == 302
    return device_cookie(client)


def test_a_device_cookie_lasts_180_days(app, member, monkeypatch):
    recent = issued_days_ago(app, member.email, 179, monkeypatch)
    expired = issued_days_ago(app, member.email, 181, monkeypatch)
    lock_out(app, member.email)
    for value, status in ((expired, 429), (recent, 302)):
        browser = app.test_client()
        browser.set_cookie("device", value)
        assert attempt(browser, member.email, "127.0.0.52", PASSWORD).status_code == status


def test_a_device_cookie_alone_signs_nobody_in(app, member):
    browser = signed_out_browser(app, member.email)
    assert browser.get_cookie("device") is not None
    assert browser.get("/settings/password").headers["Location"].startswith("/login")
    assert browser.get("/api/experimental/chats/me").status_code == 401


def test_a_password_change_ends_the_exemption_of_other_browsers(app, member):
    laptop = signed_out_browser(app, member.email)
    phone = signed_in_from(app, member.email, "127.0.0.53")
    assert change_password(phone, PASSWORD, "127.0.0.53").status_code == 302
    lock_out(app, member.email)
    assert attempt(laptop, member.email, "127.0.0.54", NEW_PASSWORD).status_code == 429
    # The browser that changed it carries a cookie for the new password.
    token = get_csrf(phone, "/")
    phone.post("/logout", data={"csrf_token": token})
    assert attempt(phone, member.email, "127.0.0.55", NEW_PASSWORD).status_code == 302


def device_set_cookie(response, name: str) -> list[str]:
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    return [part.strip() for part in header.split(";")]


def test_device_cookie_flags_and_content(app, make_app, member):
    client = app.test_client()
    response = attempt(client, member.email, "127.0.0.56", PASSWORD)
    parts = device_set_cookie(response, "device")
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(parts)
    assert "Secure" not in parts
    assert f"Max-Age={180 * 86400}" in parts
    value = parts[0].split("=", 1)[1]
    assert "member" not in value.lower()  # it names the account by id, not by email
    assert attempt(app.test_client(), member.email, "127.0.0.56").headers.get("Set-Cookie", "").find("device=") == -1

    secure = make_app(SESSION_COOKIE_SECURE=True).test_client()
    token = get_csrf(secure, "/login")
    response = secure.post("/login", data={"email": member.email, "password": PASSWORD, "csrf_token": token},
                           base_url="https://localhost", headers={"Referer": "https://localhost/login"})
    assert response.status_code == 302
    parts = device_set_cookie(response, "__Host-device")
    assert {"Secure", "HttpOnly", "SameSite=Lax", "Path=/"} <= set(parts)
    assert not any(p.lower().startswith("domain=") for p in parts)


# --- the client address behind a reverse proxy (TRUSTED_PROXIES) ---------------------------------


def attempt_via_proxy(client, email: str, forwarded_for: str):
    """A failed sign-in arriving from a reverse proxy on 127.0.0.1 that names the client."""
    token = get_csrf(client, "/login")
    return client.post("/login", data={"email": email, "password": WRONG, "csrf_token": token},
                       headers={"X-Forwarded-For": forwarded_for}, environ_base={"REMOTE_ADDR": "127.0.0.1"})


def test_behind_one_trusted_proxy_each_client_has_its_own_budget(make_app, member):
    proxied = make_app(TRUSTED_PROXIES=1)
    for n in range(5):
        # What a client writes into the header itself comes first; the proxy's entry is last.
        assert attempt_via_proxy(proxied.test_client(), f"guess{n}@example.com", f"10.9.9.{n}, 127.0.0.61").status_code == 401
    assert attempt_via_proxy(proxied.test_client(), "guess@example.com", "127.0.0.61").status_code == 429
    assert attempt_via_proxy(proxied.test_client(), "guess@example.com", "127.0.0.62").status_code == 401


def test_without_trusted_proxies_the_header_is_ignored(app, member):
    for n in range(5):
        assert attempt_via_proxy(app.test_client(), f"guess{n}@example.com", f"127.0.0.{70 + n}").status_code == 401
    assert attempt_via_proxy(app.test_client(), "guess@example.com", "127.0.0.79").status_code == 429
