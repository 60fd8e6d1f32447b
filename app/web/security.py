"""Request ids and security headers on every response (HTML, JSON and errors)."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

CSP = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
)

# Paths whose responses concern keys or tokens. Every HTML page is no-store anyway.
_SENSITIVE_PREFIXES = ("/api/", "/settings", "/admin", "/models", "/login", "/setup")


def init_security(app: Flask) -> None:
    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def add_headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", None) or uuid.uuid4().hex
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if app.config["SESSION_COOKIE_SECURE"]:
            response.headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
        if response.mimetype == "text/html" or request.path.startswith(_SENSITIVE_PREFIXES):
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        return response
