"""CLI group: filled in by its issue."""

from flask.cli import AppGroup

dbcrypt = AppGroup("dbcrypt")
