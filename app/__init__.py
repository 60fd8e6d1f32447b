"""Switchboard: which AI providers and models an organisation's chat users may use, with whose key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

from app.config import ConfigError, load_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: config -> extensions -> metrics -> blueprints -> rate limits -> errors -> CLI.
    Never queries."""
    instance_path = (test_config or {}).get("INSTANCE_PATH") or os.environ.get(
        "SWITCHBOARD_INSTANCE_PATH", str(PROJECT_ROOT / "instance")
    )
    app = Flask(
        __name__,
        instance_path=instance_path,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config.from_mapping(load_config(app.instance_path, test_config))
    if app.debug and not app.config["DEVELOPMENT"]:
        raise ConfigError("FLASK_DEBUG is on outside development: refusing to start.")
    _load_allowlist(app)
    _trust_proxies(app)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    from app.logging import configure_logging

    configure_logging(app)
    register_extensions(app)
    register_metrics(app)
    register_blueprints(app)
    register_rate_limits(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def _load_allowlist(app: Flask) -> None:
    """Parse PRIVATE_BASE_URL_ALLOWLIST once, into app.extensions (see `base_urls.current_allowlist`);
    fail fast on an entry that is neither a host nor a CIDR."""
    from app.services.base_urls import load_allowlist

    try:
        load_allowlist(app)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _trust_proxies(app: Flask) -> None:
    """Behind TRUSTED_PROXIES reverse proxies (the recipe's nginx: 1), the client address is the
    one they put in X-Forwarded-For, counted from the right: what the rate limits and the audit
    log see. With 0 the header is ignored (anyone could write it)."""
    count = app.config["TRUSTED_PROXIES"]
    if count:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=0, x_host=0, x_port=0, x_prefix=0)


def register_extensions(app: Flask) -> None:
    from app.crypto import Keyring
    from app.db import configure_engine
    from app.extensions import csrf, db, login_manager, migrate

    app.extensions["switchboard.keyring"] = Keyring.from_config(app.config["ENCRYPTION_KEYS"])
    db.init_app(app)
    with app.app_context():
        configure_engine(app, db.engine)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"), compare_type=True, render_as_batch=True)
    csrf.init_app(app)

    from app.auth.oidc import init_sso
    from app.auth.session import init_login

    init_login(app, login_manager)
    init_sso(app)


def register_metrics(app: Flask) -> None:
    """Before the blueprints: its hooks time the whole request (see app/metrics.py)."""
    from app.metrics import init_metrics

    init_metrics(app)


def register_blueprints(app: Flask) -> None:
    from app.admin import bp as admin_bp
    from app.api import bp as api_bp
    from app.api import docs_bp as api_docs_bp
    from app.auth import bp as auth_bp
    from app.security import init_security
    from app.settings import bp as settings_bp
    from app.web import bp as web_bp

    app.register_blueprint(web_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(admin_bp, url_prefix="/admin")
    app.register_blueprint(settings_bp, url_prefix="/settings")
    app.register_blueprint(api_bp, url_prefix="/api/experimental/chats")
    app.register_blueprint(api_docs_bp, url_prefix="/api")
    init_security(app)


def register_rate_limits(app: Flask) -> None:
    """After the blueprints: the limiter wraps registered views by endpoint name."""
    from app.ratelimits import init_rate_limits

    init_rate_limits(app)


def register_errorhandlers(app: Flask) -> None:
    from app.errorhandlers import init_errors

    init_errors(app)


def register_commands(app: Flask) -> None:
    from app.cli import init_cli

    init_cli(app)
