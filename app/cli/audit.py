"""`flask --app wsgi audit ...`: the audit log out of the app."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from app.errors import InvalidInput
from app.services import audit as service

audit = AppGroup("audit", help="The audit log.")


@audit.command("export")
@click.option("--since", metavar="ISO", help="Only events at or after this moment (RFC 3339, or a date).")
@click.option("--until", metavar="ISO", help="Only events before this moment (RFC 3339, or a date).")
@click.option("--output", type=click.File("w", encoding="utf-8", lazy=True), default="-",
              help="Write to this file instead of standard output.")
def export(since: str | None, until: str | None, output) -> None:
    """Write the audit log as JSON lines, oldest first: one event per line, the fields of
    GET /audit-events. Streams in batches (memory stays flat whatever the size of the log);
    events recorded after the export started are left for the next one."""
    try:
        filters = service.AuditFilter(since=service.parse_instant(since, "--since"),
                                      until=service.parse_instant(until, "--until"))
    except InvalidInput as error:
        raise click.BadParameter(error.validations[0].detail, param_hint=error.validations[0].field) from None
    written = 0
    for event in service.iter_events(filters):
        output.write(json.dumps(service.event_record(event), ensure_ascii=False, separators=(",", ":")) + "\n")
        written += 1
    output.flush()
    click.echo(f"{written} events exported.", err=True)
