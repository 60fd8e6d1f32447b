from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, new_uuid, utcnow
from app.models.providers import PROVIDER_TYPES, _in


class ChatProvider(Base):
    """The legacy per-type chat provider, kept so older installations go on working."""

    __tablename__ = "chat_providers"
    __table_args__ = (
        sa.CheckConstraint(_in("provider", PROVIDER_TYPES), name="provider"),
        sa.CheckConstraint(
            "central_api_key_enabled OR allow_user_api_key", name="credential_source"
        ),
        sa.CheckConstraint(
            "NOT allow_central_api_key_fallback OR (central_api_key_enabled AND allow_user_api_key)",
            name="fallback",
        ),
        sa.CheckConstraint("(api_key_ciphertext IS NULL) = (api_key_digest IS NULL)", name="api_key_digest"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    provider: Mapped[str] = mapped_column(sa.String(32), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(128), default="")
    api_key_ciphertext: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    api_key_digest: Mapped[str | None] = mapped_column(sa.ForeignKey("encryption_keys.digest"), index=True)
    api_key_hint: Mapped[str | None] = mapped_column(sa.String(16))
    # Health of the central key: its latest test or report (null until tested).
    api_key_last_tested_at: Mapped[datetime | None]
    api_key_last_test_result: Mapped[str | None] = mapped_column(sa.String(32))
    enabled: Mapped[bool] = mapped_column(default=True)
    base_url: Mapped[str] = mapped_column(sa.String(2048), default="")
    central_api_key_enabled: Mapped[bool] = mapped_column(default=True)
    allow_user_api_key: Mapped[bool] = mapped_column(default=False)
    allow_central_api_key_fallback: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UserChatProviderKey(Base):
    __tablename__ = "user_chat_provider_keys"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "chat_provider_id", name="uq_user_chat_provider_keys_user_provider"),
        sa.Index("ix_user_chat_provider_keys_provider", "chat_provider_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    chat_provider_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("chat_providers.id", ondelete="CASCADE"))
    ciphertext: Mapped[bytes] = mapped_column(sa.LargeBinary)
    key_digest: Mapped[str] = mapped_column(sa.ForeignKey("encryption_keys.digest"), index=True)
    hint: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_tested_at: Mapped[datetime | None]
    last_test_result: Mapped[str | None] = mapped_column(sa.String(32))
