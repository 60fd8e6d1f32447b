"""Flask CLI command groups; each only parses arguments and calls services."""

from flask import Flask


def init_cli(app: Flask) -> None:
    from app.cli.ai_providers import ai_providers
    from app.cli.audit import audit
    from app.cli.config import config
    from app.cli.dbcrypt import dbcrypt
    from app.cli.tokens import tokens
    from app.cli.users import users

    for group in (users, tokens, dbcrypt, ai_providers, audit, config):
        app.cli.add_command(group)
