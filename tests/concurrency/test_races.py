"""Races across areas, on PostgreSQL, through the JSON API: 20 requests released together by one
barrier, each from its own thread and test client (own session, own pooled connection).

This file adds what the per-area concurrency files (test_providers_concurrency.py,
test_model_configs_concurrency.py, test_user_keys_concurrency.py) leave out: deletes of model
configs, provider keys and user keys; BYOK upserts by many users and upserts racing deletes;
default switches with an exact outcome; duplicate legacy providers; and a provider deletion racing
key, model config and user key creation all at once. Every test ends with the same database
audit: no orphans, no duplicates, exactly one live default while live configs exist.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.support import Api, concurrency, make_token, make_user, new_key
from tests.support.concurrency import Call, messages, scalar, statuses

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow, pytest.mark.usefixtures("keys_registered")]

THREADS = 20


class _Outcomes:
    """Each race's status counts, written in pytest's terminal summary (the figures of the report)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current = ""

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.lines:
            terminalreporter.section("races")
            for line in self.lines:
                terminalreporter.write_line(line)


_OUTCOMES = _Outcomes()


@pytest.fixture(autouse=True)
def _record_outcomes(request):
    if not request.config.pluginmanager.is_registered(_OUTCOMES):
        request.config.pluginmanager.register(_OUTCOMES, "switchboard-race-outcomes")
    _OUTCOMES.current = request.node.name


def race(app, calls: list[Call]):
    """tests.support.concurrency.race with at least THREADS calls; its status counts go in the summary."""
    assert len(calls) >= THREADS
    results = concurrency.race(app, calls)
    counts = ", ".join(f"{status}: {n}" for status, n in sorted(statuses(results).items()))
    _OUTCOMES.lines.append(f"{_OUTCOMES.current}: {counts}")
    return results


def audits(app, action: str) -> int:
    return scalar(app, "SELECT count(*) FROM audit_events WHERE action = :a", a=action)


def assert_consistent(app) -> None:
    """No orphans and no duplicates anywhere, whatever the race did."""
    checks = {
        "provider keys of deleted providers":
            "SELECT count(*) FROM ai_provider_keys k JOIN ai_providers p ON p.id = k.provider_id WHERE p.deleted",
        "user keys of deleted providers":
            "SELECT count(*) FROM user_ai_provider_keys k JOIN ai_providers p ON p.id = k.ai_provider_id "
            "WHERE p.deleted",
        "live configs on deleted providers":
            "SELECT count(*) FROM chat_model_configs c JOIN ai_providers p ON p.id = c.ai_provider_id "
            "WHERE p.deleted AND NOT c.deleted",
        "deleted defaults": "SELECT count(*) FROM chat_model_configs WHERE deleted AND is_default",
        "duplicate live provider names":
            "SELECT count(*) FROM (SELECT name FROM ai_providers WHERE NOT deleted GROUP BY name "
            "HAVING count(*) > 1) d",
        "duplicate live configs":
            "SELECT count(*) FROM (SELECT ai_provider_id, model FROM chat_model_configs WHERE NOT deleted "
            "GROUP BY ai_provider_id, model HAVING count(*) > 1) d",
        "duplicate user keys":
            "SELECT count(*) FROM (SELECT user_id, ai_provider_id FROM user_ai_provider_keys "
            "GROUP BY user_id, ai_provider_id HAVING count(*) > 1) d",
        "duplicate legacy providers":
            "SELECT count(*) FROM (SELECT provider FROM chat_providers GROUP BY provider HAVING count(*) > 1) d",
    }
    found = {name: scalar(app, sql) for name, sql in checks.items()}
    assert found == dict.fromkeys(checks, 0)
    live = scalar(app, "SELECT count(*) FROM chat_model_configs WHERE NOT deleted")
    defaults = scalar(app, "SELECT count(*) FROM chat_model_configs WHERE NOT deleted AND is_default")
    assert defaults == (1 if live else 0), (live, defaults)


def provider(api: Api, name: str, **fields) -> str:
    response = api.post("/ai-providers", json={"type": "openai", "name": name, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def config(api: Api, provider_id: str, model: str) -> str:
    response = api.post("/model-configs", json={"ai_provider_id": provider_id, "model": model})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def user_key_plaintexts(app, provider_id: str) -> dict[str, str]:
    """user id -> the key stored for `provider_id`, decrypted."""
    from app.extensions import db
    from app.models import UserAIProviderKey
    from app.services.secrets import open_secret

    with app.app_context():
        rows = db.session.execute(sa.select(UserAIProviderKey)
                                  .where(UserAIProviderKey.ai_provider_id == uuid.UUID(provider_id))).scalars()
        found = {str(row.user_id): open_secret(row) for row in rows}
        db.session.rollback()
        return found


# --- deletes -----------------------------------------------------------------------------------


def test_twenty_deletes_of_the_default_config_delete_it_once_and_promote_once(app, admin_api):
    pid = provider(admin_api, "models")
    ids = [config(admin_api, pid, f"model-{i}") for i in range(3)]  # ids[0] is the default
    results = race(app, [(admin_api.token, "DELETE", f"/model-configs/{ids[0]}", None)] * THREADS)
    assert statuses(results) == {204: 1, 404: THREADS - 1}
    assert messages(results, 404) == {"Chat model config not found."}
    assert audits(app, "model_config.delete") == 1
    assert scalar(app, "SELECT id::text FROM chat_model_configs WHERE is_default AND NOT deleted") == ids[1]
    assert_consistent(app)


def test_twenty_deletes_of_one_provider_key_delete_it_once(app, admin_api):
    pid = provider(admin_api, "keys")
    keys = [admin_api.post(f"/ai-providers/{pid}/keys", json={"api_key": new_key()}).get_json()["id"]
            for _ in range(3)]
    results = race(app, [(admin_api.token, "DELETE", f"/ai-providers/{pid}/keys/{keys[1]}", None)] * THREADS)
    assert statuses(results) == {204: 1, 404: THREADS - 1}
    assert messages(results, 404) == {"AI provider key not found."}
    assert audits(app, "provider_key.delete") == 1
    assert [k["id"] for k in admin_api.get(f"/ai-providers/{pid}/keys").get_json()] == [keys[0], keys[2]]
    assert_consistent(app)


def test_twenty_deletes_of_one_user_key_all_succeed_and_remove_it_once(app, admin_api, member_api):
    pid = provider(admin_api, "byok", key_policy="user_only")
    assert member_api.put(f"/user-ai-provider-keys/{pid}", json={"api_key": new_key()}).status_code == 200
    results = race(app, [(member_api.token, "DELETE", f"/user-ai-provider-keys/{pid}", None)] * THREADS)
    assert statuses(results) == {204: THREADS}  # idempotent
    assert audits(app, "user_key.delete") == 1  # but removed exactly once
    assert scalar(app, "SELECT count(*) FROM user_ai_provider_keys") == 0
    assert_consistent(app)


def test_twenty_deletes_of_one_legacy_provider_delete_it_once(app, admin_api, member_api):
    created = admin_api.post("/providers", json={"provider": "openai", "api_key": new_key(),
                                                 "allow_user_api_key": True, "allow_central_api_key_fallback": True})
    assert created.status_code == 201, created.get_json()
    lid = created.get_json()["id"]
    assert member_api.put(f"/user-provider-configs/{lid}", json={"api_key": new_key()}).status_code == 200
    results = race(app, [(admin_api.token, "DELETE", f"/providers/{lid}", None)] * THREADS)
    assert statuses(results) == {204: 1, 404: THREADS - 1}
    assert audits(app, "legacy_provider.delete") == 1
    assert scalar(app, "SELECT count(*) FROM chat_providers") == 0
    assert scalar(app, "SELECT count(*) FROM user_chat_provider_keys") == 0
    assert_consistent(app)


# --- duplicate creates -------------------------------------------------------------------------


def test_twenty_creates_of_one_legacy_provider_type_make_exactly_one(app, admin_api):
    calls = [(admin_api.token, "POST", "/providers", {"provider": "anthropic", "display_name": f"#{i}",
                                                      "api_key": new_key()}) for i in range(THREADS)]
    results = race(app, calls)
    assert statuses(results) == {201: 1, 409: THREADS - 1}
    assert messages(results, 409) == {"Chat provider already exists."}
    assert scalar(app, "SELECT count(*) FROM chat_providers") == 1
    assert audits(app, "legacy_provider.create") == 1
    assert_consistent(app)


def test_twenty_providers_created_with_one_key_each_at_once_all_exist(app, admin_api):
    """Different names at once: no false conflict, every key stored with its own provider."""
    ids = [provider(admin_api, f"p{i:02d}") for i in range(THREADS)]
    keys = [new_key(f"k{i}") for i in range(THREADS)]
    results = race(app, [(admin_api.token, "POST", f"/ai-providers/{pid}/keys", {"api_key": key})
                         for pid, key in zip(ids, keys, strict=True)])
    assert statuses(results) == {201: THREADS}
    assert [r.get_json()["provider_id"] for r in results] == ids
    assert [r.get_json()["hint"] for r in results] == ["..." + key[-4:] for key in keys]
    assert scalar(app, "SELECT count(*) FROM ai_provider_keys") == THREADS
    assert_consistent(app)


# --- BYOK upserts ------------------------------------------------------------------------------


def test_twenty_users_saving_keys_at_once_each_keep_their_own(app, admin_api):
    pid = provider(admin_api, "shared-byok", key_policy="user_preferred")
    users = [make_user(app, f"byok-{i}@example.com") for i in range(THREADS)]
    tokens = [make_token(app, user) for user in users]
    keys = [new_key(f"u{i}") for i in range(THREADS)]
    results = race(app, [(token, "PUT", f"/user-ai-provider-keys/{pid}", {"api_key": key})
                         for token, key in zip(tokens, keys, strict=True)])
    assert statuses(results) == {200: THREADS}
    assert [r.get_json()["hint"] for r in results] == ["..." + key[-4:] for key in keys]
    assert user_key_plaintexts(app, pid) == {str(u.id): key for u, key in zip(users, keys, strict=True)}
    assert audits(app, "user_key.create") == THREADS
    assert_consistent(app)


def test_saves_and_deletes_of_one_user_key_racing_leave_a_consistent_row(app, admin_api, member, member_api):
    pid = provider(admin_api, "flapping", key_policy="user_only")
    for round_ in range(3):
        keys = [new_key(f"r{round_}-{i}") for i in range(THREADS // 2)]
        calls: list[Call] = []
        for key in keys:
            calls += [(member_api.token, "PUT", f"/user-ai-provider-keys/{pid}", {"api_key": key}),
                      (member_api.token, "DELETE", f"/user-ai-provider-keys/{pid}", None)]
        results = race(app, calls)
        assert statuses(results) == {200: THREADS // 2, 204: THREADS // 2}
        stored = user_key_plaintexts(app, pid)
        assert set(stored) <= {str(member.id)} and set(stored.values()) <= set(keys)
        # Every row ever made was either deleted or is the one left.
        made = audits(app, "user_key.create")
        assert made - audits(app, "user_key.delete") == len(stored)
        listed = member_api.get("/user-ai-provider-keys").get_json()[0]
        assert listed["has_user_api_key"] is bool(stored)
        assert listed["hint"] == ("..." + next(iter(stored.values()))[-4:] if stored else None)
    assert_consistent(app)


# --- default switches --------------------------------------------------------------------------


def test_twenty_default_switches_to_different_configs_all_succeed_one_after_another(app, admin_api):
    pid = provider(admin_api, "defaults")
    ids = [config(admin_api, pid, f"model-{i:02d}") for i in range(THREADS + 1)]  # ids[0] is the default
    results = race(app, [(admin_api.token, "PATCH", f"/model-configs/{cid}", {"is_default": True})
                         for cid in ids[1:]])
    assert statuses(results) == {200: THREADS}  # switches queue behind one another: none is lost or refused
    assert all(r.get_json()["is_default"] for r in results)
    switches = scalar(app, "SELECT count(*) FROM audit_events WHERE action = 'model_config.update' "
                           "AND details::text LIKE '%is_default%'")
    assert switches == THREADS
    last = scalar(app, "SELECT resource_id FROM audit_events WHERE action = 'model_config.update' "
                       "ORDER BY created_at DESC, id DESC LIMIT 1")
    current = scalar(app, "SELECT id::text FROM chat_model_configs WHERE is_default AND NOT deleted")
    assert current == str(last)  # the default is the one switched to last
    assert_consistent(app)


# --- provider deletion racing everything that hangs off a provider ------------------------------


@pytest.mark.parametrize("position", [0, 9, 19])
def test_provider_deletion_racing_key_config_and_user_key_creation_leaves_nothing_behind(
        app, admin_api, position):
    pid = provider(admin_api, "doomed", key_policy="user_preferred")
    members = [make_user(app, f"racer-{i}@example.com") for i in range(6)]
    member_tokens = [make_token(app, user) for user in members]
    other = provider(admin_api, "bystander")
    bystander_config = config(admin_api, other, "stays")  # the default, on another provider

    calls: list[Call] = []
    calls += [(admin_api.token, "POST", f"/ai-providers/{pid}/keys", {"api_key": new_key()}) for _ in range(7)]
    calls += [(admin_api.token, "POST", "/model-configs", {"ai_provider_id": pid, "model": f"m{i}",
                                                           "is_default": i % 2 == 0}) for i in range(6)]
    calls += [(token, "PUT", f"/user-ai-provider-keys/{pid}", {"api_key": new_key()}) for token in member_tokens]
    calls.insert(position, (admin_api.token, "DELETE", f"/ai-providers/{pid}", None))
    results = race(app, calls)

    deletion = results[position]
    others = results[:position] + results[position + 1:]
    assert deletion.status_code == 204
    keys, configs, user_keys = others[:7], others[7:13], others[13:]
    assert set(statuses(keys)) <= {201, 404}
    assert set(statuses(configs)) <= {201, 404}
    assert set(statuses(user_keys)) <= {200, 404}
    assert messages(keys + configs + user_keys, 404) <= {"AI provider not found."}
    # Whatever got in before the deletion was taken away by it; nothing got in after it.
    assert audits(app, "provider_key.create") == statuses(keys)[201]
    assert audits(app, "model_config.create") == statuses(configs)[201] + 1
    assert audits(app, "user_key.create") == statuses(user_keys)[200]
    assert scalar(app, "SELECT count(*) FROM ai_provider_keys WHERE provider_id = :p", p=pid) == 0
    assert scalar(app, "SELECT count(*) FROM user_ai_provider_keys WHERE ai_provider_id = :p", p=pid) == 0
    assert scalar(app, "SELECT count(*) FROM chat_model_configs WHERE ai_provider_id = :p AND NOT deleted",
                  p=pid) == 0
    assert scalar(app, "SELECT deleted FROM ai_providers WHERE id = :p", p=pid) is True
    assert audits(app, "provider.delete") == 1
    current = scalar(app, "SELECT id::text FROM chat_model_configs WHERE is_default AND NOT deleted")
    assert current == bystander_config
    assert_consistent(app)
