"""Checks run once when the app starts serving (from `wsgi.py`), outside `create_app`."""

from __future__ import annotations

import sys

from flask import Flask

from app.services.secrets import StartupCheckError, check_keys_against_database


def run_startup_checks(app: Flask) -> None:
    """Stop the process with a clear message when the keys cannot read the database."""
    with app.app_context():
        try:
            check_keys_against_database()
        except StartupCheckError as error:
            print(f"Switchboard cannot start: {error}", file=sys.stderr)
            raise SystemExit(1) from None
