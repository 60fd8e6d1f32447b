"""Two administrators acting on each other at the same moment, on PostgreSQL: the last-admin rule
holds (never zero active administrators) and neither request fails (no deadlock, no 503 or 500).

Each round makes two fresh administrators, A and B, the only active ones; A's request against B
and B's against A are released together by a barrier, each from its own thread (own session, own
pooled connection). Deactivations and role changes go through the admin pages a browser uses.

Should a deadlock or a serialization failure still happen somewhere, the client gets a retryable
503 and the server log an error with the request id (tested on both databases).
"""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from tests.support import get_csrf, login, make_user

ROUNDS = 20


def active_admins(app) -> set[uuid.UUID]:
    from app.extensions import db
    from app.models import User

    with app.app_context():
        ids = set(db.session.execute(sa.select(User.id).where(User.role == "admin", User.active)).scalars())
        db.session.rollback()
        return ids


def fresh_pair(app, round_no: int):
    """Two new administrators who are, from now on, the only active ones."""
    from app.services import users
    from app.services.base import Actor

    before = active_admins(app)
    a = make_user(app, f"a{round_no}-{uuid.uuid4().hex[:6]}@example.com", role="admin")
    b = make_user(app, f"b{round_no}-{uuid.uuid4().hex[:6]}@example.com", role="admin")
    with app.app_context():
        for old in before:
            users.deactivate_user(Actor.system("test"), old)
    assert active_admins(app) == {a.id, b.id}
    return a, b


def together(*jobs):
    """Run each job in its own thread, released at once; their results (or the exception raised)."""
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)

    def run(index, job):
        try:
            prepared = job()  # everything before the racing request (sign-in, CSRF token)
            barrier.wait(timeout=30)
            results[index] = prepared()
        except Exception as error:  # a crash in a thread must fail the test, not vanish
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    return results


def deactivation_by(app, actor, target):
    def prepare():
        client = app.test_client()
        assert login(client, actor.email).status_code == 302
        path = f"/admin/users/{target.id}/deactivate"
        token = get_csrf(client, path)
        return lambda: client.post(path, data={"csrf_token": token})
    return prepare


def demotion_by(app, actor, target):
    def prepare():
        client = app.test_client()
        assert login(client, actor.email).status_code == 302
        token = get_csrf(client, "/admin/users")
        return lambda: client.post(f"/admin/users/{target.id}/role", data={"role": "member", "csrf_token": token})
    return prepare


def role_changes(app, *users) -> int:
    from app.extensions import db
    from app.models import AuditEvent

    with app.app_context():
        n = db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "user.role_change", AuditEvent.resource_id.in_([str(u.id) for u in users]))).scalar()
        db.session.rollback()
        return n


@pytest.mark.postgres_only
@pytest.mark.slow
def test_two_admins_deactivating_each_other_leave_one_and_never_fail(app, caplog):
    outcomes = []
    for round_no in range(ROUNDS):
        a, b = fresh_pair(app, round_no)
        responses = together(deactivation_by(app, a, b), deactivation_by(app, b, a))
        assert all(not isinstance(r, Exception) for r in responses), responses
        statuses = [r.status_code for r in responses]
        # Both answer with the redirect to the users list (one with "deactivated", the other with
        # the last-admin refusal) or to the login page (its session had already ended).
        assert statuses == [302, 302], (round_no, statuses)
        survivors = active_admins(app)
        assert len(survivors) == 1 and survivors <= {a.id, b.id}, round_no
        outcomes.append(survivors == {a.id})
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")], "a request hit the database error path"
    assert len(outcomes) == ROUNDS


@pytest.mark.postgres_only
@pytest.mark.slow
def test_two_admins_demoting_each_other_leave_one_and_never_fail(app):
    for round_no in range(ROUNDS):
        a, b = fresh_pair(app, round_no)
        responses = together(demotion_by(app, a, b), demotion_by(app, b, a))
        assert all(not isinstance(r, Exception) for r in responses), responses
        # Each answers with the redirect to the users list (one demoted, the other refused with
        # the last-admin message), or to the login page when its session had already ended.
        assert {r.status_code for r in responses} <= {302, 303}, (round_no, responses)
        survivors = active_admins(app)
        assert len(survivors) == 1 and survivors <= {a.id, b.id}, round_no
        assert role_changes(app, a, b) == 1, round_no


@pytest.mark.postgres_only
@pytest.mark.slow
def test_an_admin_deactivating_one_who_demotes_them_leaves_one(app):
    for round_no in range(ROUNDS):
        a, b = fresh_pair(app, round_no)
        demotion, deactivation = together(demotion_by(app, a, b), deactivation_by(app, b, a))
        assert not isinstance(deactivation, Exception), deactivation
        assert not isinstance(demotion, Exception), demotion
        assert deactivation.status_code == 302, round_no
        assert demotion.status_code in (302, 303), round_no
        survivors = active_admins(app)
        assert len(survivors) == 1 and survivors <= {a.id, b.id}, round_no


# --- how a lock conflict is reported ----------------------------------------------------------


def lock_conflict(kind):
    from psycopg import errors
    from sqlalchemy.exc import OperationalError

    original = {"deadlock": errors.DeadlockDetected("deadlock detected"),
                "serialization": errors.SerializationFailure("could not serialize access"),
                "unreachable": errors.OperationalError("connection refused")}[kind]
    return OperationalError("UPDATE users SET name = %(name)s", {"name": "statement-parameter-marker"}, original)


@pytest.mark.parametrize(("kind", "level"), [("deadlock", "ERROR"), ("serialization", "ERROR"),
                                             ("unreachable", "WARNING")])
def test_a_lock_conflict_is_a_retryable_503_logged_as_an_error(make_app, caplog, kind, level):
    probe = make_app()

    @probe.route("/probe-conflict")
    def conflict():
        raise lock_conflict(kind)

    request_id = uuid.uuid4().hex
    response = probe.test_client().get("/probe-conflict", headers={"X-Request-ID": request_id})
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    (record,) = [r for r in caplog.records if r.name == probe.logger.name and r.levelno >= 30]
    assert record.levelname == level
    message = record.getMessage()
    assert request_id in message
    if level == "ERROR":
        assert {"deadlock": "DeadlockDetected (SQLSTATE 40P01)",
                "serialization": "SerializationFailure (SQLSTATE 40001)"}[kind] in message
        assert "GET /probe-conflict" in message
    assert "statement-parameter-marker" not in message and "UPDATE users" not in message
