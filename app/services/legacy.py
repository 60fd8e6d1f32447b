"""Legacy chat providers and users' keys for them (SPEC section 6, "Legacy").

A legacy provider is one row per provider type in `chat_providers`, with an optional central
API key and three credential flags. Every rule of a legacy provider lives here; the JSON API
(`/providers`, `/user-provider-configs`) and the admin pages call these functions.

Decisions where the SPEC is silent:

- A missing legacy provider is 404 `"Chat provider not found."`.
- Display names follow the AI-provider rule (trimmed, at most 128 characters); an empty display
  name falls back to the type's label (`"OpenAI"`, `"AWS Bedrock"`...) in responses and pages.
- The provider type is immutable after creation (PATCH does not accept `provider`).
- An `api_key` string, when given, follows the key rules of section 4 (so `""` is 400 "API key is
  required."). PATCH `api_key` with a string replaces the central key; `null` removes it. Turning the
  central key off keeps the stored key (it is simply not used) until it is removed this way.
- The "API key is required when central API key is enabled." rule is checked on create, and on
  PATCH when the patch touches `central_api_key_enabled` or `api_key`, so an unrelated change
  (say, disabling the provider) is never blocked by an older row. Bedrock authenticates with AWS
  credentials of the deployment and never needs a key.
- `GET /user-provider-configs` lists, for the caller, the enabled providers that allow user keys,
  plus any provider (disabled, or no longer allowing user keys) for which the caller still holds
  a key, so that it can be seen and removed. `has_central_api_key_fallback` is true when the
  provider falls back to its central key (the flag is on and a central key is stored, or the
  provider is Bedrock). Key resolution uses the same rule (`central_key_available`), so a
  Bedrock provider without a key whose central credential serves resolves as available with
  `key_source: "provider"` and hands out `api_key: null` (AWS credentials of the chat backend).
- `DELETE /user-provider-configs/{id}` is idempotent: 204 whether or not a key (or the provider)
  exists; allowed when BYOK is off or the provider is disabled.
- Deleting a legacy provider removes its row, its ciphertext and every user's key for it (the
  foreign key cascades, on SQLite too since `foreign_keys=ON`). Legacy model configs of its type
  are left alone: without an enabled legacy provider they simply leave the enabled set.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.db import utcnow
from app.errors import Conflict, DomainError, InvalidInput, NotFound, Validation
from app.extensions import db
from app.models import PROVIDER_TYPES, ChatModelConfig, ChatProvider, UserChatProviderKey
from app.services import audit, secrets
from app.services.base import (
    Actor,
    Page,
    count,
    flush_unique,
    lock_one,
    parse_uuid,
    transaction,
)
from app.services.key_health import is_failing
from app.services.own_keys import OwnKeyKind, delete_own_key, save_own_key
from app.services.provider_keys import clean_api_key
from app.services.providers import TYPE_LABELS, clean_base_url, clean_display_name

NOT_FOUND = "Chat provider not found."
INVALID_POLICY = "Invalid credential policy."
NO_SOURCE = "At least one credential source must be enabled: central API key or user API key."
FALLBACK_NEEDS_CENTRAL = "Central API key fallback requires central API key to be enabled."
FALLBACK_NEEDS_USER = "Central API key fallback requires user API key to be enabled."
KEY_REQUIRED = "API key is required when central API key is enabled."
# Types that authenticate without a stored key (AWS credentials of the deployment).
KEYLESS_TYPES = frozenset({"bedrock"})
UNIQUE_USER_PROVIDER = "uq_user_chat_provider_keys_user_provider"

FLAGS = ("central_api_key_enabled", "allow_user_api_key", "allow_central_api_key_fallback")
UPDATABLE = ("display_name", "enabled", "base_url", *FLAGS, "api_key")


# --- field rules -------------------------------------------------------------------------------


def clean_provider_type(raw: Any) -> str:
    """:raise InvalidInput: "Invalid provider." """
    if not isinstance(raw, str) or raw not in PROVIDER_TYPES:
        raise InvalidInput("Invalid provider.", field="provider",
                           validations=[Validation("provider", "Must be one of " + ", ".join(PROVIDER_TYPES) + ".")])
    return raw


def check_credential_policy(central_api_key_enabled: bool, allow_user_api_key: bool,
                            allow_central_api_key_fallback: bool) -> None:
    """At least one credential source is on, and the fallback needs both.

    :raise InvalidInput: "Invalid credential policy." with the broken rule as detail.
    """
    if not central_api_key_enabled and not allow_user_api_key:
        raise InvalidInput(INVALID_POLICY, detail=NO_SOURCE, field="central_api_key_enabled")
    if allow_central_api_key_fallback and not central_api_key_enabled:
        raise InvalidInput(INVALID_POLICY, detail=FALLBACK_NEEDS_CENTRAL, field="allow_central_api_key_fallback")
    if allow_central_api_key_fallback and not allow_user_api_key:
        raise InvalidInput(INVALID_POLICY, detail=FALLBACK_NEEDS_USER, field="allow_central_api_key_fallback")


def _check_key_present(provider_type: str, central_api_key_enabled: bool, has_key: bool) -> None:
    if central_api_key_enabled and not has_key and provider_type not in KEYLESS_TYPES:
        raise InvalidInput(KEY_REQUIRED, field="api_key")


def _flag(raw: Any, field: str) -> bool:
    if not isinstance(raw, bool):
        raise InvalidInput("Invalid request body.", validations=[Validation(field, "Must be true or false.")])
    return raw


def display_name(provider: ChatProvider) -> str:
    """The display name, falling back to the type's label."""
    return provider.display_name or TYPE_LABELS.get(provider.provider, provider.provider)


def has_api_key(provider: ChatProvider) -> bool:
    return provider.api_key_ciphertext is not None


def central_key_available(provider: ChatProvider) -> bool:
    """The provider's own credential can serve requests: a stored central key, or none needed
    (Bedrock signs its requests with the AWS credentials configured in the chat backend).

    The one rule behind both `has_central_api_key_fallback` here and key resolution
    (`app.services.resolution`), so the two never disagree. Whether the central credential is
    used at all is the credential flags' business (`central_api_key_enabled`, the fallback).
    """
    return has_api_key(provider) or provider.provider in KEYLESS_TYPES


def uses_central_fallback(provider: ChatProvider) -> bool:
    """Users without a key of their own are served by the central key: the fallback is on, and the
    central credential can serve and was not refused (key health, as resolution decides)."""
    return (provider.allow_central_api_key_fallback and central_key_available(provider)
            and not is_failing(provider.api_key_last_test_result))


# --- reads -------------------------------------------------------------------------------------


def _by_id(provider_id: uuid.UUID) -> sa.Select:
    return sa.select(ChatProvider).where(ChatProvider.id == provider_id)


def get_provider(provider_id: Any) -> ChatProvider:
    """:raise InvalidInput: malformed id. :raise NotFound: "Chat provider not found." """
    provider = db.session.execute(_by_id(parse_uuid(provider_id))).scalar_one_or_none()
    if provider is None:
        raise NotFound(NOT_FOUND)
    return provider


def list_providers(page: Page = Page()) -> tuple[list[ChatProvider], int]:
    """Every legacy provider, disabled included, ordered by type."""
    stmt = sa.select(ChatProvider)
    total = count(stmt)
    rows = db.session.execute(page.apply(stmt.order_by(ChatProvider.provider))).scalars().all()
    return list(rows), total


def user_key_counts(provider_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many users hold a key for each provider (never the keys)."""
    if not provider_ids:
        return {}
    rows = db.session.execute(
        sa.select(UserChatProviderKey.chat_provider_id, sa.func.count())
        .where(UserChatProviderKey.chat_provider_id.in_(provider_ids))
        .group_by(UserChatProviderKey.chat_provider_id)
    )
    return {pid: n for pid, n in rows}


def legacy_config_counts(provider_types: list[str]) -> dict[str, int]:
    """Live legacy model configs (no AI provider) of each type: the ones a legacy provider serves."""
    if not provider_types:
        return {}
    rows = db.session.execute(
        sa.select(ChatModelConfig.provider, sa.func.count())
        .where(ChatModelConfig.ai_provider_id.is_(None), ChatModelConfig.deleted.is_(False),
               ChatModelConfig.provider.in_(provider_types))
        .group_by(ChatModelConfig.provider)
    )
    return {provider_type: n for provider_type, n in rows}


# --- admin writes ------------------------------------------------------------------------------


def create_provider(
    actor: Actor,
    *,
    provider: Any,
    display_name: Any = None,
    enabled: Any = None,
    base_url: Any = None,
    central_api_key_enabled: Any = None,
    allow_user_api_key: Any = None,
    allow_central_api_key_fallback: Any = None,
    api_key: Any = None,
) -> ChatProvider:
    """Register the legacy provider of one type. Unset flags default to central key on, user
    keys off, fallback off; `enabled` defaults to true.

    :raise InvalidInput: "Invalid provider.", "Invalid credential policy." (detail names the rule),
        "API key is required when central API key is enabled.", the key and base-URL rules.
    :raise Conflict: "Chat provider already exists." for a second provider of one type.
    """
    provider_type = clean_provider_type(provider)
    flags = {
        "central_api_key_enabled": True if central_api_key_enabled is None
        else _flag(central_api_key_enabled, "central_api_key_enabled"),
        "allow_user_api_key": False if allow_user_api_key is None else _flag(allow_user_api_key, "allow_user_api_key"),
        "allow_central_api_key_fallback": False if allow_central_api_key_fallback is None
        else _flag(allow_central_api_key_fallback, "allow_central_api_key_fallback"),
    }
    check_credential_policy(**flags)
    plaintext = None if api_key is None else clean_api_key(api_key)
    _check_key_present(provider_type, flags["central_api_key_enabled"], plaintext is not None)
    row = ChatProvider(
        id=uuid.uuid4(),
        provider=provider_type,
        display_name=clean_display_name(display_name),
        enabled=True if enabled is None else _flag(enabled, "enabled"),
        base_url=clean_base_url(base_url),
        **flags,
    )
    with transaction():
        if plaintext is not None:
            secrets.seal(row, plaintext)
        db.session.add(row)
        flush_unique({"uq_chat_providers_provider": Conflict("Chat provider already exists.", field="provider")})
        audit.record(actor, "legacy_provider.create", "chat_provider", row.id, provider=row.provider,
                     enabled=row.enabled, key_hint=row.api_key_hint, **flags)
    return row


def update_provider(actor: Actor, provider_id: Any, changes: dict[str, Any]) -> ChatProvider:
    """Change any of display name, enabled, base URL, the credential flags and the central key
    (a string replaces it; None removes it), with the row locked. The policy is checked on
    the row as it will be after the change.

    :raise InvalidInput: an unknown or immutable field, or a rule of `create_provider`.
    :raise NotFound: "Chat provider not found."
    """
    pid = parse_uuid(provider_id)
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise InvalidInput("Invalid request body.",
                           validations=[Validation(f, "This field cannot be changed.") for f in unknown])
    cleaned: dict[str, Any] = {}
    for field, value in changes.items():
        if field == "display_name":
            cleaned[field] = clean_display_name(value)
        elif field == "base_url":
            cleaned[field] = clean_base_url(value)
        elif field == "api_key":
            cleaned[field] = None if value is None else clean_api_key(value)
        else:
            cleaned[field] = _flag(value, field)
    with transaction():
        row = lock_one(_by_id(pid))
        if row is None:
            raise NotFound(NOT_FOUND)
        flags = {f: cleaned.get(f, getattr(row, f)) for f in FLAGS}
        check_credential_policy(**flags)
        key_changes = "api_key" in cleaned
        if key_changes or "central_api_key_enabled" in cleaned:
            will_have_key = cleaned["api_key"] is not None if key_changes else has_api_key(row)
            _check_key_present(row.provider, flags["central_api_key_enabled"], will_have_key)
        changed = sorted(f for f, v in cleaned.items() if f != "api_key" and getattr(row, f) != v)
        for field in changed:
            setattr(row, field, cleaned[field])
        key_action = None
        if key_changes and cleaned["api_key"] is not None:
            secrets.seal(row, cleaned["api_key"])
            key_action = "replaced"
        elif key_changes and has_api_key(row):
            row.api_key_ciphertext = row.api_key_digest = row.api_key_hint = None
            row.api_key_last_tested_at = row.api_key_last_test_result = None
            key_action = "removed"
        if changed or key_action:
            row.updated_at = utcnow()
            db.session.flush()
            details = {f: cleaned[f] for f in changed if f != "base_url"}
            audit.record(actor, "legacy_provider.update", "chat_provider", row.id, provider=row.provider,
                         fields=changed + (["api_key"] if key_action else []), api_key_change=key_action,
                         key_hint=row.api_key_hint if key_action == "replaced" else None, **details)
    return row


def delete_provider(actor: Actor, provider_id: Any) -> int:
    """Delete a legacy provider: its row and ciphertext, and every user's key for it (the
    foreign key cascades). Returns how many user keys went with it.

    :raise NotFound: "Chat provider not found."
    """
    pid = parse_uuid(provider_id)
    with transaction():
        row = lock_one(_by_id(pid))
        if row is None:
            raise NotFound(NOT_FOUND)
        provider_type = row.provider
        user_keys = user_key_counts([pid]).get(pid, 0)
        db.session.delete(row)
        db.session.flush()
        audit.record(actor, "legacy_provider.delete", "chat_provider", pid, provider=provider_type,
                     deleted_user_key_count=user_keys)
    return user_keys


# --- users' own keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UserProviderConfig:
    provider: ChatProvider
    has_user_api_key: bool

    @property
    def has_central_api_key_fallback(self) -> bool:
        return uses_central_fallback(self.provider)


def list_user_configs(user_id: uuid.UUID, page: Page = Page()) -> tuple[list[UserProviderConfig], int]:
    """The providers the user may bring a key for (enabled, allowing user keys), plus any
    provider for which the user still holds a key; ordered by type."""
    has_key = sa.exists().where(UserChatProviderKey.chat_provider_id == ChatProvider.id,
                                UserChatProviderKey.user_id == user_id)
    stmt = sa.select(ChatProvider, has_key.label("has_key")).where(sa.or_(
        sa.and_(ChatProvider.enabled.is_(True), ChatProvider.allow_user_api_key.is_(True)), has_key,
    ))
    total = count(stmt)
    rows = db.session.execute(page.apply(stmt.order_by(ChatProvider.provider))).all()
    return [UserProviderConfig(p, bool(k)) for p, k in rows], total


def _audit_save(actor: Actor, provider: ChatProvider, row: UserChatProviderKey, created: bool) -> None:
    audit.record(actor, "legacy_user_key.set", "chat_provider", provider.id, provider=provider.provider,
                 created=created, key_hint=row.hint)


def _audit_delete(actor: Actor, provider_id: uuid.UUID, _key_id: uuid.UUID) -> None:
    audit.record(actor, "legacy_user_key.delete", "chat_provider", provider_id)


# Users' own keys for legacy providers: saved and removed by the piece BYOK keys share.
LEGACY_KEYS = OwnKeyKind(
    key_model=UserChatProviderKey,
    provider_column="chat_provider_id",
    unique=UNIQUE_USER_PROVIDER,
    provider_query=_by_id,
    accepts_user_keys=lambda provider: provider.allow_user_api_key,
    not_found=NOT_FOUND,
    disabled="Provider is disabled.",
    not_allowed="Provider does not allow user API keys.",
    id_field="id",
    saved=_audit_save,
    deleted=_audit_delete,
)


def set_user_key(actor: Actor, provider_id: Any, api_key: str | DomainError | None) -> UserProviderConfig:
    """Save the caller's own key for a legacy provider (upsert: the row keeps its id and
    created_at), with the checks, locks and order of every user key (`app.services.own_keys`):
    BYOK off 403 "BYOK is disabled."; malformed id; missing 404; disabled 400 "Provider is
    disabled."; user keys not allowed 400 "Provider does not allow user API keys."; then the key
    rules. `api_key` may be the error parsing the request body raised, refused at the key step.

    :raise Forbidden: BYOK off. :raise InvalidInput: malformed id, disabled provider, user keys
        not allowed, bad key. :raise NotFound: no such provider. :raise Unauthorized: the caller
        was deactivated.
    """
    return save_own_key(actor, LEGACY_KEYS, provider_id, api_key,
                        then=lambda provider, _row: UserProviderConfig(provider, True))


def delete_user_key(actor: Actor, provider_id: Any) -> bool:
    """Remove the caller's key for a legacy provider. Idempotent; allowed when BYOK is off or the
    provider is disabled. Returns whether a key was deleted. :raise InvalidInput: malformed id."""
    return delete_own_key(actor, LEGACY_KEYS, provider_id)
