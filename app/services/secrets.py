"""Secrets at rest: the one place that seals and opens stored keys.

Every encrypted column is declared once in `SECRET_COLUMNS`, with how its associated data is
built. Sealing and opening go through `seal` and `open_secret`; key management (`dbcrypt`) and
the startup check walk the same registry, so a new encrypted column is covered everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.crypto import DecryptionError, Keyring, Sealed, associated_data, make_hint
from app.db import utcnow
from app.extensions import db
from app.models import (
    AIProviderKey,
    ChatProvider,
    EncryptionKey,
    UserAIProviderKey,
    UserChatProviderKey,
)
from app.services.base import is_unique_violation, lock_one

__all__ = [
    "SECRET_COLUMNS",
    "DecryptionError",
    "SecretColumn",
    "keyring",
    "make_hint",
    "open_secret",
    "seal",
]


@dataclass(frozen=True)
class SecretColumn:
    model: type
    ciphertext_attr: str
    digest_attr: str
    owners: Callable[[Any], tuple]  # the row's owners, bound into the associated data
    # What the audit log calls a key of this table (key health reports are recorded on it).
    resource_type: str = ""
    # Key health (SPEC section 11): the key's latest test or report; a new key starts fresh.
    tested_at_attr: str = "last_tested_at"
    result_attr: str = "last_test_result"

    @property
    def table(self) -> str:
        return self.model.__tablename__

    @property
    def column(self) -> str:
        return getattr(self.model, self.ciphertext_attr).property.columns[0].name

    def aad(self, row: Any) -> bytes:
        return associated_data(self.table, self.column, row.id, *self.owners(row))


SECRET_COLUMNS: tuple[SecretColumn, ...] = (
    SecretColumn(AIProviderKey, "ciphertext", "key_digest", lambda r: (r.provider_id,), "ai_provider_key"),
    SecretColumn(UserAIProviderKey, "ciphertext", "key_digest", lambda r: (r.user_id, r.ai_provider_id),
                 "user_ai_provider_key"),
    SecretColumn(ChatProvider, "api_key_ciphertext", "api_key_digest", lambda r: (), "chat_provider",
                 tested_at_attr="api_key_last_tested_at", result_attr="api_key_last_test_result"),
    SecretColumn(UserChatProviderKey, "ciphertext", "key_digest", lambda r: (r.user_id, r.chat_provider_id),
                 "user_chat_provider_key"),
)
_BY_MODEL = {spec.model: spec for spec in SECRET_COLUMNS}


def keyring() -> Keyring:
    """The app's keyring (parsed once at start-up by `create_app`)."""
    return current_app.extensions["switchboard.keyring"]


def spec_for(row: Any) -> SecretColumn:
    return _BY_MODEL[type(row)]


def seal(row: Any, plaintext: str) -> None:
    """Encrypt `plaintext` into `row` under the primary key, bound to the row's id and owners.

    The row's id and owner columns must be set first. Also sets the hint, and clears the key's
    last test (a new key starts fresh; rotation re-encrypts with `reseal` and keeps it).
    """
    spec = spec_for(row)
    if row.id is None:
        raise ValueError("assign the row id before sealing")
    ring = keyring()
    ensure_key_registered(ring.primary_digest)
    sealed = ring.encrypt(plaintext.encode(), spec.aad(row))
    setattr(row, spec.ciphertext_attr, sealed.ciphertext)
    setattr(row, spec.digest_attr, sealed.digest)
    hint_attr = "api_key_hint" if spec.model is ChatProvider else "hint"
    setattr(row, hint_attr, make_hint(plaintext))
    # A new key starts fresh: the last test was of the key it replaces.
    setattr(row, spec.tested_at_attr, None)
    setattr(row, spec.result_attr, None)


def upsert_sealed(stmt: sa.Select, new_row: Callable[[], Any], plaintext: str, unique: str) -> tuple[Any, bool]:
    """Seal `plaintext` into the row `stmt` selects (locked), or insert `new_row()` when there is
    none; returns (row, created). The row keeps its id and `created_at` on update.

    An insert that loses a race with another writer on the `unique` constraint updates the
    winner's row instead (the insert runs in a savepoint, so the transaction survives it).
    Flushes only; the caller's transaction commits.
    """
    stmt = stmt.execution_options(populate_existing=True)  # locked reads refresh the object
    row = lock_one(stmt)
    if row is None:
        row = new_row()
        seal(row, plaintext)
        try:
            with db.session.begin_nested():
                db.session.add(row)
                db.session.flush()
        except IntegrityError as error:
            if not is_unique_violation(error, unique):
                raise
            row = lock_one(stmt)
            if row is None:  # inserted and deleted again in between: fail, don't guess
                raise
        else:
            return row, True
    seal(row, plaintext)  # sealed for this row's own id and owners
    row.updated_at = utcnow()
    db.session.flush()
    return row, False


def open_secret(row: Any) -> str:
    """Decrypt the secret stored in `row`.

    :raise DecryptionError: tampered, copied from another row, or its key is not configured.
    """
    spec = spec_for(row)
    if getattr(row, spec.ciphertext_attr) is None:
        raise DecryptionError("no secret is stored in this row")
    return open_with(spec, row).decode()


def open_with(spec: SecretColumn, row: Any) -> bytes:
    """Decrypt the secret of a row of `spec`'s table, read as an object or as plain columns (key
    management reads batches of columns, not objects). :raise DecryptionError:"""
    return keyring().decrypt(getattr(row, spec.ciphertext_attr), getattr(row, spec.digest_attr), spec.aad(row))


def reseal(spec: SecretColumn, row: Any) -> Sealed:
    """The row's secret encrypted again under the primary key, bound to the same row (rotation);
    the plaintext never leaves this function. :raise DecryptionError:"""
    return keyring().encrypt(open_with(spec, row), spec.aad(row))


def fingerprint(scope: str, plaintext: str) -> str:
    return keyring().fingerprint(current_app.config["SECRET_KEY"], scope, plaintext)


def ensure_key_registered(digest: str) -> None:
    """Make sure `encryption_keys` knows `digest` (in the current transaction)."""
    # Digests are remembered only by the startup check, after its commit: a row inserted here
    # may still roll back with this transaction, so it must not be taken as registered.
    if digest in current_app.extensions.get("switchboard.registered_digests", ()):
        return
    if db.session.get(EncryptionKey, digest) is not None:
        return
    try:
        with db.session.begin_nested():
            db.session.add(EncryptionKey(digest=digest, test_ciphertext=keyring().test_value(digest)))
    except IntegrityError:
        pass  # another process registered it at the same moment


class StartupCheckError(RuntimeError):
    """The keys and the database disagree; the message names the problem, never a key."""


def check_keys_against_database() -> None:
    """Refuse to serve when the configured keys cannot read what the database holds.

    Registers configured keys that are new; fails when a configured key's test value does not
    decrypt, when the primary key has been revoked, or when rows are encrypted under a digest
    that is not configured. Skips silently on a database that has no tables yet.

    :raise StartupCheckError:
    """
    ring = keyring()
    # Inspect through the session's own connection: on SQLite a second connection would wait
    # for the write lock this session's transaction holds (BEGIN IMMEDIATE) and time out.
    inspector = sa.inspect(db.session.connection())
    if not inspector.has_table(EncryptionKey.__tablename__):
        return
    known = {k.digest: k for k in db.session.execute(sa.select(EncryptionKey)).scalars()}
    for digest in ring.digests:
        row = known.get(digest)
        if row is None:
            continue
        if not ring.check_test_value(digest, row.test_ciphertext):
            raise StartupCheckError(
                f"ENCRYPTION_KEYS: the key with digest {digest} does not decrypt its stored test "
                "value; this is not the key that was registered under that digest."
            )
    primary = known.get(ring.primary_digest)
    if primary is not None and primary.revoked_at is not None:
        raise StartupCheckError(
            f"ENCRYPTION_KEYS: the first (primary) key, digest {ring.primary_digest}, was revoked; "
            "put a current key first."
        )
    missing: list[str] = []
    for spec in SECRET_COLUMNS:
        if not inspector.has_table(spec.table):
            continue
        digest_col = getattr(spec.model, spec.digest_attr)
        used = db.session.execute(
            sa.select(digest_col).where(digest_col.is_not(None)).distinct()
        ).scalars()
        missing += [f"{spec.table}: {d}" for d in used if not ring.knows(d)]
    if missing:
        raise StartupCheckError(
            "ENCRYPTION_KEYS: rows are encrypted under key digests that are not configured ("
            + ", ".join(sorted(set(missing)))
            + "). Add the missing key to ENCRYPTION_KEYS, or run `dbcrypt delete --yes` if it is lost."
        )
    for digest in ring.digests:
        if digest not in known:
            ensure_key_registered(digest)
    db.session.commit()
    current_app.extensions["switchboard.registered_digests"] = set(ring.digests)
