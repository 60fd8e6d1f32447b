"""Single sign-on in a real browser: Chromium goes from the app's sign-in page to the OpenID
provider's own page (oidc-provider-mock, its own process on loopback), signs in there, and comes
back signed in to the page it asked for.

The provider's page links a stylesheet on a CDN: every request that would leave loopback is
answered by the test with an empty response, so nothing leaves the machine.
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests.e2e.seed import set_up_admin

pytestmark = [pytest.mark.browser, pytest.mark.postgres_only]

JWT = re.compile(r"eyJ[\w-]*\.eyJ[\w-]*\.")
OFF_LOOPBACK = re.compile(r"^https?://(?!127\.0\.0\.1[:/])")


def keep_on_loopback(tab) -> None:
    tab.page.context.route(OFF_LOOPBACK, lambda route: route.fulfill(status=200, content_type="text/css", body=""))


def test_a_person_signs_in_through_the_identity_provider(sso_web, sso_server, oidc_provider, findings):
    set_up_admin(sso_web)  # someone exists, so /login is the sign-in page rather than first-run setup
    sub = f"sub-{uuid.uuid4().hex[:12]}"
    oidc_provider.set_user(sub, email="sam@example.com", email_verified=True, name="Sam Sso",
                           groups=["switchboard-admins"])

    tab = sso_web.tab()
    keep_on_loopback(tab)
    tab.goto("/models")
    assert tab.path == "/login"
    assert tab.page.locator("input[name=password]").is_visible()  # the password form is still there
    tab.follow("Sign in with SSO")
    assert tab.page.url.startswith(oidc_provider.url + "/oauth2/authorize?")
    assert "code_challenge_method=S256" in tab.page.url
    tab.page.locator("input[name=sub]").fill(sub)
    tab.press("Authorize")
    assert tab.page.url == sso_server.url + "/models"
    account = tab.page.locator(".account-name")
    assert account.inner_text().startswith("Sam Sso")
    assert "admin" in account.inner_text()  # the provider's admin group made Sam an administrator

    tab.press("Sign out")
    assert tab.path == "/login" and "You have been signed out." in tab.flash()
    tab.goto("/admin/users")
    assert tab.path == "/login"
    for url, text in findings.documents:
        if url.startswith(sso_server.url):
            assert not JWT.search(text), f"{url} shows a token"
    assert not JWT.search(sso_server.log())


def test_a_refused_sign_in_ends_on_the_error_page_with_a_way_back(sso_web, oidc_provider):
    set_up_admin(sso_web)
    tab = sso_web.tab()
    keep_on_loopback(tab)
    tab.goto("/login")
    tab.follow("Sign in with SSO")
    tab.press("Deny", status=400)
    assert tab.heading() == "Sign-in failed"
    assert "did not sign you in" in tab.text()
    tab.follow("Back to sign in")
    assert tab.path == "/login"
