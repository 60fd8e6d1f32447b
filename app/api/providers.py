"""JSON routes: filled in by its issue."""

from app.api import bp  # noqa: F401
