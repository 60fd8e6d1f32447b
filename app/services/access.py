"""Who may use which model config (SPEC section 9): the one rule, and the rules of its fields.

A user **may use** config C when C's `access` is `everyone`, or the user is a member of one of
the groups in C's access list (`model_config_groups`). `access: "groups"` with no group is valid:
the config is open to no one (what deleting a config's last group leaves behind: it fails
closed). Admins are users too: they manage every config, but use only those open to them.

- `usable_by(user_id)` is the rule as an SQL predicate over `ChatModelConfig`, placed inside
  the queries that decide a user's models (the enabled set, resolution, the credentials
  hand-out), so it costs no query per config.
- `clean_access` / `clean_group_ids` / `access_change` are the field rules of `access` and
  `group_ids` on create and PATCH; `write_access` replaces a config's access rows (flush only).
- `group_ids_by_config` gives the answers and pages each config's groups, in one query.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.errors import InvalidInput, Validation
from app.extensions import db
from app.models import ACCESS_MODES, ChatModelConfig, Group, GroupMember, ModelConfigGroup

GROUP_NOT_FOUND = "Group not found."
INVALID_ACCESS = "Invalid model access."
GROUP_IDS_WITH_EVERYONE = "group_ids must be empty when access is everyone."
GROUP_IDS_MAX = 1000


def usable_by(user_id: uuid.UUID | None) -> sa.ColumnElement[bool]:
    """SQL: the `ChatModelConfig` row may be used by `user_id` (None, no user: only configs open
    to everyone)."""
    everyone = ChatModelConfig.access == "everyone"
    if user_id is None:
        return everyone
    member = (
        sa.select(ModelConfigGroup.group_id)
        .join(GroupMember, GroupMember.group_id == ModelConfigGroup.group_id)
        .where(ModelConfigGroup.model_config_id == ChatModelConfig.id, GroupMember.user_id == user_id)
        .exists()
    )
    return sa.or_(everyone, member)


# --- field rules -------------------------------------------------------------------------------


def clean_access(raw: Any) -> str:
    """`everyone` or `groups`. :raise InvalidInput: "Invalid model access." with a validation for `access`."""
    if not isinstance(raw, str) or raw not in ACCESS_MODES:
        raise InvalidInput(INVALID_ACCESS, validations=[Validation("access", "Use everyone or groups.")])
    return raw


def clean_group_ids(raw: Any) -> list[uuid.UUID]:
    """A list of group ids, duplicates collapsed, in the order first sent.

    :raise InvalidInput: "Invalid model access." with a validation for `group_ids`: not a list,
        too long, or an id that is not a UUID.
    """
    if not isinstance(raw, list | tuple):
        raise InvalidInput(INVALID_ACCESS, validations=[Validation("group_ids", "Must be a list of group ids.")])
    if len(raw) > GROUP_IDS_MAX:
        raise InvalidInput(INVALID_ACCESS, validations=[Validation("group_ids", f"At most {GROUP_IDS_MAX} groups.")])
    ids: dict[uuid.UUID, None] = {}
    for value in raw:
        if isinstance(value, uuid.UUID):
            ids[value] = None
            continue
        try:
            ids[uuid.UUID(value)] = None
        except (ValueError, TypeError, AttributeError):
            raise InvalidInput(INVALID_ACCESS,
                               validations=[Validation("group_ids", "Each group id must be a UUID.")]) from None
    return list(ids)


@dataclass(frozen=True)
class AccessChange:
    """What a create or PATCH asks of a config's access: the mode and, when it says, the groups."""

    access: str
    group_ids: list[uuid.UUID] | None  # None: keep the current list (PATCH without group_ids)


def access_change(*, access: Any = None, group_ids: Any = None, current: str | None = None) -> AccessChange | None:
    """The access a create (`current` None) or a PATCH (`current` the config's access) asks for;
    None when a PATCH sends neither field.

    On create, `access` defaults to `everyone`. On PATCH, `group_ids` alone replaces the list of a
    config whose access is already `groups`; `access: "everyone"` clears the list.

    :raise InvalidInput: a bad `access` or `group_ids`, or groups named while access is everyone
        ("Invalid model access." with detail "group_ids must be empty when access is everyone.").
    """
    if access is None and group_ids is None and current is not None:
        return None
    mode = clean_access(access) if access is not None else (current or "everyone")
    ids = clean_group_ids(group_ids) if group_ids is not None else None
    if mode == "everyone":
        if ids:
            raise InvalidInput(INVALID_ACCESS, detail=GROUP_IDS_WITH_EVERYONE,
                               validations=[Validation("group_ids", GROUP_IDS_WITH_EVERYONE)])
        return AccessChange("everyone", [])
    if ids is None and current != "groups":
        ids = []  # newly restricted without a list: open to no one until groups are named
    return AccessChange("groups", ids)


# --- writes (flush only; the caller's transaction commits) --------------------------------------


def share_lock_groups(group_ids: Iterable[uuid.UUID]) -> None:
    """FOR SHARE on the named group rows, in id order, and check that each one exists.

    A group deletion (FOR UPDATE on its row) then either finished before (the group is missing
    here) or waits until the caller commits and then removes the caller's rows with the group;
    no row is ever left pointing at a deleted group.

    :raise InvalidInput: "Group not found." with a validation for `group_ids`.
    """
    ids = sorted(set(group_ids))
    if not ids:
        return
    found = set(db.session.execute(
        sa.select(Group.id).where(Group.id.in_(ids)).order_by(Group.id).with_for_update(read=True)
    ).scalars())
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise InvalidInput(GROUP_NOT_FOUND, validations=[
            Validation("group_ids", f"No group has the id {gid}.") for gid in missing])


def write_access(config: ChatModelConfig, change: AccessChange, *, created: bool = False) -> dict[str, Any]:
    """Apply `change` to `config`, a row the caller has locked (or, `created`, just added): its
    `access`, and its access rows replaced by `change.group_ids` when given. Returns what changed
    (`access` and/or `group_ids`, the ids sorted), for the audit event; empty when nothing did.

    :raise InvalidInput: "Group not found." (see `share_lock_groups`).
    """
    before: set[uuid.UUID] = set()
    if not created and config.access == "groups":
        before = set(group_ids_by_config([config.id]).get(config.id, []))
    wanted = set() if change.access == "everyone" else (before if change.group_ids is None else set(change.group_ids))
    share_lock_groups(wanted)
    changed: dict[str, Any] = {}
    if created or config.access != change.access:
        changed["access"] = change.access
    if created or wanted != before:
        changed["group_ids"] = sorted(wanted)
    if not changed:
        return changed
    config.access = change.access
    if before:
        db.session.execute(sa.delete(ModelConfigGroup).where(ModelConfigGroup.model_config_id == config.id))
    if wanted:
        db.session.execute(sa.insert(ModelConfigGroup),
                           [{"model_config_id": config.id, "group_id": gid} for gid in sorted(wanted)])
    db.session.flush()
    return changed


# --- reads -------------------------------------------------------------------------------------


def group_ids_by_config(config_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Each config's groups (ids ordered by group name), in one query; configs without any are absent."""
    ids = list(config_ids)
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(ModelConfigGroup.model_config_id, ModelConfigGroup.group_id)
        .join(Group, Group.id == ModelConfigGroup.group_id)
        .where(ModelConfigGroup.model_config_id.in_(ids))
        .order_by(ModelConfigGroup.model_config_id, Group.name)
    )
    result: dict[uuid.UUID, list[uuid.UUID]] = {}
    for config_id, group_id in rows:
        result.setdefault(config_id, []).append(group_id)
    return result


def groups_by_config(config_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[Group]]:
    """Each config's groups (ordered by name), in one query: for pages that show their names."""
    ids = list(config_ids)
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(ModelConfigGroup.model_config_id, Group)
        .join(Group, Group.id == ModelConfigGroup.group_id)
        .where(ModelConfigGroup.model_config_id.in_(ids))
        .order_by(ModelConfigGroup.model_config_id, Group.name)
    )
    result: dict[uuid.UUID, list[Group]] = {}
    for config_id, group in rows:
        result.setdefault(config_id, []).append(group)
    return result
