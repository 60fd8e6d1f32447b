"""Login rate limits (Flask-Limiter): failed sign-ins per client IP and, separately, per email.

Only failures are counted (`deduct_when`). Once either budget (`LOGIN_RATE_LIMIT`, 5 per minute)
is spent, every sign-in attempt from that IP or for that email answers 429 until the window ends,
a correct password included: otherwise the limit would tell a guesser when they got it right.

The per-email key is the SHA-256 of the normalised input: whatever was typed (a password, by
mistake) never becomes a limiter key in clear. Counters live in Redis when `REDIS_URL` is set, so
every worker and host shares them, and in process memory otherwise. Each app gets its own
`Limiter`: Flask-Limiter keeps its storage on the extension instance, so a process-wide one would
count every app in the storage of the last app created.

The client IP is `request.remote_addr`. Behind a reverse proxy, wrap the WSGI app in Werkzeug's
`ProxyFix` with the number of trusted proxies, or every client shares the proxy's budget.
"""

from __future__ import annotations

import hashlib

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter

from app.services.users import normalize_email

LOGIN_ENDPOINT = "auth.login"


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def _ip_key() -> str:
    return "login-ip:" + (request.remote_addr or "unknown")


def _email_key() -> str:
    """The per-email budget's key: a SHA-256 of the normalised input, never the input itself (it
    lands in Redis or in memory, and may be a password typed into the wrong field)."""
    return "login-email:" + hashlib.sha256(normalize_email(request.form.get("email")).encode()).hexdigest()


def _failed(_response: Response) -> bool:
    return bool(g.get("login_failed"))


def record_login_failure() -> None:
    """Mark this request as a failed sign-in: it counts against both budgets."""
    g.login_failed = True


def init_login_limits(app: Flask) -> Limiter:
    """Put the login view of `app` behind its own limiter (called once the view is registered)."""
    limiter = Limiter(
        key_func=_ip_key,
        storage_uri=app.config["RATELIMIT_STORAGE_URI"],
        key_prefix=app.config.get("RATELIMIT_KEY_PREFIX") or "switchboard",
        strategy="fixed-window",
        headers_enabled=False,
        in_memory_fallback_enabled=bool(app.config.get("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)),
    )
    limiter.init_app(app)
    view = app.view_functions[LOGIN_ENDPOINT]
    for key_func in (_ip_key, _email_key):
        view = limiter.limit(_login_limit, key_func=key_func, methods=["POST"], deduct_when=_failed)(view)
    app.view_functions[LOGIN_ENDPOINT] = view
    app.extensions["switchboard.login_limiter"] = limiter
    return limiter
