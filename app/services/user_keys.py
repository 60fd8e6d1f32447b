"""Users' own provider keys, "bring your own key" (SPEC section 5).

Always the caller's own keys: every function takes the acting user from the `Actor` and never
accepts another user's id. The JSON API and the settings page both call these functions.

Decisions where the spec is silent:

- `DELETE` audits only when a key was actually removed; an idempotent no-op changes nothing
  and writes nothing.
- A provider that no longer accepts user keys (policy set back to `provider_only`) is not
  listed by the API, but the settings page asks for it (`include_unusable=True`) so a user can
  still see and remove a key that is stored but no longer used.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app.errors import DomainError, NotFound
from app.extensions import db
from app.models import AIProvider, AIProviderKey, User, UserAIProviderKey
from app.services import audit
from app.services.base import Actor, Page, byok_allowed, caller_id, parse_uuid
from app.services.key_health import failing, is_failing
from app.services.own_keys import OwnKeyKind, delete_own_key, save_own_key
from app.services.providers import PROVIDER_NOT_FOUND, byok_enabled
from app.services.resolution import choose_key

PROVIDER_DISABLED = "AI provider is disabled."
USER_KEYS_NOT_ALLOWED = "AI provider does not allow user API keys."
UNIQUE_USER_PROVIDER = "uq_user_ai_provider_keys_user_provider"

KeySource = str | None  # "user", "provider" or None


@dataclass(frozen=True)
class UserKeyConfig:
    """One provider as the caller sees it: whether they have a key, whether a shared one exists,
    and how the caller's key last fared (key health)."""

    provider: AIProvider
    has_user_api_key: bool
    has_provider_api_key: bool
    byok_enabled: bool
    hint: str | None = None
    key_created_at: datetime | None = None
    key_updated_at: datetime | None = None
    key_last_tested_at: datetime | None = None
    key_last_test_result: str | None = None
    # A shared key that is not failing exists (has_provider_api_key counts failing ones too).
    has_serving_shared_key: bool = False

    @property
    def key_refused(self) -> bool:
        """The provider refused the caller's key the last time: it counts as absent."""
        return self.has_user_api_key and is_failing(self.key_last_test_result)

    @property
    def key_source(self) -> KeySource:
        """Whose key is used right now (resolution's rule); None when none can be, or the provider is disabled."""
        return self._source(self.has_user_api_key)

    @property
    def fallback_source(self) -> KeySource:
        """Whose key would be used if the caller removed theirs."""
        return self._source(False)

    def _source(self, has_user_key: bool) -> KeySource:
        if not self.provider.enabled:
            return None
        usable_user_key = has_user_key and not self.key_refused
        return choose_key(self.provider.key_policy, byok_allowed(), usable_user_key or None,
                          self.has_serving_shared_key or None)[0]


def _has_provider_key(*conditions: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    # A scalar subquery with LIMIT 1 is probed per listed row through the index; PostgreSQL
    # turns a correlated EXISTS in the select list into a hash of every provider key instead.
    return (sa.select(sa.literal(1)).where(AIProviderKey.provider_id == AIProvider.id, *conditions).limit(1)
            .scalar_subquery().is_not(None))


def _configs(user_id: uuid.UUID, where: sa.ColumnElement[bool], page: Page = Page()) -> tuple[list[UserKeyConfig], int]:
    """Providers matching `where`, each with the caller's key (outer join) and whether a shared
    key exists (a correlated subquery): two queries whatever the number of providers."""
    mine = sa.and_(UserAIProviderKey.ai_provider_id == AIProvider.id, UserAIProviderKey.user_id == user_id)
    # `NOT deleted` (not `IS false`) lets PostgreSQL walk uq_ai_providers_name_live in name order.
    base = sa.select(AIProvider.id).outerjoin(UserAIProviderKey, mine).where(~AIProvider.deleted, where)
    total = db.session.execute(sa.select(sa.func.count()).select_from(base.subquery())).scalar_one()
    stmt = (
        sa.select(AIProvider, UserAIProviderKey.hint, UserAIProviderKey.created_at, UserAIProviderKey.updated_at,
                  UserAIProviderKey.last_tested_at, UserAIProviderKey.last_test_result,
                  _has_provider_key(), _has_provider_key(~failing(AIProviderKey.last_test_result)))
        .outerjoin(UserAIProviderKey, mine)
        .where(~AIProvider.deleted, where)
        .order_by(AIProvider.name, AIProvider.id)
    )
    rows = db.session.execute(page.apply(stmt)).all()
    configs = [
        UserKeyConfig(
            provider=provider,
            has_user_api_key=hint is not None,
            has_provider_api_key=bool(has_shared),
            byok_enabled=byok_enabled(provider),
            hint=hint,
            key_created_at=created_at,
            key_updated_at=updated_at,
            key_last_tested_at=tested_at,
            key_last_test_result=result,
            has_serving_shared_key=bool(has_serving),
        )
        for provider, hint, created_at, updated_at, tested_at, result, has_shared, has_serving in rows
    ]
    return configs, total


def list_user_keys(actor: Actor, page: Page = Page(), *, include_unusable: bool = False) -> tuple[list[UserKeyConfig], int]:
    """The caller's key configs, ordered by provider name: live providers whose policy is not
    `provider_only`; a disabled one only while the caller still has a key for it.

    `include_unusable` (for the settings page) also lists live providers of any policy for which
    the caller still holds a key, so a key that is no longer used can still be removed.
    """
    has_mine = UserAIProviderKey.id.is_not(None)
    listed = sa.and_(AIProvider.key_policy != "provider_only", sa.or_(AIProvider.enabled, has_mine))
    if include_unusable:
        listed = sa.or_(listed, has_mine)
    return _configs(caller_id(actor), listed, page)


def get_user_key_config(actor: Actor, provider_id: Any) -> UserKeyConfig:
    """The caller's config for one live provider (any policy, enabled or not).

    :raise InvalidInput: malformed id. :raise NotFound: missing or deleted provider.
    """
    pid = parse_uuid(provider_id, field="provider_id")
    configs, _ = _configs(caller_id(actor), AIProvider.id == pid)
    if not configs:
        raise NotFound(PROVIDER_NOT_FOUND)
    return configs[0]


def _live_provider_query(provider_id: uuid.UUID) -> sa.Select:
    return sa.select(AIProvider).where(AIProvider.id == provider_id, AIProvider.deleted.is_(False))


def _audit_save(actor: Actor, provider: AIProvider, row: UserAIProviderKey, created: bool) -> None:
    audit.record(actor, "user_key.create" if created else "user_key.update", "user_ai_provider_key", row.id,
                 provider_id=provider.id, provider_name=provider.name, key_hint=row.hint)


def _audit_delete(actor: Actor, provider_id: uuid.UUID, key_id: uuid.UUID) -> None:
    audit.record(actor, "user_key.delete", "user_ai_provider_key", key_id, provider_id=provider_id)


# Users' own keys for AI providers: saved and removed by the piece legacy user keys share.
AI_PROVIDER_KEYS = OwnKeyKind(
    key_model=UserAIProviderKey,
    provider_column="ai_provider_id",
    unique=UNIQUE_USER_PROVIDER,
    provider_query=_live_provider_query,
    accepts_user_keys=lambda provider: provider.key_policy != "provider_only",
    not_found=PROVIDER_NOT_FOUND,
    disabled=PROVIDER_DISABLED,
    not_allowed=USER_KEYS_NOT_ALLOWED,
    id_field="provider_id",
    saved=_audit_save,
    deleted=_audit_delete,
)


def upsert_user_key(actor: Actor, provider_id: Any, api_key: str | DomainError | None) -> UserKeyConfig:
    """Save the caller's key for an AI provider, replacing the one they had (same row id and
    `created_at`, new ciphertext, hint and `updated_at`).

    Checks, locks and concurrency: `app.services.own_keys` (ALLOW_BYOK off 403, malformed id 400,
    missing or deleted provider 404, disabled 400, policy `provider_only` 400, then the key rules;
    `api_key` may be the error parsing the request body raised, refused at the key-rules step).

    :raise Forbidden: "BYOK is disabled." :raise InvalidInput: malformed id, disabled provider,
    provider that does not allow user keys, empty or too large key. :raise NotFound: no live
    provider. :raise Unauthorized: the caller was deactivated meanwhile.
    """

    def config(provider: AIProvider, row: UserAIProviderKey) -> UserKeyConfig:
        has_shared, has_serving = db.session.execute(sa.select(
            sa.exists().where(AIProviderKey.provider_id == provider.id),
            sa.exists().where(AIProviderKey.provider_id == provider.id, ~failing(AIProviderKey.last_test_result)),
        )).one()
        return UserKeyConfig(provider=provider, has_user_api_key=True, has_provider_api_key=has_shared,
                             byok_enabled=byok_enabled(provider), hint=row.hint,
                             key_created_at=row.created_at, key_updated_at=row.updated_at,
                             has_serving_shared_key=has_serving)

    return save_own_key(actor, AI_PROVIDER_KEYS, provider_id, api_key, then=config)


def delete_user_key(actor: Actor, provider_id: Any) -> bool:
    """Delete the caller's key for an AI provider; idempotent (True when a key was removed).

    Works when BYOK is off and whether the provider is disabled, deleted or unknown.

    :raise InvalidInput: malformed id.
    """
    return delete_own_key(actor, AI_PROVIDER_KEYS, provider_id)


@dataclass(frozen=True)
class KeyHolder:
    user_id: uuid.UUID
    email: str
    name: str
    updated_at: datetime


@dataclass(frozen=True)
class KeyHolders:
    count: int
    users: list[KeyHolder]


def user_key_holders(provider_id: Any, limit: int | None = None) -> KeyHolders:
    """Who holds a key for a provider (for administrators): how many, and who (by email), with
    when each saved their key. Never the key or its hint.

    :raise InvalidInput: malformed id.
    """
    pid = parse_uuid(provider_id, field="provider_id")
    total = db.session.execute(
        sa.select(sa.func.count()).select_from(UserAIProviderKey).where(UserAIProviderKey.ai_provider_id == pid)
    ).scalar_one()
    stmt = (
        sa.select(User.id, User.email, User.name, UserAIProviderKey.updated_at)
        .join(UserAIProviderKey, UserAIProviderKey.user_id == User.id)
        .where(UserAIProviderKey.ai_provider_id == pid)
        .order_by(User.email)
    )
    rows = db.session.execute(Page(limit=limit).apply(stmt)).all()
    return KeyHolders(count=total, users=[KeyHolder(*row) for row in rows])
