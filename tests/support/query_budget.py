"""Count the SQL statements a piece of code sends, to hold routes to a query budget.

    with count_queries(app) as queries:
        client.get("/admin/providers")
    assert queries.count <= 5, queries.report()

Every statement that reaches a cursor of the app's engine is counted (`before_cursor_execute`),
savepoints included. Transaction starts are not: SQLite's `BEGIN` / `BEGIN IMMEDIATE` goes
through a cursor (app/db.py issues it), PostgreSQL's is sent by the driver without one, and a
budget should mean the same on both databases. The pool's liveness ping is not counted either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import Flask
from sqlalchemy import event


@dataclass
class QueryCount:
    statements: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.statements)

    def report(self) -> str:
        """The statements, one per line (shortened), for an assertion message."""
        return f"{self.count} statements:\n" + "\n".join(
            f"  {i}. {' '.join(s.split())[:200]}" for i, s in enumerate(self.statements, 1)
        )


@contextmanager
def count_queries(app: Flask) -> Iterator[QueryCount]:
    """Count the statements sent on `app`'s engine while the block runs (any thread)."""
    from app.extensions import db

    with app.app_context():
        engine = db.engine
    counted = QueryCount()

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            counted.statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield counted
    finally:
        event.remove(engine, "before_cursor_execute", record)
