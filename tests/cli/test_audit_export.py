"""`flask --app wsgi audit export` (SPEC section 11): JSON lines, oldest first, the events of
GET /audit-events, filtered by --since/--until, to stdout or --output."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.support import Api, make_token


def seed(app, n: int, at: datetime | None = None) -> None:
    from app.services import audit
    from app.services.base import Actor, transaction

    with app.app_context(), transaction():
        for i in range(n):
            event = audit.record(Actor.system("seed"), "seed.event", "thing", f"thing-{i:04d}", n=i)
            if at is not None:
                event.created_at = at + timedelta(minutes=i)


def test_export_writes_every_event_oldest_first_as_the_api_shows_them(app, runner, admin):
    seed(app, 2500)  # more than one batch
    result = runner.invoke(args=["audit", "export"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    events = [json.loads(line) for line in lines]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    seeded = [e for e in events if e["action"] == "seed.event"]
    assert [e["resource_id"] for e in seeded] == [f"thing-{i:04d}" for i in range(2500)]
    newest = Api(app.test_client(), make_token(app, admin)).get("/audit-events", query_string={"limit": 5}).get_json()
    by_id = {e["id"]: e for e in events}
    assert all(by_id[e["id"]] == e for e in newest if e["id"] in by_id)  # the same fields, the same values
    assert f"{len(events)} events exported." in result.stderr


def test_since_and_until_bound_the_export(app, runner, tmp_path):
    base = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    seed(app, 10, at=base)  # 09:00 .. 09:09
    target = tmp_path / "audit.jsonl"
    result = runner.invoke(args=["audit", "export", "--since", "2026-03-01T09:03:00Z", "--until",
                                 "2026-03-01T11:06:00+02:00", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    lines = target.read_text().splitlines()
    assert [json.loads(line)["details"]["n"] for line in lines] == [3, 4, 5]
    empty = runner.invoke(args=["audit", "export", "--since", "2026-03-02"])
    assert (empty.exit_code, empty.stdout) == (0, "")


def test_a_malformed_moment_is_refused(app, runner):
    result = runner.invoke(args=["audit", "export", "--since", "last tuesday"])
    assert result.exit_code == 2
    assert "--since" in result.output and "RFC 3339" in result.output
