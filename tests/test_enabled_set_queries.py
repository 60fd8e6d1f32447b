"""The enabled set and key resolution issue a constant number of SQL statements, whether there
are 5 configs or 500 (no per-row queries), groups, memberships and configs open only to some
groups included (the access rule is part of the same statements): counted with a
`before_cursor_execute` listener."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from tests.support import Api, make_token

LEGACY_TYPES = {"openai": True, "anthropic": False, "google": True}  # type -> legacy provider enabled


@contextlib.contextmanager
def count_statements(app):
    from app.extensions import db

    statements: list[str] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)


def seed(app, user_id: uuid.UUID, start: int, stop: int) -> set[str]:
    """Configs start..stop-1 (bulk inserts): on AI providers (one provider per ten configs, every
    third disabled, every seventh deleted, keys and user keys on some) and, every fifth config, a
    legacy config. One group per ten configs, each with another user in it, every other one with
    the user too; every fourth config is open only to its group, every ninth to no group at all.
    Returns the ids of the configs that belong to the user's enabled set."""
    from app.extensions import db
    from app.models import (
        AIProvider,
        AIProviderKey,
        ChatModelConfig,
        ChatProvider,
        Group,
        GroupMember,
        ModelConfigGroup,
        User,
        UserAIProviderKey,
    )
    from app.services.secrets import ensure_key_registered, keyring

    with app.app_context():
        digest = keyring().primary_digest
        ensure_key_registered(digest)
        now = datetime.now(UTC)
        if not db.session.execute(sa.select(ChatProvider.id).limit(1)).first():
            db.session.execute(sa.insert(ChatProvider), [
                {"id": uuid.uuid4(), "provider": t, "enabled": on, "central_api_key_enabled": True,
                 "allow_user_api_key": False, "allow_central_api_key_fallback": False}
                for t, on in LEGACY_TYPES.items()])
        providers, keys, user_keys, configs = [], [], [], []
        groups, users, members, access_rows = [], [], [], []
        expected: set[str] = set()
        provider = None
        group_ids: dict[int, uuid.UUID] = {}
        for i in range(start, stop):
            n = i // 10
            if n not in group_ids:
                group_ids[n] = uuid.uuid4()
                other = uuid.uuid4()
                groups.append({"id": group_ids[n], "name": f"group-{start}-{n}", "display_name": ""})
                users.append({"id": other, "email": f"other-{start}-{n}@example.com", "password_hash": "x"})
                members.append({"group_id": group_ids[n], "user_id": other, "source": "manual"})
                if n % 2 == 0:
                    members.append({"group_id": group_ids[n], "user_id": user_id, "source": "sso"})
            access, allowed = "everyone", True
            if i % 9 == 8:
                access, allowed = "groups", False
            elif i % 4 == 1:
                access, allowed = "groups", n % 2 == 0
            if i % 5 == 4:
                legacy_type = list(LEGACY_TYPES)[(i // 5) % 3]
                cid = uuid.uuid4()
                enabled = i % 11 != 0
                configs.append({"id": cid, "ai_provider_id": None, "provider": legacy_type, "model": f"legacy-{i}",
                                "enabled": enabled, "is_default": False, "access": access,
                                "created_at": now + timedelta(microseconds=i)})
                if access == "groups" and i % 9 != 8:
                    access_rows.append({"model_config_id": cid, "group_id": group_ids[n]})
                if enabled and LEGACY_TYPES[legacy_type] and allowed:
                    expected.add(str(cid))
                continue
            if provider is None or i % 10 == 0:
                n = i // 10
                provider = {"id": uuid.uuid4(), "type": "openai", "name": f"prov-{start}-{n}", "enabled": n % 3 != 2,
                            "deleted": n % 7 == 6, "deleted_at": now if n % 7 == 6 else None,
                            "key_policy": ("provider_only", "user_preferred", "user_only")[n % 3]}
                providers.append(provider)
                if n % 2 == 0:
                    for k in range(2):
                        keys.append({"id": uuid.uuid4(), "provider_id": provider["id"], "ciphertext": b"x" * 40,
                                     "key_digest": digest, "hint": "...abcd", "fingerprint": f"{n}-{k}",
                                     "created_at": now + timedelta(seconds=k)})
                if n % 4 == 1:
                    user_keys.append({"id": uuid.uuid4(), "user_id": user_id, "ai_provider_id": provider["id"],
                                      "ciphertext": b"y" * 40, "key_digest": digest, "hint": "...wxyz"})
            cid = uuid.uuid4()
            enabled = i % 6 != 5
            configs.append({"id": cid, "ai_provider_id": provider["id"], "provider": "openai", "model": f"model-{i}",
                            "enabled": enabled, "is_default": i == 0, "display_name": f"Model {i:04d}",
                            "deleted": i % 13 == 12, "deleted_at": now if i % 13 == 12 else None, "access": access,
                            "created_at": now + timedelta(microseconds=i)})
            if access == "groups" and i % 9 != 8:
                access_rows.append({"model_config_id": cid, "group_id": group_ids[n]})
            if enabled and i % 13 != 12 and provider["enabled"] and not provider["deleted"] and allowed:
                expected.add(str(cid))
        for model, rows in ((AIProvider, providers), (AIProviderKey, keys), (UserAIProviderKey, user_keys),
                            (ChatModelConfig, configs), (Group, groups), (User, users), (GroupMember, members),
                            (ModelConfigGroup, access_rows)):
            if rows:
                db.session.execute(sa.insert(model), rows)
        db.session.commit()
        return expected


def enabled_ids(app, user_id: uuid.UUID) -> set[str]:
    from app.services.model_configs import enabled_set

    with app.app_context():
        rows, _ = enabled_set(user_id)
        return {str(c.id) for c, _, _ in rows}


def measure(app, member, api, client) -> dict[str, int]:
    from app.extensions import db
    from app.models import User
    from app.services.model_configs import enabled_set, list_configs
    from app.services.resolution import models_for, resolve_many

    counts = {}
    with app.app_context():
        user = db.session.get(User, member.id)
        db.session.expunge_all()
        with count_statements(app) as statements:
            rows, total = enabled_set(user.id)
        counts["enabled_set()"] = len(statements)
        assert len(rows) == total
        with count_statements(app) as statements:
            models_for(user)
        counts["models_for(user)"] = len(statements)
        configs, _ = list_configs()
        with count_statements(app) as statements:
            resolve_many(user, configs, allowed={c.id for c, _, _ in rows})
        counts["resolve_many(user, all live configs)"] = len(statements)
        db.session.rollback()
    for name, path in (("GET /model-configs/enabled", "/model-configs/enabled"),
                       ("GET /model-configs (member)", "/model-configs")):
        with count_statements(app) as statements:
            response = api.get(path + "?limit=1000")
        assert response.status_code == 200
        counts[name] = len(statements)
    with count_statements(app) as statements:
        response = client.get("/models")
    assert response.status_code == 200
    counts["GET /models"] = len(statements)
    return counts


def test_the_enabled_set_and_resolution_use_a_constant_number_of_statements(app, member):
    from tests.support import login

    api = Api(app.test_client(), make_token(app, member))
    client = app.test_client()
    login(client, member.email)

    expected = seed(app, member.id, 0, 5)
    assert enabled_ids(app, member.id) == expected
    small = measure(app, member, api, client)

    expected |= seed(app, member.id, 5, 500)
    assert enabled_ids(app, member.id) == expected
    assert len(expected) > 150
    large = measure(app, member, api, client)

    print("\nSQL statements at 5 configs:  ", small)
    print("SQL statements at 500 configs:", large)
    assert small == large
    assert small["enabled_set()"] == 2  # count + page
    assert small["models_for(user)"] <= 4  # the enabled set + oldest keys + user keys + legacy user keys
    assert small["resolve_many(user, all live configs)"] <= 5


def test_the_api_lists_match_the_enabled_set(app, member, member_api):
    expected = seed(app, member.id, 0, 120)
    body = member_api.get("/model-configs/enabled?limit=1000").get_json()
    assert {c["id"] for c in body} == expected
    assert body[0]["is_default"] is True
    rest = body[1:]
    assert [c["display_name"].lower() or c["model"] for c in rest] == sorted(
        c["display_name"].lower() or c["model"] for c in rest)


def test_failing_keys_add_no_statement(app, member):
    """Key health: passing over refused keys (the oldest key that is not failing serves; a failing
    user key counts as absent) is decided in the same statements, whatever the number of keys."""
    from app.extensions import db
    from app.models import AIProvider, AIProviderKey, UserAIProviderKey
    from app.services.secrets import keyring
    from tests.support import login

    api = Api(app.test_client(), make_token(app, member))
    client = app.test_client()
    login(client, member.email)
    seed(app, member.id, 0, 60)
    before = measure(app, member, api, client)

    with app.app_context():
        digest, now = keyring().primary_digest, datetime.now(UTC)
        provider_ids = db.session.execute(sa.select(AIProvider.id)).scalars().all()
        db.session.execute(sa.insert(AIProviderKey), [
            {"id": uuid.uuid4(), "provider_id": pid, "ciphertext": b"z" * 40, "key_digest": digest, "hint": "...efgh",
             "fingerprint": f"more-{pid}-{k}", "created_at": now - timedelta(days=k),
             "last_tested_at": now, "last_test_result": "invalid_key" if k % 2 else "forbidden"}
            for pid in provider_ids for k in range(8)])
        db.session.execute(sa.update(UserAIProviderKey).values(last_tested_at=now, last_test_result="invalid_key"))
        db.session.commit()
    after = measure(app, member, api, client)
    assert before == after
