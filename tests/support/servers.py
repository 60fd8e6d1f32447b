"""Helpers for tests that run the app as a real server (tests/e2e, tests/deploy): a database of
their own next to the test database, a free loopback port, and the settings the server must not
inherit from the test run."""

from __future__ import annotations

import socket

from tests.support import database_url

# Settings a server must not inherit from the test run or the developer's shell (or `.env`:
# python-dotenv never overrides a variable that is set, so each of these is set explicitly).
APP_VARIABLES = ("DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEYS", "REDIS_URL", "ALLOW_BYOK", "SWITCHBOARD_ENV",
                 "SWITCHBOARD_INSTANCE_PATH", "SESSION_COOKIE_SECURE", "PRIVATE_BASE_URL_ALLOWLIST", "FLASK_APP",
                 "FLASK_DEBUG", "TEST_DATABASE_URL", "TRUSTED_PROXIES", "WEB_CONCURRENCY", "PORT", "LISTEN", "NGINX",
                 "KEY_MAX_AGE_DAYS")


def sibling_database_url(suffix: str) -> str:
    """The test database's URL with `suffix` appended to the database name."""
    base, _, query = database_url().partition("?")
    return base + suffix + (f"?{query}" if query else "")


def _admin_conninfo(url: str) -> tuple[str, str]:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1).split("?", 1)[0]
    root, dbname = conninfo.rsplit("/", 1)
    return root + "/postgres", dbname


def recreate_database(url: str) -> None:
    """An empty database for the run: created if missing, its schema dropped otherwise."""
    import psycopg
    from psycopg import sql

    admin, dbname = _admin_conninfo(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
