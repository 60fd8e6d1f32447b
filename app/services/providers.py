"""AI providers (SPEC section 4): create, list, edit, delete, and what depends on them.

Every rule of a provider lives here: names, types, display names, base URLs, key policies. Its
keys are `app.services.provider_keys`. The JSON API and the admin pages both call these
functions and map the errors they raise.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound, Validation
from app.extensions import db
from app.models import (
    KEY_POLICIES,
    PROVIDER_TYPES,
    AIProvider,
    AIProviderKey,
    ChatModelConfig,
    UserAIProviderKey,
)
from app.services import audit
from app.services.base import Actor, Page, byok_allowed, count, flush_unique, lock_one, parse_uuid, transaction
from app.services.base_urls import current_allowlist, normalize_base_url
from app.services.default_model import promote_default_if_missing
from app.services.key_health import failing, stale_before
from app.services.text import check_text, clean_text

NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
NAME_MAX = 64
DISPLAY_NAME_MAX = 128
RESERVED_PREFIX = "agents-"

PROVIDER_NOT_FOUND = "AI provider not found."
NAME_DETAIL = (
    "Names must use lowercase letters, numbers, and single hyphens, and cannot use the reserved agents- prefix."
)
TYPE_LABELS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "azure": "Azure OpenAI",
    "bedrock": "AWS Bedrock",
    "google": "Google",
    "openai-compat": "OpenAI-compatible",
    "openrouter": "OpenRouter",
    "vercel": "Vercel AI Gateway",
}
# What a field left out of a new provider becomes (the API's defaults; also the configuration import's).
DEFAULTS = {"display_name": "", "enabled": True, "base_url": "", "key_policy": "provider_only"}
POLICY_LABELS = {
    "provider_only": "Shared key only",
    "user_preferred": "User key preferred",
    "user_only": "User key required",
}


# --- field rules -------------------------------------------------------------------------------


def clean_type(raw: Any) -> str:
    """:raise InvalidInput: "Invalid AI provider type." """
    if not isinstance(raw, str) or raw not in PROVIDER_TYPES:
        raise InvalidInput("Invalid AI provider type.", detail="Use one of " + ", ".join(PROVIDER_TYPES) + ".",
                           field="type")
    return raw


def clean_name(raw: Any, *, allow_reserved: bool = False) -> str:
    """Trimmed, lowercase slug of at most 64 characters, not under the reserved prefix.

    :raise InvalidInput: "Invalid AI provider name." with the rule as detail.
    """
    name = raw.strip() if isinstance(raw, str) else ""
    if (
        not name
        or len(name) > NAME_MAX
        or not NAME_RE.match(name)
        or (name.startswith(RESERVED_PREFIX) and not allow_reserved)
    ):
        raise InvalidInput("Invalid AI provider name.", detail=NAME_DETAIL, field="name")
    return name


def clean_display_name(raw: Any) -> str:
    """Trimmed, at most 128 characters; empty means none (responses then show the name).

    :raise InvalidInput: "Invalid display name."
    """
    return clean_text(raw, "display_name", "Invalid display name.", DISPLAY_NAME_MAX, noun="Display names")


def clean_enabled(raw: Any) -> bool:
    """:raise InvalidInput: not a boolean (strings such as "false" are refused, not guessed)."""
    if not isinstance(raw, bool):
        raise InvalidInput("Invalid request body.", validations=[Validation("enabled", "Must be true or false.")])
    return raw


def clean_key_policy(raw: Any) -> str:
    """:raise InvalidInput: "Invalid key policy." """
    if not isinstance(raw, str) or raw not in KEY_POLICIES:
        raise InvalidInput("Invalid key policy.", detail="Use one of " + ", ".join(KEY_POLICIES) + ".",
                           field="key_policy")
    return raw


def clean_base_url(raw: Any) -> str:
    """Empty (the type's default endpoint) or a normalised URL the base-URL policy accepts.

    :raise InvalidInput: "Invalid provider base URL." with the reason as detail.
    """
    if raw is not None:
        if not isinstance(raw, str):
            raise InvalidInput("Invalid provider base URL.", detail="Must be a string.", field="base_url")
        # The encoding only: normalize_base_url refuses control characters with its own detail.
        check_text(raw, "base_url", "Invalid provider base URL.", noun="URLs", allow_control=True)
    return normalize_base_url(raw, current_allowlist())


def relies_on_shared_key(provider: AIProvider) -> bool:
    """Some requests are served by the provider's shared key (every policy but `user_only`), so
    having none is worth a warning."""
    return provider.key_policy != "user_only"


def byok_enabled(provider: AIProvider) -> bool:
    """Users may bring their own key: the deployment allows it and the policy is not provider_only."""
    return byok_allowed() and provider.key_policy != "provider_only"


def clean_fields(fields: dict[str, Any], *, current_name: str | None = None) -> tuple[dict[str, Any], list[InvalidInput]]:
    """Every field rule at once: the cleaned values of the fields that pass, and the errors of
    every one that does not (a form shows them all; the configuration import names each). Fields
    without a rule here are left out. Uniqueness is not checked (only the database decides that).
    `current_name` is the provider's name when editing, which may keep a reserved prefix.
    """
    cleaners = {
        "type": clean_type,
        "name": lambda v: clean_name(v, allow_reserved=isinstance(v, str) and v.strip() == current_name),
        "display_name": clean_display_name,
        "enabled": clean_enabled,
        "base_url": clean_base_url,
        "key_policy": clean_key_policy,
    }
    cleaned, errors = {}, []
    for field, value in fields.items():
        if field in cleaners:
            try:
                cleaned[field] = cleaners[field](value)
            except InvalidInput as error:
                errors.append(error)
    return cleaned, errors


def field_errors(fields: dict[str, Any], *, current_name: str | None = None) -> list[InvalidInput]:
    """Every field rule that `fields` break, not only the first (see `clean_fields`)."""
    return clean_fields(fields, current_name=current_name)[1]


# --- reads -------------------------------------------------------------------------------------


def _live(provider_id: uuid.UUID) -> sa.Select:
    return sa.select(AIProvider).where(AIProvider.id == provider_id, AIProvider.deleted.is_(False))


def lock_live(provider_id: uuid.UUID, *, shared: bool = False) -> AIProvider | None:
    """The live provider under a row lock, refreshed from the row (not a copy read earlier in the session)."""
    return lock_one(_live(provider_id).execution_options(populate_existing=True), shared=shared)


def get_provider(provider_id: Any) -> AIProvider:
    """A live provider. :raise InvalidInput: malformed id. :raise NotFound: missing or deleted."""
    provider = db.session.execute(_live(parse_uuid(provider_id))).scalar_one_or_none()
    if provider is None:
        raise NotFound(PROVIDER_NOT_FOUND)
    return provider


def list_providers(page: Page = Page()) -> tuple[list[AIProvider], int]:
    """Live providers, disabled included, ordered by name."""
    # `NOT deleted`, not `deleted IS false`: only the former lets PostgreSQL walk the partial
    # index uq_ai_providers_name_live (WHERE NOT deleted) for the order, instead of sorting them all.
    stmt = sa.select(AIProvider).where(~AIProvider.deleted)
    total = count(stmt)
    rows = db.session.execute(page.apply(stmt.order_by(AIProvider.name, AIProvider.id))).scalars().all()
    return list(rows), total


@dataclass(frozen=True)
class ProviderFacts:
    key_count: int = 0
    user_key_count: int = 0
    model_count: int = 0
    failing_key_count: int = 0  # shared keys the provider refused (key health)
    stale_key_count: int = 0  # shared keys older than KEY_MAX_AGE_DAYS

    @property
    def has_provider_api_key(self) -> bool:
        return self.key_count > 0

    @property
    def every_key_failing(self) -> bool:
        """The provider has shared keys and refused each of them: requests that need one fail."""
        return self.key_count > 0 and self.failing_key_count == self.key_count


def provider_facts(provider_ids: list[uuid.UUID]) -> dict[uuid.UUID, ProviderFacts]:
    """Key, user-key and live-model counts for many providers, and how their shared keys fare
    (failing, due for rotation), in one query."""
    if not provider_ids:
        return {}

    def key_count(*conditions: sa.ColumnElement[bool]) -> sa.ScalarSelect:
        return (sa.select(sa.func.count()).select_from(AIProviderKey)
                .where(AIProviderKey.provider_id == AIProvider.id, *conditions).scalar_subquery())

    cutoff = stale_before()
    stale = key_count(AIProviderKey.created_at < cutoff) if cutoff is not None else sa.literal(0)
    user_keys = (sa.select(sa.func.count()).select_from(UserAIProviderKey)
                 .where(UserAIProviderKey.ai_provider_id == AIProvider.id).scalar_subquery())
    models = (sa.select(sa.func.count()).select_from(ChatModelConfig)
              .where(ChatModelConfig.ai_provider_id == AIProvider.id, ChatModelConfig.deleted.is_(False))
              .scalar_subquery())
    rows = db.session.execute(
        sa.select(AIProvider.id, key_count(), user_keys, models, key_count(failing(AIProviderKey.last_test_result)),
                  stale).where(AIProvider.id.in_(provider_ids))
    )
    return {pid: ProviderFacts(*counts) for pid, *counts in rows}


# --- writes ------------------------------------------------------------------------------------


def create_provider(
    actor: Actor,
    *,
    type: Any,
    name: Any,
    display_name: Any = None,
    enabled: Any = None,
    base_url: Any = None,
    key_policy: Any = None,
) -> AIProvider:
    """Register a provider.

    :raise InvalidInput: a field breaks its rule. :raise Conflict: a live provider has this name.
    """
    fields = {
        "type": clean_type(type),
        "name": clean_name(name),
        "display_name": clean_display_name(display_name),
        "enabled": DEFAULTS["enabled"] if enabled is None else clean_enabled(enabled),
        "base_url": clean_base_url(base_url),
        "key_policy": DEFAULTS["key_policy"] if key_policy is None else clean_key_policy(key_policy),
    }
    with transaction():
        provider = insert_provider(actor, fields)
    return provider


def insert_provider(actor: Actor, fields: dict[str, Any]) -> AIProvider:
    """Add a provider of cleaned `fields` (type and name required; the others take their
    defaults) to the current transaction and audit it. Flushes only.

    :raise Conflict: a live provider has this name.
    """
    now = utcnow()
    provider = AIProvider(id=uuid.uuid4(), created_at=now, updated_at=now, **{**DEFAULTS, **fields})
    db.session.add(provider)
    _flush_or_conflict()
    audit.record(actor, "provider.create", "ai_provider", provider.id, name=provider.name,
                 type=provider.type, key_policy=provider.key_policy, enabled=provider.enabled)
    return provider


UPDATABLE = ("name", "display_name", "enabled", "base_url", "key_policy")


def update_provider(actor: Actor, provider_id: Any, changes: dict[str, Any]) -> AIProvider:
    """Change any of name, display name, enabled, base URL and key policy, with the row locked.

    `type` is immutable. A provider migrated from legacy may keep its reserved `agents-` name,
    but no provider may be renamed into that prefix.

    :raise InvalidInput: an unknown or immutable field, or a bad value. :raise NotFound:
    :raise Conflict: the new name is taken.
    """
    pid = parse_uuid(provider_id)
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise InvalidInput("Invalid request body.",
                           validations=[Validation(f, "This field cannot be changed.") for f in unknown])
    cleaners = {
        # A provider migrated from legacy keeps its reserved name; renaming *to* one is checked below.
        "name": lambda value: clean_name(value, allow_reserved=True),
        "display_name": clean_display_name,
        "enabled": clean_enabled,
        "base_url": clean_base_url,
        "key_policy": clean_key_policy,
    }
    cleaned = {field: cleaners[field](value) for field, value in changes.items()}
    with transaction():
        provider = apply_provider_update(actor, pid, cleaned)
    return provider


def apply_provider_update(actor: Actor, provider_id: uuid.UUID, cleaned: dict[str, Any]) -> AIProvider:
    """Lock the live provider and apply the cleaned changes (audited when something changed).
    Flushes only. :raise NotFound: :raise InvalidInput: a rename into the reserved prefix.
    :raise Conflict: the new name is taken."""
    provider = lock_live(provider_id)
    if provider is None:
        raise NotFound(PROVIDER_NOT_FOUND)
    new_name = cleaned.get("name", provider.name)
    if new_name != provider.name and new_name.startswith(RESERVED_PREFIX):
        raise InvalidInput("Invalid AI provider name.", detail=NAME_DETAIL, field="name")
    changed = {f: v for f, v in cleaned.items() if getattr(provider, f) != v}
    for field, value in changed.items():
        setattr(provider, field, value)
    if changed:
        provider.updated_at = utcnow()
        _flush_or_conflict()
        audit.record(actor, "provider.update", "ai_provider", provider.id,
                     fields=sorted(changed), **{k: v for k, v in changed.items() if k != "base_url"})
    return provider


def delete_provider(actor: Actor, provider_id: Any) -> dict[str, int]:
    """Delete a provider in one transaction with its row locked: soft-delete its model configs
    (promoting another live config to default if the default went), hard-delete its keys and
    every user's key for it, then soft-delete the provider. Returns what went with it.

    :raise NotFound: missing or already deleted.
    """
    pid = parse_uuid(provider_id)
    with transaction():
        removed = remove_provider(actor, pid)
    return removed


def remove_provider(actor: Actor, provider_id: uuid.UUID) -> dict[str, int]:
    """`delete_provider` inside the caller's transaction (flushes only). :raise NotFound:"""
    pid = provider_id
    provider = lock_live(pid)
    if provider is None:
        raise NotFound(PROVIDER_NOT_FOUND)
    now = utcnow()
    configs = db.session.execute(
        sa.update(ChatModelConfig)
        .where(ChatModelConfig.ai_provider_id == pid, ChatModelConfig.deleted.is_(False))
        .values(deleted=True, deleted_at=now, is_default=False, updated_at=now)
    ).rowcount
    keys = db.session.execute(sa.delete(AIProviderKey).where(AIProviderKey.provider_id == pid)).rowcount
    user_keys = db.session.execute(
        sa.delete(UserAIProviderKey).where(UserAIProviderKey.ai_provider_id == pid)
    ).rowcount
    provider.deleted = True
    provider.enabled = False
    provider.deleted_at = now
    provider.updated_at = now
    db.session.flush()
    if configs:
        promote_default_if_missing(actor)
    audit.record(actor, "provider.delete", "ai_provider", provider.id, name=provider.name,
                 deleted_key_count=keys, deleted_user_key_count=user_keys, deleted_model_config_count=configs)
    return {"keys": keys, "user_keys": user_keys, "model_configs": configs}


def _flush_or_conflict() -> None:
    flush_unique({"uq_ai_providers_name_live": Conflict("AI provider already exists.", field="name")})
