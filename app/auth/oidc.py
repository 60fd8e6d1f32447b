"""Sign-in through the organisation's identity provider: OpenID Connect's authorization code flow
(SPEC section 10), with Authlib's Flask client doing the protocol.

- `GET /auth/oidc/login?next=...` sends the browser to the provider with a fresh `state`, `nonce`
  and PKCE (S256) challenge. Authlib keeps them, with the redirect URI and `next`, in this
  browser's signed session cookie (HttpOnly, SameSite=Lax), so they are bound to the browser
  and any worker can finish the sign-in; the callback removes them, so a state works once.
- `GET /auth/oidc/callback` checks the state, exchanges the code (with the client secret and the
  PKCE verifier), and verifies the ID token: signature by the provider's JWKS, `iss` (exactly
  OIDC_ISSUER), `aud` (our client id), `exp` (60 s of clock skew allowed) and `nonce`. When the
  email or the groups claim is not in the ID token, the userinfo endpoint fills it in. Then
  `services.sso.sign_in` decides who is signed in, and the browser gets a new session exactly as
  a password sign-in gives (`session.clear()`, `login_user`, the same `safe_next` rule for
  `next`, checked on the way in and again on the way out).
- Any failure ends on the sign-in error page: a plain sentence, a link back, the status of
  `services.sso.FAILURES` (502 when the provider cannot be reached), never the provider's answer,
  a token or a code; every failure is audited with its reason.

The provider's discovery document (`<issuer>/.well-known/openid-configuration`) and its JWKS are
fetched on first use and kept by the Authlib client for the life of the process; a failed fetch
is not kept, so the next click tries again (the app starts while the provider is down). Calls to
the provider use OUTBOUND_CONNECT_TIMEOUT / OUTBOUND_READ_TIMEOUT, go straight to it (no
HTTP(S)_PROXY), and Authlib's logger is kept above DEBUG (it logs the PKCE verifier there).

Both routes answer 404 when SSO is not configured.
"""

from __future__ import annotations

import logging
from typing import Any

from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, abort, current_app, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user
from joserfc.errors import BadSignatureError, ClaimError, JoseError
from requests import JSONDecodeError, RequestException

from app.actors import request_actor
from app.auth import bp
from app.db import writes_on_get
from app.metrics import count_login
from app.pages import safe_next
from app.services import sso as sso_service
from app.services.sso import SsoFailure

CLIENT = "sso"
CLOCK_SKEW_SECONDS = 60
REQUIRED_METADATA = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")


def init_sso(app: Flask) -> None:
    """Register the provider's Authlib client when SSO is configured. Nothing is fetched here."""
    if not app.config["SSO_ENABLED"]:
        return
    issuer = app.config["OIDC_ISSUER"]
    oauth = OAuth(app)
    oauth.register(
        CLIENT,
        client_id=app.config["OIDC_CLIENT_ID"],
        client_secret=app.config["OIDC_CLIENT_SECRET"],
        server_metadata_url=issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={
            "scope": app.config["OIDC_SCOPES"],
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_basic",
            "default_timeout": (app.config["OUTBOUND_CONNECT_TIMEOUT"], app.config["OUTBOUND_READ_TIMEOUT"]),
            "trust_env": False,
        },
    )
    logging.getLogger("authlib").setLevel(logging.INFO)


def _client():
    """The Authlib client. :raise 404: SSO is not configured."""
    oauth = current_app.extensions.get("authlib.integrations.flask_client")
    if oauth is None:
        abort(404)
    return oauth.create_client(CLIENT)


def _metadata(client) -> dict[str, Any]:
    """The provider's discovery document, fetched once per process.

    :raise SsoFailure: provider_unreachable (nothing is kept, so the next sign-in tries again), or
        provider_invalid (not a JSON object, without the endpoints, or for another issuer: not kept
        either).
    """
    try:
        metadata = client.load_server_metadata()
    except (JSONDecodeError, TypeError):  # an answer, but not a JSON object
        client.server_metadata.clear()
        raise SsoFailure("provider_invalid") from None
    except RequestException:
        client.server_metadata.clear()
        raise SsoFailure("provider_unreachable") from None
    if any(not isinstance(metadata.get(name), str) for name in REQUIRED_METADATA) or \
            metadata["issuer"] != current_app.config["OIDC_ISSUER"]:
        client.server_metadata.clear()
        raise SsoFailure("provider_invalid")
    return metadata


def _callback_url() -> str:
    """The redirect URI: OIDC_REDIRECT_URI when set (behind a TLS terminator the request's own
    scheme and host are the proxy's), else this request's URL of the callback."""
    return current_app.config["OIDC_REDIRECT_URI"] or url_for("auth.oidc_callback", _external=True)


@bp.route("/auth/oidc/login")
@writes_on_get
def oidc_login():
    """Start a sign-in at the identity provider. :raise 404: SSO is not configured."""
    client = _client()
    target = safe_next(request.args.get("next"))
    if current_user.is_authenticated:
        return redirect(target)
    try:
        _metadata(client)
        started = client.create_authorization_url(_callback_url())
    except SsoFailure as failure:
        sso_service.record_failure(request_actor(), failure)
        return _finish(target, failure=failure)
    client.save_authorize_data(redirect_uri=_callback_url(), next=target, **started)
    return redirect(started["url"])


@bp.route("/auth/oidc/callback")
@writes_on_get
def oidc_callback():
    """Finish a sign-in: verify what the provider sent back and sign the person in.

    :raise 404: SSO is not configured.
    """
    client = _client()
    started = client.framework.get_state_data(session, request.args.get("state")) or {}
    target = safe_next(started.get("next"))
    actor = request_actor()
    try:
        claims = _verified_claims(client, started)
    except SsoFailure as failure:
        sso_service.record_failure(actor, failure)
        return _finish(target, failure=failure)
    try:
        user = sso_service.sign_in(claims, actor)
    except SsoFailure as failure:  # refused (and audited) by the service
        return _finish(target, failure=failure)
    return _finish(target, user=user)


def _finish(target: str, *, user=None, failure: SsoFailure | None = None):
    """The one place where the outcome of a sign-in through the provider is known."""
    count_login("oidc", "failed" if failure is not None else "ok")
    if failure is not None:
        back = target if target != "/" else None
        return render_template("auth/sso_error.html", message=failure.message, next=back), failure.status
    # A fresh session, exactly as at a password sign-in: nothing from before carries over.
    session.clear()
    login_user(user)
    return redirect(target)


def _verified_claims(client, started: dict) -> dict[str, Any]:
    """The verified ID token's claims (with userinfo's for what it lacks).

    :raise SsoFailure: provider_error, state_mismatch, provider_unreachable, provider_invalid,
        code_rejected, invalid_token (with the check that failed).
    """
    if request.args.get("error"):
        raise SsoFailure("provider_error")
    if not started:
        raise SsoFailure("state_mismatch")
    metadata = _metadata(client)
    config = current_app.config
    try:
        token = client.authorize_access_token(
            claims_options={"iss": {"essential": True, "value": config["OIDC_ISSUER"]},
                            "aud": {"essential": True, "value": config["OIDC_CLIENT_ID"]}},
            leeway=CLOCK_SKEW_SECONDS,
        )
    except MismatchingStateError:
        raise SsoFailure("state_mismatch") from None
    except RequestException:
        raise SsoFailure("provider_unreachable") from None
    except OAuthError:
        raise SsoFailure("code_rejected") from None
    except JoseError as error:
        raise SsoFailure("invalid_token", check=_failed_check(error)) from None
    except (ValueError, TypeError, KeyError):  # a token answer or key set that is not what OIDC says
        raise SsoFailure("provider_invalid") from None
    claims = token.get("userinfo")
    if not claims:
        raise SsoFailure("invalid_token", check="id_token")
    claims = dict(claims)
    wanted = ["email", *([config["OIDC_GROUPS_CLAIM"]] if config["OIDC_GROUPS_CLAIM"] else [])]
    if all(name in claims for name in wanted) or not metadata.get("userinfo_endpoint"):
        return claims
    try:
        info = client.userinfo(token=token)
    except (RequestException, OAuthError):
        raise SsoFailure("provider_unreachable") from None
    except (ValueError, TypeError):
        raise SsoFailure("provider_invalid") from None
    if info.get("sub") != claims.get("sub"):
        raise SsoFailure("invalid_token", check="userinfo")
    return {**info, **claims}  # what the signed ID token says wins


def _failed_check(error: JoseError) -> str:
    """Which check an ID token failed, as a short word for the audit log."""
    if isinstance(error, ClaimError):
        return error.claim
    if isinstance(error, BadSignatureError):
        return "signature"
    return "format"
