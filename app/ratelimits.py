"""Rate limits (Flask-Limiter), one `Limiter` per app, put on the views by endpoint name.

`init_rate_limits(app)` runs in `create_app` once the blueprints are registered. Each app gets
its own `Limiter`: Flask-Limiter keeps its storage on the extension instance, so a process-wide
one would count every app in the storage of the last app created. Counters live in Redis when
`REDIS_URL` is set (`RATELIMIT_STORAGE_URI`), so every worker and host shares them, and in process
memory otherwise (also when Redis stops answering: `RATELIMIT_IN_MEMORY_FALLBACK_ENABLED`).

Sign-in (`LOGIN_RATE_LIMIT`, 5 per minute): failed sign-ins per client IP and, separately, per
email. Only failures are counted (`record_login_failure`). Once either budget is spent, every
sign-in attempt from that IP or for that email answers 429 until the window ends, a correct
password included: otherwise the limit would tell a guesser when they got it right. The per-email
key is the SHA-256 of the normalised input: whatever was typed (a password, by mistake) never
becomes a limiter key in clear. So that a stranger cannot lock a user out by spending the
per-email budget, a browser that signed in as that user before carries a device cookie and is
exempt from (and not counted in) that user's per-email budget; the rule is
`app/device_cookies.py::exempts_from_email_limit`. The per-IP budget applies to every browser.

Password change (`PASSWORD_CHECK_RATE_LIMIT`, 5 per minute): failed checks of the current password
on `/settings/password`, per signed-in user and, separately, per client IP
(`record_password_check_failure`). A stolen session could otherwise guess the password there,
around the sign-in limit, and then take the account over (the change ends every other session).
Once either budget is spent, every change answers 429 until the window ends, the right current
password included.

Provider calls (`OUTBOUND_RATE_LIMIT`, 10 per minute): every view that calls out to a provider
(`PROVIDER_CALL_ENDPOINTS`: key tests and model discovery in the JSON API, the admin pages and the
settings page) shares one budget per signed-in user. Over it the answer is 429 and nothing is
sent. Callers the view's own guard turns away (anonymous, a member on an admin page) are not
counted; the API authenticates in `before_request`, so its limit sees the actor already.

The client IP is `request.remote_addr`. Behind a reverse proxy, wrap the WSGI app in Werkzeug's
`ProxyFix` with the number of trusted proxies, or every client shares the proxy's budget.
"""

from __future__ import annotations

import hashlib

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from flask_login import current_user

from app.device_cookies import exempts_from_email_limit
from app.services.text import normalize_email

EXTENSION = "switchboard.limiter"
LOGIN_ENDPOINT = "auth.login"
PASSWORD_CHANGE_ENDPOINT = "settings.password"
PROVIDER_CALL_ENDPOINTS = (
    "api.test_provider_key",
    "api.test_user_key",
    "api.list_provider_models",
    "admin.test_provider_key",
    "admin.run_discovery",
    "settings.test_key",
)
PROVIDER_CALL_SCOPE = "provider-calls"


# --- sign-in -------------------------------------------------------------------------------------

def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def _ip_key() -> str:
    return "login-ip:" + (request.remote_addr or "unknown")


def _email_key() -> str:
    """The per-email budget's key: a SHA-256 of the normalised input, never the input itself (it
    lands in Redis or in memory, and may be a password typed into the wrong field)."""
    return "login-email:" + hashlib.sha256(normalize_email(request.form.get("email")).encode()).hexdigest()


def _known_device() -> bool:
    # Flask-Limiter asks before it looks at the method: only a sign-in (POST) is worth the lookup.
    return request.method == "POST" and exempts_from_email_limit(request.form.get("email"))


def _failed(_response: Response) -> bool:
    return bool(g.get("login_failed"))


def record_login_failure() -> None:
    """Mark this request as a failed sign-in: it counts against both budgets."""
    g.login_failed = True


# --- password change -----------------------------------------------------------------------------

def _password_check_limit() -> str:
    return current_app.config["PASSWORD_CHECK_RATE_LIMIT"]


def _password_user_key() -> str:
    return f"password-user:{current_user.id}"


def _password_ip_key() -> str:
    return "password-ip:" + (request.remote_addr or "unknown")


def _anonymous() -> bool:
    """Not signed in: the view sends the visitor to the sign-in page, nothing is checked."""
    return not current_user.is_authenticated


def _password_check_failed(_response: Response) -> bool:
    return bool(g.get("password_check_failed"))


def record_password_check_failure() -> None:
    """Mark this request as a failed check of the current password: it counts against both budgets."""
    g.password_check_failed = True


# --- provider calls ------------------------------------------------------------------------------

def _provider_call_limit() -> str:
    return current_app.config["OUTBOUND_RATE_LIMIT"]


def _caller_id() -> str | None:
    """The signed-in user: the API actor, or the page session's user."""
    api_actor = g.get("actor")
    if api_actor is not None:
        return str(api_actor.user_id) if api_actor.user_id else None
    if current_user.is_authenticated:
        return str(current_user.id)
    return None


def _caller_key() -> str:
    return f"user:{_caller_id()}"


def _turned_away() -> bool:
    """The view's guard will refuse this caller (anonymous; a member on an admin page): not counted."""
    if _caller_id() is None:
        return True
    return request.blueprint == "admin" and not current_user.is_admin


# --- wiring --------------------------------------------------------------------------------------

def init_rate_limits(app: Flask) -> Limiter:
    """Give `app` its own limiter and wrap the sign-in, password-change and provider-call views
    (already registered)."""
    limiter = Limiter(
        key_func=_ip_key,
        storage_uri=app.config["RATELIMIT_STORAGE_URI"],
        key_prefix=app.config.get("RATELIMIT_KEY_PREFIX") or "switchboard",
        strategy="fixed-window",
        headers_enabled=False,
        in_memory_fallback_enabled=bool(app.config.get("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)),
    )
    limiter.init_app(app)

    # A sign-in refused for either limit: Flask-Limiter raises RateLimitExceeded before the view
    # runs, and app/errorhandlers.py answers the 429 page.
    view = app.view_functions[LOGIN_ENDPOINT]
    view = limiter.limit(_login_limit, key_func=_ip_key, methods=["POST"], deduct_when=_failed)(view)
    view = limiter.limit(_login_limit, key_func=_email_key, methods=["POST"], deduct_when=_failed,
                         exempt_when=_known_device)(view)
    app.view_functions[LOGIN_ENDPOINT] = view

    view = app.view_functions[PASSWORD_CHANGE_ENDPOINT]
    for key_func in (_password_user_key, _password_ip_key):
        view = limiter.limit(_password_check_limit, key_func=key_func, methods=["POST"], exempt_when=_anonymous,
                             deduct_when=_password_check_failed)(view)
    app.view_functions[PASSWORD_CHANGE_ENDPOINT] = view

    provider_calls = limiter.shared_limit(_provider_call_limit, scope=PROVIDER_CALL_SCOPE, key_func=_caller_key,
                                          exempt_when=_turned_away)
    for endpoint in PROVIDER_CALL_ENDPOINTS:
        app.view_functions[endpoint] = provider_calls(app.view_functions[endpoint])

    app.extensions[EXTENSION] = limiter
    return limiter
