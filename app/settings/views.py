from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user

from app.device_cookies import remember_device
from app.errors import DomainError, WrongPassword
from app.pages import EmptyForm, apply_error, current_actor
from app.ratelimits import record_password_check_failure
from app.services import tokens as token_service
from app.services import users as user_service
from app.services.base import parse_uuid
from app.settings import bp
from app.settings.forms import PasswordChangeForm, TokenCreateForm


@bp.route("/tokens", methods=["GET", "POST"])
@login_required
def tokens():
    form = TokenCreateForm()
    new_token = None
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                _, new_token = token_service.create_token(current_actor(), current_user, form.name.data or "")
            except DomainError as error:
                apply_error(form, error, "name")
                status = 400
            else:
                form = TokenCreateForm(formdata=None)
        else:
            status = 400
    return render_template("settings/tokens.html", form=form, new_token=new_token,
                           tokens=token_service.list_tokens(current_user), revoke_form=EmptyForm()), status


@bp.route("/tokens/<token_id>/revoke", methods=["GET", "POST"])
@login_required
def revoke_token(token_id: str):
    """GET asks for confirmation; POST revokes. :raise 404: not one of the caller's tokens."""
    try:
        tid = parse_uuid(token_id)
    except DomainError:
        abort(404)
    token = next((t for t in token_service.list_tokens(current_user) if t.id == tid), None)
    if token is None:
        abort(404)
    form = EmptyForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        try:
            token_service.revoke_token(current_actor(), current_user, tid)
        except DomainError:
            abort(404)
        flash(f"Token “{token.name}” was revoked. Anything using it is now refused.", "success")
        return redirect(url_for("settings.tokens"))
    return render_template("settings/token_revoke.html", token=token, form=form)


@bp.route("/password", methods=["GET", "POST"])
@login_required
def password():
    """Change the password; a wrong current password counts against the per-user and per-IP
    limits (see `app/ratelimits.py`), over which this answers 429 whatever is sent."""
    form = PasswordChangeForm()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            user = current_user._get_current_object()
            try:
                user_service.change_password(user, form.current_password.data, form.new_password.data,
                                             current_actor())
            except DomainError as error:
                if isinstance(error, WrongPassword):
                    record_password_check_failure()
                apply_error(form, error, "new_password")
                status = 400
            else:
                # Every session of the user ended, this one included: carry on under the new
                # session id the service opened (a new cookie; nothing from before carries over).
                session.clear()
                login_user(user)
                flash("Password changed. Your other sessions were signed out.", "success")
                response = redirect(url_for("settings.password"))
                remember_device(response, user.device_stamp)  # the old password's cookies stop counting
                return response
        else:
            status = 400
    return render_template("settings/password.html", form=form), status
