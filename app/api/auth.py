"""Who is calling: a bearer token or the browser session (plus `X-CSRFToken` on unsafe methods).

Every route declares who may call it with `@access(...)`; one check here enforces it for both
ways of authenticating, before the view runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from flask import current_app, g, request
from flask_login import current_user

from app.actors import request_actor
from app.api import bp
from app.errors import Forbidden, Unauthorized
from app.extensions import csrf
from app.services.base import Actor
from app.services.tokens import authenticate_token

Access = Literal["public", "user", "admin", "service"]
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))

csrf.exempt(bp)  # bearer requests need no CSRF; cookie requests are checked below


def access(level: Access) -> Callable:
    """Declare who may call a route: any signed-in user, admins only, or service tokens only."""

    def mark(view: Callable) -> Callable:
        view.access = level
        return view

    return mark


def actor() -> Actor:
    return g.actor


@bp.before_request
def authenticate() -> None:
    view = current_app.view_functions.get(request.endpoint or "")
    level: Access = getattr(view, "access", "user")
    g.actor = _resolve_actor()
    if level == "public":
        return
    if g.actor is None:
        raise Unauthorized()
    if g.actor.is_service:
        if level != "service":
            raise Forbidden()
        return
    if level == "service" or (level == "admin" and not g.actor.is_admin):
        raise Forbidden()


def _resolve_actor() -> Actor | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthorized()
        token = authenticate_token(credentials.strip())
        if token is None:
            raise Unauthorized()
        return request_actor(token=token)
    if current_user.is_authenticated:
        if request.method not in SAFE_METHODS:
            csrf.protect()
        return request_actor(current_user._get_current_object())
    return None
