"""`flask --app wsgi dbcrypt ...`: key management for the secrets encrypted at rest.

These commands run even when the configured keys do not match the database (`wsgi.py` skips
the startup check for them): they are how such a state is inspected and repaired. They print
table names, row ids, key digests and counts; never a key or a secret.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click
from flask.cli import AppGroup

from app.errors import DomainError
from app.services import keymanagement
from app.services.base import Actor

dbcrypt = AppGroup("dbcrypt", help="Inspect, rotate and verify the encryption of stored secrets.")

_WHAT = {
    "ai_provider_keys": "AI provider keys",
    "user_ai_provider_keys": "user keys (BYOK)",
    "chat_providers": "legacy chat provider keys (the providers stay, without a key)",
    "user_chat_provider_keys": "legacy user keys",
}

_batch_size = click.option(
    "--batch-size", default=keymanagement.DEFAULT_BATCH_SIZE, show_default=True, type=click.IntRange(1, 10_000),
    help="Rows per transaction.",
)


@dbcrypt.command("status")
def status() -> None:
    """Rows per table and key digest, and which digests are configured, primary or revoked.

    Decrypts nothing.
    """
    state = keymanagement.status()
    click.echo("Key digests (configured ones in ENCRYPTION_KEYS order, primary first):")
    click.echo(f"  {'DIGEST':<8} {'CONFIGURED':<15} {'REGISTERED':<11} {'REVOKED':<21} ROWS")
    for key in state.digests:
        configured = "primary" if key.primary else ("yes" if key.configured else "NOT CONFIGURED")
        click.echo(
            f"  {key.digest:<8} {configured:<15} {'yes' if key.registered else 'no':<11} "
            f"{_when(key.revoked_at):<21} {key.rows}"
        )
    click.echo("")
    click.echo("Rows per table and key digest:")
    for table, column in state.columns:
        counts = [c for c in state.counts if c.table == table]
        name = f"{table}.{column}"
        if not counts:
            click.echo(f"  {name:<40} no rows")
        for count in counts:
            click.echo(f"  {name:<40} {count.digest:<8} {count.rows}")
    click.echo("")
    for line in _advice(state):
        click.echo(line)


@dbcrypt.command("rotate")
@_batch_size
def rotate(batch_size: int) -> None:
    """Re-encrypt every secret under the first key of ENCRYPTION_KEYS, then revoke unused digests.

    Resumable: run it again after an interruption. Exits 1 when a row fails to decrypt.
    """
    state = keymanagement.status()
    pending = state.total_rows - state.rows_under(state.primary)
    try:
        with click.progressbar(length=pending, label="Re-encrypting", file=sys.stderr) as bar:
            result = keymanagement.rotate(batch_size, on_progress=bar.update)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    _list_rows("failed", result.failed_rows, result.failed)
    click.echo(
        f"{result.reencrypted} re-encrypted, {result.already_current} already current, "
        f"{result.failed} failed, {result.seconds:.1f} seconds (primary key {result.primary})."
    )
    if result.revoked:
        click.echo(
            f"Revoked key digest(s) {', '.join(result.revoked)}: no row uses them any more. "
            "Run `dbcrypt verify`, then remove those keys from ENCRYPTION_KEYS."
        )
    if result.failed:
        click.echo(
            "Rows that failed were left as they are and their key is not revoked. Add the key they "
            "were written with to ENCRYPTION_KEYS and run `dbcrypt rotate` again.",
            err=True,
        )
        raise SystemExit(1)


@dbcrypt.command("verify")
@_batch_size
def verify(batch_size: int) -> None:
    """Decrypt every stored secret; print `N ok, M unreadable`; exit 1 when M > 0."""
    total = keymanagement.status().total_rows
    with click.progressbar(length=total, label="Verifying", file=sys.stderr) as bar:
        result = keymanagement.verify(batch_size, on_progress=bar.update)
    _list_rows("unreadable", result.unreadable_rows, result.unreadable)
    click.echo(f"{result.ok} ok, {result.unreadable} unreadable")
    if result.unreadable:
        raise SystemExit(1)


@dbcrypt.command("delete")
@click.option("--yes", is_flag=True, help="Really delete every stored secret.")
def delete(yes: bool) -> None:
    """Last resort for a lost key: delete every stored secret and revoke every key digest.

    Without --yes, says what would be deleted and exits 1.
    """
    if not yes:
        state = keymanagement.status()
        click.echo("This would delete every encrypted secret:")
        for table, _column in state.columns:
            click.echo(f"  {state.rows_in(table):>8}  {_WHAT.get(table, table)}")
        live = [d.digest for d in state.digests if d.registered and d.revoked_at is None]
        click.echo(f"and revoke every key digest ({', '.join(live) or 'none'}). It cannot be undone.")
        click.echo("Nothing was deleted. To do it: flask --app wsgi dbcrypt delete --yes", err=True)
        raise SystemExit(1)
    result = keymanagement.delete_all_secrets(Actor.system("cli"))
    click.echo(f"Deleted {result.total} secrets:")
    for table, count in result.deleted.items():
        click.echo(f"  {count:>8}  {_WHAT.get(table, table)}")
    click.echo(f"Revoked key digests: {', '.join(result.revoked) or 'none'}.")
    click.echo(
        "Generate a new key and make it the only one in ENCRYPTION_KEYS (the app refuses a revoked "
        "primary key), restart, then enter the provider keys again; users enter their own keys again."
    )


def _list_rows(what: str, rows: list[keymanagement.RowRef], count: int) -> None:
    for ref in rows:
        click.echo(f"{what}: {ref}")
    if count > len(rows):
        click.echo(f"{what}: ... and {count - len(rows)} more rows")


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _advice(state: keymanagement.KeyStatus) -> list[str]:
    lines = []
    primary = next(d for d in state.digests if d.primary)
    if primary.revoked_at is not None:
        lines.append(
            f"The primary key (digest {primary.digest}) is revoked: the app will not start. "
            "Put a current key first in ENCRYPTION_KEYS."
        )
    for key in state.digests:
        if key.rows and not key.configured:
            lines.append(
                f"{key.rows} rows are encrypted under digest {key.digest}, which is not configured: the app "
                "will not start. Add that key to ENCRYPTION_KEYS, or run `dbcrypt delete --yes` if it is lost."
            )
    old = sum(d.rows for d in state.digests if d.configured and not d.primary)
    if old:
        lines.append(f"{old} rows are under an older key: run `dbcrypt rotate`.")
    if not lines:
        lines.append(f"All {state.total_rows} secrets are under the primary key.")
    return lines
