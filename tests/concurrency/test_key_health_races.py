"""Key health under concurrency, on PostgreSQL: the chat backend's reports racing the deletion of
the key they are about (and of its provider) never bring the key back and never fail with a 500."""

from __future__ import annotations

import pytest

from tests.support import new_key
from tests.support.concurrency import messages, race, scalar, statuses

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow, pytest.mark.usefixtures("keys_registered")]

REPORTS = 19


def provider_with_key(admin_api, name: str) -> tuple[str, str]:
    provider_id = admin_api.post("/ai-providers", json={"type": "openai", "name": name}).get_json()["id"]
    key = admin_api.post(f"/ai-providers/{provider_id}/keys", json={"api_key": new_key("reported")}).get_json()
    return provider_id, key["id"]


@pytest.mark.parametrize("deleted", ["key", "provider"])
def test_reports_racing_the_deletion_of_their_key_never_resurrect_it(app, admin_api, service_api, deleted):
    for round_number in range(3):
        provider_id, key_id = provider_with_key(admin_api, f"racing-{deleted}-{round_number}")
        path = f"/ai-providers/{provider_id}/keys/{key_id}" if deleted == "key" else f"/ai-providers/{provider_id}"
        calls = [(service_api.token, "POST", "/credentials/report",
                  {"key_id": key_id, "result": ("invalid_key", "ok", "forbidden")[i % 3]}) for i in range(REPORTS)]
        calls.insert(round_number * 7, (admin_api.token, "DELETE", path, None))
        results = race(app, calls)
        deletion = results.pop(round_number * 7)
        assert deletion.status_code == 204
        assert set(statuses(results)) <= {204, 404}
        assert messages(results, 404) <= {"API key not found."}
        assert scalar(app, "SELECT count(*) FROM ai_provider_keys WHERE id = :k", k=key_id) == 0
        reported = scalar(app, "SELECT count(*) FROM audit_events WHERE action = 'credentials.report' "
                               "AND resource_id = :k", k=key_id)
        assert reported == statuses(results).get(204, 0)  # one audit event per recorded report, none for a 404
