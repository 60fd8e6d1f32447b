"""Settings page action: test the caller's own key for a provider, then back to /settings/keys.

Counts against the caller's budget of provider calls (`app/ratelimits.py`, shared with the
JSON API and the admin pages).
"""

from __future__ import annotations

from flask import abort, flash, redirect, url_for
from flask_login import login_required

from app.errors import DomainError
from app.pages import EmptyForm, current_actor, flash_key_test
from app.services import key_testing
from app.settings import bp


@bp.route("/keys/<provider_id>/test", methods=["POST"])
@login_required
def test_key(provider_id: str):
    """Test the caller's saved key for the provider and show the result on the keys page.

    :raise 400: no CSRF token.
    """
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        outcome = key_testing.test_user_key(current_actor(), provider_id)
    except DomainError as error:
        flash(f"{error.message} {error.detail or ''}".strip(), "error")
    else:
        flash_key_test(outcome, f"Your key for {outcome.provider_name}")
    return redirect(url_for("settings.keys", _anchor=f"provider-{provider_id}"), code=303)
