"""The WSGI entry point (`gunicorn 'wsgi:app'`) and the Flask CLI's app (`flask --app wsgi`).

Reads `.env` when present, builds the app, and refuses to start when a setting is missing or
the encryption keys cannot read what the database holds. The maintenance commands (`db`,
`dbcrypt`) skip the database check: they are how such a state gets repaired.
"""

import sys
from pathlib import Path

from dotenv import load_dotenv

load_dotenv()

from app import create_app  # noqa: E402
from app.config import ConfigError  # noqa: E402
from app.crypto import KeyringError  # noqa: E402
from app.startup import run_startup_checks  # noqa: E402

try:
    app = create_app()
except (ConfigError, KeyringError) as error:
    print(f"Switchboard cannot start: {error}", file=sys.stderr)
    raise SystemExit(1) from None


def _maintenance_command() -> bool:
    is_flask_cli = Path(sys.argv[0]).name in ("flask", "__main__.py")
    return is_flask_cli and bool({"db", "dbcrypt"} & set(sys.argv[1:]))


if not _maintenance_command():
    run_startup_checks(app)
