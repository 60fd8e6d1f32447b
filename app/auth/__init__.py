from flask import Blueprint

bp = Blueprint("auth", __name__)

from app.auth import views  # noqa: E402,F401
from app.auth.ratelimit import init_login_limits  # noqa: E402

# After the views: the login view must be registered before the limiter wraps it.
bp.record_once(lambda state: init_login_limits(state.app))
