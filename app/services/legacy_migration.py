"""Copy legacy chat providers into AI providers (SPEC section 6, `migrate-legacy`).

Each legacy provider becomes an AI provider with the same id, named `agents-<type>` (the
reserved prefix, so the row is created here directly rather than through `create_provider`).
Its central key goes to `ai_provider_keys` and users' keys to `user_ai_provider_keys`, each
opened and sealed again for its new row (the associated data binds a ciphertext to its row, so
a copied ciphertext would not decrypt). The credential flags become a `key_policy`, and legacy
model configs of its type (no `ai_provider_id`, soft-deleted ones included) point at it.

Decisions:

- One transaction per legacy provider, with the legacy row locked: a failure part-way leaves
  every provider either fully migrated or untouched, and running again continues.
- A legacy provider whose AI provider (same id) exists, live or soft-deleted, is skipped as
  "already migrated"; a second run therefore changes nothing and says so.
- A live AI provider that already holds the name `agents-<type>` under another id (a legacy
  provider deleted and recreated after an earlier migration) or a stored key that cannot be
  decrypted fails that provider only; the others go on, and the summary says which failed.
  The name is checked without a lock: one created at the same moment is caught by the unique
  index when the new provider is flushed (in a savepoint), with the same outcome.
  Anything unexpected (a database error, say) stops the run with `MigrationStopped`, after the
  providers before it were committed.
- The legacy rows are left in place (this is a copy); once migrated they no longer affect the
  configs that were moved.
- An empty legacy display name becomes the type's label ("OpenAI"), so users see the same name.
- A stored central key is copied even when the central key is off: the mapped policy
  (`user_only`) never uses it, exactly as before.
- A keyless AWS Bedrock provider whose central credential serves users (central key on, no
  stored key, mapped policy not `user_only`) fails (`KEYLESS_CENTRAL`): legacy resolution
  serves it with the chat backend's AWS credentials, but an AI provider needs a stored key
  (SPEC section 6: its oldest key, else `missing_api_key`), so migrating it would take the
  model away from its users. It stays legacy and keeps working; once a key is stored on the
  legacy provider it migrates. With `user_only` the central credential serves nobody, so it
  migrates as usual.
- Dry run reads and decrypts (to report unreadable keys) but writes nothing, audit included.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.crypto import DecryptionError
from app.db import utcnow
from app.extensions import db
from app.models import (
    AIProvider,
    AIProviderKey,
    ChatModelConfig,
    ChatProvider,
    UserAIProviderKey,
    UserChatProviderKey,
)
from app.services import audit, secrets
from app.services.base import Actor, is_unique_violation, lock_one, transaction
from app.services.legacy import central_key_available, display_name, has_api_key
from app.services.providers import RESERVED_PREFIX
from app.services.resolution import legacy_key_policy

Status = Literal["migrated", "skipped", "failed"]
KEYLESS_CENTRAL = ("it relies on the AWS credentials of the chat backend instead of a stored key; AI providers "
                   "need a stored key: add one to the legacy provider first, or keep it as legacy")
NAME_INDEX = "uq_ai_providers_name_live"


@dataclass
class ProviderOutcome:
    """What happened (or would happen, in a dry run) to one legacy provider."""

    legacy_id: uuid.UUID
    provider: str
    name: str
    status: Status
    reason: str = ""
    key_policy: str = ""
    provider_keys: int = 0
    user_keys: int = 0
    model_configs: int = 0


@dataclass
class MigrationSummary:
    dry_run: bool
    outcomes: list[ProviderOutcome] = field(default_factory=list)

    def _with(self, status: Status) -> list[ProviderOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def migrated(self) -> list[ProviderOutcome]:
        return self._with("migrated")

    @property
    def skipped(self) -> list[ProviderOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[ProviderOutcome]:
        return self._with("failed")

    @property
    def provider_keys(self) -> int:
        return sum(o.provider_keys for o in self.migrated)

    @property
    def user_keys(self) -> int:
        return sum(o.user_keys for o in self.migrated)

    @property
    def model_configs(self) -> int:
        return sum(o.model_configs for o in self.migrated)

    @property
    def nothing_to_do(self) -> bool:
        return not self.migrated and not self.failed

    def headline(self) -> str:
        """One sentence: what was (or would be) copied and skipped."""
        if not self.outcomes:
            return "Nothing to migrate: there are no legacy chat providers."
        if self.nothing_to_do:
            return f"Nothing to migrate: {_n(len(self.skipped), 'legacy provider')} already migrated."
        if not self.migrated:
            text = "Nothing would be migrated: " if self.dry_run else "Nothing migrated: "
            text += f"{_n(len(self.failed), 'provider')} cannot be migrated"
            return text + (f", {len(self.skipped)} already migrated." if self.skipped else ".")
        verb = "Would migrate" if self.dry_run else "Migrated"
        copy = "would copy" if self.dry_run else "copied"
        text = (f"{verb} {_n(len(self.migrated), 'legacy provider')}: {copy} "
                f"{_n(self.provider_keys, 'provider key')}, {_n(self.user_keys, 'user key')}, "
                f"{_n(self.model_configs, 'model config')}.")
        if self.skipped:
            text += f" Skipped {len(self.skipped)} already migrated."
        if self.failed:
            text += f" {_n(len(self.failed), 'provider')} failed."
        return text

    def lines(self) -> list[str]:
        """The headline, then one line per legacy provider."""
        out = [self.headline()]
        for o in self.outcomes:
            if o.status == "migrated":
                verb = "would migrate" if self.dry_run else "migrated"
                out.append(f"  {o.provider}: {verb} to {o.name} ({o.key_policy}), "
                           f"{_n(o.provider_keys, 'provider key')}, {_n(o.user_keys, 'user key')}, "
                           f"{_n(o.model_configs, 'model config')}")
            else:
                out.append(f"  {o.provider}: {o.status}, {o.reason}")
        if self.dry_run:
            out.append("Dry run: nothing was written.")
        return out


class MigrationStopped(Exception):
    """An unexpected error stopped the run; providers before `provider` were migrated and
    committed, `provider` itself is untouched. The summary holds what was done."""

    def __init__(self, summary: MigrationSummary, provider: str) -> None:
        self.summary = summary
        self.provider = provider
        super().__init__(f"migration stopped at legacy provider {provider}")


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


Progress = Callable[[int, int], None]


def migrate_legacy(actor: Actor, dry_run: bool = False, on_progress: Progress | None = None) -> MigrationSummary:
    """Copy every legacy chat provider that is not yet migrated into an AI provider with the same
    id; one transaction per provider. `on_progress(done, total)` is called once before the first
    provider and after each one.

    :raise MigrationStopped: an unexpected error; the providers before it stay migrated.
    """
    summary = MigrationSummary(dry_run=dry_run)
    with transaction():
        legacy_ids = list(db.session.execute(
            sa.select(ChatProvider.id, ChatProvider.provider).order_by(ChatProvider.provider)
        ).all())
    total = len(legacy_ids)
    if on_progress:
        on_progress(0, total)
    for done, (legacy_id, provider_type) in enumerate(legacy_ids, start=1):
        try:
            with transaction():
                outcome = _migrate_one(actor, legacy_id, dry_run)
                if dry_run:
                    db.session.rollback()
        except _Failed as failure:
            outcome = ProviderOutcome(legacy_id, provider_type, _name(provider_type), "failed", reason=failure.reason)
        except Exception as error:
            raise MigrationStopped(summary, provider_type) from error
        if outcome is not None:
            summary.outcomes.append(outcome)
        if on_progress:
            on_progress(done, total)
    return summary


def _migrate_one(actor: Actor, legacy_id: uuid.UUID, dry_run: bool) -> ProviderOutcome | None:
    """Migrate one legacy provider inside the caller's transaction (flushes only)."""
    stmt = sa.select(ChatProvider).where(ChatProvider.id == legacy_id)
    # A dry run only reads (the admin page runs it on GET): no row lock.
    legacy = db.session.execute(stmt).scalar_one_or_none() if dry_run else lock_one(stmt)
    if legacy is None:
        return None  # deleted since the run started
    name = _name(legacy.provider)
    outcome = ProviderOutcome(legacy.id, legacy.provider, name, "migrated",
                              key_policy=legacy_key_policy(legacy))
    if db.session.get(AIProvider, legacy.id) is not None:
        outcome.status, outcome.reason = "skipped", "already migrated"
        return outcome
    if _serves_without_a_key(legacy, outcome.key_policy):
        raise _Failed(KEYLESS_CENTRAL)
    taken = db.session.execute(
        sa.select(AIProvider.id).where(AIProvider.name == name, AIProvider.deleted.is_(False))
    ).first()
    if taken is not None:
        raise _Failed(_name_taken(name))

    central_key = _open(legacy, "its central API key")
    user_keys = [(row, _open(row, "a user's API key")) for row in db.session.execute(
        sa.select(UserChatProviderKey).where(UserChatProviderKey.chat_provider_id == legacy.id)
        .order_by(UserChatProviderKey.created_at, UserChatProviderKey.id)
    ).scalars()]
    legacy_configs = (ChatModelConfig.ai_provider_id.is_(None), ChatModelConfig.provider == legacy.provider)
    outcome.provider_keys = int(central_key is not None)
    outcome.user_keys = len(user_keys)
    if dry_run:
        outcome.model_configs = db.session.execute(
            sa.select(sa.func.count()).select_from(ChatModelConfig).where(*legacy_configs)
        ).scalar_one()
        return outcome

    provider = AIProvider(
        id=legacy.id, type=legacy.provider, name=name, display_name=display_name(legacy),
        enabled=legacy.enabled, base_url=legacy.base_url, key_policy=outcome.key_policy,
    )
    db.session.add(provider)
    _flush_provider(provider)
    if central_key is not None:
        key = AIProviderKey(id=uuid.uuid4(), provider_id=provider.id,
                            fingerprint=secrets.fingerprint(f"ai_provider:{provider.id}", central_key))
        secrets.seal(key, central_key)
        db.session.add(key)
    for old, plaintext in user_keys:
        new = UserAIProviderKey(id=uuid.uuid4(), user_id=old.user_id, ai_provider_id=provider.id,
                                created_at=old.created_at, updated_at=old.updated_at)
        secrets.seal(new, plaintext)
        db.session.add(new)
    db.session.flush()
    outcome.model_configs = db.session.execute(
        sa.update(ChatModelConfig).where(*legacy_configs).values(ai_provider_id=provider.id, updated_at=utcnow())
    ).rowcount
    audit.record(actor, "legacy_provider.migrate", "ai_provider", provider.id, name=name, type=provider.type,
                 key_policy=provider.key_policy, enabled=provider.enabled, copied_provider_key_count=outcome.provider_keys,
                 copied_user_key_count=outcome.user_keys, moved_model_config_count=outcome.model_configs)
    return outcome


def _flush_provider(provider: AIProvider) -> None:
    """Insert the new AI provider in a savepoint. The name check above takes no lock, so an AI
    provider created with the same name meanwhile is caught here by the unique index: that
    fails this provider only (its transaction is rolled back), not the whole run."""
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError as error:
        if is_unique_violation(error, NAME_INDEX):
            raise _Failed(_name_taken(provider.name)) from None
        raise


def _serves_without_a_key(legacy: ChatProvider, key_policy: str) -> bool:
    """Its keyless central credential (no stored key, AWS credentials of the chat backend)
    serves someone today; the AI provider it would become has no key to serve them with."""
    return (legacy.central_api_key_enabled and not has_api_key(legacy) and central_key_available(legacy)
            and key_policy != "user_only")


def _name_taken(name: str) -> str:
    return f"the name {name} is taken by another AI provider"


def _n(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _name(provider_type: str) -> str:
    return f"{RESERVED_PREFIX}{provider_type}"


def _open(row: ChatProvider | UserChatProviderKey, what: str) -> str | None:
    if isinstance(row, ChatProvider) and row.api_key_ciphertext is None:
        return None
    try:
        return secrets.open_secret(row)
    except DecryptionError:
        raise _Failed(f"{what} cannot be decrypted with the configured keys") from None


def is_migrated(legacy_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these legacy providers already have their AI provider (same id)."""
    if not legacy_ids:
        return set()
    return set(db.session.execute(sa.select(AIProvider.id).where(AIProvider.id.in_(legacy_ids))).scalars())
