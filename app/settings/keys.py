"""User key settings page: filled in by its issue."""

from app.settings import bp  # noqa: F401
