"""Races on model configs, on PostgreSQL with its row locks: 20 requests released together by a
barrier, each from its own thread and test client (own session, own pooled connection), after the
start-up key check has registered the key digests (tests/support/concurrency.py)."""

from __future__ import annotations

import pytest

from tests.support.concurrency import Call, messages, outcomes, race, scalar, statuses

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow, pytest.mark.usefixtures("keys_registered")]

THREADS = 20


def live_defaults(app) -> int:
    return scalar(app, "SELECT count(*) FROM chat_model_configs WHERE is_default AND NOT deleted")


def live_configs(app) -> int:
    return scalar(app, "SELECT count(*) FROM chat_model_configs WHERE NOT deleted")


def make_provider(app, name: str) -> str:
    from app.services import providers
    from app.services.base import Actor

    with app.app_context():
        return str(providers.create_provider(Actor.system("test"), type="openai", name=name).id)


def create(api, provider_id: str, model: str) -> str:
    response = api.post("/model-configs", json={"ai_provider_id": provider_id, "model": model})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_twenty_creates_of_one_model_make_exactly_one_config(app, admin_api):
    pid = make_provider(app, "contested")
    calls = [(admin_api.token, "POST", "/model-configs", {"ai_provider_id": pid, "model": "gpt-4o",
                                                          "display_name": f"#{i}"}) for i in range(THREADS)]
    results = race(app, calls)
    assert statuses(results) == {201: 1, 409: THREADS - 1}
    assert messages(results, 409) == {"Chat model config already exists."}
    assert live_configs(app) == 1
    assert live_defaults(app) == 1  # the first config became the default


def test_twenty_first_configs_at_once_make_exactly_one_default(app, admin_api):
    pid = make_provider(app, "fresh")
    calls = [(admin_api.token, "POST", "/model-configs", {"ai_provider_id": pid, "model": f"model-{i}"})
             for i in range(THREADS)]
    results = race(app, calls)
    assert statuses(results) == {201: THREADS}
    assert sum(r.get_json()["is_default"] for r in results) == 1
    assert live_defaults(app) == 1


def test_concurrent_default_switches_leave_exactly_one_default(app, admin_api):
    pid = make_provider(app, "switching")
    ids = [create(admin_api, pid, f"model-{i}") for i in range(5)]
    for _round in range(3):
        calls = [(admin_api.token, "PATCH", f"/model-configs/{ids[i % len(ids)]}", {"is_default": True})
                 for i in range(THREADS)]
        results = race(app, calls)
        assert set(statuses(results)) <= {200, 409}, outcomes(results)
        assert statuses(results)[200] >= 1
        assert live_defaults(app) == 1


def test_switches_deletes_and_creates_racing_keep_one_default(app, admin_api):
    pid = make_provider(app, "mixed")
    ids = [create(admin_api, pid, f"model-{i}") for i in range(8)]
    calls = []
    for i in range(THREADS):
        if i % 4 == 0:
            calls.append((admin_api.token, "DELETE", f"/model-configs/{ids[i // 4]}", None))  # ids[0]: the default
        elif i % 4 == 1:
            calls.append((admin_api.token, "POST", "/model-configs",
                          {"ai_provider_id": pid, "model": f"new-{i}", "is_default": True}))
        else:
            calls.append((admin_api.token, "PATCH", f"/model-configs/{ids[i % 8]}", {"is_default": True}))
    results = race(app, calls)
    assert set(statuses(results)) <= {200, 201, 204, 404, 409}, outcomes(results)
    assert live_configs(app) > 0
    assert live_defaults(app) == 1


def test_provider_deletion_racing_config_creation_leaves_no_live_config_behind(app, admin_api):
    for round_ in range(3):
        pid = make_provider(app, f"doomed-{round_}")
        calls: list[Call] = [(admin_api.token, "POST", "/model-configs", {"ai_provider_id": pid, "model": f"model-{i}"})
                             for i in range(THREADS - 1)]
        calls.insert(round_ * 7, (admin_api.token, "DELETE", f"/ai-providers/{pid}", None))
        results = race(app, calls)
        counts = statuses(results)
        assert set(counts) <= {201, 204, 404}, outcomes(results)
        assert counts[204] == 1
        assert scalar(app, "SELECT count(*) FROM chat_model_configs WHERE ai_provider_id = :pid AND NOT deleted",
                      pid=pid) == 0
        assert scalar(app, "SELECT deleted FROM ai_providers WHERE id = :pid", pid=pid) is True
        assert live_defaults(app) == 0


def test_default_switches_racing_deletion_of_the_defaults_provider_keep_one_default(app, admin_api):
    for round_ in range(3):
        doomed = make_provider(app, f"doomed-default-{round_}")
        kept = make_provider(app, f"kept-{round_}")
        doomed_ids = [create(admin_api, doomed, f"d-{i}") for i in range(4)]
        if round_ == 0:
            assert admin_api.get(f"/model-configs/{doomed_ids[0]}").get_json()["is_default"] is True
        else:
            admin_api.patch(f"/model-configs/{doomed_ids[0]}", json={"is_default": True})
        kept_ids = [create(admin_api, kept, f"k-{i}") for i in range(4)]
        targets = doomed_ids + kept_ids
        calls: list[Call] = [(admin_api.token, "PATCH", f"/model-configs/{targets[i % len(targets)]}",
                              {"is_default": True}) for i in range(THREADS - 1)]
        calls.insert(round_ * 5, (admin_api.token, "DELETE", f"/ai-providers/{doomed}", None))
        results = race(app, calls)
        counts = statuses(results)
        assert set(counts) <= {200, 204, 404, 409}, outcomes(results)
        assert counts[204] == 1
        assert live_defaults(app) == 1
        assert scalar(app, "SELECT count(*) FROM chat_model_configs WHERE ai_provider_id = :pid AND NOT deleted",
                      pid=doomed) == 0
