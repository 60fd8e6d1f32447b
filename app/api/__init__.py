"""The JSON API: `bp` at /api/experimental/chats (parse -> service -> dict), and `docs_bp` at
/api, which serves the API's own description (/api/openapi.json) and its page (/api/docs)."""

from flask import Blueprint

bp = Blueprint("api", __name__)
docs_bp = Blueprint("api_docs", __name__)

# Route modules register themselves on `bp`; `auth` authenticates every one of them.
from app.api import audit, auth, docs, groups, key_tests, legacy, me, model_configs, providers, user_keys  # noqa: E402,F401
