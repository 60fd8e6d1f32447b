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
from app.errors import Conflict, InvalidInput, NotFound, Validation, WrongPassword
from app.extensions import db
from app.models import ApiToken, User, UserAIProviderKey, UserChatProviderKey, UserSession
from app.services import audit, groups
from app.services.base import Actor, Page, count, transaction
from app.services.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    burn_time,
    hash_password,
    needs_rehash,
    verify_password,
)
from app.services.text import normalize_email

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")




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


UNKNOWN_ACCOUNT = "(unknown account)"


def looks_like_email(value: str | None) -> bool:
    """Whether sign-in input has the shape of an email (so it may be shown or recorded)."""
    text = normalize_email(value)
    return bool(EMAIL_RE.match(text)) and len(text) <= 254


def _hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _session_cutoff():
    """Sessions started before this instant have ended (PERMANENT_SESSION_LIFETIME, 12 hours)."""
    return utcnow() - current_app.permanent_session_lifetime


def _read_password_hash(where: sa.ColumnElement[bool]) -> tuple[uuid.UUID, str] | None:
    """The user's id and password hash, then the end of the read transaction: argon2 must never
    run inside a transaction (on SQLite it would hold the database write lock for every hash)."""
    row = db.session.execute(sa.select(User.id, User.password_hash).where(where)).one_or_none()
    db.session.rollback()
    return (row[0], row[1]) if row is not None else None


def _lock_user_if_hash_is(user_id: uuid.UUID, verified_hash: str) -> User | None:
    """The user's row, locked, if its password hash is still the one just verified; None if the
    user is gone or the hash changed meanwhile (a password change, or another sign-in's upgrade)."""
    # FOR NO KEY UPDATE on PostgreSQL: it waits for (and is waited for by) a deactivation or
    # another change of this user, while inserts that only reference the row stay free.
    user = db.session.execute(
        sa.select(User).where(User.id == user_id).with_for_update(key_share=True)
    ).scalar_one_or_none()
    if user is None or user.password_hash != verified_hash:
        return None
    return user


def device_stamp(user_id: uuid.UUID, password_hash: str) -> str:
    """What a device cookie names (see `app/device_cookies.py`): the account, and a digest of its
    current password hash, so that a password change ends the exemption of every other browser."""
    return f"{user_id}.{hashlib.sha256(password_hash.encode()).hexdigest()[:32]}"


def device_stamp_for_email(email: str | None) -> str | None:
    """The device stamp of the active account `email` names; None when it names none."""
    found = _read_password_hash(sa.and_(User.email == normalize_email(email), User.active))
    if found is None or found[1] is None:  # no such account, or one without a password (SSO only)
        return None
    return device_stamp(*found)


def _open_session(user: User) -> str:
    """Add a new server-side session row for `user` (flushes); returns its id for the cookie."""
    session_id = secrets.token_urlsafe(32)
    db.session.add(UserSession(id_hash=_hash_session_id(session_id), user_id=user.id))
    db.session.flush()
    return session_id


def start_session(user: User) -> str:
    """Sign `user` in, inside the caller's transaction (the user's row locked): their ended
    sessions are removed and a new one is opened; returns its id for the cookie. Every way of
    signing in (password, single sign-on) goes through here."""
    db.session.execute(sa.delete(UserSession).where(UserSession.user_id == user.id,
                                                    UserSession.created_at < _session_cutoff()))
    return _open_session(user)


def _record_failed_sign_in(actor: Actor, user_id: uuid.UUID | None, email: str) -> None:
    """Audit a failed sign-in (inside the caller's transaction) with the account's email when the
    input named an existing account (deactivated ones included), else as "(unknown account)":
    whatever else was typed (a password with an `@` in it, say) is never kept or shown."""
    shown = email if user_id is not None else UNKNOWN_ACCOUNT
    audit.record(actor, "auth.login_failed", "user", user_id, email=shown)


def sign_in(email: str, password: str, actor: Actor) -> User | None:
    """Check the credentials and open a server-side session; None on any failure (audited).

    An unknown email, a wrong password and a deactivated user look alike, in the answer and in
    the time it takes. The password is verified outside any transaction; then one short
    transaction upgrades a hash made with older parameters, records the sign-in and adds the
    session row. Sessions last at most PERMANENT_SESSION_LIFETIME from sign-in; the user's ended
    ones are removed here. On success the user's `current_session_id` is the new session's id, and
    `device_stamp` what this browser's device cookie is to name.
    """
    email = normalize_email(email)
    password = password or ""
    user_id = None
    for _attempt in range(2):  # once more if the hash changed between the check and the lock
        found = _read_password_hash(User.email == email)
        if found is None:
            user_id = None
            burn_time(password)
            break
        user_id, verified_hash = found
        if not verify_password(verified_hash, password):
            break
        new_hash = hash_password(password) if needs_rehash(verified_hash) else None
        with transaction():
            user = _lock_user_if_hash_is(user_id, verified_hash)
            if user is None:
                continue
            if not user.active:
                _record_failed_sign_in(actor, user_id, email)
                return None
            if new_hash is not None:
                user.password_hash = new_hash
            session_id = start_session(user)
            audit.record(Actor.for_user(user, request_id=actor.request_id, ip=actor.ip), "auth.login", "user", user.id)
        user.current_session_id = session_id
        user.device_stamp = device_stamp(user_id, new_hash or verified_hash)
        return user
    with transaction():
        _record_failed_sign_in(actor, user_id, email)
    return None


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


def _end_sessions(user_id: uuid.UUID) -> None:
    db.session.execute(sa.delete(UserSession).where(UserSession.user_id == user_id))


WRONG_CURRENT_PASSWORD = "The current password is not correct."


def change_password(user: User, current: str, new: str, actor: Actor) -> str:
    """Change the caller's password. Every session of theirs ends, the current one included, and
    a new session is opened for the caller: its id is returned (and set as the user's
    `current_session_id`, with the `device_stamp` of the new password) so the caller stays signed
    in under a new cookie.

    Both argon2 runs (checking the current password, hashing the new one) happen outside any
    transaction; the change itself is one short transaction.

    :raise WrongPassword: the current password is wrong (checked first, whatever the new one is).
    :raise InvalidInput: the new password is too weak.
    """
    wrong = WrongPassword("Invalid password.", validations=[Validation("current_password", WRONG_CURRENT_PASSWORD)])
    user_id = user.id
    for _attempt in range(2):  # again once if the hash changed between the check and the lock
        found = _read_password_hash(User.id == user_id)
        if found is None or not verify_password(found[1], current or ""):
            raise wrong
        problems = password_problems(new or "", "new_password")
        if problems:
            raise InvalidInput("Invalid password.", validations=problems)
        new_hash = hash_password(new)
        with transaction():
            row = _lock_user_if_hash_is(user_id, found[1])
            if row is not None:
                row.password_hash = new_hash
                _end_sessions(user_id)
                session_id = _open_session(row)
                audit.record(actor, "user.password_change", "user", user_id)
        if row is not None:
            user.current_session_id = session_id
            user.device_stamp = device_stamp(user_id, new_hash)
            return session_id
    raise wrong


def lock_user_and_admins(user_id: uuid.UUID) -> tuple[User | None, int]:
    """Lock the target user and every active administrator in one statement, in id order, and
    return (the target, how many active administrators there are).

    One ordered statement is what keeps two administrators demoting or deactivating each other
    from deadlocking on PostgreSQL (locking the target first, then the others, took the same two
    rows in opposite orders); the counted rows stay locked until commit, so the two cannot both
    see another administrator and leave none. (SQLite: the write transaction already holds the
    database lock from its BEGIN IMMEDIATE.)

    `FOR NO KEY UPDATE`, not `FOR UPDATE`: it still conflicts with every other lock taken on a
    user row to change it (this one, `lock_active_user`, sign-in) or to keep it as it is while
    writing something of theirs (FOR SHARE: adding a group member), but not with the KEY SHARE
    locks of foreign-key checks. An administrator's change that touches the target's rows
    (a membership) and then records its audit event (a foreign key to the administrator's own
    row) would otherwise wait for us while we wait for it: a deadlock.
    """
    rows = db.session.execute(
        sa.select(User)
        .where(sa.or_(User.id == user_id, sa.and_(User.role == "admin", User.active)))
        .order_by(User.id)
        .with_for_update(key_share=True)
    ).scalars().all()
    target = next((u for u in rows if u.id == user_id), None)
    return target, sum(1 for u in rows if u.role == "admin" and u.active)


def set_role(actor: Actor, user_id: uuid.UUID, role: str) -> User:
    """Change a user's role; their sessions end so the new role applies at once.

    :raise NotFound: no such user. :raise InvalidInput: not a role.
    :raise Conflict: the last active administrator would lose the role.
    """
    with transaction():
        user, admins = lock_user_and_admins(user_id)
        if user is None:
            raise NotFound("User not found.")
        if role not in ("admin", "member"):
            raise InvalidInput("Invalid role.", validations=[Validation("role", "Choose admin or member.")])
        change_role(actor, user, role, admins)
    return user


def change_role(actor: Actor, user: User, role: str, active_admins: int) -> None:
    """Give `user` the role `role` inside the caller's transaction, where `lock_user_and_admins`
    locked the user and counted `active_admins`. Their sessions end so the new role applies at once.

    :raise Conflict: the last active administrator would lose the role (nothing is changed).
    """
    if user.role == role:
        return
    if user.role == "admin" and user.active and active_admins <= 1:
        raise Conflict("The last administrator cannot lose that role.")
    user.role = role
    _end_sessions(user.id)
    audit.record(actor, "user.role_change", "user", user.id, role=role)


def deactivate_user(actor: Actor, user_id: uuid.UUID) -> User:
    """Soft-delete a user: sessions and tokens stop at once, their BYOK keys are deleted and
    their group memberships removed (each audited as `group.member_remove`), all in one
    transaction.

    :raise NotFound: no such user. :raise Conflict: the last active administrator, or the actor
        themselves (an administrator cannot lock themselves out by mistake).
    """
    with transaction():
        user, admins = lock_user_and_admins(user_id)
        if user is None:
            raise NotFound("User not found.")
        if not user.active:
            return user
        if actor.user_id == user.id:
            raise Conflict("You cannot deactivate your own account.")
        if user.role == "admin" and admins <= 1:
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
        removed_groups = groups.remove_user_from_all(actor, user, reason="user_deactivated")
        audit.record(actor, "user.deactivate", "user", user.id, email=user.email, deleted_user_keys=removed_keys,
                     removed_group_memberships=removed_groups)
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
