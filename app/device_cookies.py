"""Device cookies: a stranger who spends a user's per-email sign-in budget must not lock that user out.

A browser that signs in successfully with a password (or changes its password) gets a device
cookie naming the account: the user's id and a digest of their current password hash
(`users.device_stamp`), with the time it was issued, signed with SECRET_KEY (itsdangerous).
It is HttpOnly, SameSite=Lax, Path=/, lasts 180 days, and is Secure and named `__Host-device`
exactly when the session cookie is Secure (`device` otherwise). Signing out leaves it: it is what
lets the user back in while someone else is failing sign-ins for their email.

`exempts_from_email_limit` is the one rule: the cookie exempts a sign-in attempt from the
per-email limit (and the attempt is not counted there) only when it is intact, younger than 180
days, and names the active account the typed email names, with that account's current password
(a password change ends the exemption of every other browser, as it ends their sessions). The
per-IP limit applies to everyone.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from flask import Response, current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.services import users as user_service

MAX_AGE = timedelta(days=180)
_SALT = "switchboard.device-cookie"


def cookie_name() -> str:
    return "__Host-device" if current_app.config["SESSION_COOKIE_SECURE"] else "device"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_SALT)


def remember_device(response: Response, stamp: str) -> None:
    """Set the device cookie on `response` for the account `stamp` names (`users.device_stamp`)."""
    response.set_cookie(cookie_name(), _serializer().dumps(stamp), max_age=MAX_AGE, path="/",
                        secure=current_app.config["SESSION_COOKIE_SECURE"], httponly=True, samesite="Lax")


def exempts_from_email_limit(email: str | None) -> bool:
    """Whether this request's device cookie exempts a sign-in as `email` from the per-email limit."""
    raw = request.cookies.get(cookie_name())
    if not raw:
        return False
    try:
        stamp = _serializer().loads(raw, max_age=int(MAX_AGE.total_seconds()))
    except BadSignature:  # tampered, signed with another key, or expired (SignatureExpired)
        return False
    if not isinstance(stamp, str):
        return False
    expected = user_service.device_stamp_for_email(email)
    return expected is not None and hmac.compare_digest(stamp.encode(), expected.encode())
