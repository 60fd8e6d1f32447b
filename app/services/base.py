"""What every service shares: the acting party, the transaction boundary, row locks, paging."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.errors import DomainError, Forbidden, InvalidInput, Unauthorized, Validation
from app.extensions import db
from app.models import User

if TYPE_CHECKING:
    from app.models import ApiToken

T = TypeVar("T")


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where: passed explicitly to every service that changes something."""

    user: User | None = None
    token: ApiToken | None = None
    is_service: bool = False
    label: str = ""
    request_id: str | None = None
    ip: str | None = None

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.user.id if self.user is not None else None

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.role == "admin" and not self.is_service

    @classmethod
    def system(cls, label: str = "cli") -> Actor:
        return cls(label=label)

    @classmethod
    def for_user(cls, user: User, **kw: Any) -> Actor:
        return cls(user=user, label=user.email, **kw)


BYOK_DISABLED = "BYOK is disabled."


def byok_allowed() -> bool:
    """The deployment-wide switch for users' own keys (`ALLOW_BYOK`); the one place it is read."""
    return bool(current_app.config["ALLOW_BYOK"])


def require_byok() -> None:
    """:raise Forbidden: "BYOK is disabled." when the deployment turned users' own keys off."""
    if not byok_allowed():
        raise Forbidden(BYOK_DISABLED)


def caller_id(actor: Actor) -> uuid.UUID:
    """The acting user's id. :raise Forbidden: a service token or the CLI (no user acts)."""
    if actor.user_id is None:
        raise Forbidden()
    return actor.user_id


@contextmanager
def transaction() -> Iterator[sa.orm.Session]:
    """Run one use case: commit on success, roll back on any error (then re-raise)."""
    session = db.session
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


def is_unique_violation(error: IntegrityError, constraint: str) -> bool:
    """True when `error` is the violation of the named unique constraint or index."""
    orig = error.orig
    diag = getattr(orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None):
        return diag.constraint_name == constraint
    # SQLite names the columns, not the index: match on the index's columns instead.
    return "UNIQUE constraint failed" in str(orig) and _sqlite_columns_match(str(orig), constraint)


def _sqlite_columns_match(text: str, constraint: str) -> bool:
    for table in db.metadata.tables.values():
        for item in [*table.indexes, *table.constraints]:
            if getattr(item, "name", None) == constraint:
                cols = [f"{table.name}.{c.name}" for c in item.columns]
                return all(c in text for c in cols)
    return False


def flush_unique(conflicts: dict[str, DomainError]) -> None:
    """Flush in a savepoint; the violation of a unique constraint (or index) named in `conflicts`
    raises its error there, and the transaction goes on. Uniqueness is the database's to decide:
    a check before the insert could be raced.

    :raise DomainError: the error of the violated constraint.
    """
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError as error:
        for constraint, conflict in conflicts.items():
            if is_unique_violation(error, constraint):
                raise conflict from None
        raise


def parse_uuid(value: Any, message: str = "Invalid ID.", field: str = "id") -> uuid.UUID:
    """:raise InvalidInput: `value` is not a UUID."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidInput(message, validations=[Validation(field, "Must be a UUID.")]) from None


def lock_one(stmt: sa.Select, *, shared: bool = False) -> Any:
    """Select one row under a row lock (`FOR UPDATE` / `FOR SHARE` on PostgreSQL).

    On SQLite the write transaction already holds the database write lock from its start.
    """
    return db.session.execute(stmt.with_for_update(read=shared)).scalar_one_or_none()


def lock_active_user(user_id: uuid.UUID) -> None:
    """Lock the acting user's row while the user is active; call it first in a transaction that
    writes something the user owns (their provider keys).

    `FOR NO KEY UPDATE` on PostgreSQL: it serialises one user's writes and conflicts with the
    same lock that `deactivate_user` takes, so a write racing a deactivation either comes
    first (and the deactivation deletes what it wrote) or waits and then finds the user inactive
    (401), never leaving something behind. Foreign-key checks from other tables (audit events,
    sessions) stay free. SQLite's immediate write transaction already serialises writers.

    :raise Unauthorized: the user is missing or was deactivated.
    """
    locked = db.session.execute(
        sa.select(User.id).where(User.id == user_id, User.active.is_(True)).with_for_update(key_share=True)
    ).scalar_one_or_none()
    if locked is None:
        raise Unauthorized()


@dataclass(frozen=True)
class Page:
    limit: int | None = None
    offset: int = 0

    def apply(self, stmt: sa.Select) -> sa.Select:
        if self.offset:
            stmt = stmt.offset(self.offset)
        if self.limit is not None:
            stmt = stmt.limit(self.limit)
        return stmt


def count(stmt: sa.Select) -> int:
    return db.session.execute(
        sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery())
    ).scalar_one()
