"""Single sign-on under concurrency, on PostgreSQL: sign-ins released together at a barrier,
each from its own browser (test client, session, pooled connection), against the real OpenID
provider process.

- The same new person finishing their first sign-in in several browsers at once: one account,
  one link to the provider, every browser signed in (the losers of the insert race try again
  and find what the winner made).
- The two only administrators leaving the provider's admin group and signing in at the same
  moment: one is demoted, the other keeps the role (never zero admins), and neither fails.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.concurrency.test_users_races import active_admins, together
from tests.support.oidc import SsoBrowser

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]
ADMIN_GROUP = "switchboard-admins"
BROWSERS = 6
ROUNDS = 5


@pytest.fixture
def sso_app(make_app, oidc_provider):
    return make_app(OIDC_ISSUER=oidc_provider.url, OIDC_CLIENT_ID="switchboard", OIDC_CLIENT_SECRET="race-secret",
                    OIDC_GROUPS_CLAIM="groups", OIDC_ADMIN_GROUP=ADMIN_GROUP)


def callback_of(app, sub: str):
    """A browser that has been to the provider and holds its way back (not yet followed)."""
    browser = SsoBrowser(app.test_client())
    started = browser.start()
    assert started.status_code == 302
    return browser, browser.authorize(started.headers["Location"], sub)


def finish_later(app, sub: str):
    def prepare():
        browser, callback = callback_of(app, sub)
        return lambda: browser.finish(callback)
    return prepare


def count(app, sql: str, **params) -> int:
    from app.extensions import db

    with app.app_context():
        value = db.session.execute(sa.text(sql), params).scalar_one()
        db.session.rollback()
        return value


def test_a_first_sign_in_in_several_browsers_at_once_makes_one_account(sso_app, oidc_provider):
    sub = f"sub-{uuid.uuid4().hex[:12]}"
    oidc_provider.set_user(sub, email=f"{sub}@example.com", email_verified=True, name="Racer")
    responses = together(*(finish_later(sso_app, sub) for _ in range(BROWSERS)))
    assert [getattr(r, "status_code", r) for r in responses] == [302] * BROWSERS
    assert count(sso_app, "SELECT count(*) FROM users WHERE email = :e", e=f"{sub}@example.com") == 1
    assert count(sso_app, "SELECT count(*) FROM user_identities WHERE subject = :s", s=sub) == 1
    assert count(sso_app, "SELECT count(*) FROM user_sessions") == BROWSERS


def test_the_two_last_admins_leaving_the_admin_group_at_once_leave_one(sso_app, oidc_provider, caplog):
    from app.services import users
    from app.services.base import Actor

    for round_no in range(ROUNDS):
        subs = []
        for name in ("a", "b"):
            sub = f"sub-{name}{round_no}-{uuid.uuid4().hex[:8]}"
            oidc_provider.set_user(sub, email=f"{sub}@example.com", email_verified=True, groups=[ADMIN_GROUP])
            browser, callback = callback_of(sso_app, sub)
            assert browser.finish(callback).status_code == 302
            subs.append(sub)
        with sso_app.app_context():  # from now on the two are the only active administrators
            for old in active_admins(sso_app) - {users.get_user_by_email(f"{s}@example.com").id for s in subs}:
                users.deactivate_user(Actor.system("test"), old)
        assert len(active_admins(sso_app)) == 2
        for sub in subs:
            oidc_provider.set_user(sub, email=f"{sub}@example.com", email_verified=True, groups=[])
        responses = together(*(finish_later(sso_app, sub) for sub in subs))
        assert [getattr(r, "status_code", r) for r in responses] == [302, 302], round_no
        assert len(active_admins(sso_app)) == 1, round_no
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")], "a request hit the database error path"
