"""The audit log: one `record` helper, called inside the transaction of the change it records."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent
from app.services.base import Actor, Page, count

# Detail names that must never reach the audit log, whatever a caller passes.
_FORBIDDEN_DETAILS = frozenset(
    ("api_key", "key", "secret", "password", "token", "ciphertext", "plaintext")
)


def record(
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: Any = None,
    **details: Any,
) -> AuditEvent:
    """Add an audit event to the current transaction (flushes; the caller commits)."""
    bad = _FORBIDDEN_DETAILS.intersection(name.lower() for name in details)
    if bad:
        raise ValueError(f"audit details may not hold {sorted(bad)}")
    event = AuditEvent(
        actor_id=actor.user_id,
        actor_label=actor.label or ("service token" if actor.is_service else "system"),
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id) if resource_id is not None else None,
        details=_jsonable(details),
        request_id=actor.request_id,
        ip=actor.ip,
    )
    db.session.add(event)
    db.session.flush()
    return event


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None


def list_events(filters: AuditFilter, page: Page) -> tuple[list[AuditEvent], int]:
    """Newest first, filtered by actor (a user id, or part of the email / label, any case),
    action (the name, or its first segments: `user` finds every `user.*` event) and resource
    (type, id)."""
    stmt = sa.select(AuditEvent)
    if filters.actor:
        actor_id = _as_uuid(filters.actor)
        if actor_id is not None:
            stmt = stmt.where(AuditEvent.actor_id == actor_id)
        else:
            stmt = stmt.where(AuditEvent.actor_label.icontains(filters.actor, autoescape=True))
    if filters.action:
        # Whole dot-separated segments: `user` and `user.` find every user event, while
        # `auth.login` does not also find `auth.login_failed`.
        action = filters.action.rstrip(".")
        stmt = stmt.where(sa.or_(AuditEvent.action == action,
                                 AuditEvent.action.startswith(action + ".", autoescape=True)))
    if filters.resource_type:
        stmt = stmt.where(AuditEvent.resource_type == filters.resource_type)
    if filters.resource_id:
        stmt = stmt.where(AuditEvent.resource_id == filters.resource_id)
    total = count(stmt)
    rows = db.session.execute(
        page.apply(stmt.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()))
    ).scalars().all()
    return list(rows), total


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
