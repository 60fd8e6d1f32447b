"""Fixtures: one app per test session on the database named by TEST_DATABASE_URL (SQLite when
unset or `sqlite`), schema built by the migrations, every table emptied after each test."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support import KEY_A, SECRET_KEY, Api, database_url, is_postgres, login, make_token, make_user

# Scans every response, log record and (before each emptying) the database for canary keys.
pytest_plugins = ["tests.support.leak_canary"]

_SQLITE_DIR = Path(tempfile.mkdtemp(prefix="switchboard-tests-"))


def resolved_database_url() -> str:
    url = database_url()
    if url == "sqlite" or not url:
        return f"sqlite:///{_SQLITE_DIR / 'test.db'}"
    return url


def base_config(**overrides) -> dict:
    config = {
        "TESTING": True,
        "SWITCHBOARD_ENV": "testing",
        "SECRET_KEY": SECRET_KEY,
        "ENCRYPTION_KEYS": KEY_A,
        "DATABASE_URL": resolved_database_url(),
        "INSTANCE_PATH": str(_SQLITE_DIR / "instance"),
        "SESSION_COOKIE_SECURE": False,
        # Cheap hashing keeps the suite fast; production uses the OWASP profile (tested apart).
        "ARGON2_TIME_COST": 1,
        "ARGON2_MEMORY_COST": 1024,
        "SERVER_NAME": None,
    }
    config.update(overrides)
    return config


def reset_schema(url: str) -> None:
    """Start from an empty database so the migrations build everything."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
        else:
            tables = [r[0] for r in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            for name in tables:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
    engine.dispose()


@pytest.fixture(scope="session")
def app():
    from flask_migrate import upgrade

    from app import create_app

    reset_schema(resolved_database_url())
    application = create_app(base_config())
    with application.app_context():
        upgrade()
    yield application
    from app.extensions import db

    with application.app_context():
        db.engine.dispose()


def truncate_all(app) -> None:
    from app.extensions import db

    with app.app_context():
        db.session.remove()
        tables = [t.name for t in reversed(db.metadata.sorted_tables)]
        # DELETE, children first, on both backends: a test leaves a handful of rows, and on
        # PostgreSQL TRUNCATE makes new files for every table (0.1-0.5 s per test on a busy server).
        with db.engine.begin() as conn:
            for t in tables:
                conn.exec_driver_sql(f'DELETE FROM "{t}"')
        app.extensions.pop("switchboard.registered_digests", None)


@pytest.fixture(autouse=True)
def _isolate(request):
    """Empty every table and restore the settings after each test that used the app."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    saved = dict(app.config)
    app.extensions["switchboard.limiter"].reset()  # per app: see app/ratelimits.py
    yield
    app.config.clear()
    app.config.update(saved)
    from tests.support.leak_canary import scan_database

    scan_database(app, request.node.nodeid)  # the leak canary reads every row before they go
    truncate_all(app)


@pytest.fixture
def make_app(app):
    """Build extra apps on the test database (another config, or throwaway routes); disposed after.

    Never add debug routes to the real app: register them on an app made here.
    """
    from app import create_app
    from app.extensions import db

    made = []

    def factory(**overrides):
        application = create_app(base_config(**overrides))
        made.append(application)
        return application

    yield factory
    for application in made:
        with application.app_context():
            db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def admin(app):
    return make_user(app, "admin@example.com", role="admin", name="Ada Admin")


@pytest.fixture
def member(app):
    return make_user(app, "member@example.com", role="member", name="Mel Member")


@pytest.fixture
def member_b(app):
    return make_user(app, "other@example.com", role="member", name="Bo Other")


@pytest.fixture
def admin_client(app, admin):
    """A browser signed in as the admin (session cookie)."""
    client = app.test_client()
    login(client, admin.email)
    return client


@pytest.fixture
def member_client(app, member):
    """A browser signed in as the member."""
    client = app.test_client()
    login(client, member.email)
    return client


@pytest.fixture
def admin_api(app, admin):
    return Api(app.test_client(), make_token(app, admin))


@pytest.fixture
def member_api(app, member):
    return Api(app.test_client(), make_token(app, member))


@pytest.fixture
def member_b_api(app, member_b):
    return Api(app.test_client(), make_token(app, member_b))


@pytest.fixture
def service_api(app, admin):
    return Api(app.test_client(), make_token(app, admin, service=True))


@pytest.fixture
def anon_api(app):
    return Api(app.test_client())


@pytest.fixture
def keys_registered(app):
    """Run the start-up key check as `wsgi.py` does before serving: it registers the configured
    key digests, so a race is between requests of a started server, not about the first write
    that registers a digest."""
    from app.services.secrets import check_keys_against_database

    with app.app_context():
        check_keys_against_database()


@pytest.fixture
def stubs():
    """`stubs(mode, **options)` starts a stub provider (tests/support/stub_provider.py) on 127.0.0.1;
    every one started is stopped after the test."""
    from tests.support.stub_provider import StubProvider

    started: list[StubProvider] = []

    def start(mode: str = "ok", **kw) -> StubProvider:
        stub = StubProvider(mode=mode, **kw).start()
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.stop()


@pytest.fixture(scope="session")
def oidc_provider():
    """A real OpenID provider (oidc-provider-mock, its own process on loopback) for the run; see
    tests/support/oidc.py. Tests give each person a `sub` of their own."""
    from tests.support.oidc import OidcProvider

    provider = OidcProvider().start()
    yield provider
    provider.stop()


def pytest_report_header(config):
    return f"database: {'PostgreSQL' if is_postgres() else 'SQLite'} ({resolved_database_url().split('@')[-1]})"


def pytest_collection_modifyitems(config, items):
    """`postgres_only` tests need PostgreSQL's row locks or server; on SQLite they are skipped
    (and reported), never the other way round."""
    if is_postgres():
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (runs in the PostgreSQL half of make test)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


os.environ.setdefault("SWITCHBOARD_ENV", "testing")
