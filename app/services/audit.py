"""The audit log: one `record` helper, called inside the transaction of the change it records."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from app.db import rfc3339
from app.errors import InvalidInput, Validation
from app.extensions import db
from app.models import AuditEvent
from app.services.base import Actor
from app.services.text import clean_text

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
    """What the audit page, `GET /audit-events` and `audit export` filter by (all optional).

    `since` is inclusive and `until` exclusive, so consecutive windows neither overlap nor leave a gap.
    """

    actor: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


FILTER_MAX = 254


def clean_filter(raw: Any, field: str) -> str | None:
    """A text filter as a client sent it: trimmed, None when empty; plain text of at most 254
    characters (what the columns hold), so no database is handed a NUL or a surrogate.

    :raise InvalidInput: "Invalid query parameter." naming `field`.
    """
    if raw is None:
        return None
    value = clean_text(raw, field, "Invalid query parameter.", FILTER_MAX, noun="Filters", as_validation=True)
    return value or None


# RFC 3339 date-time: a date, "T" (or a space), a time with optional fraction, and an offset.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
INSTANT_DETAIL = "Must be an RFC 3339 timestamp with a time zone, such as 2026-01-31T12:00:00Z (or a date: 2026-01-31)."


def parse_instant(raw: Any, field: str, *, allow_date: bool = True) -> datetime | None:
    """A moment given as an RFC 3339 date-time (`2026-01-31T12:00:00Z`, `...+02:00`, fractions
    allowed) or, with `allow_date`, a date (`2026-01-31`, midnight UTC); None is no bound. The one
    parser of `since` and `until`: the API takes date-times (as its description says), the CLI also dates.

    :raise InvalidInput: "Invalid query parameter." with a validation naming `field` (an empty value too).
    """
    if raw is None:
        return None
    text = raw.strip() if isinstance(raw, str) else ""
    try:
        if allow_date and _DATE.match(text):
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        if _RFC3339.match(text):
            whole, _, rest = text.upper().replace(" ", "T").partition(".")
            if rest:  # Python takes at most 6 fraction digits
                digits = re.match(r"\d+", rest).group(0)
                whole += "." + digits[:6].ljust(6, "0") + rest[len(digits):]
            return datetime.fromisoformat(whole.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):
        pass  # e.g. month 13, or year 1 with a positive offset
    detail = INSTANT_DETAIL if allow_date else INSTANT_DETAIL.split(" (or a date")[0] + "."
    raise InvalidInput("Invalid query parameter.", validations=[Validation(field, detail)])


def _filtered(filters: AuditFilter) -> sa.Select:
    """Events matching the filters: actor (a user id, or part of the email / label, any case),
    action (the name, or its first segments: `user` finds every `user.*` event), resource (type,
    id) and time (`since` <= created_at < `until`)."""
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
    if filters.since is not None:
        stmt = stmt.where(AuditEvent.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEvent.created_at < filters.until)
    return stmt


@dataclass(frozen=True)
class EventPage:
    """One page of events, newest first, and the cursors of its neighbours: pass `older` as
    `before` for the next page (None on the last page), `newer` as `after` for the previous page
    (None on the first)."""

    events: list[AuditEvent]
    older: int | None
    newer: int | None


def page_events(filters: AuditFilter, limit: int, *, before: int | None = None, after: int | None = None,
                with_newer: bool = False) -> EventPage:
    """A page of at most `limit` events, newest first, by keyset on the event id (ids only grow):
    older than `before`, or else the `limit` events just newer than `after`. Each page costs an
    index range scan of `limit + 1` rows however deep it is (no OFFSET, no count); paging on
    never shows an event twice or skips one, whatever is recorded meanwhile.

    `with_newer` also tells whether newer events exist (one more indexed probe; the API does not ask).
    """
    stmt = _filtered(filters)
    if after is not None:
        rows = list(db.session.execute(
            stmt.where(AuditEvent.id > after).order_by(AuditEvent.id.asc()).limit(limit + 1)).scalars())
        if len(rows) <= limit:  # back at the top: the newest page, full
            return page_events(filters, limit, with_newer=with_newer)
        events = rows[:limit][::-1]
        older = events[-1].id if _exists(stmt.where(AuditEvent.id < events[-1].id)) else None
        return EventPage(events, older, events[0].id)
    if before is not None:
        stmt_page = stmt.where(AuditEvent.id < before)
    else:
        stmt_page = stmt
    rows = list(db.session.execute(stmt_page.order_by(AuditEvent.id.desc()).limit(limit + 1)).scalars())
    events = rows[:limit]
    older = events[-1].id if len(rows) > limit else None
    newer = None
    if with_newer and before is not None:
        first = events[0].id if events else before - 1
        newer = first if _exists(stmt.where(AuditEvent.id > first)) else None
    return EventPage(events, older, newer)


def _exists(stmt: sa.Select) -> bool:
    return db.session.execute(sa.select(stmt.exists())).scalar()


def count_events(filters: AuditFilter, cap: int = 10_000) -> int:
    """How many events match, counted up to `cap + 1` at most (`cap + 1` means "more than cap"):
    a page need not count a million rows to say there are many."""
    matching = _filtered(filters).with_only_columns(AuditEvent.id).limit(cap + 1).subquery()
    return db.session.execute(sa.select(sa.func.count()).select_from(matching)).scalar_one()


def iter_events(filters: AuditFilter, batch_size: int = 1000) -> Iterator[AuditEvent]:
    """Every matching event, oldest first, read in keyset batches of `batch_size` by id, each in
    a short read transaction of its own (ended before the batch is handed out), so memory stays
    flat and no transaction is held open while the caller writes. Events recorded after the
    export started are left out (it stops at the newest id it saw first)."""
    newest = db.session.execute(sa.select(sa.func.max(AuditEvent.id))).scalar()
    db.session.rollback()
    if newest is None:
        return
    last = 0
    while True:
        batch = list(db.session.execute(
            _filtered(filters).where(AuditEvent.id > last, AuditEvent.id <= newest)
            .order_by(AuditEvent.id).limit(batch_size)).scalars())
        for event in batch:
            db.session.expunge(event)
        db.session.rollback()
        if not batch:
            return
        yield from batch
        last = batch[-1].id


@dataclass(frozen=True)
class ResourceRef:
    """A resource named by events that still exists: what to call it, and the id of the page that
    shows it (`page_id`: the resource itself, or for a provider key its provider)."""

    label: str
    page_id: uuid.UUID


def _named(model: type, label: Any, *where: Any, page_id: Any = None) -> Any:
    """How to name one type's live rows: a function of ids -> {id: ResourceRef}, one query."""

    def lookup(ids: list[uuid.UUID]) -> dict[str, ResourceRef]:
        key = model.id
        stmt = sa.select(key, label, page_id if page_id is not None else key).where(key.in_(ids), *where)
        return {str(rid): ResourceRef(str(text), pid) for rid, text, pid in db.session.execute(stmt)}

    return lookup


def _resource_lookups() -> dict[str, Any]:
    from app.models import AIProvider, AIProviderKey, ChatModelConfig, ChatProvider, Group, User

    config_label = sa.func.coalesce(
        sa.select(AIProvider.name).where(AIProvider.id == ChatModelConfig.ai_provider_id).scalar_subquery(),
        ChatModelConfig.provider) + "/" + ChatModelConfig.model
    key_label = (AIProviderKey.hint + " on " + sa.select(AIProvider.name)
                 .where(AIProvider.id == AIProviderKey.provider_id).scalar_subquery())
    return {
        "ai_provider": _named(AIProvider, AIProvider.name, AIProvider.deleted.is_(False)),
        "ai_provider_key": _named(AIProviderKey, key_label, page_id=AIProviderKey.provider_id),
        "chat_model_config": _named(ChatModelConfig, config_label, ChatModelConfig.deleted.is_(False)),
        "chat_provider": _named(ChatProvider, ChatProvider.provider),
        "group": _named(Group, Group.name),
        "user": _named(User, User.email),
    }


def existing_resources(events: list[AuditEvent]) -> dict[tuple[str, str], ResourceRef]:
    """The resources these events name that still exist (deleted ones are left out), by
    (resource_type, resource_id): one query per resource type present, none per event."""
    wanted: dict[str, set[uuid.UUID]] = {}
    for event in events:
        rid = _as_uuid(event.resource_id) if event.resource_id else None
        if rid is not None:
            wanted.setdefault(event.resource_type, set()).add(rid)
    lookups = _resource_lookups()
    found = {}
    for resource_type, ids in wanted.items():
        if resource_type in lookups:
            for rid, ref in lookups[resource_type](sorted(ids)).items():
                found[(resource_type, rid)] = ref
    return found


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def event_record(event: AuditEvent) -> dict[str, Any]:
    """An event as it leaves the app: each item of GET /audit-events and each line of `audit export`."""
    return {
        "id": event.id,
        "created_at": rfc3339(event.created_at),
        "actor_id": str(event.actor_id) if event.actor_id else None,
        "actor_label": event.actor_label,
        "action": event.action,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "details": event.details or {},
        "request_id": event.request_id,
        "ip": event.ip,
    }
