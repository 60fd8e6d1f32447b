"""The statements every part of model configs builds on: a live config, the order lists are
shown in, and the enabled set (SPEC sections 6 and 9), defined once for the lists, resolution,
the /models page and default promotion."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from app.models import AIProvider, ChatModelConfig, ChatProvider
from app.services.access import usable_by


def live(config_id: uuid.UUID) -> sa.Select:
    """The config, when it is not deleted."""
    return sa.select(ChatModelConfig).where(ChatModelConfig.id == config_id, ChatModelConfig.deleted.is_(False))


def listing_label():
    """What lists sort by: the display name, or the model id when there is none (the expression
    of the index ix_chat_model_configs_listing, migration 0005)."""
    return sa.func.lower(sa.func.coalesce(sa.func.nullif(ChatModelConfig.display_name, ""), ChatModelConfig.model))


def ordered(stmt: sa.Select) -> sa.Select:
    """Deterministic order for every list: the default first, then by name, model and id."""
    return stmt.order_by(ChatModelConfig.is_default.desc(), listing_label(), ChatModelConfig.model, ChatModelConfig.id)


def with_providers(stmt: sa.Select) -> sa.Select:
    """`stmt` joined to each config's AI provider and, for legacy configs only, to the legacy chat
    provider of its type (so a config on a disabled or deleted AI provider is never rescued by a
    legacy row)."""
    return (stmt.outerjoin(AIProvider, AIProvider.id == ChatModelConfig.ai_provider_id)
            .outerjoin(ChatProvider, sa.and_(ChatModelConfig.ai_provider_id.is_(None),
                                             ChatProvider.provider == ChatModelConfig.provider)))


def in_enabled_set() -> sa.ColumnElement[bool]:
    """Over `with_providers`: the config is live and enabled, and its AI provider is live and
    enabled, or (a legacy config) its legacy chat provider is enabled."""
    backed = sa.and_(ChatModelConfig.ai_provider_id.is_not(None),
                     AIProvider.deleted.is_(False), AIProvider.enabled.is_(True))
    legacy = sa.and_(ChatModelConfig.ai_provider_id.is_(None), ChatProvider.enabled.is_(True))
    return sa.and_(ChatModelConfig.deleted.is_(False), ChatModelConfig.enabled.is_(True), sa.or_(backed, legacy))


def enabled_set_query(user_id: uuid.UUID | None) -> sa.Select:
    """A user's enabled set as ONE statement selecting (config, AI provider, legacy chat
    provider), default first, then by name, model and id: the configs of the enabled set that
    the user may use (`access.usable_by`; admins included, None: only configs open to everyone)."""
    stmt = with_providers(sa.select(ChatModelConfig, AIProvider, ChatProvider))
    return ordered(stmt.where(in_enabled_set(), usable_by(user_id)))
