"""`flask --app wsgi config ...`: configuration as code (SPEC section 11)."""

from __future__ import annotations

import os

import click
from flask.cli import AppGroup

from app.services import config_file
from app.services.base import Actor

config = AppGroup("config", help="Configuration as code: export to YAML, import from it.")


@config.command("export")
@click.option("--output", type=click.File("w", encoding="utf-8", lazy=True), default="-",
              help="Write to this file instead of standard output.")
def export(output) -> None:
    """Write groups, providers and model configs as YAML (never a key)."""
    for chunk in config_file.export_yaml():
        output.write(chunk)
    output.flush()


@config.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Check and show the plan; write nothing.")
@click.option("--prune", is_flag=True, help="Also delete the groups, providers and configs the file does not list.")
def import_(file, dry_run: bool, prune: bool) -> None:
    """Apply FILE in one transaction: one line per object, then `N created, M updated, K unchanged,
    E errors`. Any error writes nothing and exits 1. Keys come from the environment variables named
    in `api_key_env` and are never printed."""
    result = config_file.import_config(Actor.system(config_file.ACTOR_LABEL), file.read(), os.environ,
                                       dry_run=dry_run, prune=prune)
    for line in result.lines:
        click.echo(str(line))
    deleted = result.count("delete")
    if deleted:
        click.echo(f"{deleted} deleted (--prune)")
    click.echo(result.summary())
    if result.problems:
        click.echo("Nothing was written: fix the errors above and run the import again.", err=True)
        raise SystemExit(1)
    if dry_run:
        click.echo("Dry run: nothing was written.", err=True)
