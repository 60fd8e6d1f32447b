from __future__ import annotations

import sqlalchemy as sa
from flask import jsonify, redirect, render_template, url_for
from flask_login import current_user

from app.errorhandlers import RETRY_AFTER_SECONDS, is_database_unavailable
from app.extensions import db
from app.services import users as user_service
from app.web import bp


@bp.route("/")
def index():
    if not current_user.is_authenticated:
        if not user_service.has_users():
            return redirect(url_for("auth.setup"))
        return redirect(url_for("auth.login"))
    return render_template("web/home.html")


@bp.route("/healthz")
def healthz():
    """The process is alive; does not touch the database."""
    return jsonify({"status": "ok"})


@bp.route("/readyz")
def readyz():
    """200 when the database answers, 503 otherwise."""
    try:
        db.session.execute(sa.text("SELECT 1"))
        db.session.rollback()
    except Exception as error:  # any failure to reach the database means not ready
        db.session.rollback()
        if not is_database_unavailable(error):
            raise
        response = jsonify({"status": "unavailable"})
        response.status_code = 503
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    return jsonify({"status": "ok"})
