"""Dicts for JSON responses that more than one route module shares."""

from __future__ import annotations

from app.api.util import timestamp
from app.models import AIProvider
from app.services.providers import ProviderFacts, byok_enabled


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
