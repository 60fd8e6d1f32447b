"""Each signed-in user's own settings: API tokens, password, keys."""

from flask import Blueprint

bp = Blueprint("settings", __name__)

from app.settings import key_tests, keys, views  # noqa: E402,F401
