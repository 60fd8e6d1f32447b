"""First-run setup, sign-in and sign-out (HTML)."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.auth import bp
from app.auth.forms import LoginForm, SetupForm
from app.device_cookies import remember_device
from app.errors import DomainError, NotFound
from app.metrics import count_login
from app.pages import EmptyForm, apply_error, current_actor, safe_next
from app.ratelimits import record_login_failure
from app.services import users as user_service


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """Create the first administrator.

    :raise 404: once any user exists, or when PASSWORD_LOGIN is false (a password administrator
        could not sign in: the first one comes from OIDC_ADMIN_GROUP, or from the CLI's
        `users create --admin`, linked at their first SSO sign-in).
    """
    if user_service.has_users() or not current_app.config["PASSWORD_LOGIN"]:
        abort(404)
    form = SetupForm()
    status = 200
    if form.validate_on_submit():
        try:
            user_service.create_first_admin(form.email.data, form.name.data or "", form.password.data, current_actor())
        except NotFound:
            abort(404)
        except DomainError as error:
            apply_error(form, error, "email")
        else:
            flash("Administrator account created. Sign in to continue.", "success")
            return redirect(url_for("auth.login"))
    if form.errors:
        status = 400
    return render_template("auth/setup.html", form=form), status


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in; failures count against the per-IP and per-email limits (see `app/ratelimits.py`).
    A successful sign-in sets the device cookie that exempts this browser from the per-email limit
    (see `app/device_cookies.py`).

    `next` is followed only when it is a path of this app; anything else lands on `/`. With
    PASSWORD_LOGIN=false the page shows only the SSO button. :raise 404: a POST then.
    """
    password_login = current_app.config["PASSWORD_LOGIN"]
    if request.method == "POST" and not password_login:
        abort(404)
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    if not user_service.has_users() and password_login:
        return redirect(url_for("auth.setup"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        # A fresh session at every sign-in: nothing from before (CSRF token included) carries
        # over, and the cookie names a new server-side session row.
        user = user_service.sign_in(form.email.data, form.password.data, current_actor())
        if user is not None:
            count_login("password", "ok")
            session.clear()
            login_user(user)
            response = redirect(safe_next(request.args.get("next")))
            remember_device(response, user.device_stamp)
            return response
        record_login_failure()
        count_login("password", "failed")
        form.password.errors = ["Incorrect email or password."]
        status = 401
    elif form.errors:
        status = 400
    if form.is_submitted() and not user_service.looks_like_email(form.email.data):
        form.email.data = ""  # perhaps a password typed into the wrong field: never echo it back
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """End the session server-side (its cookie stops working even if replayed)."""
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    user_service.end_session(current_user.current_session_id)
    logout_user()
    session.clear()
    flash("You have been signed out.", "info")
    return redirect(url_for("auth.login"))
