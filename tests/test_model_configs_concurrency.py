"""Races on model configs, on PostgreSQL with its row locks: 20 requests released together by a
barrier, each from its own thread and test client (own session, own pooled connection)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from tests.support import Api

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]

THREADS = 20


@pytest.fixture(autouse=True)
def _started(app):
    """Register the key digests as the start-up check does before serving."""
    from app.services.secrets import check_keys_against_database

    with app.app_context():
        check_keys_against_database()


def race(app, token: str, calls: list[tuple[str, str, dict | None]]) -> list[tuple]:
    """Send every call from its own thread, all released by one barrier; (status, body) each."""
    barrier = threading.Barrier(len(calls))
    results: list[tuple] = [("not run", None)] * len(calls)

    def run(index: int, method: str, path: str, body: dict | None) -> None:
        api = Api(app.test_client(), token)
        try:
            barrier.wait(timeout=30)
            response = api.request(method, path, json=body)
            results[index] = (response.status_code, response.get_json(silent=True))
        except Exception as error:  # a crash in a thread must fail the test, not vanish
            results[index] = ("exception", repr(error))

    threads = [threading.Thread(target=run, args=(i, *call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert all(isinstance(status, int) for status, _ in results), results
    assert not [r for r in results if r[0] >= 500], results
    return results


def statuses(results) -> Counter:
    return Counter(status for status, _ in results)


def scalar(app, statement: str, **params):
    from app.extensions import db

    with app.app_context():
        value = db.session.execute(sa.text(statement), params).scalar_one()
        db.session.rollback()
        return value


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
    calls = [("POST", "/model-configs", {"ai_provider_id": pid, "model": "gpt-4o", "display_name": f"#{i}"})
             for i in range(THREADS)]
    results = race(app, admin_api.token, calls)
    assert statuses(results) == {201: 1, 409: THREADS - 1}
    assert {body["message"] for status, body in results if status == 409} == {"Chat model config already exists."}
    assert live_configs(app) == 1
    assert live_defaults(app) == 1  # the first config became the default


def test_twenty_first_configs_at_once_make_exactly_one_default(app, admin_api):
    pid = make_provider(app, "fresh")
    calls = [("POST", "/model-configs", {"ai_provider_id": pid, "model": f"model-{i}"}) for i in range(THREADS)]
    results = race(app, admin_api.token, calls)
    assert statuses(results) == {201: THREADS}
    assert sum(body["is_default"] for _, body in results) == 1
    assert live_defaults(app) == 1


def test_concurrent_default_switches_leave_exactly_one_default(app, admin_api):
    pid = make_provider(app, "switching")
    ids = [create(admin_api, pid, f"model-{i}") for i in range(5)]
    for _round in range(3):
        calls = [("PATCH", f"/model-configs/{ids[i % len(ids)]}", {"is_default": True}) for i in range(THREADS)]
        results = race(app, admin_api.token, calls)
        assert set(statuses(results)) <= {200, 409}, results
        assert statuses(results)[200] >= 1
        assert live_defaults(app) == 1


def test_switches_deletes_and_creates_racing_keep_one_default(app, admin_api):
    pid = make_provider(app, "mixed")
    ids = [create(admin_api, pid, f"model-{i}") for i in range(8)]
    calls = []
    for i in range(THREADS):
        if i % 4 == 0:
            calls.append(("DELETE", f"/model-configs/{ids[i // 4]}", None))  # ids[0] is the default
        elif i % 4 == 1:
            calls.append(("POST", "/model-configs", {"ai_provider_id": pid, "model": f"new-{i}", "is_default": True}))
        else:
            calls.append(("PATCH", f"/model-configs/{ids[i % 8]}", {"is_default": True}))
    results = race(app, admin_api.token, calls)
    assert set(statuses(results)) <= {200, 201, 204, 404, 409}, results
    assert live_configs(app) > 0
    assert live_defaults(app) == 1


def test_provider_deletion_racing_config_creation_leaves_no_live_config_behind(app, admin_api):
    for round_ in range(3):
        pid = make_provider(app, f"doomed-{round_}")
        calls: list[tuple[str, str, dict | None]] = [
            ("POST", "/model-configs", {"ai_provider_id": pid, "model": f"model-{i}"}) for i in range(THREADS - 1)]
        calls.insert(round_ * 7, ("DELETE", f"/ai-providers/{pid}", None))
        results = race(app, admin_api.token, calls)
        counts = statuses(results)
        assert set(counts) <= {201, 204, 404}, results
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
        calls: list[tuple[str, str, dict | None]] = [
            ("PATCH", f"/model-configs/{targets[i % len(targets)]}", {"is_default": True}) for i in range(THREADS - 1)]
        calls.insert(round_ * 5, ("DELETE", f"/ai-providers/{doomed}", None))
        results = race(app, admin_api.token, calls)
        counts = statuses(results)
        assert set(counts) <= {200, 204, 404, 409}, results
        assert counts[204] == 1
        assert live_defaults(app) == 1
        assert scalar(app, "SELECT count(*) FROM chat_model_configs WHERE ai_provider_id = :pid AND NOT deleted",
                      pid=doomed) == 0
