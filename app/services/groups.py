"""Groups and their members (SPEC section 9).

A group is a named set of users; model configs may be open only to members of some groups (the
rule itself is `app.services.access.usable_by`). Groups are deleted for good: their memberships
and their places in configs' access lists go in the same transaction, and a config that was open
to that group alone is then open to no one (it fails closed) until an administrator changes it.

Memberships are `manual` (an administrator added the user) or `sso` (the identity provider's
groups claim did). An administrator adding a user who is already an `sso` member makes the
membership `manual`, so that explicit decision survives later sign-ins; removing a member removes
the membership whatever its source.

Locks: adding a member takes FOR SHARE on the group row, then on the user row; deleting a group
takes FOR UPDATE on its row, and deactivating a user FOR UPDATE on theirs. So a member added
while the group is deleted (or the user deactivated) either commits first and is removed with it,
or waits and then finds the group (or the user) gone: never a membership of a deleted group or an
inactive user.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound, Validation
from app.extensions import db
from app.models import ChatModelConfig, Group, GroupMember, ModelConfigGroup, User
from app.services import audit
from app.services.base import (
    Actor,
    Page,
    count,
    flush_unique,
    is_unique_violation,
    lock_one,
    parse_uuid,
    transaction,
)
from app.services.config_queries import listing_label
from app.services.text import clean_text, normalize_email

NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
NAME_MAX = 64
DISPLAY_NAME_MAX = 128
NAME_DETAIL = "Names must use lowercase letters, numbers, and single hyphens."
GROUP_NOT_FOUND = "Group not found."
USER_NOT_FOUND = "User not found."
NAME_INDEX = "uq_groups_name"
MEMBER_KEY = "pk_group_members"
UPDATABLE = ("name", "display_name")


# --- field rules -------------------------------------------------------------------------------


def clean_name(raw: Any) -> str:
    """Trimmed, lowercase letters, numbers and single hyphens, at most 64 characters.

    :raise InvalidInput: "Invalid group name." with the rule as detail.
    """
    name = raw.strip() if isinstance(raw, str) else ""
    if not name or len(name) > NAME_MAX or not NAME_RE.match(name):
        raise InvalidInput("Invalid group name.", detail=NAME_DETAIL, field="name")
    return name


def clean_display_name(raw: Any) -> str:
    """Trimmed, at most 128 characters; empty means none (answers then show the name).

    :raise InvalidInput: "Invalid display name."
    """
    return clean_text(raw, "display_name", "Invalid display name.", DISPLAY_NAME_MAX, noun="Display names")


def field_errors(fields: dict[str, Any]) -> list[InvalidInput]:
    """Every field rule that `fields` break (for a form that shows them all at once)."""
    errors = []
    for field, cleaner in (("name", clean_name), ("display_name", clean_display_name)):
        if field in fields:
            try:
                cleaner(fields[field])
            except InvalidInput as error:
                errors.append(error)
    return errors


# --- reads -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupFacts:
    member_count: int = 0
    config_count: int = 0  # live model configs open to the group


@dataclass(frozen=True)
class Member:
    """A membership with the user it is about, as answers and pages show it."""

    user_id: uuid.UUID
    email: str
    name: str
    source: str
    added_at: datetime


def get_group(group_id: Any) -> Group:
    """:raise InvalidInput: malformed id. :raise NotFound: "Group not found." """
    group = db.session.get(Group, parse_uuid(group_id, field="group_id"))
    if group is None:
        raise NotFound(GROUP_NOT_FOUND)
    return group


def list_groups(page: Page = Page()) -> tuple[list[Group], int]:
    """Every group, ordered by name."""
    stmt = sa.select(Group)
    total = count(stmt)
    return list(db.session.execute(page.apply(stmt.order_by(Group.name))).scalars()), total


def all_groups() -> list[Group]:
    """Every group by name: the choices of a model config's access list."""
    return list(db.session.execute(sa.select(Group).order_by(Group.name)).scalars())


def _open_configs(group_id: Any) -> sa.ColumnElement[bool]:
    """SQL: the ChatModelConfig row is live, restricted to groups, and open to `group_id`."""
    return sa.and_(
        ChatModelConfig.deleted.is_(False),
        ChatModelConfig.access == "groups",
        sa.select(ModelConfigGroup.group_id)
        .where(ModelConfigGroup.model_config_id == ChatModelConfig.id, ModelConfigGroup.group_id == group_id)
        .exists(),
    )


def group_facts(group_ids: list[uuid.UUID]) -> dict[uuid.UUID, GroupFacts]:
    """Member and open-config counts for many groups, in one query."""
    if not group_ids:
        return {}
    members = (sa.select(sa.func.count()).select_from(GroupMember)
               .where(GroupMember.group_id == Group.id).scalar_subquery())
    configs = (sa.select(sa.func.count()).select_from(ModelConfigGroup)
               .join(ChatModelConfig, ChatModelConfig.id == ModelConfigGroup.model_config_id)
               .where(ModelConfigGroup.group_id == Group.id, ChatModelConfig.deleted.is_(False),
                      ChatModelConfig.access == "groups")
               .scalar_subquery())
    rows = db.session.execute(sa.select(Group.id, members, configs).where(Group.id.in_(group_ids)))
    return {gid: GroupFacts(m, c) for gid, m, c in rows}


def _by_label(stmt: sa.Select) -> sa.Select:
    return stmt.order_by(listing_label(), ChatModelConfig.model, ChatModelConfig.id)


def configs_open_to(group_id: uuid.UUID) -> list[ChatModelConfig]:
    """The live model configs open to this group (perhaps among others), by name."""
    return list(db.session.execute(_by_label(sa.select(ChatModelConfig).where(_open_configs(group_id)))).scalars())


def configs_closed_by_deleting(group_id: uuid.UUID) -> list[ChatModelConfig]:
    """The live configs open to this group alone: deleting it leaves them open to no one. By name."""
    others = (sa.select(ModelConfigGroup.group_id)
              .where(ModelConfigGroup.model_config_id == ChatModelConfig.id, ModelConfigGroup.group_id != group_id)
              .exists())
    return list(db.session.execute(
        _by_label(sa.select(ChatModelConfig).where(_open_configs(group_id), ~others))).scalars())


def _member_query(group_id: uuid.UUID) -> sa.Select:
    return (sa.select(GroupMember, User).join(User, User.id == GroupMember.user_id)
            .where(GroupMember.group_id == group_id))


def _member(row: GroupMember, user: User) -> Member:
    return Member(user_id=user.id, email=user.email, name=user.name, source=row.source, added_at=row.added_at)


def page_members(group_id: Any, page: Page = Page()) -> tuple[list[Member], int]:
    """One page of a group's members, ordered by email, and how many it has.

    :raise InvalidInput: malformed id. :raise NotFound: "Group not found."
    """
    group = get_group(group_id)
    stmt = _member_query(group.id)
    total = count(stmt)
    rows = db.session.execute(page.apply(stmt.order_by(User.email, User.id)))
    return [_member(m, u) for m, u in rows], total


def groups_by_user(user_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Group]]:
    """Each user's groups, ordered by name, in one query."""
    if not user_ids:
        return {}
    rows = db.session.execute(
        sa.select(GroupMember.user_id, Group).join(Group, Group.id == GroupMember.group_id)
        .where(GroupMember.user_id.in_(user_ids)).order_by(GroupMember.user_id, Group.name)
    )
    result: dict[uuid.UUID, list[Group]] = {}
    for user_id, group in rows:
        result.setdefault(user_id, []).append(group)
    return result


# --- writes ------------------------------------------------------------------------------------


def create_group(actor: Actor, *, name: Any = None, display_name: Any = None) -> Group:
    """Add a group. :raise InvalidInput: a field breaks its rule. :raise Conflict: "Group already exists." """
    fields = {"name": clean_name(name), "display_name": clean_display_name(display_name)}
    with transaction():
        group = insert_group(actor, fields)
    return group


def insert_group(actor: Actor, fields: dict[str, Any]) -> Group:
    """Add a group of cleaned `fields` (`name`, optional `display_name`) to the current
    transaction and audit it. Flushes only. :raise Conflict: "Group already exists." """
    now = utcnow()
    group = Group(id=uuid.uuid4(), name=fields["name"], display_name=fields.get("display_name", ""),
                  created_at=now, updated_at=now)
    db.session.add(group)
    _flush_or_conflict()
    audit.record(actor, "group.create", "group", group.id, name=group.name, display_name=group.display_name)
    return group


def update_group(actor: Actor, group_id: Any, changes: dict[str, Any]) -> Group:
    """Change the name and/or display name, with the row locked.

    :raise InvalidInput: an unknown field or a bad value. :raise NotFound: "Group not found."
    :raise Conflict: "Group already exists." (the new name is taken).
    """
    gid = parse_uuid(group_id, field="group_id")
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise InvalidInput("Invalid request body.",
                           validations=[Validation(f, "This field cannot be changed.") for f in unknown])
    cleaners = {"name": clean_name, "display_name": clean_display_name}
    cleaned = {field: cleaners[field](value) for field, value in changes.items()}
    with transaction():
        group = apply_group_update(actor, gid, cleaned)
    return group


def apply_group_update(actor: Actor, group_id: uuid.UUID, cleaned: dict[str, Any]) -> Group:
    """`update_group` with cleaned changes, inside the caller's transaction (flushes only).
    :raise NotFound: :raise Conflict:"""
    group = _lock(group_id)
    if group is None:
        raise NotFound(GROUP_NOT_FOUND)
    changed = {f: v for f, v in cleaned.items() if getattr(group, f) != v}
    if changed:
        before = {f: getattr(group, f) for f in changed}
        for field, value in changed.items():
            setattr(group, field, value)
        group.updated_at = utcnow()
        _flush_or_conflict()
        audit.record(actor, "group.update", "group", group.id, fields=sorted(changed), **changed,
                     **{f"previous_{f}": v for f, v in before.items()})
    return group


@dataclass(frozen=True)
class DeletedGroup:
    member_count: int
    closed_configs: list[uuid.UUID]  # configs now open to no one


def delete_group(actor: Actor, group_id: Any) -> DeletedGroup:
    """Delete a group in one transaction with its row locked (FOR UPDATE): its memberships go,
    and it leaves every model config's access list. A config open to it alone is then open to no
    one (its access stays `groups`) until an administrator changes it.

    :raise InvalidInput: malformed id. :raise NotFound: "Group not found."
    """
    gid = parse_uuid(group_id, field="group_id")
    with transaction():
        deleted = remove_group(actor, gid)
    return deleted


def remove_group(actor: Actor, group_id: uuid.UUID) -> DeletedGroup:
    """`delete_group` inside the caller's transaction (flushes only). :raise NotFound:"""
    gid = group_id
    group = _lock(gid)
    if group is None:
        raise NotFound(GROUP_NOT_FOUND)
    closed = [c.id for c in configs_closed_by_deleting(gid)]
    members = db.session.execute(sa.delete(GroupMember).where(GroupMember.group_id == gid)).rowcount
    configs = db.session.execute(sa.delete(ModelConfigGroup).where(ModelConfigGroup.group_id == gid)).rowcount
    db.session.execute(sa.delete(Group).where(Group.id == gid))
    audit.record(actor, "group.delete", "group", gid, name=group.name, removed_member_count=members,
                 removed_from_config_count=configs, configs_open_to_no_one=closed)
    db.session.expunge(group)
    return DeletedGroup(member_count=members, closed_configs=closed)


def add_member(actor: Actor, group_id: Any, user_id: Any) -> Member:
    """Make an active user a `manual` member of a group; idempotent (an `sso` membership becomes
    `manual`, an administrator's explicit decision that later sign-ins then leave alone).

    :raise InvalidInput: malformed id. :raise NotFound: "Group not found.", "User not found."
        (unknown or deactivated).
    """
    gid = parse_uuid(group_id, field="group_id")
    uid = parse_uuid(user_id, field="user_id")
    with transaction():
        return _add_member(actor, gid, User.id == uid)


def add_member_by_email(actor: Actor, group_id: Any, email: Any) -> Member:
    """`add_member`, the user named by their email (the group page's form).

    :raise NotFound: "Group not found.", "User not found." (for the field `email`).
    """
    gid = parse_uuid(group_id, field="group_id")
    address = normalize_email(email) if isinstance(email, str) else ""
    with transaction():
        return _add_member(actor, gid, User.email == address, field="email")


def _add_member(actor: Actor, gid: uuid.UUID, which_user: sa.ColumnElement[bool], field: str = "user_id") -> Member:
    group = _lock(gid, shared=True)
    if group is None:
        raise NotFound(GROUP_NOT_FOUND)
    user = lock_one(sa.select(User).where(which_user, User.active.is_(True))
                    .execution_options(populate_existing=True), shared=True)
    if user is None:
        raise NotFound(USER_NOT_FOUND, validations=[Validation(field, "No active user has this email.")]
                       if field == "email" else None)
    key = sa.select(GroupMember).where(GroupMember.group_id == gid, GroupMember.user_id == user.id)
    row = lock_one(key.execution_options(populate_existing=True))
    if row is None:
        row = GroupMember(group_id=gid, user_id=user.id, source="manual", added_at=utcnow())
        try:
            with db.session.begin_nested():
                db.session.add(row)
                db.session.flush()
        except IntegrityError as error:
            if not is_unique_violation(error, MEMBER_KEY):
                raise
            row = lock_one(key.execution_options(populate_existing=True))  # a parallel add won: the same outcome
            if row is None:
                raise
        else:
            audit.record(actor, "group.member_add", "group", gid, group=group.name, user_id=user.id,
                         email=user.email, source="manual")
            return _member(row, user)
    if row.source != "manual":
        previous, row.source = row.source, "manual"
        db.session.flush()
        audit.record(actor, "group.member_add", "group", gid, group=group.name, user_id=user.id, email=user.email,
                     source="manual", previous_source=previous)
    return _member(row, user)


def remove_member(actor: Actor, group_id: Any, user_id: Any) -> bool:
    """Remove a user from a group, whatever the membership's source; idempotent. Returns whether
    a membership was removed.

    :raise InvalidInput: malformed id. :raise NotFound: "Group not found."
    """
    gid = parse_uuid(group_id, field="group_id")
    uid = parse_uuid(user_id, field="user_id")
    with transaction():
        group = _lock(gid, shared=True)
        if group is None:
            raise NotFound(GROUP_NOT_FOUND)
        row = db.session.execute(
            sa.delete(GroupMember).where(GroupMember.group_id == gid, GroupMember.user_id == uid)
            .returning(GroupMember.source)
        ).first()
        if row is None:
            return False
        email = db.session.execute(sa.select(User.email).where(User.id == uid)).scalar_one_or_none()
        audit.record(actor, "group.member_remove", "group", gid, group=group.name, user_id=uid, email=email,
                     source=row.source)
    return True


def get_member(group_id: Any, user_id: Any) -> Member:
    """One membership (for the removal confirmation page).

    :raise InvalidInput: malformed id. :raise NotFound: "Group not found." or "User not found."
    """
    group = get_group(group_id)
    row = db.session.execute(
        _member_query(group.id).where(GroupMember.user_id == parse_uuid(user_id, field="user_id"))
    ).first()
    if row is None:
        raise NotFound(USER_NOT_FOUND)
    return _member(*row)


def remove_user_from_all(actor: Actor, user: User, *, reason: str) -> int:
    """Remove a user from every group (flush only: the caller's transaction, e.g. a deactivation,
    commits). Each removal is audited as `group.member_remove` with `reason`. Returns the count."""
    rows = db.session.execute(
        sa.select(GroupMember.group_id, GroupMember.source, Group.name)
        .join(Group, Group.id == GroupMember.group_id)
        .where(GroupMember.user_id == user.id).order_by(Group.name)
    ).all()
    if not rows:
        return 0
    db.session.execute(sa.delete(GroupMember).where(GroupMember.user_id == user.id))
    for group_id, source, name in rows:
        audit.record(actor, "group.member_remove", "group", group_id, group=name, user_id=user.id,
                     email=user.email, source=source, reason=reason)
    return len(rows)


# --- helpers -----------------------------------------------------------------------------------


def _lock(group_id: uuid.UUID, *, shared: bool = False) -> Group | None:
    """The group under a row lock, refreshed from the row; None when it is gone."""
    return lock_one(sa.select(Group).where(Group.id == group_id).execution_options(populate_existing=True),
                    shared=shared)


def _flush_or_conflict() -> None:
    flush_unique({NAME_INDEX: Conflict("Group already exists.", field="name")})
