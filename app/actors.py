"""Who is acting in this request: the one builder of the `Actor` that services record.

Both front ends use it: the JSON API for a bearer token or the session cookie, the HTML pages for
the signed-in user. It reads the request (id, client address); services never do, they take the
`Actor` as an argument.
"""

from __future__ import annotations

from flask import g, request

from app.models import ApiToken, User
from app.services.base import Actor


def request_actor(user: User | None = None, token: ApiToken | None = None) -> Actor:
    """The acting party of this request: a service token (acts as no user), a user's token, a
    signed-in user, or nobody ("anonymous")."""
    where = {"request_id": getattr(g, "request_id", None), "ip": request.remote_addr}
    if token is not None and token.is_service:
        return Actor(token=token, is_service=True, label=f"service token {token.prefix}", **where)
    if token is not None:
        user = token.user
    if user is None:
        return Actor(label="anonymous", **where)
    return Actor(user=user, token=token, label=user.email, **where)
