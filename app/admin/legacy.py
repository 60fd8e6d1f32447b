"""Admin pages: filled in by its issue."""

from app.admin import bp  # noqa: F401
