"""Helpers for race tests: JSON API requests released together at one barrier, and reads of the
database to check what the race left behind. The `keys_registered` fixture is in conftest."""

from __future__ import annotations

import threading
from collections import Counter

import sqlalchemy as sa
from werkzeug.test import TestResponse

from tests.support import Api

# bearer token (None: anonymous), method, path under /api/experimental/chats, JSON body
Call = tuple[str | None, str, str, dict | None]


def race(app, calls: list[Call]) -> list[TestResponse]:
    """Send every call from its own thread with its own test client (so its own app context,
    session and pooled connection), all released together by one `threading.Barrier`.

    Returns the responses in the order of `calls`. Fails the test when a thread raises (a crash
    in a thread must fail the test, not vanish), hangs, or any response is a 5xx.
    """
    barrier = threading.Barrier(len(calls))
    responses: list[TestResponse | None] = [None] * len(calls)
    errors: list[str] = []

    def run(index: int, token: str | None, method: str, path: str, body: dict | None) -> None:
        try:
            api = Api(app.test_client(), token)
            barrier.wait(timeout=30)
            responses[index] = api.request(method, path, json=body)
        except Exception as error:
            errors.append(f"call {index} ({method} {path}): {error!r}")
            barrier.abort()  # the others stop waiting for a thread that will never arrive

    threads = [threading.Thread(target=run, args=(i, *call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert not errors, errors
    done: list[TestResponse] = [r for r in responses if r is not None]
    assert len(done) == len(calls), "a call did not run"
    assert not [r for r in done if r.status_code >= 500], outcomes(done)
    return done


def statuses(responses: list[TestResponse]) -> Counter:
    """How many responses had each status code."""
    return Counter(response.status_code for response in responses)


def messages(responses: list[TestResponse], status: int) -> set[str]:
    """The distinct `message` of the JSON bodies of the responses with `status`."""
    return {response.get_json()["message"] for response in responses if response.status_code == status}


def outcomes(responses: list[TestResponse]) -> list[tuple[int, object]]:
    """(status, JSON body) of each response: for assertion messages."""
    return [(response.status_code, response.get_json(silent=True)) for response in responses]


def scalar(app, sql: str, **params):
    """The one value `sql` selects, read in its own app context and transaction (rolled back)."""
    from app.extensions import db

    with app.app_context():
        value = db.session.execute(sa.text(sql), params).scalar_one()
        db.session.rollback()
        return value
