"""Migrations run in both directions, through the operator's command, on the database of this
run: a throwaway SQLite file, or a throwaway PostgreSQL database created and dropped here."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.support import KEY_A, SECRET_KEY, database_url, flask_cli, is_postgres


@pytest.fixture(scope="session")
def background_drops() -> Iterator[list[threading.Thread]]:
    """DROP DATABASE waits for a checkpoint (seconds on a busy server): let it run alongside the
    remaining tests, and wait for it only at the end of the session."""
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(timeout=120)


@pytest.fixture
def throwaway_database(tmp_path, background_drops) -> Iterator[str]:
    if not is_postgres():
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    import psycopg
    from psycopg import sql

    base = database_url()
    name = f"switchboard_test_h1_mig_{uuid.uuid4().hex[:8]}"
    admin_conninfo = base.replace("postgresql+psycopg://", "postgresql://", 1).rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        with psycopg.connect(admin_conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        thread = threading.Thread(target=drop, name=f"drop {name}")
        thread.start()
        background_drops.append(thread)


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def head_revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(throwaway_database, tmp_path):
    from app.extensions import db
    from app.models import User  # noqa: F401  (every model is registered on the metadata)

    expected = set(db.metadata.tables)
    env = {
        "DATABASE_URL": throwaway_database,
        "SECRET_KEY": SECRET_KEY,
        "ENCRYPTION_KEYS": KEY_A,
        "SWITCHBOARD_ENV": "production",
        "SWITCHBOARD_INSTANCE_PATH": str(tmp_path / "instance"),
    }

    up = flask_cli("db", "upgrade", env=env)
    assert up.returncode == 0, up.stderr
    assert expected <= tables(throwaway_database)
    head = head_revision(throwaway_database)
    assert head

    down = flask_cli("db", "downgrade", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert tables(throwaway_database) <= {"alembic_version"}

    again = flask_cli("db", "upgrade", env=env)
    assert again.returncode == 0, again.stderr
    assert expected <= tables(throwaway_database)
    assert head_revision(throwaway_database) == head


@pytest.mark.filterwarnings("ignore:.*expression-based index:UserWarning")
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_the_migrations_build_exactly_what_the_models_declare(app):
    """A model change without its migration (or the reverse) fails here: autogenerate finds no
    difference between the migrated test database and the models. (Expression indexes cannot be
    reflected on SQLite, so they are compared on PostgreSQL only.)"""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from app.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == []


def test_migration_0008_keeps_every_row_that_points_at_a_user(throwaway_database, tmp_path):
    """0008 makes users.password_hash nullable, which rebuilds the users table on SQLite: the
    sessions, tokens, memberships and audit actors that point at users must all survive it, in
    both directions. Downgrading gives users without a password the unusable hash "!"."""
    import datetime

    from app.extensions import db
    from app.models import User  # noqa: F401  (every model is registered on the metadata)

    env = {"DATABASE_URL": throwaway_database, "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A,
           "SWITCHBOARD_ENV": "production", "SWITCHBOARD_INSTANCE_PATH": str(tmp_path / "instance")}
    assert flask_cli("db", "upgrade", "0006", env=env).returncode == 0
    now = datetime.datetime.now(datetime.UTC)
    user_id, group_id = uuid.uuid4(), uuid.uuid4()
    t = db.metadata.tables
    engine = sa.create_engine(throwaway_database)
    with engine.begin() as conn:
        conn.execute(t["users"].insert().values(id=user_id, email="kept@example.com", name="Kept",
                                                password_hash="$argon2id$x", role="admin", active=True,
                                                created_at=now, updated_at=now))
        conn.execute(t["user_sessions"].insert().values(id_hash="s" * 64, user_id=user_id, created_at=now))
        conn.execute(t["api_tokens"].insert().values(id=uuid.uuid4(), user_id=user_id, name="t", token_hash="h" * 64,
                                                     prefix="sb_x", is_service=False, created_at=now))
        conn.execute(t["audit_events"].insert().values(created_at=now, actor_id=user_id, actor_label="kept",
                                                       action="user.create", resource_type="user", details={}))
        conn.execute(t["groups"].insert().values(id=group_id, name="eng", display_name="", created_at=now,
                                                 updated_at=now))
        conn.execute(t["group_members"].insert().values(group_id=group_id, user_id=user_id, source="manual",
                                                        added_at=now))

    def rows() -> dict:
        with engine.connect() as conn:
            return {name: conn.execute(sa.select(sa.func.count()).select_from(t[name])).scalar_one()
                    for name in ("users", "user_sessions", "api_tokens", "group_members")} | {
                "audit actors": conn.execute(sa.select(t["audit_events"].c.actor_id)).scalars().all()}

    before = rows()
    assert before["audit actors"] == [user_id]
    try:
        up = flask_cli("db", "upgrade", env=env)
        assert up.returncode == 0, up.stderr
        assert rows() == before
        with engine.begin() as conn:
            conn.execute(t["users"].insert().values(id=uuid.uuid4(), email="sso@example.com", name="", role="member",
                                                    password_hash=None, active=True, created_at=now, updated_at=now))
        down = flask_cli("db", "downgrade", "0006", env=env)
        assert down.returncode == 0, down.stderr
        assert rows() == {**before, "users": 2}
        with engine.connect() as conn:
            hashes = dict(conn.execute(sa.select(t["users"].c.email, t["users"].c.password_hash)).all())
        assert hashes == {"kept@example.com": "$argon2id$x", "sso@example.com": "!"}
    finally:
        engine.dispose()
