"""`flask --app wsgi ai-providers ...`: AI provider maintenance."""

from __future__ import annotations

from contextlib import ExitStack

import click
from flask.cli import AppGroup

from app.services.base import Actor
from app.services.legacy_migration import MigrationStopped, MigrationSummary, migrate_legacy

ai_providers = AppGroup("ai-providers", help="AI provider maintenance.")


@ai_providers.command("migrate-legacy")
@click.option("--dry-run", is_flag=True, help="Report what would be copied; write nothing.")
def migrate_legacy_command(dry_run: bool) -> None:
    """Copy legacy chat providers, their keys, users' keys and model configs into AI providers.

    Idempotent: providers migrated before are skipped. Exits 1 when a provider failed.
    """
    with ExitStack() as stack:
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                if not total:
                    return
                label = "Checking legacy providers" if dry_run else "Migrating legacy providers"
                bar = stack.enter_context(click.progressbar(length=total, label=label))
            bar.update(done - bar.pos)

        try:
            summary = migrate_legacy(Actor.system("cli migrate-legacy"), dry_run=dry_run, on_progress=progress)
        except MigrationStopped as stopped:
            stack.close()
            _echo(stopped.summary)
            raise click.ClickException(
                f"Stopped at legacy provider {stopped.provider} by an unexpected error "
                f"({type(stopped.__cause__).__name__}); it was left untouched. Providers listed above "
                "were migrated. Run the command again to continue."
            ) from None
    _echo(summary)
    if summary.failed:
        raise click.exceptions.Exit(1)


def _echo(summary: MigrationSummary) -> None:
    for line in summary.lines():
        click.echo(line)
