"""Races on providers and keys, on PostgreSQL with its row locks: 20 requests released together
(tests/support/concurrency.py), after the start-up key check has registered the key digests.

Each thread has its own test client (so its own app context, session and pooled connection); the
session app's pool (10 + 10 overflow) serves all 20 at once.
"""

from __future__ import annotations

import pytest

from tests.support import new_key
from tests.support.concurrency import messages, race, scalar, statuses

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow, pytest.mark.usefixtures("keys_registered")]

THREADS = 20


def create(api, name: str) -> str:
    response = api.post("/ai-providers", json={"type": "openai", "name": name})
    assert response.status_code == 201
    return response.get_json()["id"]


def test_twenty_creates_of_one_name_make_exactly_one_provider(app, admin_api):
    calls = [(admin_api.token, "POST", "/ai-providers", {"type": "openai", "name": "contested",
                                                         "display_name": f"#{i}"}) for i in range(THREADS)]
    results = race(app, calls)
    assert statuses(results) == {201: 1, 409: THREADS - 1}
    assert messages(results, 409) == {"AI provider already exists."}
    assert scalar(app, "SELECT count(*) FROM ai_providers WHERE name = 'contested'") == 1
    assert scalar(app, "SELECT count(*) FROM audit_events WHERE action = 'provider.create'") == 1


def test_twenty_deletes_of_one_provider_delete_it_once(app, admin_api):
    provider_id = create(admin_api, "doomed")
    for _ in range(3):
        assert admin_api.post(f"/ai-providers/{provider_id}/keys", json={"api_key": new_key()}).status_code == 201
    results = race(app, [(admin_api.token, "DELETE", f"/ai-providers/{provider_id}", None)] * THREADS)
    assert statuses(results) == {204: 1, 404: THREADS - 1}
    assert messages(results, 404) == {"AI provider not found."}
    assert scalar(app, "SELECT count(*) FROM audit_events WHERE action = 'provider.delete'") == 1
    assert scalar(app, "SELECT count(*) FROM ai_provider_keys") == 0


def test_key_creation_racing_provider_deletion_never_leaves_a_key_behind(app, admin_api):
    for round_number in range(5):
        provider_id = create(admin_api, f"racing-{round_number}")
        calls = [(admin_api.token, "POST", f"/ai-providers/{provider_id}/keys", {"api_key": new_key("race")})
                 for _ in range(10)]
        calls.insert(round_number * 2, (admin_api.token, "DELETE", f"/ai-providers/{provider_id}", None))
        results = race(app, calls)
        deletion = results[round_number * 2]
        key_results = results[: round_number * 2] + results[round_number * 2 + 1:]
        assert deletion.status_code == 204
        assert set(statuses(key_results)) <= {201, 404}
        assert messages(key_results, 404) <= {"AI provider not found."}
        assert scalar(app, "SELECT count(*) FROM ai_provider_keys WHERE provider_id = :p", p=provider_id) == 0
    orphans = scalar(app, "SELECT count(*) FROM ai_provider_keys k JOIN ai_providers p ON p.id = k.provider_id "
                          "WHERE p.deleted")
    assert orphans == 0
    assert scalar(app, "SELECT count(*) FROM ai_providers WHERE NOT deleted") == 0


def test_the_same_key_added_twenty_times_is_stored_once(app, admin_api):
    provider_id = create(admin_api, "dupes")
    key = new_key("dupe")
    results = race(app, [(admin_api.token, "POST", f"/ai-providers/{provider_id}/keys", {"api_key": key})] * THREADS)
    assert statuses(results) == {201: 1, 409: THREADS - 1}
    assert messages(results, 409) == {"API key already exists."}
    assert scalar(app, "SELECT count(*) FROM ai_provider_keys") == 1


def test_twenty_renames_to_one_name_leave_exactly_one_holder(app, admin_api):
    ids = [create(admin_api, f"p{i:02d}") for i in range(THREADS)]
    results = race(app, [(admin_api.token, "PATCH", f"/ai-providers/{pid}", {"name": "wanted"}) for pid in ids])
    assert statuses(results) == {200: 1, 409: THREADS - 1}
    assert scalar(app, "SELECT count(*) FROM ai_providers WHERE name = 'wanted'") == 1
