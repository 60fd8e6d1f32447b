"""Reading the test database directly, where what the app answers is not enough."""

from __future__ import annotations

import uuid

import sqlalchemy as sa


def sql(app, statement: str, **params):
    """Rows `statement` selects (UUID parameters bound as UUIDs), read in their own transaction."""
    from app.extensions import db

    text = sa.text(statement).bindparams(
        *(sa.bindparam(name, type_=sa.Uuid()) for name, value in params.items() if isinstance(value, uuid.UUID))
    )
    with app.app_context():
        rows = db.session.execute(text, params).all()
        db.session.rollback()
        return rows
