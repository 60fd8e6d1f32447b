"""Database plumbing: the declarative base, shared column types and per-backend engine setup."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Flask, current_app, has_request_context, request
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, registry

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime | None) -> str | None:
    """A UTC timestamp as the API and the audit export write it: RFC 3339, microseconds, `Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_uuid() -> uuid.UUID:
    return uuid.uuid4()


class UTCDateTime(sa.types.TypeDecorator):
    """A timezone-aware UTC timestamp on both backends (SQLite stores no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    registry = registry(
        metadata=sa.MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={datetime: UTCDateTime(), uuid.UUID: sa.Uuid()},
    )


SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def writes_on_get(view):
    """Mark a view that writes although it answers a GET (single sign-on, where the identity
    provider sends the browser back with a GET): on SQLite its transactions take the write lock
    at BEGIN, as a POST's do."""
    view.writes_on_get = True
    return view


def _read_only_request() -> bool:
    if not has_request_context() or request.method not in SAFE_METHODS:
        return False
    view = current_app.view_functions.get(request.endpoint or "")
    return not getattr(view, "writes_on_get", False)


def configure_engine(app: Flask, engine: sa.Engine) -> None:
    """Per-connection settings.

    SQLite: foreign keys on, WAL, a busy timeout, and transactions that take the write lock at
    their start (``BEGIN IMMEDIATE``) for anything but a safe HTTP request (or a GET view marked
    `writes_on_get`), so a read-then-write use case can neither deadlock on lock upgrade nor lose
    an update.
    """
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN" if _read_only_request() else "BEGIN IMMEDIATE")
