"""Fill a dedicated PostgreSQL database for the HTTP benchmarks.

For a size N it (re)creates `switchboard_bench_<N>`, builds the schema with the migrations, and
inserts N AI providers, 3N provider keys, 10N users each holding one key of their own
(`user_ai_provider_keys`), 5N chat model configs and N groups (each provider's ten users are the
members of its group; the second config of every provider is open only to that group, the
fourth to no group at all), plus the three bench callers (an admin, a member and a service
token). Providers cycle through the three key policies (so two in three take user keys) and one
in ten is disabled.

Rows go in with bulk inserts (executemany, chunks of `CHUNK` providers). Secrets are sealed with
the app's own keyring and the app's own associated data (`SECRET_COLUMNS`), so every row decrypts
through the app exactly like a row the app wrote; the password hash is computed once and reused.

    .venv/bin/python bench/seed.py 1000                      # recreate and fill switchboard_bench_1000
    .venv/bin/python bench/seed.py 10 --state /tmp/s.json    # also write tokens and ids for bench/run.py
    .venv/bin/python bench/seed.py 10000 --drop              # drop the database only

`insert_rows` is also what tests/test_query_budgets.py seeds with (on SQLite and PostgreSQL).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets as random_secrets
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
# Fixed bench-only secrets: the seeding process and the gunicorn workers must agree on them.
ENCRYPTION_KEY = base64.b64encode(b"switchboard bench key, 32 bytes!").decode()
SECRET_KEY = "switchboard-bench-secret-key-not-for-production-use"
PASSWORD = "bench password 0123456789"
ADMIN_EMAIL = "admin@bench.example"
MEMBER_EMAIL = "member@bench.example"

KEYS_PER_PROVIDER = 3
USERS_PER_PROVIDER = 10
CONFIGS_PER_PROVIDER = 5
CHUNK = 1000  # providers per bulk-insert round (and commit)
CALLER_KEY_PROVIDERS = 100  # the bench callers hold keys among the first 100 providers only, whatever N
POLICIES = ("provider_only", "user_preferred", "user_only")


def database_url(n: int) -> str:
    return f"{SERVER_URL}/switchboard_bench_{n}"


def app_settings(url: str) -> dict[str, str]:
    """The environment the bench app runs with (gunicorn gets the same)."""
    return {
        "SWITCHBOARD_ENV": "production",
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET_KEY,
        "ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "SESSION_COOKIE_SECURE": "false",  # served over plain HTTP on 127.0.0.1
    }


def make_app(url: str):
    from app import create_app

    settings = app_settings(url)
    return create_app({
        "SWITCHBOARD_ENV": settings["SWITCHBOARD_ENV"],
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET_KEY,
        "ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "SESSION_COOKIE_SECURE": False,
        "INSTANCE_PATH": tempfile.mkdtemp(prefix="switchboard-bench-"),
    })


# --- rows ----------------------------------------------------------------------------------------


def provider_policy(i: int) -> str:
    return POLICIES[i % len(POLICIES)]


def provider_enabled(i: int) -> bool:
    return i % 10 != 9


@dataclass
class Seeded:
    """What one `insert_rows` call created (ids in order of their index, from `start`)."""

    start: int = 0
    provider_ids: list[uuid.UUID] = field(default_factory=list)
    config_ids: list[uuid.UUID] = field(default_factory=list)
    user_ids: list[uuid.UUID] = field(default_factory=list)
    provider_key_ids: list[uuid.UUID] = field(default_factory=list)
    group_ids: list[uuid.UUID] = field(default_factory=list)


def insert_rows(session: Any, start: int, count: int, *, password_hash: str, callers: tuple[uuid.UUID, ...] = (),
                now: datetime | None = None) -> Seeded:
    """Insert providers `start .. start+count-1` with their keys, users, user keys, configs and
    groups.

    Provider i: type and policy cycle, one in ten disabled, 3 keys (created a second apart, so the
    oldest is known), 5 configs (`model-0` .. `model-4`, the last disabled; provider 0's first is
    the default; `model-1` open only to group i, `model-3` to no group), 10 users who each hold
    one key for provider i, or for a neighbour in the same batch that takes user keys, and who
    are the members of group i. Each id in `callers` also holds a key for every odd provider that
    takes user keys among the first `CALLER_KEY_PROVIDERS` (a user holds a handful of keys, not
    one per provider of a large installation), and is a member of every odd group. The caller
    commits.
    """
    import sqlalchemy as sa

    from app.crypto import make_hint
    from app.models import (
        PROVIDER_TYPES,
        AIProvider,
        AIProviderKey,
        ChatModelConfig,
        Group,
        GroupMember,
        ModelConfigGroup,
        User,
        UserAIProviderKey,
    )
    from app.services.secrets import SECRET_COLUMNS, ensure_key_registered, fingerprint, keyring

    ring = keyring()
    ensure_key_registered(ring.primary_digest)
    aad = {spec.model: spec.aad for spec in SECRET_COLUMNS}
    now = now or datetime.now(UTC)
    seeded = Seeded(start=start)
    providers, keys, users, user_keys, configs = [], [], [], [], []
    groups, members, access_rows = [], [], []

    def sealed(model: type, plaintext: str, **row: Any) -> dict[str, Any]:
        box = ring.encrypt(plaintext.encode(), aad[model](SimpleNamespace(**row)))
        return {**row, "ciphertext": box.ciphertext, "key_digest": box.digest, "hint": make_hint(plaintext),
                "created_at": row.get("created_at", now), "updated_at": now}

    ids = {i: uuid.uuid4() for i in range(start, start + count)}
    takes_user_keys = {i for i in ids if provider_policy(i) != "provider_only"}
    for i, pid in ids.items():
        seeded.provider_ids.append(pid)
        providers.append({
            "id": pid, "type": PROVIDER_TYPES[i % len(PROVIDER_TYPES)], "name": f"p{i:07d}",
            "display_name": f"Provider {i}", "enabled": provider_enabled(i), "deleted": False, "base_url": "",
            "key_policy": provider_policy(i), "created_at": now, "updated_at": now,
        })
        for k in range(KEYS_PER_PROVIDER):
            kid = uuid.uuid4()
            seeded.provider_key_ids.append(kid)
            plaintext = f"sk-bench-{random_secrets.token_hex(16)}"
            keys.append(sealed(AIProviderKey, plaintext, id=kid, provider_id=pid,
                               created_at=now - timedelta(seconds=KEYS_PER_PROVIDER - k),
                               fingerprint=fingerprint(f"ai_provider:{pid}", plaintext)))
        gid = uuid.uuid4()
        seeded.group_ids.append(gid)
        groups.append({"id": gid, "name": f"g{i:07d}", "display_name": f"Group {i}", "created_at": now,
                       "updated_at": now})
        if i % 2 == 1:
            members.extend({"group_id": gid, "user_id": caller, "source": "manual", "added_at": now}
                           for caller in callers)
        for j in range(CONFIGS_PER_PROVIDER):
            cid = uuid.uuid4()
            seeded.config_ids.append(cid)
            configs.append({
                "id": cid, "ai_provider_id": pid, "provider": providers[-1]["type"], "model": f"model-{j}",
                "display_name": f"Model {i}.{j}", "enabled": j != CONFIGS_PER_PROVIDER - 1,
                "is_default": i == 0 and j == 0, "context_limit": 128000, "compression_threshold": 70,
                "options": {}, "created_at": now, "updated_at": now, "deleted": False, "deleted_at": None,
                "access": "groups" if j in (1, 3) else "everyone",
            })
            if j == 1:
                access_rows.append({"model_config_id": cid, "group_id": gid})
        holder = i if i in takes_user_keys else next((j for j in (i + 1, i - 1, i + 2) if j in takes_user_keys), None)
        for u in range(USERS_PER_PROVIDER):
            uid = uuid.uuid4()
            seeded.user_ids.append(uid)
            users.append({"id": uid, "email": f"user{i * USERS_PER_PROVIDER + u:08d}@bench.example",
                          "name": f"User {i}.{u}", "password_hash": password_hash, "role": "member", "active": True,
                          "created_at": now, "updated_at": now})
            members.append({"group_id": gid, "user_id": uid, "source": "sso" if u % 2 else "manual", "added_at": now})
            if holder is not None:
                user_keys.append(sealed(UserAIProviderKey, f"sk-user-{random_secrets.token_hex(16)}",
                                        id=uuid.uuid4(), user_id=uid, ai_provider_id=ids[holder]))
        if i in takes_user_keys and i % 2 == 1 and i < CALLER_KEY_PROVIDERS:
            for caller in callers:
                user_keys.append(sealed(UserAIProviderKey, f"sk-caller-{random_secrets.token_hex(16)}",
                                        id=uuid.uuid4(), user_id=caller, ai_provider_id=pid))
    for model, rows in ((AIProvider, providers), (AIProviderKey, keys), (User, users),
                        (UserAIProviderKey, user_keys), (ChatModelConfig, configs), (Group, groups),
                        (GroupMember, members), (ModelConfigGroup, access_rows)):
        if rows:
            session.execute(sa.insert(model.__table__), rows)
    return seeded


# --- a whole bench database ----------------------------------------------------------------------


def recreate_database(url: str, *, drop_only: bool = False) -> None:
    import psycopg
    from psycopg import sql

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    server, name = conninfo.rsplit("/", 1)
    if not name.startswith("switchboard_bench_"):
        raise SystemExit(f"refusing to touch {name!r}: bench databases are named switchboard_bench_*")
    with psycopg.connect(server + "/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if not drop_only:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def seed(n: int, url: str | None = None) -> dict[str, Any]:
    """Recreate the bench database for size `n` and fill it; returns what bench/run.py needs."""
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from app.extensions import db
    from app.models import User
    from app.services import tokens
    from app.services.base import Actor
    from app.services.passwords import hash_password

    url = url or database_url(n)
    started = time.monotonic()
    recreate_database(url)
    app = make_app(url)
    with app.app_context():
        upgrade()
        migrated = time.monotonic()
        password_hash = hash_password(PASSWORD)  # production argon2 parameters, once
        admin = User(id=uuid.uuid4(), email=ADMIN_EMAIL, name="Bench Admin", password_hash=password_hash, role="admin")
        member = User(id=uuid.uuid4(), email=MEMBER_EMAIL, name="Bench Member", password_hash=password_hash)
        db.session.add_all([admin, member])
        db.session.commit()
        member_id = member.id
        first: Seeded | None = None
        for start in range(0, n, CHUNK):
            done = insert_rows(db.session, start, min(CHUNK, n - start), password_hash=password_hash,
                               callers=(member_id,))
            db.session.commit()
            first = first or done
        system = Actor.system("bench")
        _, admin_token = tokens.create_token(system, admin, "bench admin")
        _, member_token = tokens.create_token(system, member, "bench member")
        _, service_token = tokens.create_token(system, admin, "bench service", service=True)
        inserted = time.monotonic()
        db.session.remove()
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        counts = {}
        with db.engine.connect() as conn:
            for table in ("ai_providers", "ai_provider_keys", "users", "user_ai_provider_keys", "chat_model_configs",
                          "groups", "group_members", "model_config_groups"):
                counts[table] = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
        db.engine.dispose()
    assert first is not None
    # Provider 1 takes user keys first (user_preferred), is enabled, and the member holds a key
    # for it: its first config resolves to the member's own key.
    return {
        "n": n, "url": url, "settings": app_settings(url), "counts": counts,
        "seconds": {"migrate": round(migrated - started, 2), "insert": round(inserted - migrated, 2),
                    "total": round(time.monotonic() - started, 2)},
        "admin_email": ADMIN_EMAIL, "password": PASSWORD, "member_id": str(member_id),
        "tokens": {"admin": admin_token, "member": member_token, "service": service_token},
        "provider_id": str(first.provider_ids[min(1, n - 1)]),
        "config_id": str(first.config_ids[CONFIGS_PER_PROVIDER * min(1, n - 1)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="number of providers (10, 1000, 10000...)")
    parser.add_argument("--state", help="write tokens, ids and timings to this JSON file (it holds bench tokens)")
    parser.add_argument("--drop", action="store_true", help="drop the bench database and stop")
    args = parser.parse_args()
    if args.drop:
        recreate_database(database_url(args.n), drop_only=True)
        return
    state = seed(args.n)
    if args.state:
        fd = os.open(args.state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh)
    print(f"N={args.n:,}: {state['counts']} in {state['seconds']['total']:.1f} s "
          f"(migrations {state['seconds']['migrate']:.1f} s, inserts {state['seconds']['insert']:.1f} s)")


if __name__ == "__main__":
    main()
