"""Request ids, body size limit and security headers on every response (HTML, JSON and errors)."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, abort, g, request

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

CSP = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
)
HSTS = "max-age=63072000; includeSubDomains"

STATIC_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # Same-origin requests keep their Referer: over HTTPS Flask-WTF refuses a POST whose Referer
    # is missing or foreign (WTF_CSRF_SSL_STRICT), so `no-referrer` would break every form.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def init_security(app: Flask) -> None:
    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex

    @app.before_request
    def refuse_large_body() -> None:
        """413 before any view runs, whether or not the view would read the body.

        Werkzeug only checks MAX_CONTENT_LENGTH when the body is read; a declared length over the
        limit is refused here at once, and a chunked body still stops at the limit while read.
        """
        limit = app.config.get("MAX_CONTENT_LENGTH")
        if limit is not None and (request.content_length or 0) > limit:
            abort(413)

    @app.before_request
    def refuse_nul() -> None:
        """400 for a form field or query parameter holding a NUL character: no PostgreSQL text
        column takes one, so it would otherwise fail deep in a write as a 500. (The API's JSON
        fields are checked by the services' field rules, which name the field.)"""
        if request.path.startswith("/api/"):
            return
        if any("\x00" in value for source in (request.args, request.form) for value in source.values()):
            abort(400)

    @app.after_request
    def add_headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", None) or uuid.uuid4().hex
        response.headers.update(STATIC_HEADERS)
        if app.config["SESSION_COOKIE_SECURE"]:
            # Served over HTTPS (the cookie would not work otherwise): browsers must keep to it.
            response.headers["Strict-Transport-Security"] = HSTS
        if request.endpoint != "static":
            # Pages, JSON, errors and redirects (which may set the session cookie) are never
            # stored by browsers or proxies: they can show keys, tokens or who is signed in.
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        return response
