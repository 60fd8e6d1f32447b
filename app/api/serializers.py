"""Every response shape of the JSON API, as the dicts the views answer with (their OpenAPI models
are in app/api/responses.py; in TESTING each answer is checked against them)."""

from __future__ import annotations

import uuid

from app.api.util import timestamp
from app.models import AIProvider, AIProviderKey, ChatModelConfig, ChatProvider, Group
from app.services import legacy
from app.services.groups import GroupFacts, Member
from app.services.providers import ProviderFacts, byok_enabled
from app.services.resolution import Handout, Resolution
from app.services.user_keys import UserKeyConfig


def display_name(provider: AIProvider) -> str:
    """Empty display names fall back to the provider's name."""
    return provider.display_name or provider.name


def provider_summary(provider: AIProvider) -> dict:
    return {
        "id": str(provider.id),
        "type": provider.type,
        "name": provider.name,
        "display_name": display_name(provider),
        "enabled": provider.enabled,
    }


def provider_dict(provider: AIProvider, facts: ProviderFacts) -> dict:
    return {
        **provider_summary(provider),
        "base_url": provider.base_url,
        "key_policy": provider.key_policy,
        "byok_enabled": byok_enabled(provider),
        "has_provider_api_key": facts.has_provider_api_key,
        "created_at": timestamp(provider.created_at),
        "updated_at": timestamp(provider.updated_at),
    }


def key_dict(key: AIProviderKey) -> dict:
    """A provider key as clients see it: never the key, only its hint."""
    return {
        "id": str(key.id),
        "provider_id": str(key.provider_id),
        "hint": key.hint,
        "created_at": timestamp(key.created_at),
        "updated_at": timestamp(key.updated_at),
        "last_tested_at": timestamp(key.last_tested_at),
        "last_test_result": key.last_test_result,
    }


def model_config_dict(config: ChatModelConfig, group_ids: dict[uuid.UUID, list[uuid.UUID]]) -> dict:
    """`group_ids`: the groups of the configs open to groups (`model_configs.group_ids_by_config`)."""
    return {
        "id": str(config.id),
        "ai_provider_id": str(config.ai_provider_id) if config.ai_provider_id else None,
        "provider": config.provider,
        "model": config.model,
        "display_name": config.display_name,
        "enabled": config.enabled,
        "is_default": config.is_default,
        "context_limit": config.context_limit,
        "compression_threshold": config.compression_threshold,
        "options": config.options,
        "access": config.access,
        "group_ids": [str(g) for g in group_ids.get(config.id, [])] if config.access == "groups" else [],
        "created_at": timestamp(config.created_at),
        "updated_at": timestamp(config.updated_at),
    }


def group_dict(group: Group, facts: GroupFacts) -> dict:
    return {
        "id": str(group.id),
        "name": group.name,
        "display_name": group.display_name or group.name,
        "member_count": facts.member_count,
        "created_at": timestamp(group.created_at),
        "updated_at": timestamp(group.updated_at),
    }


def member_dict(member: Member) -> dict:
    return {
        "user_id": str(member.user_id),
        "email": member.email,
        "name": member.name,
        "source": member.source,
        "added_at": timestamp(member.added_at),
    }


def resolution_dict(resolution: Resolution) -> dict:
    provider = resolution.provider
    return {
        "model_config_id": str(resolution.model_config_id),
        "provider": None if provider is None else {
            "id": str(provider.id),
            "type": provider.type,
            "name": provider.name,
            "display_name": provider.display_name,
            "enabled": provider.enabled,
        },
        "base_url": resolution.base_url,
        "key_source": resolution.key_source,
        "available": resolution.available,
        "reason": resolution.reason,
    }


def credentials_dict(handout: Handout) -> dict:
    """A hand-out: the resolution, the key, and which stored key it is (`key_id`, for the report
    of how it fared; null with `api_key` null)."""
    return {**resolution_dict(handout.resolution), "key_id": str(handout.key_id) if handout.key_id else None,
            "api_key": handout.api_key}


def user_key_config_dict(config: UserKeyConfig) -> dict:
    return {
        "provider": provider_summary(config.provider),
        "has_user_api_key": config.has_user_api_key,
        "has_provider_api_key": config.has_provider_api_key,
        "byok_enabled": config.byok_enabled,
        "hint": config.hint,
        "last_tested_at": timestamp(config.key_last_tested_at),
        "last_test_result": config.key_last_test_result,
    }


def legacy_provider_dict(provider: ChatProvider) -> dict:
    return {
        "id": str(provider.id),
        "provider": provider.provider,
        "display_name": legacy.display_name(provider),
        "enabled": provider.enabled,
        "base_url": provider.base_url,
        "has_api_key": legacy.has_api_key(provider),
        "central_api_key_enabled": provider.central_api_key_enabled,
        "allow_user_api_key": provider.allow_user_api_key,
        "allow_central_api_key_fallback": provider.allow_central_api_key_fallback,
        "created_at": timestamp(provider.created_at),
        "updated_at": timestamp(provider.updated_at),
    }


def legacy_user_config_dict(config: legacy.UserProviderConfig) -> dict:
    return {
        "provider_id": str(config.provider.id),
        "provider": config.provider.provider,
        "display_name": legacy.display_name(config.provider),
        "has_user_api_key": config.has_user_api_key,
        "has_central_api_key_fallback": config.has_central_api_key_fallback,
    }


