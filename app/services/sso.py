"""Single sign-on (OpenID Connect, SPEC section 10): whom a verified ID token signs in, and what
the identity provider's groups claim grants them.

The protocol itself (state, PKCE, the code exchange, the ID token's signature, `iss`, `aud`,
`exp` and `nonce`) is Authlib's, driven by app/auth/oidc.py. This module takes the claims once
they are verified and applies the rules, in one transaction per sign-in:

- the account: matched by (issuer, `sub`) once linked; else the user with that email, linked only
  when the provider says `email_verified: true`; else a new member (no password) named by the
  `name` claim. A deactivated user, an email outside OIDC_ALLOWED_EMAIL_DOMAINS (exact domains,
  compared in lower case) and a missing email are refused. The account's email and name are
  not changed by later sign-ins.
- groups (when OIDC_GROUPS_CLAIM is set): each value that is an existing group's `name` makes the
  user an `sso` member of it; `sso` memberships the claim no longer lists go; `manual` ones are
  never touched; no group is created. A claim that is absent (or not a list of names) counts as
  no groups: identity providers leave it out for users who have none.
- the role (when OIDC_ADMIN_GROUP is set): admin exactly when the claim lists that value, except
  that the last active administrator is never demoted (users.change_role's rule).
- a new server-side session, as a password sign-in opens (users.start_session).

Every outcome is audited: `auth.login` with `method: "oidc"`, or `auth.login_failed` with the
`reason` (a short word); changes made because of the claims (`user.create`, `user.sso_link`,
`group.member_add`, `group.member_remove`, `user.role_change`) are recorded with the actor "sso".
Never a token, code or secret.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app.errors import Conflict, DomainError
from app.extensions import db
from app.models import Group, GroupMember, User, UserIdentity
from app.services import audit, users
from app.services.base import Actor, flush_unique, transaction
from app.services.text import normalize_email

SSO_ACTOR_LABEL = "sso"

# reason -> (HTTP status, what the sign-in error page says)
FAILURES: dict[str, tuple[int, str]] = {
    "state_mismatch": (400, "This sign-in has expired or was not started in this browser. Start again from the "
                            "sign-in page."),
    "provider_error": (400, "The identity provider did not sign you in."),
    "code_rejected": (400, "The identity provider did not accept this sign-in. Start again from the sign-in page."),
    "invalid_token": (401, "The identity provider's answer could not be verified, so you were not signed in."),
    "email_missing": (403, "The identity provider did not share a valid email address for your account, so you "
                           "were not signed in."),
    "email_not_verified": (403, "An account with your email address already exists here. Your email address must be "
                                "verified at the identity provider before you can use it to sign in."),
    "email_unverified": (403, "Your identity provider says your email address is not verified. Verify it there, "
                              "then sign in again."),
    "identity_conflict": (403, "The account with your email address is already linked to another sign-in at your "
                               "identity provider. Ask an administrator."),
    "email_domain_refused": (403, "Accounts with your email domain cannot sign in here."),
    "user_deactivated": (403, "Your account has been deactivated. Ask an administrator if you need it back."),
    "provider_unreachable": (502, "The identity provider could not be reached. Try again in a moment."),
    "provider_invalid": (502, "The identity provider's settings could not be used. Ask an administrator to check "
                              "the single sign-on configuration."),
}


class SsoFailure(DomainError):
    """A sign-in through the identity provider that ends on the sign-in error page.

    `reason` is the short word audited; `details` go into the audit event (never a token)."""

    def __init__(self, reason: str, **details: Any) -> None:
        status, message = FAILURES[reason]
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.details = details


@dataclass(frozen=True)
class Settings:
    issuer: str
    groups_claim: str | None
    admin_group: str | None
    allowed_domains: tuple[str, ...]


def settings() -> Settings:
    """The SSO settings (app/config.py checked them at start-up)."""
    c = current_app.config
    return Settings(c["OIDC_ISSUER"], c["OIDC_GROUPS_CLAIM"], c["OIDC_ADMIN_GROUP"], c["OIDC_ALLOWED_EMAIL_DOMAINS"])


@dataclass(frozen=True)
class Claims:
    """What the rules use of an ID token (and userinfo), read leniently: `groups` is None when
    no groups claim is configured."""

    subject: str
    email: str
    email_verified: bool
    # The provider said outright that the address is NOT verified (absent is not a "no": some
    # providers, Entra ID among them, never send the claim).
    email_unverified: bool
    name: str
    groups: tuple[str, ...] | None


def read_claims(raw: Mapping[str, Any], config: Settings) -> Claims:
    """:raise SsoFailure: `sub` is missing or too long (invalid_token), no usable email (email_missing)."""
    subject = raw.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 255:
        raise SsoFailure("invalid_token", check="sub")
    email = raw.get("email")
    email = normalize_email(email) if isinstance(email, str) else ""
    if not users.looks_like_email(email):
        raise SsoFailure("email_missing")
    verified = raw.get("email_verified")
    name = raw.get("name")
    groups = None
    if config.groups_claim:
        value = raw.get(config.groups_claim)
        if isinstance(value, str):
            value = [value]
        groups = tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()
    return Claims(
        subject=subject,
        email=email,
        email_verified=verified is True or (isinstance(verified, str) and verified.lower() == "true"),
        email_unverified=verified is False or (isinstance(verified, str) and verified.lower() == "false"),
        name=_plain_name(name) if isinstance(name, str) else "",
        groups=groups,
    )


def _plain_name(name: str) -> str:
    """The `name` claim as a one-line display name of at most 128 characters."""
    cleaned = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cs")).strip()
    return cleaned[:128]


class _Raced(DomainError):
    """A concurrent first sign-in of the same person inserted the user or the identity first."""


def sign_in(raw_claims: Mapping[str, Any], actor: Actor) -> User:
    """Sign in the person the verified claims describe, opening a new server-side session (its id
    is the returned user's `current_session_id`). Refusals are audited here.

    :raise SsoFailure: invalid_token, email_missing, email_domain_refused, user_deactivated,
        email_not_verified.
    """
    config = settings()
    try:
        claims = read_claims(raw_claims, config)
        try:
            with transaction():
                return _sign_in(claims, config, actor)
        except _Raced:  # the same person's first sign-in in another browser won: find what it made
            with transaction():
                return _sign_in(claims, config, actor)
    except SsoFailure as refused:
        record_failure(actor, refused)
        raise


def record_failure(actor: Actor, failure: SsoFailure) -> None:
    """Audit a failed sign-in through the identity provider: `auth.login_failed`, with the reason."""
    details = dict(failure.details)
    user_id = details.pop("user_id", None)
    with transaction():
        audit.record(actor, "auth.login_failed", "user", user_id, method="oidc", reason=failure.reason,
                     issuer=current_app.config["OIDC_ISSUER"], **details)


def _sign_in(claims: Claims, config: Settings, actor: Actor) -> User:
    identity = db.session.execute(
        sa.select(UserIdentity).where(UserIdentity.issuer == config.issuer, UserIdentity.subject == claims.subject)
    ).scalar_one_or_none()
    if identity is not None:
        user_id, account = identity.user_id, "matched"
    else:
        user_id = db.session.execute(sa.select(User.id).where(User.email == claims.email)).scalar_one_or_none()
        account = "created" if user_id is None else "linked"
    seen = {"user_id": user_id, "email": claims.email}

    if config.allowed_domains and claims.email.rsplit("@", 1)[1] not in config.allowed_domains:
        raise SsoFailure("email_domain_refused", **seen)
    sso = Actor(label=SSO_ACTOR_LABEL, request_id=actor.request_id, ip=actor.ip)
    if user_id is None:
        if claims.email_unverified:
            # Else whoever first claims an address could later share the account its owner links.
            raise SsoFailure("email_unverified", **seen)
        user_id = _create_user(sso, claims).id
    user, admins = _lock(user_id, config)
    if not user.active:
        raise SsoFailure("user_deactivated", **seen)
    if account == "linked" and not claims.email_verified:
        raise SsoFailure("email_not_verified", **seen)
    if account == "linked" and _linked_at(user.id, config.issuer):
        # One sign-in per identity provider and account: a second subject never joins the first.
        raise SsoFailure("identity_conflict", **seen)
    if account != "matched":
        _link(sso, user, config.issuer, claims)

    details: dict[str, Any] = {"method": "oidc", "account": account}
    if claims.groups is not None:
        _follow_groups(sso, user, claims.groups)
    if config.admin_group:
        role = "admin" if config.admin_group in (claims.groups or ()) else "member"
        try:
            users.change_role(sso, user, role, admins)
        except Conflict:
            details["role_kept"] = "last active administrator"
    session_id = users.start_session(user)
    audit.record(Actor.for_user(user, request_id=actor.request_id, ip=actor.ip), "auth.login", "user", user.id,
                 **details)
    user.current_session_id = session_id
    return user


def _lock(user_id: uuid.UUID, config: Settings) -> tuple[User, int]:
    """Lock the user's row (and, when the role follows the claim, every active administrator's, in
    the one ordered statement `set_role` and `deactivate_user` use, so they cannot deadlock with
    this). A deactivation racing this sign-in either comes first or waits for it."""
    if config.admin_group:
        user, admins = users.lock_user_and_admins(user_id)
    else:
        user = db.session.execute(
            sa.select(User).where(User.id == user_id).with_for_update(key_share=True)
        ).scalar_one_or_none()
        admins = 0
    if user is None:  # deleted between the match and the lock: as if it had never been found
        raise _Raced()
    return user, admins


def _linked_at(user_id: uuid.UUID, issuer: str) -> bool:
    return db.session.execute(sa.select(sa.exists().where(UserIdentity.user_id == user_id,
                                                          UserIdentity.issuer == issuer))).scalar_one()


def _create_user(sso: Actor, claims: Claims) -> User:
    """A member made just in time, without a password."""
    user = User(email=claims.email, name=claims.name, password_hash=None, role="member")
    db.session.add(user)
    _flush_or_race()
    audit.record(sso, "user.create", "user", user.id, email=user.email, role=user.role, source="sso")
    return user


def _link(sso: Actor, user: User, issuer: str, claims: Claims) -> None:
    db.session.add(UserIdentity(user_id=user.id, issuer=issuer, subject=claims.subject, email=claims.email))
    _flush_or_race()
    audit.record(sso, "user.sso_link", "user", user.id, issuer=issuer, subject=claims.subject, email=claims.email)


def _flush_or_race() -> None:
    """Flush; the unique email or (issuer, subject) taken meanwhile means another first sign-in of
    the same person won: the caller's transaction is tried again and finds what it made."""
    race = _Raced()
    flush_unique({"uq_users_email": race, "uq_user_identities_issuer_subject": race})


def _follow_groups(sso: Actor, user: User, claimed: tuple[str, ...]) -> None:
    """Make the user's `sso` memberships exactly the existing groups the claim names; `manual`
    memberships stay as they are. Groups joined are read under a shared lock, so a group being
    deleted either goes first (and is not joined) or waits."""
    names = {name for name in claimed if 0 < len(name) <= 64}
    wanted = {}
    if names:
        wanted = {group.id: group for group in db.session.execute(
            sa.select(Group).where(Group.name.in_(sorted(names))).order_by(Group.id).with_for_update(read=True)
        ).scalars()}
    current = {member.group_id: (member, name) for member, name in db.session.execute(
        sa.select(GroupMember, Group.name).join(Group, Group.id == GroupMember.group_id)
        .where(GroupMember.user_id == user.id)
    )}
    for group_id, group in sorted(wanted.items(), key=lambda item: item[1].name):
        if group_id not in current:
            db.session.add(GroupMember(group_id=group_id, user_id=user.id, source="sso"))
            audit.record(sso, "group.member_add", "group", group_id, group=group.name, user_id=user.id,
                         email=user.email, source="sso")
    for group_id, (member, name) in sorted(current.items(), key=lambda item: item[1][1]):
        if member.source == "sso" and group_id not in wanted:
            db.session.delete(member)
            audit.record(sso, "group.member_remove", "group", group_id, group=name, user_id=user.id,
                         email=user.email, source="sso")
    db.session.flush()
