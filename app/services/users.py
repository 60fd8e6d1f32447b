"""Users: first-run setup, creation, sign-in, sessions, password change and deactivation."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound, Validation
from app.extensions import db
from app.models import ApiToken, User, UserAIProviderKey, UserChatProviderKey, UserSession
from app.services import audit
from app.services.base import Actor, Page, count, transaction
from app.services.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    burn_time,
    hash_password,
    needs_rehash,
    verify_password,
)

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


def normalize_email(email: str | None) -> str:
    return (email or "").strip().lower()


def _validate_new_user(email: str, name: str, password: str) -> list[Validation]:
    errors = []
    if not EMAIL_RE.match(email) or len(email) > 254:
        errors.append(Validation("email", "Enter a valid email address."))
    if len(name) > 128:
        errors.append(Validation("name", "At most 128 characters."))
    errors += password_problems(password)
    return errors


def password_problems(password: str, field: str = "password") -> list[Validation]:
    if len(password) < MIN_LENGTH:
        return [Validation(field, f"Use at least {MIN_LENGTH} characters.")]
    if len(password) > MAX_LENGTH:
        return [Validation(field, f"Use at most {MAX_LENGTH} characters.")]
    return []


def has_users() -> bool:
    return db.session.execute(sa.select(sa.exists().where(User.id.is_not(None)))).scalar()


def _insert_user(actor: Actor, email: str, name: str, password: str, role: str) -> User:
    email, name = normalize_email(email), (name or "").strip()
    errors = _validate_new_user(email, name, password or "")
    if errors:
        raise InvalidInput("Invalid user.", validations=errors)
    if role not in ("admin", "member"):
        raise InvalidInput("Invalid role.", validations=[Validation("role", "Choose admin or member.")])
    user = User(email=email, name=name, password_hash=hash_password(password), role=role)
    db.session.add(user)
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:
        raise Conflict("User already exists.", validations=[Validation("email", "A user with this email already exists.")]) from None
    audit.record(actor, "user.create", "user", user.id, email=email, role=role)
    return user


def create_first_admin(email: str, name: str, password: str, actor: Actor) -> User:
    """Create the first administrator; only while no user exists.

    :raise NotFound: users already exist (setup is over).
    :raise InvalidInput: bad email or password.
    """
    with transaction():
        if db.session.get_bind().dialect.name == "postgresql":
            # Two setup forms sent at once must not both find the table empty. (SQLite: the
            # write transaction already holds the database lock from its BEGIN IMMEDIATE.)
            db.session.execute(sa.text("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"))
        if has_users():
            raise NotFound("Setup is complete.")
        user = _insert_user(actor, email, name, password, "admin")
    return user


def create_user(actor: Actor, email: str, name: str, password: str, role: str = "member") -> User:
    """:raise InvalidInput: bad fields. :raise Conflict: the email is taken."""
    with transaction():
        return _insert_user(actor, email, name, password, role)


def get_user(user_id: uuid.UUID) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("User not found.")
    return user


def get_user_by_email(email: str) -> User:
    user = db.session.execute(sa.select(User).where(User.email == normalize_email(email))).scalar_one_or_none()
    if user is None:
        raise NotFound("User not found.")
    return user


def list_users(page: Page = Page()) -> tuple[list[User], int]:
    stmt = sa.select(User)
    total = count(stmt)
    rows = db.session.execute(page.apply(stmt.order_by(User.email))).scalars().all()
    return list(rows), total


def authenticate(email: str, password: str, actor: Actor) -> User | None:
    """Check credentials; records failures in the audit log. Returns None on any failure.

    An unknown email, a wrong password and a deactivated user look alike, in the answer and in
    the time it takes. A hash made with older parameters is upgraded on success.
    """
    email = normalize_email(email)
    password = password or ""
    with transaction():
        user = db.session.execute(sa.select(User).where(User.email == email)).scalar_one_or_none()
        if user is None:
            burn_time(password)
        elif verify_password(user.password_hash, password) and user.active:
            if needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
            return user
        audit.record(actor, "auth.login_failed", "user", user.id if user else None, email=email[:254])
    return None


def _hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _session_cutoff():
    """Sessions started before this instant have ended (PERMANENT_SESSION_LIFETIME, 12 hours)."""
    return utcnow() - current_app.permanent_session_lifetime


def start_session(user: User, actor: Actor) -> str:
    """Open a new server-side session for `user`; returns its id (kept in the signed cookie).

    Sessions last at most PERMANENT_SESSION_LIFETIME from sign-in; the user's ended ones are
    removed here.
    """
    session_id = secrets.token_urlsafe(32)
    with transaction():
        db.session.execute(
            sa.delete(UserSession).where(UserSession.user_id == user.id, UserSession.created_at < _session_cutoff())
        )
        db.session.add(UserSession(id_hash=_hash_session_id(session_id), user_id=user.id))
        audit.record(actor, "auth.login", "user", user.id)
    user.current_session_id = session_id
    return session_id


def load_session_user(session_id: str) -> User | None:
    """The active user behind a session id, or None when the session has ended."""
    row = db.session.execute(
        sa.select(UserSession).where(UserSession.id_hash == _hash_session_id(session_id))
    ).scalar_one_or_none()
    if row is None or not row.user.active or row.created_at < _session_cutoff():
        return None
    row.user.current_session_id = session_id
    return row.user


def end_session(session_id: str | None) -> None:
    """Sign out: the session row goes, so its cookie is refused even if replayed."""
    if not session_id:
        return
    with transaction():
        db.session.execute(sa.delete(UserSession).where(UserSession.id_hash == _hash_session_id(session_id)))


def _end_sessions(user_id: uuid.UUID, keep: str | None = None) -> None:
    stmt = sa.delete(UserSession).where(UserSession.user_id == user_id)
    if keep:
        stmt = stmt.where(UserSession.id_hash != _hash_session_id(keep))
    db.session.execute(stmt)


def change_password(user: User, current: str, new: str, actor: Actor) -> None:
    """Change the caller's password; every other session of theirs ends.

    :raise InvalidInput: the current password is wrong, or the new one is too weak.
    """
    with transaction():
        if not verify_password(user.password_hash, current or ""):
            raise InvalidInput("Invalid password.", validations=[Validation("current_password", "The current password is not correct.")])
        problems = password_problems(new or "", "new_password")
        if problems:
            raise InvalidInput("Invalid password.", validations=problems)
        user.password_hash = hash_password(new)
        _end_sessions(user.id, keep=user.current_session_id)
        audit.record(actor, "user.password_change", "user", user.id)


def set_role(actor: Actor, user_id: uuid.UUID, role: str) -> User:
    """Change a user's role; their sessions end so the new role applies at once."""
    with transaction():
        user = db.session.execute(sa.select(User).where(User.id == user_id).with_for_update()).scalar_one_or_none()
        if user is None:
            raise NotFound("User not found.")
        if role not in ("admin", "member"):
            raise InvalidInput("Invalid role.", validations=[Validation("role", "Choose admin or member.")])
        if user.role != role:
            if user.role == "admin" and _active_admins() <= 1:
                raise Conflict("The last administrator cannot lose that role.")
            user.role = role
            _end_sessions(user.id)
            audit.record(actor, "user.role_change", "user", user.id, role=role)
    return user


def _active_admins() -> int:
    """How many active administrators there are, with their rows locked (PostgreSQL) so that two
    administrators demoting or deactivating each other at once cannot leave none."""
    ids = db.session.execute(
        sa.select(User.id).where(User.role == "admin", User.active).order_by(User.id).with_for_update()
    ).scalars().all()
    return len(ids)


def deactivate_user(actor: Actor, user_id: uuid.UUID) -> User:
    """Soft-delete a user: sessions and tokens stop at once, and their BYOK keys are deleted,
    all in one transaction.

    :raise NotFound: no such user. :raise Conflict: the last active administrator, or the actor
        themselves (an administrator cannot lock themselves out by mistake).
    """
    with transaction():
        user = db.session.execute(sa.select(User).where(User.id == user_id).with_for_update()).scalar_one_or_none()
        if user is None:
            raise NotFound("User not found.")
        if not user.active:
            return user
        if actor.user_id == user.id:
            raise Conflict("You cannot deactivate your own account.")
        if user.role == "admin" and _active_admins() <= 1:
            raise Conflict("The last active administrator cannot be deactivated.")
        user.active = False
        user.deactivated_at = utcnow()
        _end_sessions(user.id)
        db.session.execute(
            sa.update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
        removed_keys = 0
        for model in (UserAIProviderKey, UserChatProviderKey):
            removed_keys += db.session.execute(sa.delete(model).where(model.user_id == user.id)).rowcount
        audit.record(actor, "user.deactivate", "user", user.id, email=user.email, deleted_user_keys=removed_keys)
    return user


def key_counts_by_user(user_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many stored keys (BYOK and legacy) each user holds, in one query per key table."""
    counts: dict[uuid.UUID, int] = {}
    if not user_ids:
        return counts
    for model in (UserAIProviderKey, UserChatProviderKey):
        rows = db.session.execute(
            sa.select(model.user_id, sa.func.count()).where(model.user_id.in_(user_ids)).group_by(model.user_id)
        )
        for user_id, n in rows:
            counts[user_id] = counts.get(user_id, 0) + n
    return counts
