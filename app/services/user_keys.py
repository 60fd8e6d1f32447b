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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app.errors import Forbidden, InvalidInput, NotFound
from app.extensions import db
from app.models import AIProvider, AIProviderKey, User, UserAIProviderKey
from app.services import audit, secrets
from app.services.base import Actor, Page, lock_active_user, lock_one, parse_uuid, transaction
from app.services.providers import PROVIDER_NOT_FOUND, byok_enabled, clean_api_key

BYOK_DISABLED = "BYOK is disabled."
PROVIDER_DISABLED = "AI provider is disabled."
USER_KEYS_NOT_ALLOWED = "AI provider does not allow user API keys."
UNIQUE_USER_PROVIDER = "uq_user_ai_provider_keys_user_provider"

KeySource = str | None  # "user", "provider" or None


def key_source(policy: str, byok: bool, has_user_key: bool, has_provider_key: bool) -> KeySource:
    """Whose key serves a user for a provider with this policy (the rules of SPEC section 6).

    `byok` is `byok_enabled(provider)`: ALLOW_BYOK on and the policy not `provider_only`.
    """
    if policy == "provider_only":
        return "provider" if has_provider_key else None
    if byok and has_user_key:
        return "user"
    if policy == "user_preferred" and has_provider_key:
        return "provider"
    return None


@dataclass(frozen=True)
class UserKeyConfig:
    """One provider as the caller sees it: whether they have a key, and whether a shared one exists."""

    provider: AIProvider
    has_user_api_key: bool
    has_provider_api_key: bool
    byok_enabled: bool
    hint: str | None = None
    key_created_at: datetime | None = None
    key_updated_at: datetime | None = None

    @property
    def key_source(self) -> KeySource:
        """Whose key is used right now; None when none can be (or the provider is disabled)."""
        if not self.provider.enabled:
            return None
        return key_source(self.provider.key_policy, self.byok_enabled, self.has_user_api_key, self.has_provider_api_key)

    @property
    def fallback_source(self) -> KeySource:
        """Whose key would be used if the caller removed theirs."""
        if not self.provider.enabled:
            return None
        return key_source(self.provider.key_policy, self.byok_enabled, False, self.has_provider_api_key)


def byok_allowed() -> bool:
    """The deployment-wide switch, ALLOW_BYOK."""
    return bool(current_app.config["ALLOW_BYOK"])


def require_byok() -> None:
    """:raise Forbidden: "BYOK is disabled." when the deployment turned user keys off."""
    if not byok_allowed():
        raise Forbidden(BYOK_DISABLED)


def _caller_id(actor: Actor) -> uuid.UUID:
    if actor.user_id is None:  # a service token or the CLI: no user whose keys these could be
        raise Forbidden()
    return actor.user_id


def _live_provider(provider_id: uuid.UUID) -> sa.Select:
    # Locked reads refresh the object from the row rather than reuse a copy loaded earlier.
    return (sa.select(AIProvider).where(AIProvider.id == provider_id, AIProvider.deleted.is_(False))
            .execution_options(populate_existing=True))


def _has_provider_key() -> sa.ColumnElement[bool]:
    # A scalar subquery with LIMIT 1 is probed per listed row through the index; PostgreSQL
    # turns a correlated EXISTS in the select list into a hash of every provider key instead.
    return (sa.select(sa.literal(1)).where(AIProviderKey.provider_id == AIProvider.id).limit(1)
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
                  _has_provider_key())
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
        )
        for provider, hint, created_at, updated_at, has_shared in rows
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
    return _configs(_caller_id(actor), listed, page)


def get_user_key_config(actor: Actor, provider_id: Any) -> UserKeyConfig:
    """The caller's config for one live provider (any policy, enabled or not).

    :raise InvalidInput: malformed id. :raise NotFound: missing or deleted provider.
    """
    pid = parse_uuid(provider_id, field="provider_id")
    configs, _ = _configs(_caller_id(actor), AIProvider.id == pid)
    if not configs:
        raise NotFound(PROVIDER_NOT_FOUND)
    return configs[0]


def upsert_user_key(actor: Actor, provider_id: Any, api_key: Any | Callable[[], Any]) -> UserKeyConfig:
    """Save the caller's key for a provider, replacing the one they had (same row id and
    `created_at`, new ciphertext, hint and `updated_at`).

    Checks, in this order: ALLOW_BYOK off (403), malformed id (400), missing or deleted provider
    (404), disabled provider (400), policy `provider_only` (400), then the key rules shared with
    provider keys (trimmed, not empty, at most 10240 bytes). `api_key` may be a zero-argument
    callable returning the raw value: the JSON route passes its body parser, so that errors in
    the body come at the key-rules step and never before the checks above.

    Concurrency, in one transaction:

    - The caller's user row is locked first (`FOR NO KEY UPDATE` on PostgreSQL, and only while
      the user is active). This serialises one user's key writes, so concurrent PUTs for one
      provider find the row the previous one wrote and update it (one row, no error), and it
      conflicts with the `FOR UPDATE` that `deactivate_user` takes: a key written at the same
      moment as a deactivation is either deleted by it or refused here (401), never left behind.
      `NO KEY UPDATE` leaves foreign-key checks from other tables (audit events, sessions) free.
    - The provider is read under `FOR SHARE`, which conflicts with the `FOR UPDATE` of
      `delete_provider`: either the deletion waits and then deletes this key with the others,
      or this call waits and then finds the provider gone (404).
    - The insert runs in a savepoint; should a writer that does not take the user lock (e.g. a
      migration) insert the same (user, provider) first, the unique violation is caught and that
      row is locked and updated instead. SQLite takes its write lock at `BEGIN IMMEDIATE`.

    :raise Forbidden: "BYOK is disabled." :raise InvalidInput: malformed id, disabled provider,
    provider that does not allow user keys, empty or too large key. :raise NotFound: no live
    provider. :raise Unauthorized: the caller was deactivated meanwhile.
    """
    require_byok()
    pid = parse_uuid(provider_id, field="provider_id")
    user_id = _caller_id(actor)
    with transaction():
        lock_active_user(user_id)
        provider = lock_one(_live_provider(pid), shared=True)
        if provider is None:
            raise NotFound(PROVIDER_NOT_FOUND)
        if not provider.enabled:
            raise InvalidInput(PROVIDER_DISABLED)
        if provider.key_policy == "provider_only":
            raise InvalidInput(USER_KEYS_NOT_ALLOWED)
        plaintext = clean_api_key(api_key() if callable(api_key) else api_key)
        row, created = _write_key(user_id, provider.id, plaintext)
        audit.record(actor, "user_key.create" if created else "user_key.update", "user_ai_provider_key", row.id,
                     provider_id=provider.id, provider_name=provider.name, key_hint=row.hint)
        has_shared = db.session.execute(
            sa.select(sa.exists().where(AIProviderKey.provider_id == provider.id))
        ).scalar_one()
        config = UserKeyConfig(provider=provider, has_user_api_key=True, has_provider_api_key=has_shared,
                               byok_enabled=byok_enabled(provider), hint=row.hint,
                               key_created_at=row.created_at, key_updated_at=row.updated_at)
    return config


def _write_key(user_id: uuid.UUID, provider_id: uuid.UUID, plaintext: str) -> tuple[UserAIProviderKey, bool]:
    """Update the caller's row for the provider, or insert it; returns (row, created)."""
    return secrets.upsert_sealed(
        sa.select(UserAIProviderKey).where(UserAIProviderKey.user_id == user_id,
                                           UserAIProviderKey.ai_provider_id == provider_id),
        lambda: UserAIProviderKey(id=uuid.uuid4(), user_id=user_id, ai_provider_id=provider_id),
        plaintext, UNIQUE_USER_PROVIDER,
    )


def delete_user_key(actor: Actor, provider_id: Any) -> bool:
    """Delete the caller's key for a provider; idempotent (True when a key was removed).

    Works when BYOK is off and whether the provider is disabled, deleted or unknown: it only
    ever removes the caller's own row, ciphertext included.

    :raise InvalidInput: malformed id.
    """
    pid = parse_uuid(provider_id, field="provider_id")
    user_id = _caller_id(actor)
    with transaction():
        removed = db.session.execute(
            sa.delete(UserAIProviderKey)
            .where(UserAIProviderKey.user_id == user_id, UserAIProviderKey.ai_provider_id == pid)
            .returning(UserAIProviderKey.id)
        ).scalar_one_or_none()
        if removed is not None:
            audit.record(actor, "user_key.delete", "user_ai_provider_key", removed, provider_id=pid)
    return removed is not None


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
