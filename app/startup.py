"""Checks run once when the app starts serving (from `wsgi.py`), outside `create_app`.

The encryption-key check needs the database. When the database cannot be reached at start, the
process still starts (so it can answer `/healthz`, and 503 with Retry-After where the database is
needed) and the check runs before the first request that finds the database answering. Should it
fail then, the app stays closed: every request but `/healthz` and `/metrics` answers 503 and the reason is
logged, exactly what a failed check at start would have prevented from being served.
"""

from __future__ import annotations

import sys
import threading

from flask import Flask, current_app, request

from app.errors import Unavailable
from app.extensions import db
from app.services.secrets import StartupCheckError, check_keys_against_database

ALWAYS_SERVED = frozenset(("static", "web.healthz", "metrics"))  # none of them reads the database


def run_startup_checks(app: Flask) -> None:
    """Stop the process with a clear message when the keys cannot read the database; defer the
    check to the first request when the database cannot be reached yet."""
    from app.errorhandlers import is_database_unavailable

    with app.app_context():
        try:
            check_keys_against_database()
        except StartupCheckError as error:
            print(f"Switchboard cannot start: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        except Exception as error:
            db.session.rollback()
            if not is_database_unavailable(error):
                raise
            print("Switchboard: the database cannot be reached; serving 503 until it answers. The "
                  "encryption-key check runs then.", file=sys.stderr)
            _defer_key_check(app)


class _DeferredCheck:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.passed = False
        self.error: str | None = None


def _defer_key_check(app: Flask) -> None:
    state = _DeferredCheck()  # held by the hook below, its only reader

    @app.before_request
    def check_keys_once_reachable() -> None:
        if state.passed or request.endpoint in ALWAYS_SERVED:
            return
        from app.errorhandlers import is_database_unavailable

        with state.lock:
            if state.passed:
                return
            if state.error is None:
                try:
                    check_keys_against_database()
                except StartupCheckError as error:
                    state.error = str(error)
                    current_app.logger.critical("encryption-key check failed; refusing to serve: %s", error)
                except Exception as error:
                    db.session.rollback()
                    if not is_database_unavailable(error):
                        raise
                    return  # still unreachable: the view answers 503 when it needs the database
                else:
                    state.passed = True
                    current_app.logger.warning("database reachable; encryption-key check passed")
                    return
        raise Unavailable()
