"""Admin pages. One module per area; every view is admin-only."""

from flask import Blueprint

bp = Blueprint("admin", __name__)

from app.admin import (  # noqa: E402,F401
    audit,
    groups,
    key_tests,
    legacy,
    model_configs,
    providers,
    users,
)
