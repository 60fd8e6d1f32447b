from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, new_uuid, utcnow

PROVIDER_TYPES = ("openai", "anthropic", "azure", "bedrock", "google", "openai-compat", "openrouter", "vercel")
KEY_POLICIES = ("provider_only", "user_preferred", "user_only")
# What a key test (or the chat backend's report) can find (SPEC sections 6a and 11).
TEST_RESULTS = ("ok", "invalid_key", "forbidden", "rate_limited", "unreachable", "timeout", "unexpected_response")
# A key whose latest result is one of these is failing: resolution passes over it.
FAILING_RESULTS = ("invalid_key", "forbidden")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class AIProvider(Base):
    __tablename__ = "ai_providers"
    __table_args__ = (
        sa.CheckConstraint(_in("type", PROVIDER_TYPES), name="type"),
        sa.CheckConstraint(_in("key_policy", KEY_POLICIES), name="key_policy"),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 64 AND name = lower(name)", name="name"),
        sa.CheckConstraint("deleted = (deleted_at IS NOT NULL)", name="deleted_at"),
        sa.Index(
            "uq_ai_providers_name_live", "name", unique=True,
            postgresql_where=sa.text("NOT deleted"), sqlite_where=sa.text("NOT deleted"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    type: Mapped[str] = mapped_column(sa.String(32))
    name: Mapped[str] = mapped_column(sa.String(64))
    display_name: Mapped[str] = mapped_column(sa.String(128), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    deleted: Mapped[bool] = mapped_column(default=False)
    base_url: Mapped[str] = mapped_column(sa.String(2048), default="")
    key_policy: Mapped[str] = mapped_column(sa.String(32), default="provider_only")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None]


class AIProviderKey(Base):
    """A provider-scoped API key: ciphertext bound to (table, column, id, provider)."""

    __tablename__ = "ai_provider_keys"
    __table_args__ = (
        sa.UniqueConstraint("provider_id", "fingerprint", name="uq_ai_provider_keys_provider_fingerprint"),
        sa.Index("ix_ai_provider_keys_provider_created", "provider_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    provider_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("ai_providers.id", ondelete="CASCADE"))
    ciphertext: Mapped[bytes] = mapped_column(sa.LargeBinary)
    key_digest: Mapped[str] = mapped_column(sa.ForeignKey("encryption_keys.digest"), index=True)
    hint: Mapped[str] = mapped_column(sa.String(16))
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Key health: the latest test or report (null until tested).
    last_tested_at: Mapped[datetime | None]
    last_test_result: Mapped[str | None] = mapped_column(sa.String(32))


class UserAIProviderKey(Base):
    """A user's own key for one provider (BYOK): ciphertext bound to row, user and provider."""

    __tablename__ = "user_ai_provider_keys"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "ai_provider_id", name="uq_user_ai_provider_keys_user_provider"),
        sa.Index("ix_user_ai_provider_keys_provider", "ai_provider_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    ai_provider_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("ai_providers.id", ondelete="CASCADE"))
    ciphertext: Mapped[bytes] = mapped_column(sa.LargeBinary)
    key_digest: Mapped[str] = mapped_column(sa.ForeignKey("encryption_keys.digest"), index=True)
    hint: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_tested_at: Mapped[datetime | None]
    last_test_result: Mapped[str | None] = mapped_column(sa.String(32))
