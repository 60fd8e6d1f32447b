"""Settings: secrets required in production, generated in development, `.env`, cookie and
database settings per backend, and the production password-hashing profile."""

from __future__ import annotations

import re
import sqlite3
import stat
import uuid
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tests.conftest import base_config
from tests.support import KEY_A, SECRET_KEY, flask_cli, is_postgres

ENV_VARIABLES = ("SECRET_KEY", "ENCRYPTION_KEYS", "DATABASE_URL", "SESSION_COOKIE_SECURE", "ALLOW_BYOK", "REDIS_URL")


@pytest.fixture
def clean_environment(monkeypatch):
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@contextmanager
def built(config: dict):
    """An app from `config`, its engine disposed afterwards."""
    from app import create_app
    from app.extensions import db

    application = create_app(config)
    try:
        yield application
    finally:
        with application.app_context():
            db.engine.dispose()


def production(tmp_path, **settings) -> dict:
    return {"SWITCHBOARD_ENV": "production", "INSTANCE_PATH": str(tmp_path / "instance"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.db'}", **settings}


# --- secrets ---------------------------------------------------------------------------------


def test_production_without_secret_key_fails_naming_it(clean_environment, tmp_path):
    from app import create_app
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(production(tmp_path, ENCRYPTION_KEYS=KEY_A))
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_production_without_encryption_keys_fails_naming_them(clean_environment, tmp_path):
    from app import create_app
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="ENCRYPTION_KEYS"):
        create_app(production(tmp_path, SECRET_KEY=SECRET_KEY))


def test_production_startup_without_secret_key_stops_with_a_message(tmp_path):
    result = flask_cli("users", "create", "x@example.com", "--password", "long enough password", env={
        "SWITCHBOARD_ENV": "production", "ENCRYPTION_KEYS": KEY_A,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "SWITCHBOARD_INSTANCE_PATH": str(tmp_path / "instance"),
    })
    assert result.returncode == 1
    assert "Switchboard cannot start: SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_development_generates_secrets_once_into_the_instance_folder(clean_environment, tmp_path):
    config = {"SWITCHBOARD_ENV": "development", "INSTANCE_PATH": str(tmp_path / "instance"),
              "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}"}
    with built(config) as first:
        secret, keys = first.config["SECRET_KEY"], first.config["ENCRYPTION_KEYS"]
        assert first.config["SESSION_COOKIE_SECURE"] is False  # `make run` serves plain HTTP
        assert first.config["SESSION_COOKIE_NAME"] == "session"
    for name in ("secret_key", "encryption_keys"):
        path = tmp_path / "instance" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) >= 32
    with built(config) as second:
        assert second.config["SECRET_KEY"] == secret
        assert second.config["ENCRYPTION_KEYS"] == keys


def test_production_defaults(clean_environment, tmp_path):
    from app.config import load_config

    config = load_config(str(tmp_path), {"SWITCHBOARD_ENV": "production", "SECRET_KEY": SECRET_KEY,
                                         "ENCRYPTION_KEYS": KEY_A})
    assert config["SESSION_COOKIE_SECURE"] is True
    assert config["SESSION_COOKIE_NAME"] == "__Host-session"
    assert config["SESSION_COOKIE_HTTPONLY"] is True
    assert config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'switchboard.db'}"
    assert config["RATELIMIT_STORAGE_URI"] == "memory://"
    assert config["ALLOW_BYOK"] is True


def test_environment_variables(monkeypatch, tmp_path):
    from app.config import load_config

    monkeypatch.setenv("SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("ENCRYPTION_KEYS", KEY_A)
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@db.internal:5432/switchboard")
    monkeypatch.setenv("SESSION_COOKIE_SECURE", "false")
    monkeypatch.setenv("ALLOW_BYOK", "off")
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6379/0")
    config = load_config(str(tmp_path), {"SWITCHBOARD_ENV": "production"})
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://user:pw@db.internal:5432/switchboard"
    assert config["SESSION_COOKIE_SECURE"] is False
    assert config["SESSION_COOKIE_NAME"] == "session"
    assert config["ALLOW_BYOK"] is False
    assert config["RATELIMIT_STORAGE_URI"] == "redis://cache.internal:6379/0"


@pytest.mark.parametrize(
    ("name", "value"),
    [("OUTBOUND_CONNECT_TIMEOUT", "soon"), ("OUTBOUND_READ_TIMEOUT", "0"), ("OUTBOUND_DEADLINE", "-3"),
     ("OUTBOUND_MAX_RESPONSE_BYTES", "lots"), ("OUTBOUND_RATE_LIMIT", "often")],
)
def test_malformed_outbound_limit_fails_at_startup_naming_it(monkeypatch, tmp_path, name, value):
    from app.config import ConfigError, load_config

    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_config(str(tmp_path), {"SWITCHBOARD_ENV": "production", "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A})


def test_outbound_limits_are_read_from_the_environment(monkeypatch, tmp_path):
    from app.config import load_config

    monkeypatch.setenv("OUTBOUND_READ_TIMEOUT", "2.5")
    monkeypatch.setenv("OUTBOUND_RATE_LIMIT", "3 per minute")
    config = load_config(str(tmp_path), {"SWITCHBOARD_ENV": "production", "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A})
    assert config["OUTBOUND_READ_TIMEOUT"] == 2.5
    assert config["OUTBOUND_CONNECT_TIMEOUT"] == 5.0
    assert config["OUTBOUND_RATE_LIMIT"] == "3 per minute"


@pytest.mark.parametrize("name", ["SESSION_COOKIE_SECURE", "ALLOW_BYOK"])
def test_malformed_boolean_fails_naming_the_variable(monkeypatch, tmp_path, name):
    from app.config import ConfigError, load_config

    monkeypatch.setenv(name, "maybe")
    with pytest.raises(ConfigError, match=name):
        load_config(str(tmp_path), {"SWITCHBOARD_ENV": "production", "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A})


@pytest.mark.parametrize("value", ["soon", "-1", "2.5"])
def test_malformed_key_max_age_fails_naming_it(monkeypatch, tmp_path, value):
    from app.config import ConfigError, load_config

    monkeypatch.setenv("KEY_MAX_AGE_DAYS", value)
    with pytest.raises(ConfigError, match="KEY_MAX_AGE_DAYS"):
        load_config(str(tmp_path), {"SWITCHBOARD_ENV": "production", "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A})


def test_key_max_age_is_off_by_default_and_read_in_days(monkeypatch, tmp_path):
    from app.config import load_config

    production = {"SWITCHBOARD_ENV": "production", "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A}
    monkeypatch.delenv("KEY_MAX_AGE_DAYS", raising=False)
    assert load_config(str(tmp_path), production)["KEY_MAX_AGE_DAYS"] == 0
    monkeypatch.setenv("KEY_MAX_AGE_DAYS", "90")
    assert load_config(str(tmp_path), production)["KEY_MAX_AGE_DAYS"] == 90


# --- single sign-on -----------------------------------------------------------------------------

SSO = {"OIDC_ISSUER": "https://id.example.com", "OIDC_CLIENT_ID": "switchboard",
       "OIDC_CLIENT_SECRET": "client-secret-" + uuid.uuid4().hex}


def sso_config(tmp_path, **settings) -> dict:
    from app.config import load_config

    return load_config(str(tmp_path), {"SWITCHBOARD_ENV": "production", "SECRET_KEY": SECRET_KEY,
                                       "ENCRYPTION_KEYS": KEY_A, **settings})


@pytest.fixture
def no_sso_environment(monkeypatch):
    from app.config import SSO_VARIABLES

    for name in SSO_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_sso_is_off_by_default_and_passwords_on(no_sso_environment, tmp_path):
    config = sso_config(tmp_path)
    assert config["SSO_ENABLED"] is False and config["PASSWORD_LOGIN"] is True


def test_sso_settings_are_read_from_the_environment(no_sso_environment, monkeypatch, tmp_path):
    for name, value in SSO.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OIDC_SCOPES", "openid  email profile groups")
    monkeypatch.setenv("OIDC_GROUPS_CLAIM", "groups")
    monkeypatch.setenv("OIDC_ADMIN_GROUP", "Switchboard Admins")
    monkeypatch.setenv("OIDC_ALLOWED_EMAIL_DOMAINS", "Example.com, @example.org,")
    monkeypatch.setenv("PASSWORD_LOGIN", "false")
    config = sso_config(tmp_path)
    assert config["SSO_ENABLED"] is True and config["PASSWORD_LOGIN"] is False
    assert config["OIDC_ISSUER"] == "https://id.example.com" and config["OIDC_CLIENT_ID"] == "switchboard"
    assert config["OIDC_SCOPES"] == "openid email profile groups"
    assert config["OIDC_GROUPS_CLAIM"] == "groups" and config["OIDC_ADMIN_GROUP"] == "Switchboard Admins"
    assert config["OIDC_ALLOWED_EMAIL_DOMAINS"] == ("example.com", "example.org")


@pytest.mark.parametrize(("given", "named"), [
    (("OIDC_ISSUER",), "OIDC_CLIENT_ID and OIDC_CLIENT_SECRET are not set"),
    (("OIDC_ISSUER", "OIDC_CLIENT_ID"), "OIDC_CLIENT_SECRET is not set"),
    (("OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET"), "OIDC_ISSUER is not set"),
])
def test_half_set_sso_fails_at_startup_naming_what_is_missing(no_sso_environment, tmp_path, given, named):
    from app.config import ConfigError

    with pytest.raises(ConfigError, match=named) as raised:
        sso_config(tmp_path, **{name: SSO[name] for name in given})
    assert SSO["OIDC_CLIENT_SECRET"] not in str(raised.value)


@pytest.mark.parametrize(("settings", "named"), [
    ({"OIDC_GROUPS_CLAIM": "groups"}, "OIDC_GROUPS_CLAIM is set but single sign-on is off"),
    ({"OIDC_ALLOWED_EMAIL_DOMAINS": "example.com"}, "OIDC_ALLOWED_EMAIL_DOMAINS is set but single sign-on is off"),
    ({"PASSWORD_LOGIN": "false"}, "PASSWORD_LOGIN is false but single sign-on is off"),
    ({**SSO, "OIDC_ADMIN_GROUP": "admins"}, "OIDC_ADMIN_GROUP is set but OIDC_GROUPS_CLAIM is not"),
    ({**SSO, "OIDC_SCOPES": "email profile"}, "OIDC_SCOPES must include openid"),
    ({**SSO, "OIDC_ALLOWED_EMAIL_DOMAINS": "example.com, not a domain"}, "OIDC_ALLOWED_EMAIL_DOMAINS"),
    ({**SSO, "OIDC_ISSUER": "http://id.example.com"}, "OIDC_ISSUER must be the identity provider's https URL"),
    ({**SSO, "OIDC_ISSUER": "https://id.example.com/?tenant=1"}, "OIDC_ISSUER"),
    ({**SSO, "OIDC_ISSUER": "ftp://id.example.com"}, "OIDC_ISSUER"),
    ({**SSO, "OIDC_ISSUER": "id.example.com"}, "OIDC_ISSUER"),
    ({**SSO, "PASSWORD_LOGIN": "sometimes"}, "PASSWORD_LOGIN must be true or false"),
])
def test_inconsistent_sso_settings_fail_at_startup_naming_the_variable(no_sso_environment, tmp_path, settings, named):
    from app.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(named)) as raised:
        sso_config(tmp_path, **settings)
    assert SSO["OIDC_CLIENT_SECRET"] not in str(raised.value)


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:9400", "http://localhost:9400/realms/x", "http://[::1]:9400"])
def test_a_plain_http_issuer_is_allowed_on_loopback_only(no_sso_environment, tmp_path, issuer):
    assert sso_config(tmp_path, **{**SSO, "OIDC_ISSUER": issuer})["OIDC_ISSUER"] == issuer


def test_half_set_sso_stops_the_app_with_a_message(tmp_path):
    result = flask_cli("users", "create", "x@example.com", "--password", "long enough password", env={
        "SWITCHBOARD_ENV": "production", "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "SWITCHBOARD_INSTANCE_PATH": str(tmp_path / "instance"),
        "OIDC_ISSUER": SSO["OIDC_ISSUER"], "OIDC_CLIENT_SECRET": SSO["OIDC_CLIENT_SECRET"],
    })
    assert result.returncode == 1
    assert "Switchboard cannot start: OIDC_CLIENT_ID is not set" in result.stderr
    assert SSO["OIDC_CLIENT_SECRET"] not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_dotenv_file_is_read(tmp_path):
    database = tmp_path / "from-dotenv.db"
    (tmp_path / ".env").write_text(
        f"SECRET_KEY={SECRET_KEY}\nENCRYPTION_KEYS={KEY_A}\nDATABASE_URL=sqlite:///{database}\n"
        f"SWITCHBOARD_ENV=production\nSWITCHBOARD_INSTANCE_PATH={tmp_path / 'instance'}\n"
    )
    result = flask_cli("db", "upgrade", env={}, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        assert "users" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# --- database connections --------------------------------------------------------------------


def test_database_connection_settings(app):
    from app.config import engine_options
    from app.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 15000
        else:
            assert db.engine.pool._pre_ping
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "15s"
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "10s"
    options = engine_options("postgresql+psycopg://db/switchboard")
    assert options["pool_pre_ping"] is True
    assert options["connect_args"]["connect_timeout"] == 5
    assert "statement_timeout" in options["connect_args"]["options"]


def test_foreign_keys_are_enforced(app):
    from sqlalchemy.exc import IntegrityError

    from app.extensions import db
    from app.models import UserSession

    with app.app_context():
        db.session.add(UserSession(id_hash="0" * 64, user_id=uuid.uuid4()))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()


def test_a_write_request_cannot_be_overtaken_between_its_read_and_its_write(app, member):
    """SQLite: a write request's transaction takes the database write lock at BEGIN (a GET does
    not). PostgreSQL: `lock_one` keeps the row it read locked until the transaction ends. Either
    way a second writer cannot slip in between a read and the write that depends on it."""
    from app.extensions import db
    from app.models import User
    from app.services.base import lock_one

    if is_postgres():
        import psycopg

        url = app.config["SQLALCHEMY_DATABASE_URI"].replace("postgresql+psycopg://", "postgresql://", 1)

        def other_writer_blocked() -> bool:
            with psycopg.connect(url, autocommit=True) as other:
                try:
                    other.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE NOWAIT", (member.id,))
                    return False
                except psycopg.errors.LockNotAvailable:
                    return True

        with app.test_request_context("/settings/tokens", method="POST"):
            assert lock_one(sa.select(User).where(User.id == member.id)) is not None
            assert other_writer_blocked()
            db.session.rollback()
            assert not other_writer_blocked()
            db.session.remove()
        return

    with app.app_context():
        path = db.engine.url.database

    def other_writer_blocked() -> bool:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as error:
            assert "locked" in str(error)
            return True
        finally:
            other.close()

    with app.test_request_context("/settings/tokens", method="POST"):
        db.session.execute(sa.text("SELECT 1"))  # the transaction begins here: with the write lock
        assert other_writer_blocked()
        db.session.rollback()
        assert not other_writer_blocked()
    with app.test_request_context("/settings/tokens", method="GET"):
        db.session.execute(sa.text("SELECT 1"))  # a safe request only reads: no write lock
        assert not other_writer_blocked()
        db.session.rollback()
    with app.app_context():
        db.session.remove()


# --- password hashing ------------------------------------------------------------------------


def test_production_argon2_parameters(clean_environment):
    from app.services.passwords import hash_password, verify_password

    config = base_config()
    del config["ARGON2_TIME_COST"], config["ARGON2_MEMORY_COST"]  # the suite's cheap profile
    with built(config) as application, application.app_context():
        hashed = hash_password("correct horse battery staple")
        assert verify_password(hashed, "correct horse battery staple")
        assert not verify_password(hashed, "correct horse battery stapler")
    match = re.fullmatch(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+", hashed)
    assert match, hashed
    assert tuple(int(x) for x in match.groups()) == (19456, 2, 1)


def test_old_hashes_are_upgraded_at_sign_in(app, member):
    from app.extensions import db
    from app.models import User
    from tests.support import login

    app.config["ARGON2_TIME_COST"] = 3
    assert login(app.test_client(), member.email).status_code == 302
    with app.app_context():
        stored = db.session.execute(sa.select(User.password_hash).where(User.id == member.id)).scalar_one()
    assert ",t=3," in stored
