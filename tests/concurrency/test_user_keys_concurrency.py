"""BYOK under concurrency on PostgreSQL: many PUTs at once, PUTs racing a provider deletion, and
PUTs racing the owner's deactivation. Threads start together at a barrier, each with its own
test client (and so its own database session and connection)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from tests.support import API, make_token, make_user, new_key
from tests.support.factories import key_rows, make_provider, stored_key

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]

PATH = API + "/user-ai-provider-keys"


@pytest.fixture(autouse=True)
def _keys_registered(app):
    """Register the encryption keys first, as the start-up check does in production: the race
    is about user keys, not about the first write that registers a key digest."""
    from app.services.secrets import check_keys_against_database

    with app.app_context():
        check_keys_against_database()


def race(jobs: list[Callable[[threading.Barrier], object]]) -> list[object]:
    """Run every job in its own thread; each calls `barrier.wait()` once it is ready to go."""
    barrier = threading.Barrier(len(jobs))
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = jobs[i](barrier)
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors
    return results


def put_job(app, token: str, provider_id: str, key: str) -> Callable[[threading.Barrier], int]:
    def job(barrier: threading.Barrier) -> int:
        client = app.test_client()
        barrier.wait(timeout=30)
        response = client.put(f"{PATH}/{provider_id}", json={"api_key": key},
                              headers={"Authorization": f"Bearer {token}"})
        return response.status_code

    return job


def service_job(app, call: Callable[[], object]) -> Callable[[threading.Barrier], str]:
    def job(barrier: threading.Barrier) -> str:
        with app.app_context():
            barrier.wait(timeout=30)
            call()
        return "done"

    return job


def test_twenty_concurrent_puts_leave_one_row(app, member):
    from app.extensions import db
    from app.models import AuditEvent

    pid = make_provider(app, "hammered")
    token = make_token(app, member)
    keys = [new_key(f"c{i}") for i in range(20)]

    statuses = race([put_job(app, token, pid, key) for key in keys])

    assert statuses == [200] * 20
    assert key_rows(app, user=member) == 1
    _, _, _, hint, plaintext = stored_key(app, member, pid)
    assert plaintext in keys and hint == "..." + plaintext[-4:]
    with app.app_context():
        actions = Counter(db.session.execute(
            sa.select(AuditEvent.action).where(AuditEvent.action.startswith("user_key."))
        ).scalars())
    assert actions == {"user_key.create": 1, "user_key.update": 19}


@pytest.mark.parametrize("round_", range(4))
def test_put_racing_provider_deletion_leaves_no_row(app, admin, member, member_b, round_):
    from app.services import providers
    from app.services.base import Actor

    pid = make_provider(app, f"doomed-{round_}")
    users = [member, member_b, admin]
    tokens = [make_token(app, user) for user in users]
    if round_ % 2:  # half the rounds update existing keys, the other half insert
        for token in tokens:
            assert race([put_job(app, token, pid, new_key())]) == [200]

    jobs = [put_job(app, token, pid, new_key()) for token in tokens for _ in range(2)]
    jobs.insert(round_ % len(jobs), service_job(app, lambda: providers.delete_provider(Actor.system("test"), pid)))
    results = race(jobs)

    statuses = [r for r in results if r != "done"]
    assert set(statuses) <= {200, 404}, statuses
    assert key_rows(app, provider_id=pid) == 0
    for user in users:
        assert key_rows(app, user=user) == 0


@pytest.mark.parametrize("round_", range(3))
def test_deactivation_racing_puts_leaves_none_of_the_users_keys(app, admin, member_b, round_):
    from app.services import users as user_service
    from app.services.base import Actor

    victim = make_user(app, f"victim-{round_}@example.com")
    token = make_token(app, victim)
    other_token = make_token(app, member_b)
    pids = [make_provider(app, f"p{round_}-{i}", "user_only" if i % 2 else "user_preferred") for i in range(6)]
    if round_ == 2:  # some keys exist before the race
        for pid in pids[:3]:
            assert race([put_job(app, token, pid, new_key())]) == [200]

    victim_jobs = [put_job(app, token, pid, new_key()) for pid in pids]
    at = round_ * 2
    deactivate = service_job(app, lambda: user_service.deactivate_user(Actor.system("test"), victim.id))
    results = race([*victim_jobs[:at], deactivate, *victim_jobs[at:], put_job(app, other_token, pids[0], new_key())])

    victim_statuses = results[:at] + results[at + 1:-1]
    assert set(victim_statuses) <= {200, 401}, victim_statuses
    assert results[-1] == 200  # another user's PUT at the same moment is unaffected
    assert key_rows(app, user=victim) == 0
    assert key_rows(app, user=member_b) == 1
