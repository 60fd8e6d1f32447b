from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, new_uuid, utcnow

MEMBER_SOURCES = ("manual", "sso")
ACCESS_MODES = ("everyone", "groups")


class Group(Base):
    """A named set of users; model configs may be open only to members of some groups.

    Deleted for good (no soft delete): its memberships and its places in configs' access lists go
    with it (foreign keys cascade), so nothing can point at a deleted group.
    """

    __tablename__ = "groups"
    __table_args__ = (
        sa.CheckConstraint("length(name) BETWEEN 1 AND 64 AND name = lower(name)", name="name"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GroupMember(Base):
    """A user's membership of a group: `manual` (an administrator added them) or `sso` (the
    identity provider's groups claim did, and takes it away again)."""

    __tablename__ = "group_members"
    __table_args__ = (
        sa.CheckConstraint("source IN ('manual', 'sso')", name="source"),
        sa.Index("ix_group_members_user", "user_id"),
    )

    group_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(8), default="manual")
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelConfigGroup(Base):
    """One group a model config with `access = 'groups'` is open to."""

    __tablename__ = "model_config_groups"
    __table_args__ = (sa.Index("ix_model_config_groups_group", "group_id"),)

    model_config_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("chat_model_configs.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
