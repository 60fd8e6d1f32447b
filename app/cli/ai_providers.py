"""CLI group: filled in by its issue."""

from flask.cli import AppGroup

ai_providers = AppGroup("ai-providers")
