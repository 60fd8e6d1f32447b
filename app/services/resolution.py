"""Key resolution (SPEC section 6): which provider, base URL and key serve user U with config C.

ONE code path decides, for every caller: `resolve` (one config, the resolution route),
`resolve_many` / `models_for` (the /models page, in a constant number of queries) and
`hand_out_credentials` (POST /credentials, the only place a key is decrypted for a client).

Rules, in order:

1. the config is disabled (or deleted) -> `model_disabled`;
2. its provider is disabled, deleted or (legacy) missing -> `provider_disabled`;
3. the key policy (a legacy provider's credential flags map to one, `legacy_key_policy`):
   - `provider_only`: the provider's oldest key, else `missing_api_key`;
   - `user_preferred`: the user's key if `ALLOW_BYOK`, else the provider's oldest key, else
     `user_api_key_required` (`missing_api_key` when BYOK is off);
   - `user_only`: the user's key if `ALLOW_BYOK`, else `user_api_key_required`
     (`byok_disabled` when BYOK is off).

A legacy config (no `ai_provider_id`) is served by the legacy chat provider of its type: the
provider's key is that row's `api_key` (central key), a user's key is their
`user_chat_provider_keys` row. A legacy provider appears in the summary with its type as name.
A deleted provider appears as `provider: null`; a disabled one with `enabled: false`.

Hand-outs: an unknown or deactivated user is 404 "User not found." (deactivation is a soft
delete; a deactivated user's keys are already gone and nobody may act for them). Every hand-out
call, refused ones included, writes a `credentials.hand_out` audit event, never with the key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app.errors import NotFound
from app.extensions import db
from app.models import (
    AIProvider,
    AIProviderKey,
    ChatModelConfig,
    ChatProvider,
    User,
    UserAIProviderKey,
    UserChatProviderKey,
)
from app.services import audit, secrets
from app.services.base import Actor, parse_uuid, transaction
from app.services.model_configs import CONFIG_NOT_FOUND, enabled_set_query, get_config

KEY_SOURCES = ("user", "provider")
REASONS = ("user_api_key_required", "missing_api_key", "byok_disabled", "provider_disabled", "model_disabled")
USER_NOT_FOUND = "User not found."


@dataclass(frozen=True)
class ProviderRef:
    """What a resolution tells about the provider: an AI provider, or a legacy chat provider."""

    id: uuid.UUID
    type: str
    name: str
    display_name: str
    enabled: bool
    key_policy: str
    base_url: str
    legacy: bool = False


@dataclass(frozen=True)
class Resolution:
    model_config_id: uuid.UUID
    provider: ProviderRef | None
    base_url: str | None
    key_source: str | None
    available: bool
    reason: str | None
    # The row whose secret serves the request (provider key, user key or legacy provider);
    # only `hand_out_credentials` opens it.
    key_row: Any = field(default=None, repr=False, compare=False)


def legacy_key_policy(chat_provider: ChatProvider) -> str:
    """The key policy a legacy chat provider's credential flags mean (also used by migrate-legacy).

    central key only -> provider_only; user keys only -> user_only; central + user keys with
    fallback -> user_preferred; central + user keys without fallback -> user_only (the central
    key is not used for users without a key).
    """
    central, user = chat_provider.central_api_key_enabled, chat_provider.allow_user_api_key
    if central and not user:
        return "provider_only"
    if central and user and chat_provider.allow_central_api_key_fallback:
        return "user_preferred"
    return "user_only"


def decide(policy: str, byok: bool, user_key: Any, provider_key: Any) -> tuple[str | None, str | None, Any]:
    """The key rule: (key_source, reason, key row) for a policy and the keys that exist."""
    if policy == "provider_only":
        return ("provider", None, provider_key) if provider_key is not None else (None, "missing_api_key", None)
    if policy == "user_preferred":
        if byok and user_key is not None:
            return "user", None, user_key
        if provider_key is not None:
            return "provider", None, provider_key
        return None, "user_api_key_required" if byok else "missing_api_key", None
    if not byok:
        return None, "byok_disabled", None
    if user_key is not None:
        return "user", None, user_key
    return None, "user_api_key_required", None


# --- resolving ---------------------------------------------------------------------------------


def resolve(user: User | None, model_config_id: Any) -> Resolution:
    """The resolution of one live config for `user`.

    :raise InvalidInput: malformed id. :raise NotFound: "Chat model config not found."
    """
    return resolve_many(user, [get_config(model_config_id)])[0]


def resolve_many(user: User | None, configs: list[ChatModelConfig]) -> list[Resolution]:
    """Resolutions for many configs, in their order, in at most 6 queries whatever their number."""
    ai_ids = {c.ai_provider_id for c in configs if c.ai_provider_id is not None}
    legacy_types = {c.provider for c in configs if c.ai_provider_id is None}
    providers = {}
    if ai_ids:
        providers = {p.id: p for p in db.session.execute(
            sa.select(AIProvider).where(AIProvider.id.in_(ai_ids))).scalars()}
    legacy = {}
    if legacy_types:
        legacy = {p.provider: p for p in db.session.execute(
            sa.select(ChatProvider).where(ChatProvider.provider.in_(legacy_types))).scalars()}
    rows = [(c, providers.get(c.ai_provider_id), legacy.get(c.provider) if c.ai_provider_id is None else None)
            for c in configs]
    return _resolve_rows(user, rows)


def models_for(user: User) -> list[tuple[ChatModelConfig, Resolution]]:
    """The enabled set, each config with its resolution for `user`, in at most 4 queries."""
    rows = [(c, p, lp) for c, p, lp in db.session.execute(enabled_set_query())]
    return list(zip([c for c, _, _ in rows], _resolve_rows(user, rows), strict=True))


def _resolve_rows(
    user: User | None, rows: list[tuple[ChatModelConfig, AIProvider | None, ChatProvider | None]]
) -> list[Resolution]:
    """Resolve (config, AI provider, legacy provider) rows; loads the keys in at most 3 queries."""
    byok = bool(current_app.config["ALLOW_BYOK"])
    serving = {p.id for _, p, _ in rows if p is not None and not p.deleted and p.enabled}
    serving_legacy = {lp.id for c, _, lp in rows if c.ai_provider_id is None and lp is not None and lp.enabled}
    provider_keys = _oldest_keys(serving)
    user_keys: dict[uuid.UUID, Any] = {}
    legacy_user_keys: dict[uuid.UUID, Any] = {}
    if user is not None and byok:
        if serving:
            user_keys = {k.ai_provider_id: k for k in db.session.execute(
                sa.select(UserAIProviderKey).where(UserAIProviderKey.user_id == user.id,
                                                   UserAIProviderKey.ai_provider_id.in_(serving))).scalars()}
        if serving_legacy:
            legacy_user_keys = {k.chat_provider_id: k for k in db.session.execute(
                sa.select(UserChatProviderKey).where(UserChatProviderKey.user_id == user.id,
                                                     UserChatProviderKey.chat_provider_id.in_(serving_legacy))).scalars()}
    results = []
    for config, provider, legacy in rows:
        if config.ai_provider_id is not None:
            ref = _ai_ref(provider)
            usable = provider is not None and provider.id in serving
            user_key = user_keys.get(config.ai_provider_id)
            provider_key = provider_keys.get(config.ai_provider_id)
        else:
            ref = _legacy_ref(legacy)
            usable = legacy is not None and legacy.id in serving_legacy
            user_key = legacy_user_keys.get(legacy.id) if legacy is not None else None
            provider_key = legacy if usable and legacy.api_key_ciphertext is not None else None
        results.append(_resolve_one(config, ref, usable, user_key, provider_key, byok))
    return results


def _resolve_one(config: ChatModelConfig, ref: ProviderRef | None, usable: bool, user_key: Any, provider_key: Any,
                 byok: bool) -> Resolution:
    base_url = ref.base_url if ref is not None else None
    if config.deleted or not config.enabled:
        return Resolution(config.id, ref, base_url, None, False, "model_disabled")
    if not usable or ref is None:
        return Resolution(config.id, ref, base_url, None, False, "provider_disabled")
    source, reason, row = decide(ref.key_policy, byok, user_key, provider_key)
    return Resolution(config.id, ref, base_url, source, source is not None, reason, key_row=row)


def _ai_ref(provider: AIProvider | None) -> ProviderRef | None:
    if provider is None or provider.deleted:
        return None
    return ProviderRef(provider.id, provider.type, provider.name, provider.display_name or provider.name,
                       provider.enabled, provider.key_policy, provider.base_url)


def _legacy_ref(chat_provider: ChatProvider | None) -> ProviderRef | None:
    if chat_provider is None:
        return None
    return ProviderRef(chat_provider.id, chat_provider.provider, chat_provider.provider,
                       chat_provider.display_name or chat_provider.provider, chat_provider.enabled,
                       legacy_key_policy(chat_provider), chat_provider.base_url, legacy=True)


def _oldest_keys(provider_ids: set[uuid.UUID]) -> dict[uuid.UUID, AIProviderKey]:
    """Each provider's oldest key (created_at, then id), in one query."""
    if not provider_ids:
        return {}
    rank = sa.func.row_number().over(partition_by=AIProviderKey.provider_id,
                                     order_by=(AIProviderKey.created_at, AIProviderKey.id)).label("rank")
    ranked = sa.select(AIProviderKey.id, rank).where(AIProviderKey.provider_id.in_(provider_ids)).subquery()
    stmt = sa.select(AIProviderKey).join(ranked, ranked.c.id == AIProviderKey.id).where(ranked.c.rank == 1)
    return {k.provider_id: k for k in db.session.execute(stmt).scalars()}


# --- handing out credentials -------------------------------------------------------------------


def hand_out_credentials(actor: Actor, user_id: Any, model_config_id: Any) -> tuple[Resolution, str | None]:
    """The resolution of a config for a user plus the decrypted key when available.

    Writes a `credentials.hand_out` audit event for every call (with user id, config id,
    key_source, available and reason; never the key), refused calls included.

    :raise InvalidInput: malformed ids. :raise NotFound: "User not found." (unknown or
        deactivated user), "Chat model config not found." (missing or deleted config).
    """
    uid = parse_uuid(user_id, "Invalid user ID.", field="user_id")
    cid = parse_uuid(model_config_id, "Invalid model config ID.", field="model_config_id")
    refused: NotFound | None = None
    resolution: Resolution | None = None
    api_key: str | None = None
    with transaction():
        user = db.session.execute(sa.select(User).where(User.id == uid)).scalar_one_or_none()
        config = db.session.execute(
            sa.select(ChatModelConfig).where(ChatModelConfig.id == cid, ChatModelConfig.deleted.is_(False))
        ).scalar_one_or_none()
        if user is None or not user.active:
            refused = NotFound(USER_NOT_FOUND)
        elif config is None:
            refused = NotFound(CONFIG_NOT_FOUND)
        else:
            resolution = resolve_many(user, [config])[0]
            if resolution.available:
                api_key = secrets.open_secret(resolution.key_row)
        audit.record(
            actor, "credentials.hand_out", "chat_model_config", cid,
            user_id=uid, model_config_id=cid,
            key_source=resolution.key_source if resolution else None,
            available=resolution.available if resolution else False,
            reason=resolution.reason if resolution else None,
            **({"refused": refused.message} if refused else {}),
        )
    if refused is not None:
        raise refused
    return resolution, api_key
