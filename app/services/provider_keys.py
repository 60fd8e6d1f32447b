"""Provider-scoped API keys (SPEC section 4): the key rules every stored key follows (provider
keys and users' own keys), and a provider's shared keys: list, add, delete, the one in use."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.extensions import db
from app.models import AIProviderKey
from app.services import audit, secrets
from app.services.base import Actor, Page, count, flush_unique, parse_uuid, transaction
from app.services.key_health import failing, is_failing
from app.services.providers import PROVIDER_NOT_FOUND, get_provider, lock_live
from app.services.text import check_text

API_KEY_MAX_BYTES = 10240
KEY_NOT_FOUND = "AI provider key not found."


def clean_api_key(raw: Any) -> str:
    """The key rules shared by provider keys and user keys: trimmed, not empty, at most 10240 bytes.

    :raise InvalidInput: "API key is required." or "API key too large."
    """
    key = raw.strip() if isinstance(raw, str) else ""
    if not key:
        raise InvalidInput("API key is required.", field="api_key")
    check_text(key, "api_key", "Invalid API key.", noun="API keys")
    if len(key.encode()) > API_KEY_MAX_BYTES:
        raise InvalidInput("API key too large.", detail=f"API key exceeds maximum size of {API_KEY_MAX_BYTES} bytes",
                           field="api_key")
    return key


def list_keys(provider_id: Any) -> list[AIProviderKey]:
    """A live provider's keys, oldest first. :raise NotFound: unknown provider."""
    return page_keys(provider_id)[0]


def page_keys(provider_id: Any, page: Page = Page()) -> tuple[list[AIProviderKey], int]:
    """One page of a live provider's keys, oldest first, and how many it has.

    :raise InvalidInput: malformed id. :raise NotFound: unknown provider.
    """
    provider = get_provider(provider_id)
    stmt = sa.select(AIProviderKey).where(AIProviderKey.provider_id == provider.id)
    total = count(stmt)
    rows = db.session.execute(page.apply(stmt.order_by(AIProviderKey.created_at, AIProviderKey.id))).scalars()
    return list(rows), total


def get_key(provider_id: Any, key_id: Any) -> AIProviderKey:
    """One key of a live provider (for a confirmation page; the row holds only ciphertext and hint).

    :raise InvalidInput: malformed id. :raise NotFound: unknown provider, or the key is missing
    or belongs to another provider.
    """
    provider = get_provider(provider_id)
    key = db.session.execute(
        sa.select(AIProviderKey).where(AIProviderKey.id == parse_uuid(key_id, field="key_id"),
                                       AIProviderKey.provider_id == provider.id)
    ).scalar_one_or_none()
    if key is None:
        raise NotFound(KEY_NOT_FOUND)
    return key


def add_key(actor: Actor, provider_id: Any, api_key: Any) -> AIProviderKey:
    """Store a new key for a live provider; the provider is read under a shared lock in the
    same transaction, so a concurrent deletion cannot leave the key behind.

    Checks in this order (as for user keys): malformed id, live provider, then the key rules.

    :raise InvalidInput: malformed id, empty or too large key. :raise NotFound: no live provider.
    :raise Conflict: "API key already exists." on this provider.
    """
    pid = parse_uuid(provider_id)
    with transaction():
        provider = lock_live(pid, shared=True)
        if provider is None:
            raise NotFound(PROVIDER_NOT_FOUND)
        key = store_key(actor, provider.id, clean_api_key(api_key))
        # Hand back the row as written: a concurrent provider deletion may remove it the moment we
        # commit, and an attached instance would then fail to reload its expired attributes.
        db.session.expunge(key)
    return key


def key_fingerprint(provider_id: uuid.UUID, plaintext: str) -> str:
    """What tells that a provider already has this key (a keyed hash, never the key)."""
    return secrets.fingerprint(f"ai_provider:{provider_id}", plaintext)


def store_key(actor: Actor, provider_id: uuid.UUID, plaintext: str) -> AIProviderKey:
    """Seal a cleaned key for a provider the caller has locked, in the current transaction, and
    audit it (the hint, never the key). Flushes only.

    :raise Conflict: "API key already exists." on this provider.
    """
    now = utcnow()
    key = AIProviderKey(id=uuid.uuid4(), provider_id=provider_id, created_at=now, updated_at=now,
                        fingerprint=key_fingerprint(provider_id, plaintext))
    secrets.seal(key, plaintext)
    db.session.add(key)
    flush_unique({"uq_ai_provider_keys_provider_fingerprint": Conflict("API key already exists.", field="api_key")})
    audit.record(actor, "provider_key.create", "ai_provider_key", key.id, provider_id=provider_id, key_hint=key.hint)
    return key


def delete_key(actor: Actor, provider_id: Any, key_id: Any) -> None:
    """Delete one key (its ciphertext goes with the row).

    :raise NotFound: "AI provider key not found." when missing or it belongs to another provider.
    """
    pid, kid = parse_uuid(provider_id), parse_uuid(key_id, field="key_id")
    with transaction():
        provider = lock_live(pid, shared=True)
        if provider is None:
            raise NotFound(PROVIDER_NOT_FOUND)
        deleted = db.session.execute(
            sa.delete(AIProviderKey).where(AIProviderKey.id == kid, AIProviderKey.provider_id == pid)
        ).rowcount
        if not deleted:
            raise NotFound(KEY_NOT_FOUND)
        audit.record(actor, "provider_key.delete", "ai_provider_key", kid, provider_id=pid)


def oldest_key(provider_id: uuid.UUID) -> AIProviderKey | None:
    """The key that serves a provider's requests: its oldest (created_at, then id), or None."""
    return db.session.execute(
        sa.select(AIProviderKey).where(AIProviderKey.provider_id == provider_id)
        .order_by(AIProviderKey.created_at, AIProviderKey.id).limit(1)
    ).scalar_one_or_none()


def serving_keys(provider_ids: set[uuid.UUID]) -> dict[uuid.UUID, AIProviderKey]:
    """For each provider with keys, in one query, the key that serves its requests: its oldest key
    (created_at, then id) that is not failing (key health), or, when every key is failing, its
    oldest key (which `key_health.is_failing` then tells apart)."""
    if not provider_ids:
        return {}
    rank = sa.func.row_number().over(
        partition_by=AIProviderKey.provider_id,
        order_by=(sa.case((failing(AIProviderKey.last_test_result), 1), else_=0),
                  AIProviderKey.created_at, AIProviderKey.id),
    ).label("rank")
    ranked = sa.select(AIProviderKey.id, rank).where(AIProviderKey.provider_id.in_(provider_ids)).subquery()
    stmt = sa.select(AIProviderKey).join(ranked, ranked.c.id == AIProviderKey.id).where(ranked.c.rank == 1)
    return {k.provider_id: k for k in db.session.execute(stmt).scalars()}


def serving_key(provider_id: uuid.UUID) -> AIProviderKey | None:
    """The key that serves a provider's requests now (oldest not failing), or None (no key, or
    every key failing)."""
    key = serving_keys({provider_id}).get(provider_id)
    return None if key is None or is_failing(key.last_test_result) else key
