"""The JSON API at /api/experimental/chats: parse -> service -> dict."""

from flask import Blueprint

bp = Blueprint("api", __name__)

# Route modules register themselves on `bp`; `auth` authenticates every one of them.
from app.api import auth, key_tests, legacy, me, model_configs, providers, user_keys  # noqa: E402,F401
