"""Flask-Login wiring: the session cookie names a server-side session row, not the user."""

from __future__ import annotations

from flask import Flask, jsonify, redirect, request, url_for
from flask_login import LoginManager

from app.services import users as user_service


def init_login(app: Flask, login_manager: LoginManager) -> None:
    login_manager.init_app(app)
    login_manager.session_protection = None  # our server-side sessions do the job
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"

    @login_manager.user_loader
    def load_user(session_id: str):
        return user_service.load_session_user(session_id)

    @login_manager.unauthorized_handler
    def unauthorized():
        if request.path.startswith("/api/"):
            return jsonify({"message": "Unauthorized."}), 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
