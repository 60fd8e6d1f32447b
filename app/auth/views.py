from __future__ import annotations

from flask import abort, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.auth import bp
from app.auth.forms import LoginForm, SetupForm
from app.errors import DomainError
from app.extensions import limiter
from app.services import users as user_service
from app.web.forms import EmptyForm
from app.web.views_helpers import apply_error, current_actor, safe_next


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def _ip_key() -> str:
    return "login-ip:" + (request.remote_addr or "unknown")


def _email_key() -> str:
    return "login-email:" + user_service.normalize_email(request.form.get("email"))[:254]


def _failed(_response) -> bool:
    return bool(g.get("login_failed"))


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """Create the first administrator. :raise 404: once any user exists."""
    if user_service.has_users():
        abort(404)
    form = SetupForm()
    if form.validate_on_submit():
        try:
            user_service.create_first_admin(form.email.data, form.name.data, form.password.data, current_actor())
        except DomainError as error:
            if error.status == 404:
                abort(404)
            apply_error(form, error, "email")
        else:
            flash("Administrator account created. Sign in to continue.", "success")
            return redirect(url_for("auth.login"))
    return render_template("auth/setup.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, key_func=_ip_key, methods=["POST"], deduct_when=_failed)
@limiter.limit(_login_limit, key_func=_email_key, methods=["POST"], deduct_when=_failed)
def login():
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    if not user_service.has_users():
        return redirect(url_for("auth.setup"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        user = user_service.authenticate(form.email.data, form.password.data, current_actor())
        if user is not None:
            session.clear()  # a fresh session at every sign-in
            user_service.start_session(user, current_actor().__class__.for_user(
                user, request_id=g.request_id, ip=request.remote_addr))
            login_user(user)
            return redirect(safe_next(request.args.get("next")))
        g.login_failed = True
        form.password.errors = ["Incorrect email or password."]
        status = 401
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    user_service.end_session(current_user.current_session_id)
    logout_user()
    session.clear()
    flash("You have been signed out.", "info")
    return redirect(url_for("auth.login"))
