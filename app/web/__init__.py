"""Pages for every signed-in user (home, /models) and the health checks."""

from flask import Blueprint

bp = Blueprint("web", __name__)

from app.web import models_page, views  # noqa: E402,F401
