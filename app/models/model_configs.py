from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, new_uuid, utcnow
from app.models.providers import PROVIDER_TYPES, _in


class ChatModelConfig(Base):
    """A chat model users may pick; `ai_provider_id` is null only for legacy configs."""

    __tablename__ = "chat_model_configs"
    __table_args__ = (
        sa.CheckConstraint(_in("provider", PROVIDER_TYPES), name="provider"),
        sa.CheckConstraint("context_limit > 0", name="context_limit"),
        sa.CheckConstraint("compression_threshold BETWEEN 0 AND 100", name="compression_threshold"),
        sa.CheckConstraint("deleted = (deleted_at IS NOT NULL)", name="deleted_at"),
        sa.CheckConstraint("NOT (deleted AND is_default)", name="deleted_default"),
        sa.CheckConstraint("access IN ('everyone', 'groups')", name="access"),
        # At most one live default, enforced by the database on both backends.
        sa.Index(
            "uq_chat_model_configs_default", "is_default", unique=True,
            postgresql_where=sa.text("is_default AND NOT deleted"),
            sqlite_where=sa.text("is_default AND NOT deleted"),
        ),
        sa.Index(
            "uq_chat_model_configs_provider_model_live", "ai_provider_id", "model", unique=True,
            postgresql_where=sa.text("NOT deleted AND ai_provider_id IS NOT NULL"),
            sqlite_where=sa.text("NOT deleted AND ai_provider_id IS NOT NULL"),
        ),
        sa.Index(
            "uq_chat_model_configs_legacy_model_live", "provider", "model", unique=True,
            postgresql_where=sa.text("NOT deleted AND ai_provider_id IS NULL"),
            sqlite_where=sa.text("NOT deleted AND ai_provider_id IS NULL"),
        ),
        # The order lists are shown in (services/model_configs.py `_ordered`): pages stop early.
        sa.Index(
            "ix_chat_model_configs_listing", sa.text("is_default DESC"),
            sa.text("lower(coalesce(nullif(display_name, ''), model))"), "model", "id",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    ai_provider_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("ai_providers.id"), index=True)
    provider: Mapped[str] = mapped_column(sa.String(32))
    model: Mapped[str] = mapped_column(sa.String(256))
    display_name: Mapped[str] = mapped_column(sa.String(256), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    is_default: Mapped[bool] = mapped_column(default=False)
    context_limit: Mapped[int] = mapped_column(default=128000)
    compression_threshold: Mapped[int] = mapped_column(default=70)
    options: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    # "everyone", or "groups": only members of the groups in model_config_groups (none: no one).
    access: Mapped[str] = mapped_column(sa.String(16), default="everyone", server_default="everyone")
    created_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    updated_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted: Mapped[bool] = mapped_column(default=False)
    deleted_at: Mapped[datetime | None]
