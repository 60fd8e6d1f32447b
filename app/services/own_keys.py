"""Saving and removing a user's own key for a provider: the one piece behind both kinds of user
keys, BYOK keys for AI providers (`app.services.user_keys`) and keys for legacy chat providers
(`app.services.legacy`). Each of those modules describes its kind (`OwnKeyKind`: its tables, its
provider's rules and the SPEC's messages for it) and calls `save_own_key` / `delete_own_key`.

Always the caller's own key: the user comes from the `Actor`, never from an argument.

Saving, in one transaction:

- Checks, in the SPEC's order: ALLOW_BYOK off (403), malformed id (400), missing provider (404),
  disabled provider (400), provider that does not take user keys (400), then the key rules shared
  with provider keys (trimmed, not empty, at most 10240 bytes). The key is passed as a value or
  as the error its parsing raised (`app.errors.unwrap`), which is raised at the key-rules step.
- The caller's user row is locked first, while the user is active (`lock_active_user`): one
  user's saves are serialised (concurrent saves for one provider end as one row), and a save
  racing the caller's deactivation is either deleted by it or refused with 401, never left behind.
- The provider is read under `FOR SHARE`, which conflicts with the `FOR UPDATE` of its deletion:
  either the deletion waits and then deletes this key with the others, or this save waits and
  then finds the provider gone (404).
- The upsert keeps the row's id and `created_at` (`secrets.upsert_sealed`); an insert that loses
  a race on the (user, provider) constraint updates the winner's row instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.errors import DomainError, InvalidInput, NotFound, unwrap
from app.extensions import db
from app.services import secrets
from app.services.base import (
    Actor,
    caller_id,
    lock_active_user,
    lock_one,
    parse_uuid,
    require_byok,
    transaction,
)
from app.services.provider_keys import clean_api_key


@dataclass(frozen=True)
class OwnKeyKind:
    """Where users' own keys for one kind of provider are stored, and how that provider answers."""

    key_model: type  # the table of users' keys
    provider_column: str  # its column naming the provider
    unique: str  # its (user, provider) unique constraint
    provider_query: Callable[[uuid.UUID], sa.Select]  # the provider, when it exists (not deleted)
    accepts_user_keys: Callable[[Any], bool]  # the provider's policy lets users bring a key
    not_found: str
    disabled: str
    not_allowed: str
    id_field: str  # the name a malformed id is reported under
    saved: Callable[[Actor, Any, Any, bool], None]  # audits a save: (actor, provider, key row, created)
    deleted: Callable[[Actor, uuid.UUID, Any], None]  # audits a removal: (actor, provider id, key row id)


def save_own_key(actor: Actor, kind: OwnKeyKind, provider_id: Any, api_key: str | DomainError | None,
                 then: Callable[[Any, Any], Any] = lambda provider, row: (provider, row)) -> Any:
    """Save the caller's key for a provider of `kind`, replacing the one they had (see the module
    docstring for the checks and locks); `then(provider, row)` runs inside the transaction and its
    answer is returned.

    :raise Forbidden: "BYOK is disabled.", or no user acts. :raise InvalidInput: malformed id,
        disabled provider, provider that takes no user keys, a bad key or request body.
    :raise NotFound: no such provider. :raise Unauthorized: the caller was deactivated meanwhile.
    """
    require_byok()
    pid = parse_uuid(provider_id, field=kind.id_field)
    user_id = caller_id(actor)
    with transaction():
        lock_active_user(user_id)
        provider = check_accepts_keys(
            kind, lock_one(kind.provider_query(pid).execution_options(populate_existing=True), shared=True))
        plaintext = clean_api_key(unwrap(api_key))
        model, column = kind.key_model, getattr(kind.key_model, kind.provider_column)
        row, created = secrets.upsert_sealed(
            sa.select(model).where(model.user_id == user_id, column == pid),
            lambda: model(id=uuid.uuid4(), user_id=user_id, **{kind.provider_column: pid}),
            plaintext, kind.unique,
        )
        kind.saved(actor, provider, row, created)
        return then(provider, row)


def check_accepts_keys(kind: OwnKeyKind, provider: Any) -> Any:
    """The provider, when it takes the caller's own key now.

    :raise NotFound: no such provider (None). :raise InvalidInput: disabled, or its policy takes
        no user keys.
    """
    if provider is None:
        raise NotFound(kind.not_found)
    if not provider.enabled:
        raise InvalidInput(kind.disabled)
    if not kind.accepts_user_keys(provider):
        raise InvalidInput(kind.not_allowed)
    return provider


def delete_own_key(actor: Actor, kind: OwnKeyKind, provider_id: Any) -> bool:
    """Remove the caller's key for a provider of `kind`; idempotent (True when a key was removed).

    Allowed when BYOK is off and whatever state the provider is in (disabled, deleted, unknown):
    it only ever removes the caller's own row, ciphertext included. A removal that finds nothing
    records nothing.

    :raise InvalidInput: malformed id. :raise Forbidden: no user acts.
    """
    pid = parse_uuid(provider_id, field=kind.id_field)
    user_id = caller_id(actor)
    model = kind.key_model
    with transaction():
        removed = db.session.execute(
            sa.delete(model)
            .where(model.user_id == user_id, getattr(model, kind.provider_column) == pid)
            .returning(model.id)
        ).scalar_one_or_none()
        if removed is not None:
            kind.deleted(actor, pid, removed)
    return removed is not None
