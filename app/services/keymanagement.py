"""Key management for secrets at rest: status, rotation, verification and the last-resort delete.

Every function walks `secrets.SECRET_COLUMNS`, so a new encrypted column is covered here too.
Rows are read by primary-key keyset pagination, a batch at a time, each batch in its own short
transaction: memory stays flat whatever the table size, and the app can go on serving.

None of these functions needs the configured keys to match the database (the `dbcrypt`
commands skip the startup check): they are how such a state gets inspected and repaired.
Nothing here prints, logs or returns plaintext.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app.crypto import DecryptionError
from app.db import utcnow
from app.errors import Conflict
from app.extensions import db
from app.models import ChatProvider, EncryptionKey
from app.services import audit
from app.services.base import Actor, transaction
from app.services.secrets import SECRET_COLUMNS, SecretColumn, ensure_key_registered, keyring, open_with, reseal

DEFAULT_BATCH_SIZE = 500
# Unreadable rows are named one by one; past this many only the count goes on growing, so a
# lost key on a large table cannot exhaust memory.
MAX_LISTED_ROWS = 10_000

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class RowRef:
    """A row, named by its table and id (never its content)."""

    table: str
    id: str

    def __str__(self) -> str:
        return f"{self.table} {self.id}"


@dataclass(frozen=True)
class DigestStatus:
    digest: str
    configured: bool
    primary: bool
    registered: bool  # present in encryption_keys
    revoked_at: datetime | None
    rows: int  # rows encrypted under this digest, all tables together


@dataclass(frozen=True)
class ColumnCount:
    table: str
    column: str
    digest: str
    rows: int


@dataclass(frozen=True)
class KeyStatus:
    primary: str
    digests: list[DigestStatus]  # configured ones first (primary first), then the others
    columns: list[tuple[str, str]]  # every encrypted (table, column)
    counts: list[ColumnCount]  # per table, column and digest; only digests with rows

    def rows_under(self, digest: str) -> int:
        return sum(c.rows for c in self.counts if c.digest == digest)

    def rows_in(self, table: str) -> int:
        return sum(c.rows for c in self.counts if c.table == table)

    @property
    def total_rows(self) -> int:
        return sum(c.rows for c in self.counts)


@dataclass
class _Unreadable:
    count: int = 0
    rows: list[RowRef] = field(default_factory=list)

    def add(self, ref: RowRef) -> None:
        self.count += 1
        if len(self.rows) < MAX_LISTED_ROWS:
            self.rows.append(ref)


@dataclass(frozen=True)
class RotationResult:
    primary: str
    reencrypted: int
    already_current: int
    failed: int
    failed_rows: list[RowRef]  # the first MAX_LISTED_ROWS of them
    revoked: list[str]  # digests revoked by this run
    seconds: float


@dataclass(frozen=True)
class VerifyResult:
    ok: int
    unreadable: int
    unreadable_rows: list[RowRef]  # the first MAX_LISTED_ROWS of them
    seconds: float


@dataclass(frozen=True)
class DeletionResult:
    deleted: dict[str, int]  # table -> secrets removed (rows deleted, or legacy keys cleared)
    revoked: list[str]

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


# --- status ---------------------------------------------------------------------------------


def status() -> KeyStatus:
    """Rows per table, column and key digest, and what is known of each digest. No decryption."""
    ring = keyring()
    with transaction():
        counts = []
        for spec in SECRET_COLUMNS:
            digest_col = _digest_col(spec)
            rows = db.session.execute(
                sa.select(digest_col, sa.func.count())
                .where(digest_col.is_not(None))
                .group_by(digest_col)
                .order_by(digest_col)
            ).all()
            counts += [ColumnCount(spec.table, spec.column, digest, n) for digest, n in rows]
        registered = {k.digest: k.revoked_at for k in db.session.execute(sa.select(EncryptionKey)).scalars()}
    used = {c.digest for c in counts}
    others = sorted((set(registered) | used) - set(ring.digests))
    digests = [
        DigestStatus(
            digest=digest,
            configured=ring.knows(digest),
            primary=digest == ring.primary_digest,
            registered=digest in registered,
            revoked_at=registered.get(digest),
            rows=sum(c.rows for c in counts if c.digest == digest),
        )
        for digest in [*ring.digests, *others]
    ]
    columns = [(spec.table, spec.column) for spec in SECRET_COLUMNS]
    return KeyStatus(primary=ring.primary_digest, digests=digests, columns=columns, counts=counts)


# --- rotate ---------------------------------------------------------------------------------


def rotate(
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: ProgressCallback | None = None,
    fail_hook: Callable[[int], None] | None = None,
) -> RotationResult:
    """Re-encrypt every secret that is not under the primary key, then revoke unused digests.

    One transaction per batch. On PostgreSQL a batch locks its rows with ``FOR UPDATE SKIP
    LOCKED``, so the app can go on serving; rows a writer held are retried at the end, waiting
    for their lock. Only the ciphertext and digest change (the associated data binds the row id
    and owners, which stay). Resumable: a run that is killed leaves every committed batch under
    the primary key, and the next run picks up the rest. Rows that do not decrypt are counted,
    named, and left as they are. Once no row uses an old digest, that digest is revoked.

    `on_progress(n)` is called after each batch with the number of rows it handled;
    `fail_hook(batch_number)` is a test hook called just before each batch commits (raising
    there simulates a rotation killed half-way).

    :raise Conflict: the primary key was revoked, or it is not the key registered under its digest.
    """
    started = time.monotonic()
    ring = keyring()
    primary = ring.primary_digest
    with transaction():
        _check_primary_usable(primary)
        ensure_key_registered(primary)
        already_current = sum(_count(spec, _digest_col(spec) == primary) for spec in SECRET_COLUMNS)

    failed = _Unreadable()
    reencrypted = 0
    batch_number = 0
    locked_out: list[tuple[SecretColumn, Any]] = []  # (spec, id) of rows a writer held
    for spec in SECRET_COLUMNS:
        digest_col = _digest_col(spec)
        for page in _pages(spec, sa.select(spec.model.id), digest_col != primary, batch_size):
            ids = [row.id for row in page]
            batch_number += 1
            done, skipped = _rotate_batch(spec, ids, primary, failed, batch_number, fail_hook, skip_locked=True)
            reencrypted += done
            locked_out += [(spec, row_id) for row_id in skipped]
            if on_progress is not None:
                on_progress(len(ids) - len(skipped))
    for spec, row_id in locked_out:
        # A writer held the row; wait for it now. It may have rewritten the row under the
        # primary key or deleted it meanwhile, which the digest filter takes care of.
        batch_number += 1
        done, _ = _rotate_batch(spec, [row_id], primary, failed, batch_number, fail_hook, skip_locked=False)
        reencrypted += done
        if on_progress is not None:
            on_progress(1)

    revoked = _revoke_unused_digests(primary)
    return RotationResult(
        primary=primary,
        reencrypted=reencrypted,
        already_current=already_current,
        failed=failed.count,
        failed_rows=failed.rows,
        revoked=revoked,
        seconds=time.monotonic() - started,
    )


def _check_primary_usable(primary: str) -> None:
    row = db.session.get(EncryptionKey, primary)
    if row is None:
        return
    if row.revoked_at is not None:
        raise Conflict(
            f"The primary key (digest {primary}) was revoked; put a current key first in ENCRYPTION_KEYS."
        )
    if not keyring().check_test_value(primary, row.test_ciphertext):
        raise Conflict(
            f"The primary key does not decrypt the test value registered under its digest {primary}; "
            "it is not the key that was registered."
        )


def _rotate_batch(
    spec: SecretColumn,
    ids: list[Any],
    primary: str,
    failed: _Unreadable,
    batch_number: int,
    fail_hook: Callable[[int], None] | None,
    *,
    skip_locked: bool,
) -> tuple[int, list[Any]]:
    """Re-encrypt the rows of `ids` still not under `primary`; return (re-encrypted, skipped ids)."""
    table = spec.model.__table__
    id_col = spec.model.id
    digest_col = _digest_col(spec)
    with transaction():
        rows = db.session.execute(
            _columns_of(spec)
            .where(id_col.in_(ids), digest_col != primary)
            .order_by(id_col)
            .with_for_update(skip_locked=skip_locked)
        ).all()
        seen = {row.id for row in rows}
        if skip_locked and db.engine.dialect.name == "postgresql":
            # Not returned: locked by a writer, or rewritten under the primary / deleted since
            # the ids were read. The retry at the end tells them apart.
            skipped = [row_id for row_id in ids if row_id not in seen]
        else:
            skipped = []
        updates = []
        for row in rows:
            try:
                sealed = reseal(spec, row)
            except DecryptionError:
                failed.add(RowRef(spec.table, str(row.id)))
                continue
            updates.append({"b_id": row.id, "b_ciphertext": sealed.ciphertext, "b_digest": sealed.digest})
        if updates:
            values: dict[str, Any] = {
                spec.column: sa.bindparam("b_ciphertext"),
                _digest_column_name(spec): sa.bindparam("b_digest"),
            }
            if "updated_at" in table.c:
                values["updated_at"] = table.c.updated_at  # rotation is not a change of the secret
            db.session.execute(
                sa.update(table).where(table.c.id == sa.bindparam("b_id")).values(values), updates
            )
        if fail_hook is not None:
            fail_hook(batch_number)
    return len(updates), skipped


def _revoke_unused_digests(primary: str) -> list[str]:
    """Revoke every registered digest but the primary that no row uses any more."""
    with transaction():
        candidates = db.session.execute(
            sa.select(EncryptionKey.digest).where(
                EncryptionKey.digest != primary, EncryptionKey.revoked_at.is_(None)
            ).order_by(EncryptionKey.digest)
        ).scalars().all()
    revoked = []
    for digest in candidates:
        with transaction():
            # The row lock conflicts with the key-share lock a concurrent insert or update
            # referencing this digest takes, so no writer can slip in between count and revoke.
            key = db.session.execute(
                sa.select(EncryptionKey).where(EncryptionKey.digest == digest).with_for_update()
            ).scalar_one_or_none()
            if key is None or key.revoked_at is not None:
                continue
            if any(_count(spec, _digest_col(spec) == digest) for spec in SECRET_COLUMNS):
                continue
            key.revoked_at = utcnow()
            revoked.append(digest)
    return revoked


# --- verify ---------------------------------------------------------------------------------


def verify(batch_size: int = DEFAULT_BATCH_SIZE, on_progress: ProgressCallback | None = None) -> VerifyResult:
    """Decrypt every stored secret, a batch at a time, and count what does not decrypt.

    A row is unreadable when its ciphertext was tampered with, copied from another row, or its
    key is not configured. Plaintext is dropped as soon as it is decrypted.
    """
    started = time.monotonic()
    ok = 0
    unreadable = _Unreadable()
    for spec in SECRET_COLUMNS:
        has_secret = getattr(spec.model, spec.ciphertext_attr).is_not(None)
        for rows in _pages(spec, _columns_of(spec), has_secret, batch_size):
            for row in rows:
                try:
                    open_with(spec, row)
                except DecryptionError:
                    unreadable.add(RowRef(spec.table, str(row.id)))
                else:
                    ok += 1
            if on_progress is not None:
                on_progress(len(rows))
    return VerifyResult(
        ok=ok, unreadable=unreadable.count, unreadable_rows=unreadable.rows, seconds=time.monotonic() - started
    )


# --- delete ---------------------------------------------------------------------------------


def delete_all_secrets(actor: Actor) -> DeletionResult:
    """Delete every stored secret and revoke every key digest: the last resort for a lost key.

    Provider keys and user keys (current and legacy) are deleted with their rows; a legacy chat
    provider keeps its row and settings but loses its key (ciphertext, digest and hint). The
    database allows such a provider, even with the central key enabled: an administrator enters
    a new key. Every digest is revoked, so the app starts again only under a new key. Recorded
    in the audit log with the counts. One transaction.
    """
    with transaction():
        deleted: dict[str, int] = {}
        for spec in SECRET_COLUMNS:
            table = spec.model.__table__
            if _row_is_the_secret(spec):
                result = db.session.execute(sa.delete(table))
            else:
                result = db.session.execute(
                    sa.update(table)
                    .where(table.c[spec.column].is_not(None))
                    .values({spec.column: None, _digest_column_name(spec): None, _hint_column(spec): None})
                )
            deleted[spec.table] = result.rowcount
        revoked = list(db.session.execute(
            sa.select(EncryptionKey.digest).where(EncryptionKey.revoked_at.is_(None)).order_by(EncryptionKey.digest)
        ).scalars())
        db.session.execute(
            sa.update(EncryptionKey).where(EncryptionKey.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
        audit.record(
            actor, "secrets.delete_all", "encryption_keys", None,
            deleted=deleted, total_deleted=sum(deleted.values()), revoked_digests=revoked,
        )
    return DeletionResult(deleted=deleted, revoked=revoked)


# --- helpers --------------------------------------------------------------------------------


def _digest_col(spec: SecretColumn) -> Any:
    return getattr(spec.model, spec.digest_attr)


def _digest_column_name(spec: SecretColumn) -> str:
    return _digest_col(spec).property.columns[0].name


def _row_is_the_secret(spec: SecretColumn) -> bool:
    """True for a key row (deleted with its secret), false for a legacy provider (kept, key cleared)."""
    return not spec.model.__table__.c[spec.column].nullable


def _hint_column(spec: SecretColumn) -> str:
    return "api_key_hint" if spec.model is ChatProvider else "hint"


def _columns_of(spec: SecretColumn) -> sa.Select:
    """Select the row's columns by attribute name (what `spec.aad` and `spec.owners` read)."""
    return sa.select(*(getattr(spec.model, attr.key) for attr in sa.inspect(spec.model).column_attrs))


def _count(spec: SecretColumn, condition: Any) -> int:
    return db.session.execute(sa.select(sa.func.count()).select_from(spec.model).where(condition)).scalar_one()


def _pages(spec: SecretColumn, stmt: sa.Select, condition: Any, batch_size: int) -> Iterator[list[Any]]:
    """The rows of `stmt` matching `condition`, in primary-key order, `batch_size` at a time.

    Keyset pagination (``id > last``): each page is one short query in its own transaction,
    whatever the table size, and rows changed behind the cursor are not visited twice.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    id_col = spec.model.id
    last = None
    while True:
        page = stmt.where(condition).order_by(id_col).limit(batch_size)
        if last is not None:
            page = page.where(id_col > last)
        with transaction():
            rows = db.session.execute(page).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id
